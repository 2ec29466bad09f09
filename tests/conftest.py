"""Shared fixtures: CPU only, one thread, real data from ../shared when it is there."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


# What names the real data of ../shared: a test (or one of its fixtures, or its parameters) that
# mentions one of these needs it, and gets the needs_shared marker (so `-m "not needs_shared"` runs
# exactly what works without ../shared).
_SHARED_WORDS = ("shared_data", "kitti_tiny", "kitti_mini", "coco_tiny", "data=coco")


def _needs_shared(item) -> bool:
    import inspect

    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        funcs += [d.func for d in defs if d.baseid != ""]
    text = repr(getattr(getattr(item, "callspec", None), "params", ""))
    for f in funcs:
        try:
            text += inspect.getsource(f)
        except (OSError, TypeError):
            continue
    return any(w in text for w in _SHARED_WORDS)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if not item.get_closest_marker("needs_shared") and _needs_shared(item):
            item.add_marker(pytest.mark.needs_shared)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when it is absent (e.g. on GitHub's runners)."""
    if not (SHARED_DATA / "kitti_tiny" / "training" / "image_2").is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kitti_tiny_root(shared_data: Path) -> Path:
    """Root of the 24 real KITTI frames (the folder that holds ``training/``)."""
    return shared_data / "kitti_tiny"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic KITTI tree (12 frames of 160x480), generated once per session."""
    from vcm.data.synthetic import generate

    return Path(generate(tmp_path_factory.mktemp("synthetic") / "tree", num=12, seed=0, width=480, height=160))
