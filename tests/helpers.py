"""Shared pieces of the reliability and bad-input tests: tiny configs, subprocess runs, a test-only
callback that kills its own process, and a small L-MSFC coding script run in separate processes.

Run as a script, it codes or decodes with a tiny L-MSFC context model (see :func:`main`).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "vcm" / "conf"
TESTS = Path(__file__).resolve().parent
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

# Tiny-training presets (one idea: a training run of a few steps on CPU). TINY_TRAIN: the trainer and
# the data loading; TINY_CODEC: a 16-channel codec at quality 1; SYNTH: 8 synthetic frames of 128x320
# (6 train, 1 val, 1 test); TINY = all three. TINY_DETECTOR: a detector that runs fast at small sizes.
SYNTH = ["data=synthetic", "data.synthetic_num=8", "data.synthetic_size=[128,320]", "data.num_workers=0"]
TINY_TRAIN = [
    "trainer=debug", "trainer.enable_progress_bar=false", "logger=csv",
    "data.batch_size=2", "data.crop_size=[64,64]", "data.max_eval_images=1", "data.num_workers=0",
]
TINY_CODEC = ["quality=1", "model.codec.N=16", "model.codec.M=16"]
TINY = SYNTH + TINY_TRAIN + TINY_CODEC
TINY_DETECTOR = ["detector.min_size=128", "detector.max_size=416", "+detector.rpn_post_nms_top_n_test=100"]


def synthetic_cache(base: Path) -> Path:
    """A cache folder holding the synthetic set of ``SYNTH`` (generated once, reused by every run)."""
    from vcm.data.synthetic import generate

    cache = base / "cache"
    generate(cache / "synthetic" / "n8_s0_128x320", num=8, seed=0, width=320, height=128)
    return cache


def compose(overrides: list[str], tmp: Path | None = None, cache: Path | None = None, name: str = "train",
            hydra: bool = False):
    """``vcm/conf/<name>.yaml`` with overrides; run, results and cache folders under ``tmp`` (when given).

    ``hydra=True`` keeps the ``hydra`` node (sweeper params, launcher) in the result.
    """
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    import vcm.utils.config  # noqa: F401  (resolvers)

    real = [o for o in overrides if o in ("data=kitti_tiny", "data=kitti_mini", "data=coco")]
    if real and not (SHARED_DATA / real[0].split("=")[1].replace("coco", "coco_tiny")).is_dir():
        import pytest

        pytest.skip(f"{real[0]} needs the real data in {SHARED_DATA} (../shared/data beside the project)")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _compose(name, overrides=overrides, return_hydra_config=hydra)
    with open_dict(cfg):
        if tmp is not None:
            cfg.paths.output_dir = str(tmp / "run")
            cfg.paths.results_dir = str(tmp / "results")
            cfg.paths.cache_dir = str(cache or tmp / "cache")
        elif hydra:
            cfg.paths.output_dir = "/tmp/vcm-compose"  # hydra.run.dir interpolates it
    return cfg


def config_options(group: str) -> list[str]:
    """The options of config group ``vcm/conf/<group>/`` (files starting with ``_`` are internal)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def experiments(command: str) -> list[str]:
    """The experiments (``vcm/conf/experiment/``) of ``vcm-train`` (``command="train"``: they choose a
    model) or of ``vcm-eval`` (``"eval"``: they choose a codec, e.g. an anchor's sweep)."""
    chooses = "override /codec" if command == "eval" else "override /model"
    return [o for o in config_options("experiment") if chooses in (CONF / "experiment" / f"{o}.yaml").read_text()]


def subprocess_env() -> dict[str, str]:
    """Environment of the ``vcm-*`` subprocesses: one thread (the machine is shared), tests importable."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYDRA_FULL_ERROR="0", WANDB_MODE="offline",
               PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: command name -> ``module:function``."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def run_cli(tool: str, args: list[str], timeout: float = 300, cwd: Path | None = None, wait: bool = True):
    """Run the console script ``tool`` (as ``[project.scripts]`` maps it, through this interpreter, so the
    checkout under test runs even when the installed scripts are older) with ``args``; returns the
    CompletedProcess (or the Popen when ``wait`` is False)."""
    module, func = console_scripts()[tool].split(":")
    # argv[0] is the module's file: Lightning's DDP launcher starts the other processes by running it
    launcher = f"import sys, {module} as m; sys.argv[0] = m.__file__; sys.exit(m.{func}())"
    cmd = [sys.executable, "-c", launcher, *[str(a) for a in args]]
    if not wait:
        return subprocess.Popen(cmd, env=subprocess_env(), cwd=cwd or ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=subprocess_env(), cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content (to check that nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


class KillAtStep(L.Callback):
    """Test-only: SIGKILL this process when the batch after global step ``step`` starts.

    By then ModelCheckpoint has written the checkpoint of step ``step`` (every_n_train_steps), and
    the process dies in the middle of an epoch without any chance to clean up, as with ``kill -9``.
    """

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- L-MSFC
def tiny_lmsfc():
    """A small L-MSFC with the autoregressive context model (fixed random weights, CDFs updated)."""
    import torch

    from vcm.codecs.lmsfc import LMSFC

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LMSFC(N=8, M=8, entropy_model="context", feature_channels=8).eval()
    model.update(force=True)
    return model


def fpn_sizes(h: int, w: int, names: tuple[str, ...] = ("p2", "p3", "p4", "p5", "p6")) -> dict[str, tuple[int, int]]:
    """(h, w) of each FPN level of an h x w image: level pk at stride 2^k, rounded up, at least 1."""
    return {n: (max(1, -(-h // 2 ** int(n[1:]))), max(1, -(-w // 2 ** int(n[1:])))) for n in names}


def fpn_levels(sizes, batch: int = 1, seed: int = 0, channels: int = 256, scale: float = 1.0, smooth: bool = False):
    """FPN-like feature levels from a fixed seed (the one generator of the tests).

    Args:
        sizes: name -> (h, w) (e.g. :func:`fpn_sizes`), or a list of (h, w) for p2, p3, ...
        batch, channels: leading dimensions [batch, channels, h, w].
        seed: of the torch.Generator the levels are drawn from, in level order.
        scale: factor on the N(0, 1) values (e.g. 4 for many non-zero latent symbols).
        smooth: spatially smooth levels of a different range per level (bilinear upsampling of a
            1/3-size draw, times k-1, plus 0.1 k for level pk), closer to real features.

    Returns:
        OrderedDict name -> float32 tensor.
    """
    from collections import OrderedDict

    import torch
    import torch.nn.functional as F

    if not isinstance(sizes, dict):
        sizes = {f"p{2 + i}": tuple(hw) for i, hw in enumerate(sizes)}
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, (h, w) in sizes.items():
        if smooth:
            k = int(name[1:])
            coarse = torch.randn(batch, channels, max(1, h // 3), max(1, w // 3), generator=g)
            out[name] = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) * (k - 1) + 0.1 * k
        else:
            out[name] = scale * torch.randn(batch, channels, h, w, generator=g)
    return out


def tiny_levels():
    """P2..P5 of a 64x96 "image" (strides 4..32), 8 channels, large enough that y has many non-zero symbols."""
    return fpn_levels(fpn_sizes(64, 96, ("p2", "p3", "p4", "p5")), channels=8, seed=1, scale=4.0)


def main(argv: list[str]) -> int:
    """``python helpers.py lmsfc-encode OUT`` / ``lmsfc-decode OUT NAME [THREADS]``.

    encode: writes the bitstream (vcm container), the encoder's own reconstruction (from the
    ``y_hat`` it coded) and the model state; decode: rebuilds the model from the state file, decodes
    and writes the levels.
    """
    import torch

    from vcm.codecs.base import weights_hash
    from vcm.codecs.container import pack, unpack

    cmd, out = argv[0], Path(argv[1])
    if cmd == "lmsfc-encode":
        model = tiny_lmsfc()
        strings, z_shape, y_hat, sizes, _ = model._encode(tiny_levels())
        enc_side = model._reconstruct(y_hat, sizes)
        data = pack(model.codec_name, weights_hash(model), (64, 96), strings, z_shape,
                    {"sizes": [v for hw in sizes for v in hw]})
        (out / "stream.vcm").write_bytes(data)
        torch.save(model.state_dict(), out / "model.pt")
        torch.save({"y_hat": y_hat.clone(), **{k: v.clone() for k, v in enc_side.items()}}, out / "encoder_side.pt")
        return 0
    if cmd == "lmsfc-decode":
        name = argv[2]
        torch.set_num_threads(int(argv[3]) if len(argv) > 3 else 1)
        from compressai.models.base import CompressionModel

        from vcm.codecs.lmsfc import LMSFC

        model = LMSFC(N=8, M=8, entropy_model="context", feature_channels=8).eval()
        CompressionModel.load_state_dict(model, torch.load(out / "model.pt", weights_only=True))
        p = unpack((out / "stream.vcm").read_bytes(), expected_codec="lmsfc", expected_hash=weights_hash(model))
        flat = list(p.extra["sizes"])
        captured = {}
        reconstruct = model._reconstruct

        def keep_y_hat(y_hat, sizes):
            captured["y_hat"] = y_hat.clone()
            return reconstruct(y_hat, sizes)

        model._reconstruct = keep_y_hat
        levels = model.decompress(p.strings, p.shape, [flat[i:i + 2] for i in range(0, len(flat), 2)])["levels_hat"]
        torch.save({"y_hat": captured["y_hat"], **{k: v.clone() for k, v in levels.items()}}, out / f"decoded_{name}.pt")
        (out / f"decoded_{name}.json").write_text(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads()}))
        return 0
    raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


class DdpSyncCheck(L.Callback):
    """Test-only: record what every DDP process did, gathered on process 0 into a JSON file.

    ``param_hashes``: a hash of each process's parameters at the end of training (they must agree);
    ``val_shares``: the frame names each process evaluated in the last validation.
    """

    def __init__(self, out: str):
        self.out = Path(out)
        self.val_shares: list = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        from vcm.modules.base import gather_objects

        names = [m.get("name") for m in pl_module._acc["val"].per_image]
        self.val_shares = gather_objects(names)

    def on_train_end(self, trainer, pl_module) -> None:
        import hashlib

        from vcm.modules.base import gather_objects

        h = hashlib.sha256()
        for name, p in sorted(pl_module.codec.named_parameters()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        hashes = gather_objects(h.hexdigest())
        if trainer.global_rank == 0:
            self.out.write_text(json.dumps({"param_hashes": hashes, "val_shares": self.val_shares,
                                            "world_size": trainer.world_size}))
