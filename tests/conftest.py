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


CONF = ROOT / "conf"


def compose_config(name: str, overrides: list[str], tmp_path: Path):
    """Compose ``conf/<name>.yaml`` with overrides; run/results/cache folders under ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import vcm.utils.config  # noqa: F401  (resolvers)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.results_dir = str(tmp_path / "results")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


# Small, fast settings shared by the training tests (CPU, a few steps, one evaluation frame).
FAST_TRAIN = [
    "trainer=debug",
    "logger=csv",
    "data.batch_size=2",
    "data.crop_size=[64,64]",
    "data.max_eval_images=1",
    "data.num_workers=0",
]
FAST_DETECTOR = ["detector.min_size=128", "detector.max_size=416", "+detector.rpn_post_nms_top_n_test=100"]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic KITTI tree (12 frames of 160x480), generated once per session."""
    from vcm.data.synthetic import generate

    return Path(generate(tmp_path_factory.mktemp("synthetic") / "tree", num=12, seed=0, width=480, height=160))
