"""The LightningModule of the learned feature codecs (L-MSFC, TA-MSF): split inference.

The edge side runs the frozen detector's transform, backbone and FPN; the codec compresses
P2..P5; the server side decodes, rebuilds P6 and runs the detector's heads. Features are computed
on the fly without gradient into the detector.

TA-MSF adds the task loss: ``L = RD + w * det`` where ``det`` is the sum of torchvision's four
detection losses computed by the frozen detector's heads on the RECONSTRUCTED features against
ground truth. ``w`` is 0 during a warm-up (in optimiser steps or epochs).
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch

from vcm.errors import ConfigError
from vcm.evaluation.runners import LearnedFeatureRunner
from vcm.modules.base import CodecModule

LEVELS = ("p2", "p3", "p4", "p5")


class FeatureCodecModule(CodecModule):
    """Trains a feature codec with ``feature_rd`` (+ the detection task loss when ``det_weight > 0``).

    Args (beyond :class:`CodecModule`):
        det_weight: weight ``w`` of the detection loss (0 = plain L-MSFC training).
        warmup_steps: optimiser steps with ``w = 0`` at the start.
        warmup_epochs: epochs with ``w = 0`` at the start (either warm-up may be used).
    """

    kind = "feature"

    def __init__(self, *args, det_weight: float = 0.0, warmup_steps: int = 0, warmup_epochs: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if det_weight < 0:
            raise ConfigError(f"model.det_weight={det_weight}: expected >= 0")
        if warmup_steps < 0 or warmup_epochs < 0:
            raise ConfigError(f"model.warmup_steps={warmup_steps}, model.warmup_epochs={warmup_epochs}: expected >= 0")
        self.det_weight = float(det_weight)
        self.warmup_steps = int(warmup_steps)
        self.warmup_epochs = int(warmup_epochs)

    def current_det_weight(self) -> float:
        if self.global_step < self.warmup_steps or self.current_epoch < self.warmup_epochs:
            return 0.0
        return self.det_weight

    def _features(self, images, targets=None):
        """The detector's features; crops at their frames' scale (the scale evaluation codes at)."""
        from vcm.detectors.features import frame_scale_factors

        if self.detector is None:
            raise ValueError(f"feature codec {self.codec_name} needs a detector: set detector=<name>")
        imgs = [im.to(self.device).float() / 255.0 for im in images]
        with torch.no_grad():
            return self.detector.features(imgs, scale_factors=frame_scale_factors(self.detector, targets))

    def compute_loss(self, batch) -> dict[str, torch.Tensor]:
        from vcm.detectors import DetectorFeatures

        images, targets = batch
        feats = self._features(images, targets)
        levels = OrderedDict((k, feats.levels[k]) for k in LEVELS)
        out = self.codec(levels)
        num_pixels = sum(int(h) * int(w) for h, w in feats.original_sizes) / len(feats.original_sizes)
        losses = dict(self.loss_fn(out, feats.levels, num_pixels=num_pixels))
        w = self.current_det_weight()
        if self.det_weight > 0:
            tg = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            rec = DetectorFeatures(out["levels_hat"], feats.image_sizes, feats.original_sizes)
            det = self.detector.losses(rec, tg)
            det_total = sum(det.values())
            losses.update({f"det_{k}": v for k, v in det.items()})
            losses["det_loss"] = det_total
            losses["rd_loss"] = losses["loss"]
            losses["loss"] = losses["loss"] + w * det_total
        losses["det_weight"] = torch.tensor(w)
        return losses

    # ------------------------------------------------------------------ evaluation on CPU
    def _start_eval(self, stage: str) -> None:
        super()._start_eval(stage)
        # Real coding runs on CPU (the context model refuses other devices: encoder and decoder must
        # compute bit-identical entropy parameters), so a codec trained on a GPU is validated
        # through a CPU copy taken after update(); training keeps the codec where it is.
        codec = self.codec
        if _parameter_device(codec).type != "cpu":
            codec = copy.deepcopy(codec).to("cpu").eval()
        self.__dict__["_eval_codec"] = codec  # not registered as a submodule

    def _end_eval(self, stage: str) -> dict:
        self.__dict__.pop("_eval_codec", None)
        return super()._end_eval(stage)

    def _runner(self) -> LearnedFeatureRunner:
        codec = self.__dict__.get("_eval_codec", self.codec)
        return LearnedFeatureRunner(codec, name=self.codec_name, params=self.params, update=False)


def _parameter_device(module: torch.nn.Module) -> torch.device:
    """Device of a module's parameters."""
    return next(module.parameters()).device

