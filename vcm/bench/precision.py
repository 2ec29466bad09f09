"""Benchmark 5: the fast training settings (bf16-mixed + channels-last) against fp32, and what keeps up.

Three kinds of pairs, each timed in A-B-B-A order with warm-up steps excluded
(:func:`vcm.bench.train_step._abba`), all on kitti_mini training data:

- speed-up: one training step with ``trainer.precision=bf16-mixed`` and ``model.channels_last=true``
  over the same step with ``trainer.precision=32-true``, through a real Trainer, for the hyperprior
  (goal <= 0.50), the detector and L-MSFC (reported). The two modules of a pair start from the same
  weights (same seed).
- overhead: the fast step through Lightning over a plain PyTorch loop with the same settings
  (``torch.autocast`` bf16, channels-last, the fp32 entropy models): goal <= 1.05.
- input pipeline: batches/s of the kitti_mini training loader (cached frames, the configured
  ``num_workers``) over fast training steps/s of the hyperprior on its batches: goal >= 3.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import torch

from vcm.bench.common import (
    GOALS,
    LMBDA_Q3,
    Settings,
    _describe,
    _hyperprior,
    _median,
    _ratio,
)
from vcm.bench.train_step import _abba, _image_module, _lightning_run, _plain_run

FAST = "bf16-mixed"
FP32 = "32-true"


# ---------------------------------------------------------------------------------------------- building blocks
def _compose(overrides: list[str]):
    """The ``vcm-train`` config with ``overrides`` (what ``vcm-train <overrides>`` would build)."""
    from hydra import compose, initialize_config_dir

    from vcm.utils.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def _data(root: Path, crop: int | None, batch: int) -> list[str]:
    crop_size = "null" if crop is None else f"[{crop},{crop}]"
    return ["data=kitti_mini", f"data.root={root}", f"data.crop_size={crop_size}", f"data.batch_size={batch}"]


def _datamodule(cfg):
    import hydra

    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    return dm


def _build(cfg, dm, seed: int):
    """The LightningModule ``vcm-train`` builds for ``cfg``, its weights drawn from ``seed``."""
    from vcm.modules.build import build_model

    torch.manual_seed(seed)
    return build_model(cfg, dm)


def _timed(raw: dict[str, list[float]], a: str, b: str, key: str = "step_s") -> dict[str, Any]:
    """Medians and the ``a / b`` ratios (wall and process CPU time) of an A-B-B-A pair."""
    cpu = f"{a}_step_cpu_s" in raw and f"{b}_step_cpu_s" in raw
    return {
        "raw": raw,
        "median": {k: _median(v) for k, v in raw.items() if v},
        "ratio": _ratio(raw[f"{a}_{key}"], raw[f"{b}_{key}"]),
        "cpu_ratio": _ratio(raw[f"{a}_step_cpu_s"], raw[f"{b}_step_cpu_s"]) if cpu and key == "step_s" else None,
    }


def _speedup(fast, fp32, batch, s: Settings) -> dict[str, Any]:
    """bf16-mixed (``fast``'s own layout) / fp32 training step of two modules through a Trainer."""
    raw = _abba({"fast": lambda n, warm: _lightning_run(fast, batch, n, warm, FAST),
                 "fp32": lambda n, warm: _lightning_run(fp32, batch, n, warm, FP32)}, s.prec_steps, s.prec_warmup)
    return _timed(raw, "fast", "fp32")


def _batch_shape(batch) -> list:
    images = batch[0]
    if torch.is_tensor(images):
        return list(images.shape)
    return [list(im.shape) for im in images]


def _loader_run(loader, steps: int, warmup: int) -> dict[str, list[float]]:
    """Wall time of each of ``steps`` batches drawn from ``loader`` (epoch after epoch); the first
    ``warmup`` are not kept (a new iterator starts its workers)."""
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        next(batches)
        times.append(time.perf_counter() - t0)
    return {"batch_s": times[warmup:]}


# ---------------------------------------------------------------------------------------------- the section
def bench_precision(s: Settings, data_root: Path, seed: int = 0, say=print) -> dict[str, Any]:
    """Run every pair of benchmark 5; returns the section's result (JSON-ready).

    Args:
        s: the sizes (``prec_*``, ``det_*``, ``lmsfc_*``, ``loader_batches``).
        data_root: the folder holding ``kitti_mini``.
        seed: weights of both modules of a pair, and the data's seed.
        say: progress printer.
    """
    from vcm.callbacks.frozen_detector import build_detector

    root = Path(data_root) / "kitti_mini"
    if not (root / "training" / "image_2").is_dir():
        raise FileNotFoundError(f"kitti_mini not found under {Path(data_root).resolve()}; expected {root}/training/image_2 "
                                "(pass --data <folder holding kitti_mini>)")
    seeded = [f"seed={seed}"]
    out: dict[str, Any] = {"speedup": {}}

    # The hyperprior's batch is the first batch of the loader measured below (real crops).
    cfg = _compose(seeded + _data(root, s.prec_crop, s.prec_batch))
    dm = _datamodule(cfg)
    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    batches = sum(1 for _ in loader)  # fills the frame cache
    first_epoch_s = time.perf_counter() - t0
    batch = next(iter(loader))
    fast = _image_module(_hyperprior(s.prec_nm, seed), channels_last=True)
    fp32 = _image_module(_hyperprior(s.prec_nm, seed), channels_last=False)
    say("   hyperprior: bf16-mixed + channels-last vs fp32")
    out["speedup"]["hyperprior"] = {
        "model": _describe(fast.codec, f"random init (seed {seed}), trained during the benchmark"),
        "fast_settings": "trainer.precision=bf16-mixed model.channels_last=true",
        "batch": _batch_shape(batch), **_speedup(fast, fp32, batch, s), "goal": GOALS["precision"]}

    say("   hyperprior: Lightning vs plain loop, both bf16 + channels-last")
    plain = _hyperprior(s.prec_nm, seed)
    raw = _abba({"lightning": lambda n, warm: _lightning_run(fast, batch, n, warm, FAST),
                 "plain": lambda n, warm: _plain_run(plain, batch, n, warm, LMBDA_Q3, FAST, channels_last=True)},
                s.prec_steps, s.prec_warmup)
    out["lightning_vs_plain"] = {"batch": _batch_shape(batch), **_timed(raw, "lightning", "plain"),
                                 "goal": GOALS["precision_lightning"]}

    say(f"   loader ({dm.num_workers} workers) vs fast training steps")
    loader_batches = s.loader_batches - s.loader_batches // 2
    raw = _abba({"loader": lambda n, warm: _loader_run(loader, n, warm),
                 "train": lambda n, warm: _lightning_run(fast, batch, n, warm, FAST)},
                {"loader": s.loader_batches, "train": s.prec_steps}, {"loader": 1, "train": s.prec_warmup})
    loader_s, step_s = _median(raw["loader_batch_s"]), _median(raw["train_step_s"])
    out["loader"] = {
        "data": "kitti_mini train", "num_workers": dm.num_workers, "cache_images": dm.cache_images,
        "batch": _batch_shape(batch), "batches_per_epoch": batches, "first_epoch_s": first_epoch_s,
        "timed_batches_per_run": [loader_batches, s.loader_batches - loader_batches],
        "raw": raw, "median": {k: _median(v) for k, v in raw.items() if v},
        "loader_batches_per_s": 1 / loader_s, "train_steps_per_s": 1 / step_s, "ratio": step_s / loader_s,
        "goal": GOALS["loader"]}

    say("   detector: bf16-mixed vs fp32")
    size = [] if s.det_size is None else [f"detector.min_size={s.det_size[0]}", f"detector.max_size={s.det_size[1]}"]
    cfg = _compose(seeded + _data(root, None, s.det_frames) + ["model=detector", "detector=mobilenet_v2_fpn"] + size
                   + list(s.det_overrides))
    dm = _datamodule(cfg)
    batch = next(iter(dm.train_dataloader()))
    fast, fp32 = _build(cfg, dm, seed), _build(cfg, dm, seed)
    det = fast.detector
    out["speedup"]["detector"] = {
        "model": {"detector": "faster_rcnn " + str(cfg.detector.backbone), "min_size": int(cfg.detector.min_size),
                  "max_size": int(cfg.detector.max_size), "parameters": sum(p.numel() for p in det.parameters()),
                  "weights": "ImageNet backbone (backbone_weights), random heads, trained during the benchmark"},
        "fast_settings": "trainer.precision=bf16-mixed", "note": "DetectorModule has no channels-last switch",
        "batch": _batch_shape(batch), **_speedup(fast, fp32, batch, s), "goal": None}

    say("   L-MSFC: bf16-mixed + channels-last vs fp32")
    nm = [] if s.lmsfc_nm is None else [f"model.codec.N={s.lmsfc_nm[0]}", f"model.codec.M={s.lmsfc_nm[1]}"]
    common = seeded + _data(root, s.lmsfc_crop, s.lmsfc_batch) + ["model=lmsfc", "quality=1", "detector=mobilenet_v2_fpn"] + nm
    cfg_fast, cfg_fp32 = _compose(common + ["model.channels_last=true"]), _compose(common + ["model.channels_last=false"])
    dm = _datamodule(cfg_fast)
    batch = next(iter(dm.train_dataloader()))
    fast, fp32 = _build(cfg_fast, dm, seed), _build(cfg_fp32, dm, seed)
    frozen = build_detector(cfg_fast.detector).eval().requires_grad_(False)
    for module in (fast, fp32):
        module.set_detector(frozen)  # not a submodule: in no optimiser, as FrozenDetectorCallback does
    out["speedup"]["lmsfc"] = {
        "model": {**_describe(fast.codec, f"random init (seed {seed}), trained during the benchmark"),
                  "detector": f"frozen {frozen.backbone_name} (FPN features P2..P5 of the crops)"},
        "fast_settings": "trainer.precision=bf16-mixed model.channels_last=true",
        "batch": _batch_shape(batch), **_speedup(fast, fp32, batch, s), "goal": None}
    return out
