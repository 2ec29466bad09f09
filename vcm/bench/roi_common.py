"""What the ROI benches share: the kitti_mini frames and the shipped detector, built as vcm-eval builds
them, and a per-image measurement that writes the same records as ``vcm-eval``.

Used by :mod:`vcm.cli.bench_roi` and :mod:`vcm.cli.bench_teleop`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

DETECTOR = "kitti_mobilenet_v2"


def compose_eval(overrides: list[str]):
    """The ``vcm-eval`` config with ``overrides`` (Hydra compose, no run directory)."""
    from hydra import compose, initialize_config_dir

    import vcm.utils.config  # noqa: F401  (resolvers)
    from vcm.utils.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def load_frames(splits: list[str], data: str = "kitti_mini") -> tuple[list[tuple[torch.Tensor, dict]], Any, Any]:
    """Frames of ``splits`` (in the split lists' order), the datamodule and its config.

    ``splits`` may name ``all_ids``: every frame of the dataset in frame-id order (a stream)."""
    import copy

    import hydra

    cfg = compose_eval([f"data={data}", f"detector={DETECTOR}", "codec=none"])
    dm = hydra.utils.instantiate(cfg.data, crop_size=None)
    dm.prepare_data()
    dm.setup()
    out = []
    for s in splits:
        if s == "all_ids":
            items = []
            for name in ("train", "val", "test"):
                ds = dm.datasets[name]
                if hasattr(ds, "transform"):
                    ds = copy.copy(ds)
                    ds.transform = None
                items.extend(ds[i] for i in range(len(ds)))
            out.extend(sorted(items, key=lambda it: str(it[1].get("name"))))
        else:
            ds = dm.datasets[s]
            out.extend(ds[i] for i in range(len(ds)))
    return out, dm, cfg


def load_detector(cfg):
    """The shipped detector, as vcm-eval builds it (``detector=kitti_mobilenet_v2``)."""
    from vcm.detectors.identity import build_detector

    return build_detector(cfg.detector).eval()


def detect(detector, image_u8: torch.Tensor) -> dict:
    """Detections of a uint8 [3,H,W] image (CPU tensors)."""
    from vcm.evaluation.runners import to_float_batch

    with torch.no_grad():
        d = detector.detect(detector.features([to_float_batch(image_u8)[0]]))[0]
    return {k: v.detach().cpu() for k, v in d.items()}


def detector_boxes(detector, image_u8: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, float]:
    """ROI boxes [K,4] the encoder's detector finds (score >= threshold), and its seconds."""
    t = time.perf_counter()
    d = detect(detector, image_u8)
    return d["boxes"][d["scores"] >= threshold].float().reshape(-1, 4), time.perf_counter() - t


def write_point(results: Path, codec: str, params: dict, per_image: list[dict], preds: list[dict] | None,
                targets: list[dict], class_names: list[str], detector, dataset: str, split: str,
                config: dict, run_name: str) -> Path:
    """One results record, as vcm-eval writes it (the same accumulator, record fields and validation)."""
    from vcm.evaluation.pipeline import MetricAccumulator, finite_or_none
    from vcm.rd.record import make_record, write_record

    acc = MetricAccumulator(class_names, detection=preds is not None)
    for i, m in enumerate(per_image):
        acc.add(m, preds[i] if preds is not None else None, targets[i])
    metrics = acc.compute()
    det_info = ({"name": getattr(detector, "backbone_name", None), "weights_hash": detector.weights_hash()}
                if preds is not None else None)
    record = make_record(codec=codec, params=dict(params), dataset=dataset, split=split, num_images=len(per_image),
                         detector=det_info, metrics=finite_or_none(metrics),
                         per_image=[finite_or_none(p) for p in acc.per_image], config=config)
    return write_record(record, results, run_name=run_name)
