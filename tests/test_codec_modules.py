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


# ------------------------------------------------------------------ feature codecs: validation on CPU
def _kitti_sample(root: Path, index: int = 0):
    from vcm.data.kitti import KittiDataset, index_kitti

    return KittiDataset(index_kitti(root))[index]


def _small_detector(**kwargs):
    from vcm.detectors import FrozenDetector

    kwargs = {"min_size": 128, "max_size": 416, **kwargs}
    return FrozenDetector.from_config(["Car", "Pedestrian", "Cyclist"], backbone="resnet18_fpn", **kwargs)


def test_feature_codec_validation_codes_on_a_cpu_copy_of_a_gpu_codec(tmp_path, kitti_tiny_root, monkeypatch):
    """Validation of a codec trained on a GPU. Without a GPU the device is simulated: this codec
    reports a CUDA device and, as on a GPU, its context model refuses to code; validation must code
    with a CPU copy and leave the training codec where it is."""
    from vcm.codecs.lmsfc import LMSFC
    from vcm.modules import feature_codec

    torch.manual_seed(0)
    module = _build("lmsfc", tmp_path)
    module.set_detector(_small_detector())
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    gpu_codec = module.codec
    assert gpu_codec.entropy_model == "context"

    def require_cpu(self, what):
        if self is gpu_codec:
            raise RuntimeError(f"LMSFC.{what} with the autoregressive context model runs on CPU only (simulated cuda:0)")

    def parameter_device(mod):
        return torch.device("cuda", 0) if mod is gpu_codec else next(mod.parameters()).device

    monkeypatch.setattr(LMSFC, "_require_cpu", require_cpu)
    monkeypatch.setattr(feature_codec, "_parameter_device", parameter_device, raising=False)

    image, target = _kitti_sample(kitti_tiny_root)
    module.eval()
    module.on_validation_epoch_start()
    module.validation_step(([image], [target]), 0)
    (m,) = module._acc["val"].per_image
    assert m["bpp_real"] > 0 and m["bits"] > 0 and "bpp_estimated" in m
    module.on_validation_epoch_end()
    assert module.codec is gpu_codec and "_eval_codec" not in module.__dict__
    assert all(not k.startswith("_eval_codec") for k in module.state_dict())
