"""Keeps the codec's detector built, frozen, on the right device and out of codec checkpoints."""
from __future__ import annotations

import logging

import lightning as L
import torch

from vcm.detectors.identity import build_detector, detector_mismatch
from vcm.errors import ConfigError

__all__ = ["FrozenDetectorCallback", "build_detector"]

log = logging.getLogger(__name__)


class FrozenDetectorCallback(L.Callback):
    """Builds (or takes) the frozen detector and attaches it to the LightningModule.

    The detector is attached with ``pl_module.set_detector`` (not as a submodule), so it is in no
    optimiser and not in the codec's ``state_dict``. The checkpoint stores the detector's config
    and a hash of its weights instead; loading a codec checkpoint checks the hash, because a codec
    trained against one detector's features is not valid for another's.

    Args:
        detector: a FrozenDetector, or its config node (built in ``setup``).
        config: the detector config recorded in checkpoints (plain dict).
        strict_hash: refuse (True) or warn (False) on a detector hash mismatch at checkpoint load.
    """

    def __init__(self, detector, config: dict | None = None, strict_hash: bool = True):
        self._detector = detector
        self.config = dict(config or {})
        self.strict_hash = strict_hash
        self.weights_hash: str | None = None

    @property
    def detector(self):
        if not isinstance(self._detector, torch.nn.Module):
            self._detector = build_detector(self._detector)
        return self._detector

    def _freeze(self, det) -> None:
        det.eval()
        for p in det.parameters():
            p.requires_grad_(False)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        det = self.detector
        self._freeze(det)
        det.to(pl_module.device)
        self.weights_hash = det.weights_hash()
        pl_module.set_detector(det)
        meta = getattr(pl_module, "vcm_meta", None)
        if meta is not None:
            meta["detector"] = {"config": self.config, "weights_hash": self.weights_hash,
                                "name": getattr(det, "backbone_name", type(det).__name__)}

    def _check_frozen(self, pl_module) -> None:
        det = pl_module.detector
        if det is None:
            return
        if det.training or any(p.requires_grad for p in det.parameters()):
            # Lightning or user code toggled it: put it back before anything runs through it.
            self._freeze(det)

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.detector.to(pl_module.device)
        opt_params = {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
        if any(id(p) in opt_params for p in pl_module.detector.parameters()):
            raise ConfigError("a detector parameter is in an optimiser; the frozen detector must never be trained")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._check_frozen(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._check_frozen(pl_module)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._check_frozen(pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        pl_module.detector.to(pl_module.device)
        self._check_frozen(pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        sd = checkpoint.get("state_dict", {})
        leaked = [k for k in sd if k.startswith(("_frozen_detector", "detector."))]
        for k in leaked:
            del sd[k]
        checkpoint.setdefault("vcm", {})["detector"] = {"config": self.config, "weights_hash": self.weights_hash}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        msg = detector_mismatch((checkpoint.get("vcm") or {}).get("detector"), self.detector, "the checkpoint's codec")
        if msg:
            if self.strict_hash:
                raise ConfigError(msg)
            log.warning(msg)
