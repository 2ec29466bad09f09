"""Results records: one JSON file per evaluation run (one rate-distortion point).

A record holds everything needed to place a point on an RD curve and to trace it back to the code,
weights and data that produced it::

    {
      "codec": "roi_hyperprior",                    # str, the curve's codec
      "params": {"lambda": 0.0067, "variant": "q3"}, # dict, the operating point (and curve variant)
      "dataset": "kitti", "split": "val",           # str, str
      "num_images": 24,                              # int >= 1
      "detector": {"name": str|null, "weights_hash": str|null} or null,
      "metrics": {"bpp_real": 0.31, "psnr": 33.2, ...},  # flat dict of floats (null = not finite)
      "per_image": [{...}, ...],                     # list of dicts
      "git_commit": "40-hex" or null,                # commit of the vcm checkout, null outside one
      "config": {...},                               # the resolved configuration
      "created": "2024-05-01T12:00:00+00:00"         # ISO 8601, UTC
    }

Strict JSON has no NaN or infinity, so non-finite numbers are stored as ``null``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import re
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vcm.errors import VcmError
from vcm.utils.io import atomic_write_json

REQUIRED_KEYS: tuple[str, ...] = (
    "codec",
    "params",
    "dataset",
    "split",
    "num_images",
    "detector",
    "metrics",
    "per_image",
    "git_commit",
    "config",
    "created",
)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._=-]+")
_MAX_NAME_STEM = 120


class RecordError(VcmError, ValueError):
    """A results record is malformed: invalid JSON, a missing key or a value of the wrong type."""


# --------------------------------------------------------------------------------------------------
# Building and validating


def make_record(
    codec: str,
    params: Mapping[str, Any],
    dataset: str,
    split: str,
    num_images: int,
    detector: Mapping[str, str] | None,
    metrics: Mapping[str, Any],
    per_image: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any] | Any,
    git_commit: str | None = None,
) -> dict[str, Any]:
    """Build and validate a results record.

    Args:
        codec: codec name, e.g. ``"roi_hyperprior"`` or ``"jpeg"``.
        params: operating point, e.g. ``{"lambda": 0.01}`` or ``{"quality": 50}``. A ``"variant"``
            entry splits one codec into several curves (see :mod:`vcm.rd.table`).
        dataset: dataset name, e.g. ``"kitti"``.
        split: split name, e.g. ``"val"``.
        num_images: number of evaluated images (>= 1).
        detector: ``{"name": str, "weights_hash": str}`` of the frozen detector (either value may
            be None when unknown), or None when no detector was used.
        metrics: flat mapping metric name -> number (Python, NumPy or 0-d tensor); non-finite
            values are stored as null.
        per_image: one mapping per image (JSON-serialisable values).
        config: the resolved configuration (dict or OmegaConf DictConfig).
        git_commit: commit of the code; None looks it up with ``git rev-parse HEAD`` in the vcm
            source tree (null when vcm is not run from a git checkout).

    Returns:
        The record as a plain JSON-serialisable dict with the keys of :data:`REQUIRED_KEYS`.

    Raises:
        RecordError: naming the key whose value has the wrong type.
    """
    if git_commit is None:
        git_commit = current_git_commit()
    config = _config_to_dict(config)
    record = {
        "codec": codec,
        "params": params,
        "dataset": dataset,
        "split": split,
        "num_images": num_images,
        "detector": detector,
        "metrics": metrics,
        "per_image": per_image,
        "git_commit": git_commit,
        "config": config,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return validate_record(record)


def validate_record(record: Mapping[str, Any], source: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check a record's keys and types and return a normalised, JSON-serialisable copy.

    Args:
        record: a record as built by :func:`make_record` or read from JSON.
        source: file the record came from, named in error messages.

    Returns:
        A new dict: metrics as floats (non-finite -> None), NumPy/torch values as Python values.

    Raises:
        RecordError: naming the file (if given), the key and what was expected.
    """
    where = f"{source}: " if source is not None else ""

    def fail(msg: str) -> RecordError:
        return RecordError(f"{where}invalid results record: {msg}")

    if not isinstance(record, Mapping):
        raise fail(f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise fail(f"missing key(s) {missing}; a record needs {list(REQUIRED_KEYS)}")

    out: dict[str, Any] = {}
    for key in ("codec", "dataset", "split"):
        value = record[key]
        if not isinstance(value, str) or not value.strip():
            raise fail(f"key {key!r} must be a non-empty string, got {value!r}")
        out[key] = value

    params = record["params"]
    if not isinstance(params, Mapping):
        raise fail(f"key 'params' must be a dict, got {type(params).__name__}")
    out["params"] = _jsonable(params, "params", fail)

    num_images = record["num_images"]
    if isinstance(num_images, bool) or not isinstance(num_images, numbers.Integral) or num_images < 1:
        raise fail(f"key 'num_images' must be an integer >= 1, got {num_images!r}")
    out["num_images"] = int(num_images)

    detector = record["detector"]
    if detector is not None:
        if not isinstance(detector, Mapping):
            raise fail(f"key 'detector' must be null or a dict with 'name' and 'weights_hash', got {detector!r}")
        for sub in ("name", "weights_hash"):
            # Both keys must be there; a value may be null when unknown (e.g. a detector that is
            # being trained has no fixed weights hash yet).
            if sub not in detector:
                raise fail(f"key 'detector.{sub}' is missing; expected a string or null")
            value = detector[sub]
            if value is not None and (not isinstance(value, str) or not value):
                raise fail(f"key 'detector.{sub}' must be a non-empty string or null, got {value!r}")
        detector = _jsonable(detector, "detector", fail)
    out["detector"] = detector

    metrics = record["metrics"]
    if not isinstance(metrics, Mapping):
        raise fail(f"key 'metrics' must be a flat dict of numbers, got {type(metrics).__name__}")
    out_metrics: dict[str, float | None] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise fail(f"metric names must be non-empty strings, got {name!r}")
        number = _as_number(value)
        if number is _NOT_A_NUMBER:
            raise fail(f"key 'metrics.{name}' must be a number or null, got {value!r}")
        out_metrics[name] = number
    out["metrics"] = out_metrics

    per_image = record["per_image"]
    if isinstance(per_image, (str, bytes)) or not isinstance(per_image, Sequence):
        raise fail(f"key 'per_image' must be a list of dicts, got {type(per_image).__name__}")
    for i, item in enumerate(per_image):
        if not isinstance(item, Mapping):
            raise fail(f"key 'per_image[{i}]' must be a dict, got {type(item).__name__}")
    out["per_image"] = _jsonable(list(per_image), "per_image", fail)

    git_commit = record["git_commit"]
    if git_commit is not None and (not isinstance(git_commit, str) or not git_commit):
        raise fail(f"key 'git_commit' must be a non-empty string or null, got {git_commit!r}")
    out["git_commit"] = git_commit

    config = record["config"]
    if not isinstance(config, Mapping):
        raise fail(f"key 'config' must be a dict (the resolved configuration), got {type(config).__name__}")
    out["config"] = _jsonable(config, "config", fail)

    created = record["created"]
    if not isinstance(created, str):
        raise fail(f"key 'created' must be an ISO 8601 time string, got {created!r}")
    try:
        _dt.datetime.fromisoformat(created)
    except ValueError:
        raise fail(f"key 'created' must be an ISO 8601 time string, got {created!r}") from None
    out["created"] = created

    ordered = {k: out[k] for k in REQUIRED_KEYS}
    # Extra keys written by newer code are kept, not rejected, so old readers stay usable.
    for key, value in record.items():
        if key not in ordered:
            if not isinstance(key, str):
                raise fail(f"record keys must be strings, got {key!r}")
            ordered[key] = _jsonable(value, key, fail)
    return ordered


_NOT_A_NUMBER = object()


def _as_number(value: Any) -> Any:
    """Return ``value`` as a finite float, None for null/non-finite, or ``_NOT_A_NUMBER``."""
    if value is None:
        return None
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            value = value.item()  # NumPy scalar or one-element tensor
        except (ValueError, RuntimeError):
            return _NOT_A_NUMBER
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _NOT_A_NUMBER
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any, key: str, fail) -> Any:
    """Recursively convert ``value`` to JSON types, raising ``fail`` naming the dotted key path."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise fail(f"key {key!r} has a non-string key {k!r}; JSON object keys are strings")
            out[k] = _jsonable(v, f"{key}.{k}", fail)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{key}[{i}]", fail) for i, v in enumerate(value)]
    if hasattr(value, "tolist") and callable(value.tolist):  # NumPy array/scalar, torch tensor
        return _jsonable(value.tolist(), key, fail)
    raise fail(f"key {key!r} holds a {type(value).__name__} ({value!r:.80}), which is not JSON-serialisable")


def _config_to_dict(config: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, (DictConfig, ListConfig)):
            return OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return config


# --------------------------------------------------------------------------------------------------
# Provenance


def current_git_commit(source_dir: str | os.PathLike | None = None) -> str | None:
    """Commit hash of the git checkout holding the vcm sources, or None outside a checkout.

    An installed copy of vcm (site-packages) that happens to live inside some other repository
    must not report that repository's commit, so the checkout's top level must hold the package
    (``<toplevel>/vcm`` is the source folder).

    Args:
        source_dir: folder of the vcm package; defaults to the folder of this installation.

    Returns:
        The 40-hex commit of ``HEAD``, or None.
    """
    pkg_dir = Path(source_dir) if source_dir is not None else Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=pkg_dir, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        if not top or Path(top).resolve() / pkg_dir.name != pkg_dir.resolve():
            return None
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=pkg_dir, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head if re.fullmatch(r"[0-9a-f]{40,64}", head) else None


# --------------------------------------------------------------------------------------------------
# Files


def default_run_name(record: Mapping[str, Any]) -> str:
    """File-system-safe, unique run name: ``<codec>_<k>=<v>_..._<UTC time>_<6 hex>``."""
    parts = [str(record.get("codec", "record"))]
    params = record.get("params") or {}
    for k in sorted(params):
        v = params[k]
        if isinstance(v, (Mapping, list, tuple)):
            v = json.dumps(v, sort_keys=True, separators=(",", ":"))
        parts.append(f"{k}={v}")
    stem = _SAFE_NAME.sub("-", "_".join(parts)).strip("-.") or "record"
    stem = stem[:_MAX_NAME_STEM]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stem}_{stamp}_{uuid.uuid4().hex[:6]}"


def write_record(
    record: Mapping[str, Any], results_dir: str | os.PathLike, run_name: str | None = None
) -> Path:
    """Validate ``record`` and write it atomically to ``<results_dir>/<run_name>.json``.

    Args:
        record: a record from :func:`make_record`.
        results_dir: folder of results records (created if missing).
        run_name: file stem; default :func:`default_run_name` (codec, params, time, random suffix).
            An existing file of that name is replaced whole (never left half-written).

    Returns:
        Path of the written file.

    Raises:
        RecordError: when the record is invalid (nothing is written).
        ValueError: when ``run_name`` is not a plain file stem.
    """
    record = validate_record(record)
    if run_name is None:
        run_name = default_run_name(record)
    elif (
        not isinstance(run_name, str)
        or not run_name
        or run_name in (".", "..")
        or _SAFE_NAME.search(run_name)
    ):
        raise ValueError(
            f"run_name {run_name!r} must be a non-empty file stem of letters, digits and '._=-' only"
        )
    run_name = run_name.removesuffix(".json")
    path = Path(results_dir) / f"{run_name}.json"
    # allow_nan is off in validate_record's output already; dumping here first means a failure
    # cannot leave anything behind.
    json.dumps(record, allow_nan=False)
    return atomic_write_json(path, record)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate one results record.

    Args:
        path: a ``.json`` file written by :func:`write_record`.

    Returns:
        The validated record.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        RecordError: naming the file, on invalid JSON, missing keys or wrong types.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results record {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not a UTF-8 text file ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return validate_record(data, source=path)
