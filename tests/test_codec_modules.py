"""The codec LightningModules' own procedures: resume, validation on CPU, task weight, crop scale."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import compose

CONF = Path(__file__).resolve().parents[1] / "conf"
# Every codec family (conf/model/*.yaml except the detector's own module).
CODEC_MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_") and p.stem != "detector")


def _build(name: str, tmp_path: Path, extra: tuple[str, ...] = ()):
    from vcm.train import build_model

    cfg = compose([f"model={name}", "quality=1", "model.codec.N=16", "model.codec.M=16", *extra], tmp_path)
    return build_model(cfg, None)


@pytest.mark.parametrize("name", CODEC_MODELS)
def test_resume_restores_every_codec_family(name, tmp_path):
    """Lightning's resume: ``on_load_checkpoint`` first, then a strict ``load_state_dict`` of the module.

    The checkpoint holds CDF tables filled by ``update()``, which a fresh codec's empty buffers must
    be resized to (each codec's own ``load_state_dict`` knows how; roi_hyperprior has its own)."""
    torch.manual_seed(0)
    saved = _build(name, tmp_path)
    saved.codec.update(force=True)
    checkpoint = {"state_dict": saved.state_dict()}
    torch.manual_seed(1)
    fresh = _build(name, tmp_path)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)
    got = fresh.state_dict()
    assert got.keys() == checkpoint["state_dict"].keys()
    for k, v in checkpoint["state_dict"].items():
        assert torch.equal(got[k], v), k
