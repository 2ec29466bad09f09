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
