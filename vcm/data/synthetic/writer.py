"""Writing a set: the KITTI tree of a seed, its parameters file, label statistics."""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from vcm.data.synthetic.camera import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    KITTI_HEIGHT,
    KITTI_WIDTH,
    MIN_HEIGHT,
    MIN_WIDTH,
    Camera,
    calib_text,
)
from vcm.data.synthetic.render import encode_png, render_frame
from vcm.errors import ConfigError, DataError
from vcm.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------
# Writing a set
# ---------------------------------------------------------------------------------------------
_FRAME_FILE = re.compile(r"^\d{6}\.(png|txt)$")
_SUBDIRS = (("image_2", ".png"), ("label_2", ".txt"), ("calib", ".txt"))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ConfigError(f"{name}={value!r}; expected an integer >= {minimum}")
    return int(value)


def _frame_paths(training: Path, index: int) -> list[Path]:
    return [training / sub / f"{index:06d}{ext}" for sub, ext in _SUBDIRS]


def _frame_files(training: Path) -> list[Path]:
    files = []
    for sub, _ in _SUBDIRS:
        d = training / sub
        if d.is_dir():
            files += [p for p in d.iterdir() if _FRAME_FILE.match(p.name) or p.name.endswith(".tmp")]
    return files


def read_params(root: str | Path) -> dict | None:
    """The parameters recorded in ``root/synthetic.json``, or None if there is no such file.

    Raises:
        DataError: the file exists but is not a JSON object.
    """
    path = Path(root) / "synthetic.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); expected the record written by {GENERATOR_NAME}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object written by {GENERATOR_NAME}, got {type(meta).__name__}")
    return meta


def generate(out: str | Path, num: int, seed: int, width: int = KITTI_WIDTH, height: int = KITTI_HEIGHT,
             *, overwrite: bool = False) -> Path:
    """Write ``num`` synthetic KITTI frames under ``out/training`` (idempotent and resumable).

    Args:
        out: root folder; ``out/training/{image_2,label_2,calib}`` and ``out/synthetic.json`` are written.
        num: number of frames (>= 1), named 000000 .. num-1.
        seed: seed of the set (>= 0); frame i uses ``frame_rng(seed, i)``.
        width, height: image size; the intrinsics are KITTI's scaled to it.
        overwrite: replace a set generated here with other parameters.

    Returns:
        ``out`` (the folder that holds ``training/``).

    Raises:
        ConfigError: bad parameters; ``out`` holds a set made with other parameters and
            ``overwrite`` is False; or ``out/training`` holds frames this generator did not write.
        DataError: ``out/synthetic.json`` is unreadable.

    A set already complete with the same parameters is left as it is. Files are written
    atomically and ``synthetic.json`` says ``"complete": true`` only after the last frame, so an
    interrupted run is finished (same bytes) by the next call with the same parameters.
    """
    num = _check_int("num", num, 1)
    seed = _check_int("seed", seed, 0)
    width = _check_int("width", width, MIN_WIDTH)
    height = _check_int("height", height, MIN_HEIGHT)
    root = Path(out).expanduser()
    training = root / "training"
    params = {"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "num": num, "seed": seed,
              "width": width, "height": height}
    meta = read_params(root)
    existing = _frame_files(training)
    if meta is None:
        if existing:
            raise ConfigError(
                f"{training} already holds {len(existing)} frame files but {root / 'synthetic.json'} is missing, so "
                f"they were not written by {GENERATOR_NAME}; refusing to touch them. Choose an empty --out folder."
            )
    else:
        old = {k: meta.get(k) for k in params}
        if old != params:
            if not overwrite:
                diff = ", ".join(f"{k}={old[k]!r} (requested {params[k]!r})" for k in params if old[k] != params[k])
                raise ConfigError(
                    f"{root} already holds a synthetic set with other parameters: {diff}. "
                    "Pass overwrite=True (--overwrite) to replace it, or choose another folder."
                )
            for p in existing:
                p.unlink()
            log.info("overwriting %s (%s -> %s)", root, old, params)
        elif meta.get("complete") and all(p.is_file() for i in range(num) for p in _frame_paths(training, i)):
            log.info("synthetic set %s is complete (num=%d seed=%d %dx%d); skipping", root, num, seed, width, height)
            return root
        else:
            # Leftovers of an interrupted write; finished frames of the same parameters are kept.
            for p in existing:
                if p.name.endswith(".tmp"):
                    p.unlink()
    atomic_write_json(root / "synthetic.json", {**params, "complete": False})
    camera = Camera.kitti(width, height)
    calib = calib_text(camera)
    t0 = time.perf_counter()
    for i in range(num):
        paths = _frame_paths(training, i)
        if all(p.is_file() for p in paths):
            continue
        frame = render_frame(i, seed, width, height)
        atomic_write_bytes(paths[0], encode_png(frame.image))
        atomic_write_text(paths[2], calib)
        atomic_write_text(paths[1], frame.label_text())
    atomic_write_json(root / "synthetic.json", {**params, "complete": True})
    log.info("wrote %d synthetic frames to %s in %.1f s", num, root, time.perf_counter() - t0)
    return root


def label_statistics(root: str | Path) -> dict:
    """Counts of a written set: objects per type, per-frame mean (DontCare excluded), occlusion
    histogram, truncated objects, and Car box heights (pixels)."""
    label_dir = Path(root) / "training" / "label_2"
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise DataError(f"no label files in {label_dir}; expected a KITTI tree written by {GENERATOR_NAME}")
    per_type: dict[str, int] = {}
    occ = {0: 0, 1: 0, 2: 0, 3: 0}
    truncated = empty = 0
    car_h: list[float] = []
    for f in files:
        lines = [ln.split() for ln in f.read_text(encoding="ascii").splitlines() if ln.strip()]
        if not [t for t in lines if t[0] != "DontCare"]:
            empty += 1
        for t in lines:
            per_type[t[0]] = per_type.get(t[0], 0) + 1
            if t[0] == "DontCare":
                continue
            occ[int(t[2])] += 1
            truncated += float(t[1]) > 0
            if t[0] == "Car":
                car_h.append(float(t[7]) - float(t[5]))
    n_obj = sum(v for k, v in per_type.items() if k != "DontCare")
    return {
        "frames": len(files), "per_type": dict(sorted(per_type.items(), key=lambda kv: -kv[1])),
        "objects_per_frame": n_obj / len(files), "frames_without_objects": empty,
        "occlusion": occ, "truncated": truncated,
        "car_box_height_px": {"min": min(car_h), "median": float(np.median(car_h)), "max": max(car_h)} if car_h else None,
    }
