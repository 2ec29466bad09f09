"""Is this the detector a codec was trained with? Built once here for the training callback,
``vcm-eval`` and ``vcm-compress``.

A codec conditioned on a detector's features (roi_hyperprior) or coding them (L-MSFC, TA-MSF) is
valid only with the detector it was trained against. Its checkpoint stores that detector's config
and the hash of its weights (``checkpoint["vcm"]["detector"]``); every place that pairs a codec
with a detector compares the hashes here.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
from omegaconf import OmegaConf

from vcm.errors import ConfigError

__all__ = ["build_detector", "detector_mismatch", "require_trained_detector", "trained_detector"]


def build_detector(detector_cfg) -> Any:
    """Instantiate a FrozenDetector from its Hydra config node (or plain dict)."""
    if isinstance(detector_cfg, Mapping) and not OmegaConf.is_config(detector_cfg):
        detector_cfg = OmegaConf.create(dict(detector_cfg))
    return hydra.utils.instantiate(detector_cfg, _convert_="object")


def detector_mismatch(stored: Mapping | None, detector, codec: str = "the codec") -> str | None:
    """Why ``detector`` is not the one ``codec`` was trained with (None: it is, or nothing is recorded).

    Args:
        stored: the checkpoint's detector record, ``{"config", "weights_hash", ...}`` (or None).
        detector: a FrozenDetector.
        codec: the codec's name for the message.
    """
    want = (stored or {}).get("weights_hash")
    if not want:
        return None
    have = detector.weights_hash()
    if want == have:
        return None
    return (f"{codec} was trained with detector weights {want}, the configured detector has {have}; "
            "set detector.checkpoint to the detector the codec was trained with")


def require_trained_detector(stored: Mapping | None, detector, codec: str = "the codec") -> None:
    """Raise ConfigError when ``detector`` is not the one ``codec`` was trained with."""
    msg = detector_mismatch(stored, detector, codec)
    if msg:
        raise ConfigError(msg)


def trained_detector(stored: Mapping | None, device: str = "cpu", codec: str = "the codec"):
    """Rebuild the detector ``codec`` was trained with from its checkpoint's record (hash-checked).

    Raises:
        ConfigError: the record names no detector config, or the rebuilt weights differ.
    """
    if not (stored or {}).get("config"):
        raise ConfigError(f"{codec} needs detector features but its checkpoint names no detector")
    det = build_detector(stored["config"]).to(device)
    require_trained_detector(stored, det, codec)
    return det
