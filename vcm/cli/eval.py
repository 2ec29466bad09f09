"""``vcm-eval``: measure one codec (learned, classical anchor, or none) on a dataset split.

Writes ONE results record (``results/<run>.json``, atomically) and prints its path. With
``save_detections=true`` it also writes the detections it scores as KITTI results files,
``<run dir>/detections/<frame>.txt`` (class name, box in original-image pixels, score last), which
``vcm-kitti-eval`` or the official devkit score to the same AP. Examples::

    vcm-eval codec=none data=kitti_tiny detector=resnet18_fpn detector.checkpoint=det.ckpt
    vcm-eval codec=checkpoint codec.ckpt=logs/train/runs/<run>/checkpoints/last.ckpt data=kitti_tiny
    vcm-eval -m codec=hevc codec.qp=22,27,32,37 data=kitti_tiny     # an RD curve, one record per QP
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from vcm.anchors.base import FeatureAnchor, ImageAnchor
from vcm.cli.hydra_app import check_overrides, run_command
from vcm.conditioning import TRAINED, conditioning
from vcm.detectors.identity import build_detector as build_detector_from_config
from vcm.detectors.identity import require_trained_detector
from vcm.errors import ConfigError
from vcm.evaluation.pipeline import MetricAccumulator, evaluate_image, finite_or_none
from vcm.evaluation.runners import AnchorFeatureRunner, AnchorImageRunner, Runner
from vcm.metrics.kitti_folder import write_results_file
from vcm.rd.record import make_record, write_record
from vcm.utils.config import CONF_DIR, check_config, to_plain
from vcm.utils.progress import progress_bar

log = logging.getLogger("vcm.eval")


def build_runner(codec_cfg: DictConfig, device: str = "cpu"):
    """Instantiate ``cfg.codec`` and wrap anchors in the runner interface."""
    obj = hydra.utils.instantiate(codec_cfg)
    if isinstance(obj, ImageAnchor):
        return AnchorImageRunner(obj)
    if isinstance(obj, FeatureAnchor):
        return AnchorFeatureRunner(obj)
    if not isinstance(obj, Runner):
        raise ConfigError(f"codec config {codec_cfg.get('_target_')} builds a {type(obj).__name__}, not an anchor or a runner")
    return obj


def build_detector(cfg: DictConfig, runner, device: str):
    """The configured detector; for learned codecs trained against a detector, the stored one by
    default, and a clear error when a configured detector's weights differ from the codec's."""
    stored = runner.meta.get("detector") or {}
    det_cfg = cfg.get("detector")
    if det_cfg is None and stored.get("config"):
        log.info("using the detector the codec was trained with (from the checkpoint)")
        det_cfg = OmegaConf.create(stored["config"])
    if det_cfg is None:
        return None
    det = build_detector_from_config(det_cfg).to(device)
    if conditioning(runner).detector(runner) == TRAINED:
        require_trained_detector(stored, det, f"codec {runner.name}")
    return det


def evaluate(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """Evaluate ``cfg.codec`` on ``cfg.split`` of ``cfg.data``; returns (record path, record)."""
    check_config(cfg)
    torch.manual_seed(int(cfg.get("seed", 0)))
    device = str(cfg.get("device", "cpu"))
    # Evaluation codes full frames: the training crop size (and its check against the frame size) does not apply.
    datamodule = hydra.utils.instantiate(cfg.data, crop_size=None)
    datamodule.prepare_data()
    datamodule.setup()
    split = str(cfg.split)
    if split == "all":
        datasets = [datamodule.datasets[s] for s in ("train", "val", "test")]
        train_ds = datasets[0]
        # Evaluation never crops: use the training frames without their training transform.
        if hasattr(train_ds, "transform"):
            train_ds = copy.copy(train_ds)
            train_ds.transform = None
            datasets[0] = train_ds
        samples = [(ds, i) for ds in datasets for i in range(len(ds))]
    elif split in datamodule.datasets:
        if split == "train":
            raise ConfigError("split=train would evaluate random training crops; use split=val, test or all")
        ds = datamodule.datasets[split]
        samples = [(ds, i) for i in range(len(ds))]
    else:
        raise ConfigError(f"split={split!r}; expected one of train, val, test, all")
    if cfg.get("max_images"):
        samples = samples[: int(cfg.max_images)]
    if not samples:
        raise ConfigError(f"the {split} split of {datamodule.name} is empty")

    runner = build_runner(cfg.codec, device)
    detector = build_detector(cfg, runner, device)
    labelled = getattr(datamodule, "has_labels", True)
    if not labelled and detector is not None:
        if not conditioning(runner).image_only or cfg.get("detector") is not None or cfg.get("save_detections"):
            raise ConfigError(f"{datamodule.name} has no labels (data.source=images): detection cannot be measured on "
                              "it; evaluate an image codec that needs no detector, with detector=none")
        detector = None  # the detector stored with the codec: pixel metrics need none
    detections_dir = _detections_dir(cfg, detector)
    acc = MetricAccumulator(datamodule.class_names, detection=detector is not None)
    bar = progress_bar(len(samples), f"{runner.name} on {datamodule.name}/{split}", cfg.get("progress", "auto"))
    for n, (ds, i) in enumerate(samples):
        image, target = ds[i]
        m, preds, _ = evaluate_image(runner, image, target if labelled else None, detector=detector,
                                     estimate=bool(cfg.get("estimate", True)))
        m["name"] = target.get("name") if target else None
        acc.add(m, preds, target)
        if detections_dir is not None:
            frame = str(target.get("name") or f"{n:06d}")
            write_results_file(detections_dir / f"{frame}.txt", preds["boxes"], preds["scores"], preds["labels"],
                               datamodule.class_names)
        psnr = f" psnr={m['psnr']:.2f}" if "psnr" in m else ""
        if bar is None:
            log.info("[%d/%d] %s bpp_real=%.4f%s", n + 1, len(samples), m.get("name"), m.get("bpp_real", float("nan")),
                     psnr)
        else:  # the bar says how far and how long; the frame's line would break it
            bar.set_postfix_str(f"bpp_real={m.get('bpp_real', float('nan')):.4f}{psnr}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    metrics = acc.compute()
    det_info = {"name": getattr(detector, "backbone_name", None), "weights_hash": detector.weights_hash()} if detector is not None else None
    record = make_record(
        codec=runner.name, params=dict(runner.params), dataset=datamodule.name, split=split, num_images=len(samples),
        detector=det_info, metrics=finite_or_none(metrics), per_image=[finite_or_none(p) for p in acc.per_image],
        config=to_plain(cfg),
    )
    path = write_record(record, cfg.paths.results_dir, run_name=cfg.get("run_name"))
    print(f"results record: {path}")
    if detections_dir is not None:
        print(f"detections (KITTI results files): {detections_dir}")
    print(mean_summary(runner.name, len(samples), metrics))
    return path, record


def _detections_dir(cfg: DictConfig, detector) -> Path | None:
    """``<run dir>/detections`` when ``save_detections`` is on; refuses a folder that already holds
    detections, whose frames would mix with this run's."""
    if not cfg.get("save_detections"):
        return None
    if detector is None:
        raise ConfigError("save_detections=true needs a detector (detector=<name>), none is configured")
    folder = Path(cfg.paths.output_dir) / "detections"
    if folder.is_dir() and any(folder.rglob("*.txt")):
        raise ConfigError(f"{folder} already holds detection files of another run; use a new run dir "
                          "(hydra.run.dir=...) so that its frames are not mixed with this run's")
    return folder



def mean_summary(codec: str, num_images: int, metrics: dict[str, Any]) -> str:
    """One line of the means a user looks at first: bpp, PSNR (image codecs) and mAP (with a detector)."""
    parts = [f"bpp_real {metrics['bpp_real']:.4f}"] if metrics.get("bpp_real") is not None else []
    if metrics.get("psnr") is not None:
        parts.append(f"psnr {metrics['psnr']:.2f} dB")
    for key, label in (("map", "mAP"), ("map_50", "mAP@0.5")):
        if metrics.get(key) is not None:
            parts.append(f"{label} {metrics[key]:.4f}")
    return f"{codec}, mean of {num_images} image{'s' if num_images != 1 else ''}: " + ", ".join(parts)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    # One line for a user's mistake; in a multirun a failing point is recorded and the sweep goes on.
    run_command("vcm-eval", evaluate, cfg)


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    check_overrides("vcm-eval", "eval")
    _hydra_main()


if __name__ == "__main__":
    main()
