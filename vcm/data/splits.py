"""Deterministic, recorded train/val/test splits.

Frames are split by *group*: the frame itself for the object layout, the whole sequence for the
tracking layout, so near-identical neighbouring frames never straddle two splits. The assignment
depends only on the seed, the fractions and the sorted group names (not on file-system order or
on Python's hash seed), and is saved with every run (``split.json``).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vcm.errors import DataError
from vcm.utils.io import atomic_write_json

SPLITS = ("train", "val", "test")


def split_groups(groups: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Assign sorted unique groups to train/val/test with the given fractions.

    Args:
        groups: group names (duplicates allowed; each unique group goes to exactly one split).
        fractions: (train, val, test) fractions summing to 1.
        seed: the permutation seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` of sorted group names.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise DataError(f"data.split.fractions={list(fractions)}: expected three non-negative numbers (train, val, test) summing to 1")
    uniq = sorted(set(groups))
    n = len(uniq)
    perm = np.random.Generator(np.random.PCG64(int(seed))).permutation(n)
    n_val = round(fr[1] * n)
    n_test = round(fr[2] * n)
    # Keep at least one group in every split that was asked for, when there are enough groups.
    if fr[1] > 0 and n_val == 0 and n >= 3:
        n_val = 1
    if fr[2] > 0 and n_test == 0 and n >= 3:
        n_test = 1
    n_train = n - n_val - n_test
    if fr[0] > 0 and n_train <= 0:
        raise DataError(f"only {n} group(s) to split with fractions {fr}; nothing is left for training")
    order = [uniq[i] for i in perm]
    out = {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train:n_train + n_val]),
        "test": sorted(order[n_train + n_val:]),
    }
    return out


def read_list_file(path: str | Path) -> list[str]:
    """Read a KITTI ``ImageSets``-style list file (one frame id per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split list file not found: {path}; expected one frame id per line (as KITTI's ImageSets/val.txt)")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def save_split(path: str | Path, split: dict) -> Path:
    """Write the split record (``{"method":..., "seed":..., "train": [...], ...}``) atomically."""
    return atomic_write_json(path, split)


def load_split(path: str | Path) -> dict:
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read split file {path}: {e}") from None
    for k in SPLITS:
        if k not in rec or not isinstance(rec[k], list):
            raise DataError(f"split file {path} has no list '{k}'; expected keys {SPLITS}")
    return rec
