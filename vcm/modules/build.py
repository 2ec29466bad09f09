"""The LightningModule of a composed ``vcm-train`` config: one builder for vcm-train, the benchmarks
and the tests."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vcm.errors import ConfigError
from vcm.utils.config import to_plain


def build_model(cfg: DictConfig, datamodule):
    """Instantiate the LightningModule of ``cfg.model`` with the loss, detector and rate point.

    Args:
        cfg: the composed ``train`` config.
        datamodule: supplies ``class_names`` to a detector module (codec modules ignore it: None is fine).

    Raises:
        ConfigError: a detector module without a ``detector`` config.
    """
    target = cfg.model.get("_target_", "")
    if target.endswith("DetectorModule"):
        if cfg.get("detector") is None:
            raise ConfigError("model=detector needs a detector config: detector=resnet18_fpn (or resnet50_fpn_v2, mobilenet_v3_fpn)")
        det = {k: v for k, v in to_plain(cfg.detector).items() if k not in ("_target_", "class_names")}
        return hydra.utils.instantiate(cfg.model, detector=det, class_names=list(datamodule.class_names))
    loss = hydra.utils.instantiate(cfg.loss) if cfg.get("loss") is not None else None
    params = {"quality": cfg.get("quality"), "lmbda": cfg.get("lmbda")}
    if cfg.get("loss") is not None and cfg.loss.get("alpha") is not None:
        params["alpha"] = float(cfg.loss.alpha)
    if cfg.model.get("det_weight") is not None:
        params["det_weight"] = float(cfg.model.det_weight)
    return hydra.utils.instantiate(cfg.model, loss=loss, params={k: v for k, v in params.items() if v is not None})
