"""Detector checkpoints: save, read (vcm files, Lightning checkpoints, bare state dicts) and load
after checking that the checkpoint is the configured detector."""
from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN

from vcm.errors import ConfigError
from vcm.utils.io import atomic_write_bytes

_PREDICTOR_KEY = "roi_heads.box_predictor.cls_score.weight"
_CKPT_FORMAT = "vcm.detector"


# -------------------------------------------------------------------------------------- checkpoints
def save_detector(path: str | os.PathLike, model: nn.Module, config: Mapping[str, Any] | None = None) -> Path:
    """Save a detector's weights and build config, atomically, for :func:`load_detector_state`.

    Args:
        path: destination file (e.g. ``detector.pt``).
        model: the torchvision ``FasterRCNN`` or a :class:`FrozenDetector`.
        config: JSON-serialisable build settings (``backbone``, ``class_names``, ``min_size``...).
            ``num_classes`` is taken from the model; a FrozenDetector adds its backbone and class names.

    Returns:
        The written path.
    """
    config = dict(config or {})
    # A FrozenDetector wraps the torchvision model in ``.model``; recognised by that, since frozen.py
    # builds on this module and importing it here would close an import cycle.
    if isinstance(getattr(model, "model", None), FasterRCNN):
        config.setdefault("backbone", model.backbone_name)
        config.setdefault("class_names", list(model.class_names))
        model = model.model
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    if _PREDICTOR_KEY not in state:
        raise ValueError(f"save_detector expects a torchvision FasterRCNN or FrozenDetector, got {type(model).__name__}")
    config["num_classes"] = int(state[_PREDICTOR_KEY].shape[0])
    try:  # plain types only, so that loading never needs to unpickle arbitrary objects
        config = json.loads(json.dumps(config))
    except TypeError as e:
        raise TypeError(f"save_detector: config must hold plain JSON types (convert OmegaConf first): {e}") from e
    buffer = io.BytesIO()
    torch.save({"format": _CKPT_FORMAT, "version": 1, "config": config, "state_dict": state}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_detector_state(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a detector checkpoint and return the torchvision ``FasterRCNN`` state dict and its config.

    Accepted files: one written by :func:`save_detector`; a Lightning ``.ckpt`` of vcm's detector
    training (keys ``detector.*``; class names and build settings are read from its ``vcm`` or
    ``hyper_parameters`` entry when present); a bare state dict. Prefixes ``detector.``, ``model.``
    (a saved FrozenDetector), ``module.`` and ``_orig_mod.`` are removed.

    Returns:
        ``(state_dict, config)``; ``config["num_classes"]`` (background included) always comes from the
        weights, other keys (``backbone``, ``class_names``, ``min_size``, ``max_size``) when recorded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: the file holds no Faster R-CNN weights.
    """
    from vcm.zoo import resolve

    path = resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector checkpoint not found: {path}")
    obj = _torch_load(path)
    config: dict[str, Any] = {}
    if isinstance(obj, Mapping) and obj.get("format") == _CKPT_FORMAT:
        state, config = obj["state_dict"], dict(obj.get("config") or {})
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
        for meta in (obj.get("hyper_parameters"), obj.get("vcm")):  # later entries win
            config.update(_settings_from_meta(meta))
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj
    else:
        keys = list(obj)[:8] if isinstance(obj, Mapping) else []
        raise ConfigError(
            f"{path} is not a detector checkpoint: expected a Lightning checkpoint with 'state_dict', a file "
            f"written by vcm.detectors.save_detector or a state dict; found {type(obj).__name__} {keys}"
        )
    state = _strip_prefixes({k: v for k, v in state.items() if isinstance(v, Tensor)})
    if _PREDICTOR_KEY not in state:
        raise ConfigError(
            f"{path} holds no Faster R-CNN weights: expected keys such as '{_PREDICTOR_KEY}' (optionally "
            f"prefixed 'detector.'), found e.g. {sorted(state)[:5]}"
        )
    config["num_classes"] = int(state[_PREDICTOR_KEY].shape[0])
    return state, config


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # noqa: BLE001
        # Lightning checkpoints may pickle hyper-parameters (e.g. OmegaConf containers) that the safe
        # loader refuses; such files come from our own training runs, so fall back to a full load.
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ConfigError(f"cannot read detector checkpoint {path}: {e} (safe load: {safe_error})") from e


def _settings_from_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, Mapping):
        return {}
    out: dict[str, Any] = {}
    if meta.get("class_names") is not None:
        out["class_names"] = [str(c) for c in meta["class_names"]]
    det = meta.get("detector")
    if isinstance(det, Mapping):
        out.update({k: det[k] for k in ("backbone", "min_size", "max_size", "weights") if k in det})
    return out


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if any(k.startswith("detector.") for k in state):  # a LightningModule may hold more than the detector
        state = {k[len("detector."):]: v for k, v in state.items() if k.startswith("detector.")}
    changed = True
    while changed and state:
        changed = False
        for prefix in ("model.", "module.", "_orig_mod."):
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_detector_checkpoint(model: FasterRCNN, path: str | os.PathLike, backbone: str,
                     class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Load a checkpoint into ``model`` after checking it is the same detector; returns its config."""
    state, config = load_detector_state(path)
    recorded = config.get("backbone")
    if recorded is not None and recorded != backbone:
        raise ConfigError(f"detector checkpoint {path} is a {recorded} detector, but backbone={backbone!r} was configured")
    ours = model.roi_heads.box_predictor.cls_score.out_features
    theirs = config["num_classes"]
    if theirs != ours:
        names = f" {config['class_names']}" if "class_names" in config else ""
        raise ConfigError(
            f"detector checkpoint {path} has {theirs - 1} classes{names} (+ background), but {ours - 1} "
            f"classes{' ' + str(list(class_names)) if class_names is not None else ''} are configured"
        )
    if class_names is not None and "class_names" in config and list(config["class_names"]) != list(class_names):
        raise ConfigError(
            f"detector checkpoint {path} was trained for classes {config['class_names']} (label i+1 = name i), "
            f"but {list(class_names)} are configured; labels would be mixed up"
        )
    # BatchNorm vs frozen BatchNorm checkpoints differ only in num_batches_tracked, which inference
    # never reads: frozen BN drops it on load, and a BN model keeps its own value when it is absent.
    own = model.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ConfigError(f"detector checkpoint {path} does not fit a {backbone} detector: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"detector checkpoint {path} does not fit a {backbone} detector: missing {result.missing_keys[:5]} "
            f"({len(result.missing_keys)} in all), unexpected {result.unexpected_keys[:5]} "
            f"({len(result.unexpected_keys)} in all)"
        )
    return config
