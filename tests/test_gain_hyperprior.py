"""The learned ROI codec on the gain map (vcm.codecs.gain_hyperprior), its loss and its training maps:
real coding through the container, real training steps."""
from __future__ import annotations

import pytest
import torch
from golden import make

from vcm.codecs.container import decode_image, encode_image, unpack
from vcm.codecs.gain_hyperprior import GainHyperprior
from vcm.codecs.image import HyperpriorImageCodec
from vcm.codecs.rate_control import encode_to_size
from vcm.codecs.roi_gain import RoiGain
from vcm.losses.image import GainWeightedRateDistortionLoss, RateDistortionLoss
from vcm.modules.gain_codec import random_gain_maps


def _pair(seed: int = 0) -> tuple[HyperpriorImageCodec, GainHyperprior]:
    """A plain hyperprior with lively weights, and the gain codec warm-started from it (conditioning at zero)."""
    torch.manual_seed(seed)
    plain = HyperpriorImageCodec(N=8, M=8).eval()
    for name in ("g_a", "h_a"):  # at initialisation y ~ 0.07: every symbol 0; scale the last layers up
        last = [m for m in getattr(plain, name).modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.data.mul_(50.0 if name == "g_a" else 5.0)
    gain = GainHyperprior(N=8, M=8, cond_channels=4).eval()
    missing, unexpected = gain.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("trunk" in k or "_gain." in k for k in missing)
    plain.update(force=True)
    gain.update(force=True)
    return plain, gain


def _stir(model: GainHyperprior) -> None:
    """Give the conditioning weights (as training would), so the map shapes analysis and synthesis."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "trunk" in name or "_gain." in name:
                p.copy_(0.3 * torch.randn_like(p))


def test_at_the_start_it_is_the_plain_codec_with_the_training_free_gain():
    plain, gain = _pair()
    x = make.synthetic_input().float()[None] / 255
    roi = RoiGain.from_boxes(make.ROI_BOXES, 64, 96, 2.0, 0.5)
    a, b = encode_image(plain, x, roi=roi), encode_image(gain, x, roi=roi)
    assert unpack(a).strings == unpack(b).strings and unpack(a).check == unpack(b).check
    assert torch.equal(decode_image(plain, a), decode_image(gain, b))
    xp = torch.nn.functional.pad(x, (0, 32, 0, 0))  # a multiple of 64
    with torch.no_grad():  # the noisy forward pass too: the same at G = 1
        torch.manual_seed(3)
        pa = plain.train()(xp)
        torch.manual_seed(3)
        pb = gain.train()(xp)
    assert torch.allclose(pa["x_hat"], pb["x_hat"]) and torch.allclose(pa["likelihoods"]["y"], pb["likelihoods"]["y"])


def test_trained_conditioning_round_trips_and_the_decoder_uses_the_files_map():
    _, gain = _pair()
    _stir(gain)
    x = make.synthetic_input().float()[None] / 255
    roi = RoiGain.from_boxes(make.ROI_BOXES, 64, 96, 2.0, 0.5)
    data = encode_image(gain, x, roi=roi)
    out = decode_image(gain, data)
    assert out.shape == (1, 3, 64, 96) and RoiGain.from_extra(unpack(data).extra, 64, 96) == roi
    # the encoder is conditioned too: another map changes y itself, not only its rounding
    g = roi.map((4, 8))
    y_map = gain.analysis(torch.nn.functional.pad(x, (0, 32, 0, 0)), g)
    y_one = gain.analysis(torch.nn.functional.pad(x, (0, 32, 0, 0)), None)
    assert not torch.allclose(y_map, y_one)
    # the decoder: the same y_hat synthesised at another map gives other pixels
    y_hat = torch.randn(1, 8, 4, 8)
    assert not torch.allclose(gain.synthesis(y_hat, g), gain.synthesis(y_hat, None))


def test_a_gain_map_of_the_wrong_shape_is_refused():
    _, gain = _pair()
    with pytest.raises(ValueError, match=r"gain map must be \[B, 1, 4, 6\]"):
        gain.analysis(torch.zeros(1, 3, 64, 96), torch.ones(1, 1, 3, 6, dtype=torch.float64))


def test_rate_control_reanalyses_a_gain_conditioned_codec():
    _, gain = _pair()
    _stir(gain)
    x = make.synthetic_input().float()[None] / 255
    boxes = torch.tensor(make.ROI_BOXES)
    calls = []
    analyse = gain.analyse

    def counting(*args, **kwargs):
        calls.append(kwargs.get("gain"))
        return analyse(*args, **kwargs)

    gain.analyse = counting
    free = encode_to_size([gain], x, boxes, 10_000)  # far above what a 64x96 frame takes: g_bg at its maximum
    assert len(calls) == 1 + free.passes and all(c is not None for c in calls)
    assert decode_image(gain, free.data).shape == (1, 3, 64, 96)


def test_gain_weighted_loss_is_the_rd_loss_at_unit_gain_and_weighs_each_pixel_by_g_squared():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    out = {"x_hat": (x + 0.05 * torch.randn_like(x)).clamp(0, 1), "likelihoods": {"y": torch.rand(2, 8, 2, 2) * 0.9 + 0.05}}
    loss = GainWeightedRateDistortionLoss(lmbda=0.01)
    at_one = loss(out, x, weight_map=torch.ones(2, 1, 32, 32))
    assert at_one["loss"] == pytest.approx(float(RateDistortionLoss(lmbda=0.01)(out, x)["loss"]), rel=1e-6)
    w = torch.ones(2, 1, 32, 32)
    w[:, :, :16] = 4.0  # G = 2 on the top half
    se = (out["x_hat"] - x).pow(2).sum(1, keepdim=True)
    expect = 255**2 * float((se * w).sum()) / (3 * se.numel())
    got = loss(out, x, weight_map=w, roi_mask=w > 1)
    assert float(got["distortion"]) == pytest.approx(expect, rel=1e-5)
    assert float(got["roi_mse"]) == pytest.approx(float(se[:, :, :16].sum()) / (3 * se[:, :, :16].numel()), rel=1e-5)
    with pytest.raises(ValueError, match="needs weight_map"):
        loss(out, x)


def test_random_gain_maps_follow_the_cell_rule_and_the_ranges():
    gen = torch.Generator().manual_seed(0)
    settings = {"uniform_range": (0.35, 2.0), "g_bg_range": (0.25, 1.5), "roi_ratio_range": (1.5, 8.0),
                "random_boxes": 0, "object_prob": 1.0, "dilations": (0,)}
    box = torch.tensor([[20.0, 40.0, 60.0, 70.0]])  # cells x 1..3, y 2..4
    maps = random_gain_maps([box] * 16, 128, 128, uniform_prob=0.0, generator=gen, **settings)
    assert maps.shape == (16, 1, 8, 8)
    for m in maps[:, 0]:
        roi = m == m.max()
        assert roi[2:5, 1:4].all() and int(roi.sum()) == 9
        assert 0.25 <= float(m.min()) <= 1.5 + 1e-6 and float(m.max()) >= 1.5 * float(m.min()) - 1e-3
    uniform = random_gain_maps([box] * 8, 100, 120, uniform_prob=1.0, generator=gen, **settings)
    assert uniform.shape == (8, 1, 7, 8)  # padded up to whole cells
    for m in uniform[:, 0]:
        assert float(m.min()) == float(m.max()) and 0.35 <= float(m.min()) <= 2.0


def test_training_steps_run_and_update_the_conditioning(tmp_path):
    from tests.helpers import compose
    from vcm.modules.build import build_model

    cfg = compose(["model=gain_hyperprior", "quality=1", "model.codec.N=16", "model.codec.M=16"], tmp_path)
    module = build_model(cfg, None)
    before = {k: v.clone() for k, v in module.codec.state_dict().items() if "dec_gain" in k}
    opt = torch.optim.Adam(module.codec.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8)
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]])}, {"boxes": torch.zeros(0, 4)}]
    for _ in range(2):
        out = module.compute_loss((images, targets))
        assert torch.isfinite(out["loss"]) and {"roi_mse", "bg_mse", "bpp_loss"} <= out.keys()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = module.codec.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_roi_runner_codes_a_trained_codec_with_a_gain_map_on_its_own_curve():
    from vcm.evaluation.runners import checkpoint_roi_runner

    runner = checkpoint_roi_runner("zoo:hyperprior-kitti-q1", roi="none", g_roi=0.5, g_bg=0.5)
    assert runner.params["variant"] == "uniform" and runner.params["g_bg"] == 0.5 and runner.name == "hyperprior"
    image = make.synthetic_input()
    data = runner.encode(image, cond=torch.zeros(0, 4))
    assert RoiGain.from_extra(unpack(data).extra, 64, 96).g_bg == 0.5
    assert runner.decode(data).shape == image.shape
