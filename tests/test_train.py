"""End-to-end: short training runs of every model family with real-bitstream validation,
results records, checkpoints, ``vcm-eval``, the bitstream CLI and the wandb offline logger."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_DETECTOR, TINY_TRAIN, compose
from PIL import Image

from vcm.rd.record import read_record

SMALL_IMAGE_CODEC = ["model.codec.N=32", "model.codec.M=48"]


def _check_metric_values(metrics: dict, keys) -> None:
    """Each key is there with a value in its range: NaN or a negative rate fails."""
    for k in keys:
        assert k in metrics, k
        v = metrics[k]
        assert isinstance(v, float) and math.isfinite(v), (k, v)
        name = k.split("/", 1)[1]
        if name.startswith(("bpp", "mse", "psnr", "roi_psnr", "bg_psnr")):
            assert v > 0, (k, v)  # a run that codes nothing, or decodes exactly, is broken at this size
        if name.startswith(("map", "kitti_ap")):
            assert 0.0 <= v <= 1.0 + 1e-9, (k, v)
        if name.startswith(("psnr", "roi_psnr", "bg_psnr")):
            assert 3.0 < v < 60.0, (k, v)  # a few steps from scratch decode at 4-8 dB


def _train(overrides, tmp_path):
    from vcm.cli.train import train

    cfg = compose(TINY_TRAIN + overrides, tmp_path, name="train")
    return train(cfg)


def _check_run_dir(tmp_path: Path, metrics: dict) -> dict:
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "split.json").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    split = json.loads((run / "split.json").read_text())
    assert set(split["train"]).isdisjoint(split["test"]) and split["train"]
    rec = read_record(metrics["record_path"])
    for p in rec["per_image"]:
        # bpp_real is the size of the complete bitstream over the original pixels.
        assert p["bpp_real"] == pytest.approx(p["bits"] / (p["height"] * p["width"]))
    return rec


@pytest.fixture(scope="module")
def trained_hyperprior(tmp_path_factory, kitti_tiny_root):
    tmp = tmp_path_factory.mktemp("hyperprior")
    metrics, objects = _train(["data=kitti_tiny", "model=hyperprior", "quality=1"] + SMALL_IMAGE_CODEC, tmp)
    return tmp, metrics, objects


@pytest.mark.slow
def test_spine_on_kitti_tiny(trained_hyperprior):
    tmp, metrics, _ = trained_hyperprior
    for k in ("val/bpp_real", "val/bpp_estimated", "val/psnr", "val/ms_ssim", "val/enc_s", "val/dec_s", "test/bpp_real"):
        assert k in metrics and np.isfinite(metrics[k]), k
    assert metrics["val/bpp_real"] > 0
    rec = _check_run_dir(tmp, metrics)
    assert rec["codec"] == "hyperprior" and rec["params"] == {"quality": 1, "lmbda": 0.0018}
    assert rec["dataset"] == "kitti_tiny" and rec["split"] == "test" and rec["num_images"] == 1
    # A checkpoint holds the codec and its config, never a detector.
    ck = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["vcm"]["codec_name"] == "hyperprior" and all(k.startswith("codec.") for k in ck["state_dict"])


@pytest.mark.slow
def test_a_checkpoint_evaluated_by_vcm_eval_joins_its_training_curve(trained_hyperprior, tmp_path, capsys):
    from vcm.cli.eval import evaluate
    from vcm.rd.table import curve_label

    tmp, metrics, _ = trained_hyperprior
    trained = read_record(metrics["record_path"])
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    _, rec = evaluate(compose(["codec=checkpoint", f"codec.ckpt={ckpt}", "data=kitti_tiny", "max_images=1"], tmp_path / "e", name="eval"))
    assert curve_label(rec["codec"], rec["params"]) == curve_label(trained["codec"], trained["params"]) == "hyperprior"
    # vcm-eval ends with one line of means
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("hyperprior, mean of 1 image: bpp_real ") and " psnr " in last and "dB" in last


@pytest.mark.slow
@pytest.mark.guard
def test_spine_on_synthetic(tmp_path):
    # also: a scheduler stepped per training batch (milestone at step 3 of 4)
    sched = ["~model.scheduler", "model.scheduler_interval=step", "model.optimizer.lr=1.0e-3",
             "+model.scheduler={_target_:torch.optim.lr_scheduler.MultiStepLR,_partial_:true,milestones:[3],gamma:0.1}"]
    metrics, objects = _train(["data=synthetic", "data.synthetic_num=8", "data.synthetic_size=[160,480]",
                               "model=factorized", "quality=1", "model.codec.N=16", "model.codec.M=24", *sched], tmp_path)
    assert np.isfinite(metrics["val/bpp_real"]) and np.isfinite(metrics["val/psnr"])
    rec = _check_run_dir(tmp_path, metrics)
    assert rec["dataset"] == "synthetic" and rec["per_image"][0]["height"] == 160
    assert objects["model"]._scheduler.last_epoch == 4
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4])  # the rate each step used


@pytest.mark.slow
def test_roi_hyperprior_trains_with_frozen_detector(tmp_path, kitti_tiny_root, trained_hyperprior):
    from vcm.detectors import FrozenDetector

    # fine-tuned from the trained hyperprior of the same size (init_from)
    init = trained_hyperprior[0] / "run" / "checkpoints" / "last.ckpt"
    metrics, objects = _train(["data=kitti_tiny", "model=roi_hyperprior", "model.codec.N=32", "model.codec.M=48",
                               "loss.alpha=0.9", f"init_from={init}"] + TINY_DETECTOR, tmp_path)
    _check_metric_values(metrics, ("val/roi_psnr", "val/bg_psnr", "val/bpp_real", "val/map_50", "val/kitti_ap_car_moderate"))
    det = objects["model"].detector
    # The detector after a training run is bitwise the detector that was configured.
    fresh = FrozenDetector.from_config(["Car", "Pedestrian", "Cyclist"], backbone="resnet18_fpn", min_size=128, max_size=416,
                                       rpn_post_nms_top_n_test=100)
    assert det.weights_hash() == fresh.weights_hash()
    assert not det.training and not any(p.requires_grad for p in det.parameters())
    fp, ff = det.state_fingerprint(), fresh.state_fingerprint()
    assert fp.keys() == ff.keys() and all(torch.equal(fp[k].cpu(), ff[k]) for k in fp)
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert not any("detector" in k for k in ck["state_dict"])
    assert ck["vcm"]["detector"]["weights_hash"] == fresh.weights_hash()
    rec = _check_run_dir(tmp_path, metrics)
    assert rec["params"]["alpha"] == 0.9 and rec["detector"]["weights_hash"] == fresh.weights_hash()
    assert ck["vcm"]["init_from"] == str(init.resolve())


@pytest.mark.slow
def test_roi_hyperprior_from_boxes_trains_evaluates_and_codes_without_a_detector(tmp_path, kitti_tiny_root,
                                                                                 trained_hyperprior, capsys):
    from vcm.cli.bitstream import CodecSession, compress_main, decompress_main
    from vcm.cli.eval import evaluate

    metrics, _ = _train(["data=kitti_tiny", "model=roi_hyperprior", "model.codec.roi_source=boxes", "detector=none",
                         "loss.alpha=0.9", *SMALL_IMAGE_CODEC], tmp_path / "t")
    for k in ("val/roi_psnr", "val/bg_psnr", "val/bpp_real"):
        assert k in metrics and np.isfinite(metrics[k]), k
    ckpt = tmp_path / "t" / "run" / "checkpoints" / "last.ckpt"
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert ck["vcm"]["codec"]["roi_source"] == "boxes" and not ck["vcm"].get("detector")
    # vcm-eval codes each frame conditioned on its own ground-truth ROI map; no detector anywhere
    _, rec = evaluate(compose(["codec=checkpoint", f"codec.ckpt={ckpt}", "data=kitti_tiny", "max_images=2"], tmp_path / "e", name="eval"))
    assert rec["detector"] is None and rec["num_images"] == 2 and np.isfinite(rec["metrics"]["roi_psnr"])
    # vcm-compress takes the ROI boxes from a KITTI label file; the decoder takes none
    root = kitti_tiny_root / "training"
    src, labels = root / "image_2" / "000001.png", root / "label_2" / "000001.txt"
    out, png = tmp_path / "f.vcm", tmp_path / "f.png"
    capsys.readouterr()
    assert compress_main(["--ckpt", str(ckpt), "--labels", str(labels), str(src), str(out)]) == 0
    assert decompress_main(["--ckpt", str(ckpt), str(out), str(png)]) == 0
    # both commands print the size the same way (W x H)
    h, w = np.asarray(Image.open(src)).shape[:2]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(f" {w}x{h} (W x H)," in line for line in printed), printed
    assert np.asarray(Image.open(png)).shape == np.asarray(Image.open(src).convert("RGB")).shape
    session = CodecSession(ckpt)
    from vcm.data.kitti import load_image

    image = load_image(src)
    target = session.target_from_labels(labels, *image.shape[1:])
    assert len(target["boxes"]) > 0 and session.compress(image, target) == out.read_bytes()
    # the boxes reach the encoder (with projections as after a longer training: 4 steps leave them near 0;
    # the map reaches the encoder as it is, coverage in [0, 1], no longer standardised: larger weights)
    with torch.no_grad():
        for name in ("proj_p3", "proj_p4", "proj_p5", "proj_obj"):
            getattr(session.runner.model, name).weight.fill_(4.0)
    empty = tmp_path / "none.txt"
    empty.write_text("")
    assert session.compress(image, session.target_from_labels(empty, *image.shape[1:])) != session.compress(image, target)
    # missing labels, labels for a codec that takes none: clear errors, nothing written
    capsys.readouterr()
    assert compress_main(["--ckpt", str(ckpt), str(src), str(tmp_path / "g.vcm")]) == 2
    assert "--labels" in capsys.readouterr().err and not (tmp_path / "g.vcm").exists()
    plain = trained_hyperprior[0] / "run" / "checkpoints" / "last.ckpt"
    assert compress_main(["--ckpt", str(plain), "--labels", str(labels), str(src), str(tmp_path / "h.vcm")]) == 2
    assert "takes no ROI boxes" in capsys.readouterr().err and not (tmp_path / "h.vcm").exists()
    assert compress_main(["--ckpt", str(ckpt), "--labels", str(tmp_path / "nope.txt"), str(src), str(tmp_path / "i.vcm")]) == 2
    assert "nope.txt" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lmsfc", "ta_msf"])
def test_feature_codecs_train_with_split_inference(tmp_path, kitti_tiny_root, model):
    metrics, _objects = _train(["data=kitti_tiny", f"model={model}", "quality=1", "model.codec.N=32", "model.codec.M=32",
                               "model.warmup_epochs=0"] + TINY_DETECTOR, tmp_path)
    _check_metric_values(metrics, ("val/bpp_real", "val/bpp_estimated", "val/mse_p2", "val/mse_p6", "val/map_50",
                                   "val/kitti_ap_car_moderate"))
    if model == "ta_msf":
        assert "train/det_loss_epoch" in metrics and metrics["train/det_weight_epoch"] == pytest.approx(0.1 * 0.0125 / 30)
    _check_run_dir(tmp_path, metrics)


@pytest.fixture(scope="module")
def trained_detector(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detector")
    metrics, _objects = _train(["model=detector", "data=synthetic", "data.synthetic_num=8", "data.synthetic_size=[160,480]",
                               "data.crop_size=null", "detector=mobilenet_v3_fpn", "model.warmup_steps=2"] + TINY_DETECTOR, tmp)
    return tmp, metrics


@pytest.mark.slow
def test_detector_training_writes_best_checkpoint(trained_detector):
    _tmp, metrics = trained_detector
    assert "val/map_50" in metrics and "val/kitti_ap_car_moderate" in metrics
    assert Path(metrics["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_eval_none_with_trained_detector_on_kitti_tiny(trained_detector, tmp_path, kitti_tiny_root):
    from vcm.cli.eval import evaluate

    _, metrics = trained_detector
    cfg = compose(["codec=none", "data=kitti_tiny", "detector=mobilenet_v3_fpn",
                                  f"detector.checkpoint={metrics['best_checkpoint']}", "max_images=2"] + TINY_DETECTOR, tmp_path, name="eval")
    path, _rec = evaluate(cfg)
    on_disk = read_record(path)
    assert on_disk["codec"] == "none" and on_disk["num_images"] == 2
    for key in ("codec", "params", "dataset", "split", "num_images", "detector", "metrics", "per_image", "git_commit", "config"):
        assert key in on_disk
    m = on_disk["metrics"]
    assert m["bpp_real"] == 24.0
    for k in ("map", "map_50", "map_75", "ap_car"):
        assert k in m
    for c in ("car", "pedestrian", "cyclist"):
        for d in ("easy", "moderate", "hard"):
            assert f"kitti_ap_{c}_{d}" in m


@pytest.mark.slow
def test_eval_checkpoint_and_anchor_records(trained_hyperprior, tmp_path, kitti_tiny_root):
    from vcm.cli.eval import evaluate

    tmp, _, _ = trained_hyperprior
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    cfg = compose(["codec=checkpoint", f"codec.ckpt={ckpt}", "data=kitti_tiny", "max_images=1"], tmp_path, name="eval")
    _, rec = evaluate(cfg)
    assert rec["codec"] == "hyperprior" and rec["metrics"]["bpp_real"] > 0 and "bpp_estimated" in rec["metrics"]
    cfg = compose(["codec=jpeg", "codec.quality=50", "data=kitti_tiny", "max_images=1"], tmp_path, name="eval")
    _, rec = evaluate(cfg)
    assert rec["codec"] == "jpeg" and rec["params"]["quality"] == 50 and rec["metrics"]["psnr"] > 20


@pytest.mark.slow
def test_compress_decompress_cli_round_trip(trained_hyperprior, tmp_path, kitti_tiny_root):
    from vcm.cli.bitstream import compress_main, decompress_main

    tmp, _, _ = trained_hyperprior
    ckpt = str(tmp / "run" / "checkpoints" / "last.ckpt")
    src = kitti_tiny_root / "training" / "image_2" / "000001.png"
    out, png1, png2 = tmp_path / "f.vcm", tmp_path / "a.png", tmp_path / "b.png"
    assert compress_main(["--ckpt", ckpt, str(src), str(out)]) == 0
    assert decompress_main(["--ckpt", ckpt, str(out), str(png1)]) == 0
    assert decompress_main(["--ckpt", ckpt, str(out), str(png2)]) == 0
    a, b = np.asarray(Image.open(png1)), np.asarray(Image.open(png2))
    orig = np.asarray(Image.open(src).convert("RGB"))
    assert a.shape == orig.shape and np.array_equal(a, b)
    # The same frame through vcm-eval's path gives the same number of bytes.
    from vcm.evaluation.runners import runner_from_checkpoint

    runner = runner_from_checkpoint(ckpt)
    data = runner.encode(torch.from_numpy(orig).permute(2, 0, 1).contiguous())
    assert len(data) == out.stat().st_size
    # A truncated file fails with a clear message, never a crash.
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    assert decompress_main(["--ckpt", ckpt, str(out), str(tmp_path / "c.png")]) == 2
    assert not (tmp_path / "c.png").exists()


@pytest.mark.slow
def test_wandb_offline_logger_writes_run_files(tmp_path, kitti_tiny_root, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    _metrics, _objects = _train(["data=kitti_tiny", "model=factorized", "quality=1", "model.codec.N=16", "model.codec.M=24",
                               "logger=wandb", "test_after_fit=false"], tmp_path)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = list(runs[0].glob("*.wandb"))
    assert files and files[0].stat().st_size > 0
    import wandb

    wandb.finish()
