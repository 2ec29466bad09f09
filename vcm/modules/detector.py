"""Training (fine-tuning) the object detector on the KITTI DataModule (``model=detector``).

The trained weights are what every codec's frozen detector loads (``detector.checkpoint=...``).
Recipe of the source system: SGD (lr 0.002, momentum 0.9, Nesterov, weight decay 1e-4) or AdamW,
linear warm-up then cosine decay, flips and colour jitter (from the data config), mixed precision
(bfloat16 autocast) on CUDA.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import partial

import lightning as L
import torch

from vcm.detectors import build_faster_rcnn
from vcm.errors import ConfigError
from vcm.evaluation.pipeline import MetricAccumulator
from vcm.modules.base import NonFiniteLossError, gather_objects


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_factor: float = 0.01) -> float:
    """LR factor: linear warm-up from ``1/warmup`` to 1, then cosine down to ``min_factor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class DetectorModule(L.LightningModule):
    """Faster R-CNN training with torchvision's detection losses; validation by COCO mAP and KITTI AP.

    Args:
        detector: the detector config (``vcm/conf/detector``): backbone, weights, checkpoint, sizes...
        class_names: object classes (label i+1 = class_names[i]).
        optimizer: partial optimiser (SGD or AdamW from config).
        warmup_steps: linear warm-up steps before the cosine decay.
        amp: bfloat16 autocast on CUDA (on any device, ``trainer.precision=bf16-mixed`` does the same
            through Lightning's precision plugin).
        scale_jitter: ``[low, high]`` factors of the detector's resize drawn per training batch
            (torchvision's multi-scale training; evaluation keeps ``detector.min_size``); null disables.
        monitor: the validation metric the best checkpoint (and early stopping) is chosen by, e.g.
            ``val/kitti_ap_car_moderate``.
    """

    kind = "detector"
    monitor = ("val/map_50", "max")

    def __init__(self, detector: dict, class_names: list[str], optimizer: Callable | None = None,
                 warmup_steps: int = 100, amp: bool = True, nonfinite: str = "raise",
                 scale_jitter: list[float] | None = None, monitor: str = "val/map_50"):
        super().__init__()
        cfg = {k: v for k, v in dict(detector).items() if not k.startswith("_") and k != "class_names"}
        self.detector_cfg = dict(cfg)
        self.class_names = list(class_names)
        init_seed = cfg.pop("init_seed", None)
        with torch.random.fork_rng(devices=[]):
            if init_seed is not None:
                torch.manual_seed(int(init_seed))
            self.detector = build_faster_rcnn(num_classes=len(self.class_names) + 1, **cfg)
        self.optimizer_factory = optimizer or partial(torch.optim.SGD, lr=0.002, momentum=0.9, nesterov=True, weight_decay=1e-4)
        if warmup_steps < 0:
            raise ConfigError(f"model.warmup_steps={warmup_steps}: expected >= 0")
        self.warmup_steps = int(warmup_steps)
        self.amp = bool(amp)
        self.nonfinite = nonfinite
        self.monitor = (str(monitor), "max")
        self._set_scale_jitter(scale_jitter)
        self.vcm_meta: dict = {}
        self.last_eval: dict[str, dict] = {}

    def _set_scale_jitter(self, scale_jitter: list[float] | None) -> None:
        """torchvision's transform draws the training size from ``min_size`` and evaluates at its last
        entry, so the jittered sizes go first and the configured size last."""
        if not scale_jitter:
            return
        low, high = (float(f) for f in scale_jitter)
        if not 0 < low <= high:
            raise ConfigError(f"model.scale_jitter={list(scale_jitter)}: expected [low, high] with 0 < low <= high")
        transform = self.detector.transform
        base = int(transform.min_size[-1])
        sizes = sorted({round(base * (low + (high - low) * i / 8)) for i in range(9)})
        transform.min_size = (*sizes, base)
        transform.max_size = math.ceil(transform.max_size * high)

    def configure_optimizers(self):
        params = [p for p in self.detector.parameters() if p.requires_grad]
        opt = self.optimizer_factory(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, self.warmup_steps, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _prepare(self, batch):
        images, targets = batch
        imgs = [im.to(self.device).float() / 255.0 for im in images]
        tg = [{"boxes": t["boxes"].to(self.device), "labels": t["labels"].to(self.device)} for t in targets]
        return imgs, tg

    def training_step(self, batch, batch_idx):
        imgs, tg = self._prepare(batch)
        # Own autocast on CUDA only; elsewhere no context at all: an ``enabled=False`` autocast would
        # switch off the one of ``trainer.precision=bf16-mixed`` (Lightning's plugin wraps this step).
        amp = self.amp and self.device.type == "cuda"
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            losses = self.detector(imgs, tg)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            msg = f"non-finite detector loss {float(loss)} at global step {self.global_step} (batch {batch_idx})"
            if self.nonfinite == "raise":
                raise NonFiniteLossError(msg + "; lower the learning rate")
            return None
        bs = len(imgs)
        for k, v in losses.items():
            self.log(f"train/{k}", v.detach(), on_step=True, on_epoch=True, batch_size=bs)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._acc = MetricAccumulator(self.class_names, detection=True)

    on_test_epoch_start = on_validation_epoch_start

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        images, targets = batch
        imgs = [im.to(self.device).float() / 255.0 for im in images]
        # Measured in fp32 whatever the training precision (the shipped detector runs in fp32).
        with torch.autocast(device_type=self.device.type, enabled=False):
            preds = self.detector(imgs)
        for p, t in zip(preds, targets):
            self._acc.add({"num_detections": float(len(p["boxes"]))}, {k: v.cpu() for k, v in p.items()}, t)

    test_step = validation_step

    def _end(self, stage: str) -> None:
        merged = MetricAccumulator(self.class_names, detection=True)
        for per_image, preds, targets in gather_objects((self._acc.per_image, self._acc.preds, self._acc.targets)):
            merged.per_image.extend(per_image)
            merged.preds.extend(preds)
            merged.targets.extend(targets)
        metrics = merged.compute()
        for k, v in metrics.items():
            if isinstance(v, float) and math.isfinite(v):
                self.log(f"{stage}/{k}", v, prog_bar=k in ("map_50", "ap_car"))
        self.last_eval[stage] = {"metrics": metrics, "per_image": merged.per_image}

    def on_validation_epoch_end(self) -> None:
        self._end("val")

    def on_test_epoch_end(self) -> None:
        self._end("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vcm"] = {"kind": "detector", "class_names": self.class_names, "detector": self.detector_cfg, **self.vcm_meta}
