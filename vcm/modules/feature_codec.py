"""The LightningModule of the learned feature codecs (L-MSFC, TA-MSF): split inference.

The edge side runs the frozen detector's transform, backbone and FPN; the codec compresses
P2..P5; the server side decodes, rebuilds P6 and runs the detector's heads. Features are computed
on the fly without gradient into the detector.

TA-MSF adds the task loss: ``L = RD + w * det`` where ``det`` is the sum of torchvision's four
detection losses computed by the frozen detector's heads on the RECONSTRUCTED features against
ground truth. ``w`` is 0 during a warm-up (in optimiser steps or epochs).

The task weight is given relative to lambda: ``w = det_weight * lmbda / det_weight_lmbda``. The
source trains ``R + lambda * D + w * det`` with ``w = 0.1`` at ``lambda = 30``; with
``det_weight=0.1, det_weight_lmbda=30`` (vcm/conf/model/ta_msf.yaml) the task term keeps the source's
weight relative to the distortion term (``w / lambda = 1/300``) at every lambda of L-MSFC's table,
and ``lmbda=30`` gives exactly the source's ``w = 0.1``. ``det_weight_lmbda=null`` makes
``det_weight`` the absolute ``w``.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch

from vcm.detectors.features import DetectorFeatures, frame_scale_factors
from vcm.errors import ConfigError
from vcm.evaluation.runners import LearnedFeatureRunner
from vcm.modules.base import CodecModule

LEVELS = ("p2", "p3", "p4", "p5")


class FeatureCodecModule(CodecModule):
    """Trains a feature codec with ``feature_rd`` (+ the detection task loss when ``det_weight > 0``).

    Args (beyond :class:`CodecModule`):
        det_weight: weight of the detection loss (0 = plain L-MSFC training): the absolute ``w``, or
            with ``det_weight_lmbda`` the ``w`` at that lambda.
        det_weight_lmbda: the lambda at which ``det_weight`` is given; ``w`` then scales with the
            loss's lambda, ``w = det_weight * lmbda / det_weight_lmbda`` (the source: 0.1 at 30).
            None: ``w = det_weight``.
        warmup_steps: optimiser steps with ``w = 0`` at the start.
        warmup_epochs: epochs with ``w = 0`` at the start (either warm-up may be used).

    Attributes:
        det_weight: the effective ``w`` (also recorded in ``params``).
    """

    kind = "feature"

    def __init__(self, *args, det_weight: float = 0.0, det_weight_lmbda: float | None = None, warmup_steps: int = 0,
                 warmup_epochs: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if det_weight < 0:
            raise ConfigError(f"model.det_weight={det_weight}: expected >= 0")
        if warmup_steps < 0 or warmup_epochs < 0:
            raise ConfigError(f"model.warmup_steps={warmup_steps}, model.warmup_epochs={warmup_epochs}: expected >= 0")
        if det_weight_lmbda is not None and det_weight > 0:
            if not det_weight_lmbda > 0:
                raise ConfigError(f"model.det_weight_lmbda={det_weight_lmbda}: expected > 0 (or null: det_weight is absolute)")
            lmbda = getattr(self.loss_fn, "lmbda", None)
            if lmbda is None:
                raise ConfigError("model.det_weight_lmbda needs a loss with a lambda (loss=feature_rd)")
            det_weight = float(det_weight) * float(lmbda) / float(det_weight_lmbda)
        self.det_weight = float(det_weight)
        if self.det_weight > 0:
            self.params["det_weight"] = self.det_weight
        self.warmup_steps = int(warmup_steps)
        self.warmup_epochs = int(warmup_epochs)

    def current_det_weight(self) -> float:
        if self.global_step < self.warmup_steps or self.current_epoch < self.warmup_epochs:
            return 0.0
        return self.det_weight

    def _features(self, images, targets=None):
        """The detector's features; crops at their frames' scale (the scale evaluation codes at)."""
        if self.detector is None:
            raise ValueError(f"feature codec {self.codec_name} needs a detector: set detector=<name>")
        imgs = [im.to(self.device).float() / 255.0 for im in images]
        with torch.no_grad():
            return self.detector.features(imgs, scale_factors=frame_scale_factors(self.detector, targets))

    def compute_loss(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        feats = self._features(images, targets)
        levels = OrderedDict((k, feats.levels[k]) for k in LEVELS)
        out = self.codec(levels)
        num_pixels = sum(int(h) * int(w) for h, w in feats.original_sizes) / len(feats.original_sizes)
        losses = dict(self.loss_fn(out, feats.levels, num_pixels=num_pixels))
        w = self.current_det_weight()
        if self.det_weight > 0:
            tg = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            # The detector's heads in fp32 whatever the training precision: under bf16 autocast the
            # box regression of the decoded features overflows (NaN box losses within a few steps).
            levels_hat = OrderedDict((k, v.float()) for k, v in out["levels_hat"].items())
            rec = DetectorFeatures(levels_hat, feats.image_sizes, feats.original_sizes)
            with torch.autocast(device_type=self.device.type, enabled=False):
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

