"""The codec LightningModules' own procedures: resume, validation on CPU, task weight, crop scale."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import compose

CONF = Path(__file__).resolve().parents[1] / "vcm" / "conf"
# Every codec family (vcm/conf/model/*.yaml except the detector's own module).
CODEC_MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_") and p.stem != "detector")


def _build(name: str, tmp_path: Path, extra: tuple[str, ...] = ()):
    from vcm.modules.build import build_model

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


# ------------------------------------------------------------------ crops reach the detector at their frame's scale
def test_a_crop_and_its_region_in_the_frame_give_features_on_the_same_grid(tmp_path, kitti_tiny_root):
    """Training crops go through the detector at the resize factor of their frame (the one evaluation
    uses), not resized as whole images (min_size would enlarge a 256x256 crop to the frame's height)."""
    from vcm.conditioning import codec_condition
    from vcm.data.transforms import crop_target

    image, target = _kitti_sample(kitti_tiny_root)
    h, w = image.shape[-2:]
    detector = _small_detector(min_size=h, max_size=w)  # this frame at factor 1: grids align exactly
    torch.manual_seed(0)
    module = _build("lmsfc", tmp_path)
    module.set_detector(detector)
    top, left, size = 64, 320, 256  # multiples of the coarsest stride (32)
    crop = image[:, top:top + size, left:left + size]
    crop_t = crop_target(target, top, left, size, size)
    with torch.no_grad():
        frame = detector.features([image.float() / 255])
    seen = []
    features = detector.features

    def spy(*args, **kwargs):
        seen.append(features(*args, **kwargs))
        return seen[-1]

    detector.features = spy  # what the training step's detector call returns
    module.compute_loss(([crop], [crop_t]))
    (feats,) = seen
    assert feats.image_sizes == [(size, size)] and frame.image_sizes == [(h, w)]
    for k, s in (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32)):
        got = feats.levels[k][0]
        region = frame.levels[k][0, :, top // s:(top + size) // s, left // s:(left + size) // s]
        assert got.shape == region.shape, k
        # away from the crop's border (the receptive field sees other content) the features agree
        m = got.shape[-1] // 4
        pair = torch.stack([got[:, m:-m, m:-m].flatten(), region[:, m:-m, m:-m].flatten()])
        assert float(torch.corrcoef(pair)[0, 1]) > 0.95, k
    # the ROI hyperprior's condition is computed the same way
    roi = _build("roi_hyperprior", tmp_path).codec
    codec_condition(roi, crop[None].float() / 255, [crop_t], detector)
    assert seen[-1].image_sizes == [(size, size)]
    # KITTI's usual detector (min_size 375): a 370-row frame and its crops both at 375/370
    kitti = _small_detector(min_size=375, max_size=1242)
    assert kitti.resize_factor(h, w) == pytest.approx(375 / 370)
    with torch.no_grad():
        scaled = kitti.features([crop.float() / 255], scale_factors=[kitti.resize_factor(h, w)])
    assert scaled.image_sizes == [(259, 259)]  # floor(256 * 375 / 370), as torchvision resizes the frame
    # whole frames (no frame_size) keep the detector's own transform
    module.eval()
    with torch.no_grad():
        module.compute_loss(([image], [target]))
    assert seen[-1].image_sizes == [(h, w)]


# ------------------------------------------------------------------ TA-MSF's task weight
@pytest.mark.parametrize(("overrides", "expected"), [
    ((), 0.1 * 0.0125 / 30),  # quality 1: lambda 0.0125, the source's w / lambda = 0.1 / 30
    (("quality=6",), 0.1 * 0.5 / 30),
    (("lmbda=30",), 0.1),  # the source's own setting: w = 0.1 at lambda = 30
    (("model.det_weight_lmbda=null",), 0.1),  # det_weight as the absolute w
])
def test_ta_msf_task_weight_keeps_the_source_s_ratio_to_distortion(tmp_path, overrides, expected):
    module = _build("ta_msf", tmp_path, overrides)
    assert module.det_weight == pytest.approx(expected, rel=1e-12)
    assert module.params["det_weight"] == pytest.approx(expected, rel=1e-12)  # what results record
    if "model.det_weight_lmbda=null" not in overrides:
        assert module.det_weight / module.loss_fn.lmbda == pytest.approx(0.1 / 30)


def test_ta_msf_task_loss_runs_in_fp32_under_bf16_autocast(tmp_path):
    # the detector's heads on the decoded features run with autocast off and fp32 inputs (in bf16
    # the box regression of decoded features overflows: NaN losses within a few steps)
    from helpers import TINY_DETECTOR

    from vcm.callbacks.frozen_detector import build_detector

    module = _build("ta_msf", tmp_path, (*TINY_DETECTOR, "model.warmup_epochs=0"))
    cfg = compose(["model=ta_msf", *TINY_DETECTOR], tmp_path)
    det = build_detector(cfg.detector).eval()
    module.set_detector(det)
    seen = []
    real_losses = det.losses

    def spy(features, targets):
        seen.append((torch.is_autocast_enabled("cpu"), {v.dtype for v in features.levels.values()}))
        return real_losses(features, targets)

    det.losses = spy
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])} for _ in images]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module.compute_loss((images, targets))
    assert seen == [(False, {torch.float32})]
    assert out["det_loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
