"""Reliability: exact resume after SIGKILL, atomic checkpoints, determinism (training and bitstreams
across processes), sweeps that survive a failing point, non-finite losses, and DDP evaluation that
counts every image exactly once.

Everything runs on CPU with a 16-channel codec on 8 synthetic 128x320 frames; separate processes
are real ``vcm-*`` commands. Tolerance: none — on CPU the same seed gives bit-identical weights and
metrics, also across a kill and resume (the data order and augmentation are functions of
(seed, epoch, frame), the loader's position and the RNG states are in the checkpoint).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    TINY,
    compose,
    run_cli,
    snapshot,
    synthetic_cache,
    tiny_levels,
    tiny_lmsfc,
)
from PIL import Image


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return synthetic_cache(tmp_path_factory.mktemp("reliability"))


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _train_losses(path: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["train/loss_step"]) for r in _csv_rows(path) if r.get("train/loss_step")}


def _record(results: Path) -> dict:
    files = sorted(results.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)


# --------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
@pytest.mark.guard
def test_sigkilled_run_resumes_to_bit_identical_weights_and_metrics(tmp_path, cache):
    """Run A: 9 steps (3 epochs of 3 batches). Run B: killed with SIGKILL in epoch 1 after the
    checkpoint of step 4, then ``ckpt_path=last`` with the same run dir. B ends where A ends, bit for bit."""
    common = TINY + ["model=factorized", "trainer.max_steps=9", "trainer.max_epochs=3",
                     "+callbacks.model_checkpoint.every_n_train_steps=4", f"paths.cache_dir={cache}"]
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    a = run_cli("vcm-train", common + [f"hydra.run.dir={run_a}", f"paths.results_dir={tmp_path / 'res_A'}"])
    assert a.returncode == 0, a.stdout + a.stderr

    b1 = run_cli("vcm-train", common + [f"hydra.run.dir={run_b}", f"paths.results_dir={tmp_path / 'res_B'}",
                                        "+callbacks.killer._target_=helpers.KillAtStep", "+callbacks.killer.step=4"])
    assert b1.returncode == -signal.SIGKILL, b1.stdout + b1.stderr
    last = run_b / "checkpoints" / "last.ckpt"
    ck = _state(last)
    # The checkpoint it left is complete and mid-epoch: epoch 1, one of its three batches done.
    assert ck["global_step"] == 4 and ck["epoch"] == 1
    assert ck["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]
    assert not (tmp_path / "res_B").exists()  # killed before its results record
    # What a kill during a later save would leave: a temporary file, never picked up.
    (run_b / "checkpoints" / ".last.ckpt.x1y2z3.tmp").write_bytes(last.read_bytes()[:1000])

    b2 = run_cli("vcm-train", common + [f"hydra.run.dir={run_b}", f"paths.results_dir={tmp_path / 'res_B'}", "ckpt_path=last"])
    assert b2.returncode == 0, b2.stdout + b2.stderr
    assert f"Restored all states from the checkpoint at {last}" in b2.stdout + b2.stderr

    # The resumed process trained only steps 5..9 (csv steps are 0-based) and saw the very batches,
    # augmentations and quantisation noise of run A: the same loss at every step.
    losses_a = _train_losses(run_a / "csv" / "metrics.csv")
    losses_b = _train_losses(run_b / "csv" / "metrics.csv")
    assert sorted(losses_a) == list(range(9)) and sorted(losses_b) == [4, 5, 6, 7, 8]
    assert losses_b == {k: losses_a[k] for k in losses_b}
    # The killed part's metrics were kept, not overwritten by the resumed logger.
    assert set(_train_losses(run_b / "csv" / "metrics.before-resume-1.csv")) == {0, 1, 2, 3}

    sa, sb = _state(run_a / "checkpoints" / "last.ckpt"), _state(last)
    assert sa["global_step"] == sb["global_step"]
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])
    val = lambda run: [(r["val/bpp_real"], r["val/psnr"]) for r in _csv_rows(run / "csv" / "metrics.csv") if r.get("val/psnr")]
    assert val(run_a)[-1] == val(run_b)[-1]
    ra, rb = _record(tmp_path / "res_A"), _record(tmp_path / "res_B")
    for k in ("bpp_real", "psnr", "bpp_estimated", "loss"):
        assert ra["metrics"][k] == rb["metrics"][k], k


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_dies(tmp_path, monkeypatch):
    from vcm.callbacks.checkpoint_io import AtomicCheckpointIO

    io_ = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io_.save_checkpoint({"step": 1, "w": torch.arange(4)}, path)
    old = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash between writing and renaming")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        io_.save_checkpoint({"step": 2, "w": torch.arange(1000)}, path)
    monkeypatch.undo()
    # The destination is the old complete checkpoint and no temporary file is left behind.
    assert path.read_bytes() == old and torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    io_.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}


def test_resume_never_picks_up_a_partial_checkpoint(tmp_path):
    from vcm.cli.train import _resolve_ckpt_path
    from vcm.errors import ConfigError

    ckdir = tmp_path / "run" / "checkpoints"
    ckdir.mkdir(parents=True)
    torch.save({"x": torch.ones(3)}, ckdir / "good.ckpt")
    full = (ckdir / "good.ckpt").read_bytes()
    # Only the temporary file of an interrupted save: there is no checkpoint yet.
    (ckdir / ".last.ckpt.abc123.tmp").write_bytes(full[: len(full) // 2])
    assert _resolve_ckpt_path("last", tmp_path / "run") is None
    (ckdir / "last.ckpt").write_bytes(full)
    assert _resolve_ckpt_path("last", tmp_path / "run") == str(ckdir / "last.ckpt")
    # A truncated last.ckpt (damaged after it was written) is refused with its path, not loaded.
    (ckdir / "last.ckpt").write_bytes(full[:-100])
    with pytest.raises(ConfigError, match=r"last\.ckpt is truncated or corrupt"):
        _resolve_ckpt_path("last", tmp_path / "run")
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        _resolve_ckpt_path(str(ckdir / "last.ckpt"), tmp_path / "run")
    assert zipfile.is_zipfile(ckdir / "good.ckpt")


def test_training_sampler_is_a_function_of_seed_epoch_and_position():
    from vcm.data.datamodule import TrainSampler

    s = TrainSampler(7, seed=3)
    e0 = list(s)
    assert sorted(i for _, i in e0) == list(range(7)) and list(s) == e0
    s.set_epoch(1)
    assert list(s) != e0 and sorted(i for _, i in s) == list(range(7))
    full = list(s)
    s.start = 4  # resume after 4 samples of epoch 1: the rest of the same order, once
    assert list(s) == full[4:] and list(s) == full
    s.start = 4
    s.set_epoch(2)  # a new epoch starts from its beginning
    assert len(list(s)) == 7
    # Two processes: equal-length shares (padded) covering every sample.
    shares = [list(TrainSampler(7, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 4
    assert {i for sh in shares for _, i in sh} == set(range(7))


# --------------------------------------------------------------------------------------------- determinism
@pytest.mark.slow
def test_same_seed_same_config_same_weights_and_metrics(tmp_path, cache):
    from vcm.cli.train import train

    def run(name, seed):
        cfg = compose(TINY + ["model=hyperprior", "trainer.max_steps=3", f"seed={seed}"], tmp_path / name, cache)
        metrics, _ = train(cfg)
        return metrics, _state(tmp_path / name / "run" / "checkpoints" / "last.ckpt")["state_dict"]

    m1, s1 = run("a", 0)
    m2, s2 = run("b", 0)
    for k in ("val/bpp_real", "val/psnr", "val/bpp_estimated", "test/bpp_real", "test/psnr"):
        assert m1[k] == m2[k], k
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    _, s3 = run("c", 1)  # another seed trains other weights: the comparison above can fail
    assert not all(torch.equal(s1[k], s3[k]) for k in s1 if s1[k].is_floating_point())


@pytest.fixture(scope="module")
def hyperprior_ckpt(tmp_path_factory, cache) -> Path:
    from vcm.cli.train import train

    tmp = tmp_path_factory.mktemp("hp")
    train(compose(TINY + ["model=hyperprior", "trainer.max_steps=3", "test_after_fit=false"], tmp, cache))
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.guard
def test_bitstream_decodes_to_identical_pixels_in_other_processes(tmp_path, hyperprior_ckpt, cache):
    from vcm.cli.bitstream import CodecSession
    from vcm.data.kitti import load_image

    frame = cache / "synthetic" / "n8_s0_128x320" / "training" / "image_2" / "000001.png"
    stream = tmp_path / "f.vcm"
    enc = run_cli("vcm-compress", ["--ckpt", hyperprior_ckpt, frame, stream])
    assert enc.returncode == 0, enc.stderr
    # Two decoders in two fresh processes, at the same time.
    procs = [run_cli("vcm-decompress", ["--ckpt", hyperprior_ckpt, stream, tmp_path / f"d{i}.png"], wait=False) for i in (1, 2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    d1, d2 = (np.asarray(Image.open(tmp_path / f"d{i}.png")) for i in (1, 2))
    session = CodecSession(hyperprior_ckpt)
    here = session.decompress(stream.read_bytes()).permute(1, 2, 0).numpy()
    assert d1.shape == (128, 320, 3) and np.array_equal(d1, d2) and np.array_equal(d1, here)
    # The encoder is deterministic across processes too: the same bytes from this process.
    assert session.compress(load_image(frame)) == stream.read_bytes()
    assert not np.array_equal(d1, np.asarray(Image.open(frame).convert("RGB")))  # lossy: a real decode


@pytest.mark.slow
@pytest.mark.guard
def test_lmsfc_context_model_bitstream_decodes_bit_identically_in_other_processes(tmp_path):
    """The autoregressive context model recomputes the Gaussian parameters from decoded symbols; any
    float difference between encoder and decoder would derail the rANS decoder. Encoded here (one
    thread), decoded in two other processes (1 and 2 threads) and here.

    The entropy-decoded latent ``y_hat`` is identical everywhere. The reconstructed features are
    bit-identical when the decoder uses the encoder's thread count; with another thread count the
    synthesis convolutions may round differently (measured: 1 ulp, 1.2e-7, in P2), hence the
    tolerance for that case only.
    """
    import subprocess
    import sys

    from helpers import main as helper_main
    from helpers import subprocess_env

    assert torch.get_num_threads() == 1
    assert helper_main(["lmsfc-encode", str(tmp_path)]) == 0
    script = Path(__file__).with_name("helpers.py")
    procs = [subprocess.Popen([sys.executable, str(script), "lmsfc-decode", str(tmp_path), f"p{t}", str(t)],
                              env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for t in (1, 2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    enc_side = torch.load(tmp_path / "encoder_side.pt", weights_only=True)
    assert int((enc_side["y_hat"] != 0).sum()) > 20  # the context model had symbols to work on
    model = tiny_lmsfc()
    strings, z_shape, _, sizes, _ = model._encode(tiny_levels())
    here = model.decompress(strings, z_shape, sizes)["levels_hat"]
    pids = set()
    for t in (1, 2):
        dec = torch.load(tmp_path / f"decoded_p{t}.pt", weights_only=True)
        info = json.loads((tmp_path / f"decoded_p{t}.json").read_text())
        assert info["threads"] == t
        pids.add(info["pid"])
        assert torch.equal(dec["y_hat"], enc_side["y_hat"]), t
        for k in ("p2", "p3", "p4", "p5", "p6"):
            if t == 1:
                assert torch.equal(dec[k], enc_side[k]) and torch.equal(dec[k], here[k]), k
            else:
                torch.testing.assert_close(dec[k], enc_side[k], rtol=0, atol=1e-5)
    assert os.getpid() not in pids and len(pids) == 2


# --------------------------------------------------------------------------------------------- sweeps
@pytest.mark.slow
def test_failing_sweep_point_is_recorded_and_the_other_points_complete(tmp_path, cache):
    sweep = tmp_path / "sweep"
    r = run_cli("vcm-train", ["-m"] + TINY + ["model=factorized", "trainer.max_steps=2", "lmbda=0.01,-1,0.02",
                                              f"paths.cache_dir={cache}", f"paths.results_dir={tmp_path / 'results'}",
                                              f"hydra.sweep.dir={sweep}"], timeout=400)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out  # the sweep as a whole failed ...
    # ... saying which point, while the good points wrote their records.
    assert "sweep point #1 (" in out and "lmbda=-1" in out and "FAILED" in out
    assert "1 sweep point(s) failed" in out
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    assert sorted(rec["params"]["lmbda"] for rec in records) == [0.01, 0.02]
    failure = json.loads((sweep / "1" / "FAILED.json").read_text())
    assert failure["error_type"] == "ConfigError" and "lmbda=-1" in failure["overrides"]
    assert "expected a non-negative" in failure["error"]
    for good in ("0", "2"):
        assert not (sweep / good / "FAILED.json").exists() and (sweep / good / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((sweep / "failures.json").read_text())
    assert [f["job_num"] for f in summary["failed"]] == [1]


@pytest.mark.slow
def test_failing_eval_sweep_point_is_recorded(tmp_path, cache):
    sweep = tmp_path / "sweep"
    r = run_cli("vcm-eval", ["-m", "data=synthetic", "data.synthetic_num=8", "data.synthetic_size=[128,320]",
                             "codec=jpeg", "codec.quality=50,-5,80", "max_images=1", f"paths.cache_dir={cache}",
                             f"paths.results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={sweep}"], timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "sweep point #1 (" in out and "codec.quality=-5" in out, out
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    assert sorted(rec["params"]["quality"] for rec in records) == [50, 80]
    failure = json.loads((sweep / "1" / "FAILED.json").read_text())
    assert "codec.quality=-5" in failure["overrides"] and "quality must be in 1..100, got -5" in failure["error"]


def test_run_job_raises_outside_a_multirun_and_records_inside_one(tmp_path, monkeypatch):
    from vcm.callbacks import sweep

    def fail(cfg):
        raise ValueError(f"bad point {cfg}")

    with pytest.raises(ValueError, match="bad point 7"):
        sweep.run_job(fail, 7)  # a single run fails as before
    monkeypatch.setattr(sweep, "_multirun_job", lambda: {"num": 4, "overrides": ["lmbda=7"], "output_dir": str(tmp_path / "4")})
    assert sweep.run_job(fail, 7) is None
    rec = json.loads((tmp_path / "4" / "FAILED.json").read_text())
    assert rec["job_num"] == 4 and rec["error"] == "bad point 7" and "ValueError" in rec["traceback"]
    assert sweep.collect_failures(tmp_path)[0]["overrides"] == ["lmbda=7"]
    assert sweep.run_job(lambda c: c + 1, 7) == 8 and sweep.collect_failures(tmp_path) == []  # a rerun that works


def test_local_multi_process_training_is_refused_inside_a_multirun(tmp_path, cache, monkeypatch):
    """Lightning starts DDP processes by re-running the command line, which inside ``-m`` would
    start the whole sweep again in every process: refused with a clear message instead."""
    from vcm.callbacks import sweep
    from vcm.cli.train import train
    from vcm.errors import ConfigError

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(sweep, "_multirun_job", lambda: {"num": 0, "overrides": [], "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"re-running the command line, which cannot work inside a Hydra multirun"):
        train(compose(TINY + ["model=factorized", "trainer=ddp_cpu"], tmp_path, cache))


# --------------------------------------------------------------------------------------------- non-finite loss
@pytest.fixture
def nan_at_step_1(monkeypatch):
    """Make the training loss NaN once, at global step 1."""
    from vcm.modules.image_codec import ImageCodecModule

    original = ImageCodecModule.compute_loss
    state = {"done": False}

    def compute_loss(self, batch):
        out = original(self, batch)
        if self.training and self.global_step == 1 and not state["done"]:
            state["done"] = True
            out = dict(out, loss=out["loss"] * float("nan"))
        return out

    monkeypatch.setattr(ImageCodecModule, "compute_loss", compute_loss)
    return state


@pytest.mark.slow
def test_nonfinite_loss_stops_the_run_naming_the_step(tmp_path, cache, nan_at_step_1):
    from vcm.cli.train import train
    from vcm.modules.base import NonFiniteLossError

    results = tmp_path / "x" / "results"
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss nan at global step 1 \(epoch 0, batch 1\)"):
        train(compose(TINY + ["model=factorized"], tmp_path / "x", cache))
    assert nan_at_step_1["done"] and snapshot(results) == {}


@pytest.mark.slow
def test_nonfinite_loss_skip_mode_skips_only_that_batch(tmp_path, cache, nan_at_step_1):
    from vcm.cli.train import train

    metrics, objects = train(compose(TINY + ["model=factorized", "model.nonfinite=skip"], tmp_path, cache))
    model, trainer = objects["model"], objects["trainer"]
    assert nan_at_step_1["done"] and model.skipped_batches == 1
    # 4 optimiser steps from 5 batches; the weights and the metrics stay finite.
    assert trainer.global_step == 4 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert np.isfinite(metrics["val/psnr"]) and np.isfinite(metrics["test/bpp_real"])


# --------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_cpu_two_processes_count_every_validation_image_once(tmp_path, cache):
    """trainer=ddp_cpu (2 gloo processes) from vcm-train: 3 validation and 3 test frames, so one
    process gets two and the other one (a padding sampler would evaluate one frame twice)."""
    from vcm.cli.eval import evaluate

    data = ["data=synthetic", "data.synthetic_num=8", "data.synthetic_size=[128,320]", "data.split_fractions=[0.25,0.375,0.375]"]
    run, check = tmp_path / "run", tmp_path / "ddp.json"
    r = run_cli("vcm-train", data + ["data.crop_size=[64,64]", "data.batch_size=2", "model=factorized", "quality=1",
                                     "model.codec.N=16", "model.codec.M=16", "trainer=ddp_cpu", "trainer.max_steps=2",
                                     "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
                                     "logger=csv", f"paths.cache_dir={cache}", f"paths.results_dir={tmp_path / 'results'}",
                                     f"hydra.run.dir={run}", "+callbacks.sync._target_=helpers.DdpSyncCheck",
                                     f"+callbacks.sync.out={check}"], timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    split = json.loads((run / "split.json").read_text())
    ddp = json.loads(check.read_text())
    assert ddp["world_size"] == 2 and len(set(ddp["param_hashes"])) == 1  # the processes stayed in step
    shares = ddp["val_shares"]
    assert sorted(len(s) for s in shares) == [1, 2] and sorted(shares[0] + shares[1]) == split["val"]

    rec = _record(tmp_path / "results")
    names = [p["name"] for p in rec["per_image"]]
    assert rec["num_images"] == 3 and sorted(names) == split["test"]
    psnrs = [p["psnr"] for p in rec["per_image"]]
    assert len(set(psnrs)) == 3 and rec["metrics"]["psnr"] == pytest.approx(float(np.mean(psnrs)), rel=1e-12)

    # The logged validation metrics equal a single-process evaluation of the final checkpoint.
    logged = [r for r in _csv_rows(run / "csv" / "metrics.csv") if r.get("val/psnr")][-1]
    cfg = compose(["codec=checkpoint", f"codec.ckpt={run / 'checkpoints' / 'last.ckpt'}", "split=val"] + data,
                  tmp_path / "single", cache, name="eval")
    _, single = evaluate(cfg)
    assert single["num_images"] == 3
    for k in ("psnr", "bpp_real", "bpp_estimated"):
        assert float(logged[f"val/{k}"]) == pytest.approx(single["metrics"][k], rel=1e-6), k


def test_gathered_evaluation_counts_an_image_twice_only_once(monkeypatch):
    """Safety net behind the unpadded evaluation shares: if a padding sampler (Lightning's
    DistributedSampler) gives one frame to two processes, the gathered metrics count it once."""
    from vcm.codecs.image import factorized
    from vcm.evaluation.pipeline import MetricAccumulator
    from vcm.losses.image import RateDistortionLoss
    from vcm.modules import base
    from vcm.modules.image_codec import ImageCodecModule

    module = ImageCodecModule(factorized(N=8, M=8), RateDistortionLoss(lmbda=0.01))
    frames = {n: {"name": n, "height": 4, "width": 4, "bits": b, "bpp_real": b / 16, "psnr": p}
              for n, b, p in (("a", 16, 10.0), ("b", 32, 20.0), ("c", 48, 60.0))}
    rank0, rank1 = [frames["a"], frames["c"]], [frames["b"], frames["a"]]  # "a" padded onto rank 1
    monkeypatch.setattr(base, "gather_objects", lambda obj: [(rank0, [], []), (rank1, [], [])])
    module._acc["val"] = MetricAccumulator([], detection=False)
    metrics = module._end_eval("val")
    assert sorted(p["name"] for p in module.last_eval["val"]["per_image"]) == ["a", "b", "c"]
    assert metrics["psnr"] == pytest.approx(30.0) and metrics["bpp_real"] == pytest.approx(2.0)
