"""Image codecs: one parametrised test per property over every codec, then the ROI hyperprior specifics."""
from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from compressai.zoo.image import cfgs as compressai_cfgs
from helpers import fpn_levels, fpn_sizes

from vcm.codecs.base import (
    count_bits,
    crop_image,
    net_aux_parameters,
    pad_image,
    weights_hash,
)
from vcm.codecs.container import decode_image, encode_image
from vcm.codecs.image import (
    FactorizedImageCodec,
    HyperpriorImageCodec,
    MeanScaleImageCodec,
    factorized,
    hyperprior,
    mean_scale,
)
from vcm.codecs.roi_hyperprior import RoiHyperprior
from vcm.losses import RateDistortionLoss

# Small channel counts keep every test fast; the architectures are the real ones.
CODECS = {
    "factorized": lambda: factorized(N=32, M=48),
    "hyperprior": lambda: hyperprior(N=32, M=48),
    "mean_scale": lambda: mean_scale(N=32, M=48),
    "roi_hyperprior": lambda: RoiHyperprior(N=32, M=48, cond_channels=8),
    "roi_hyperprior_zero_features": lambda: RoiHyperprior(N=32, M=48, cond_channels=8, zero_features=True),
}
EXPECTED_LIKELIHOODS = {
    "factorized": {"y"},
    "hyperprior": {"y", "z"},
    "mean_scale": {"y", "z"},
    "roi_hyperprior": {"y", "z", "w"},
    "roi_hyperprior_zero_features": {"y", "z", "w"},
}


def make(name: str):
    torch.manual_seed(0)
    return CODECS[name]()


def with_trained_projections(model):
    """Non-zero projections of the detector features, as after training (they start at zero)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("proj_p3", "proj_p4", "proj_p5", "proj_obj"):
            w = getattr(model, name).weight
            w.copy_(0.05 * torch.randn(w.shape, generator=g))
    return model


def outputs_under_two_feature_seeds(model, x: torch.Tensor) -> list[dict]:
    """The model's outputs for ``x`` with two different random feature sets and the same noise."""
    outs = []
    for seed in (0, 1):
        torch.manual_seed(5)
        with torch.no_grad():
            outs.append(model(x, fpn_levels(fpn_sizes(x.shape[-2], x.shape[-1]), x.shape[0], seed=seed)))
    return outs


def latent(model, x: torch.Tensor, cond) -> torch.Tensor:
    """roi_hyperprior's y before rounding: sensitive to every change of the conditioning."""
    return model._analysis(x, *model._features(cond, x))


def cond_for(model, x: torch.Tensor):
    return fpn_levels(fpn_sizes(x.shape[-2], x.shape[-1]), x.shape[0]) if model.needs_features else None


@pytest.mark.parametrize("name", sorted(CODECS))
def test_forward_shapes_and_gradients_reach_every_parameter(name):
    model = make(name).train()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 128)
    out = model(x, cond_for(model, x))
    assert out["x_hat"].shape == x.shape
    assert set(out["likelihoods"]) == EXPECTED_LIKELIHOODS[name]
    assert out["likelihoods"]["y"].shape == (2, model.M, 4, 8)
    for lik in out["likelihoods"].values():
        assert torch.all((lik > 0) & (lik <= 1))

    loss = RateDistortionLoss(lmbda=0.01)(out, x)["loss"] + model.aux_loss()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"

    net, aux = net_aux_parameters(model)
    assert {id(p) for p in net}.isdisjoint({id(p) for p in aux})
    assert len(net) + len(aux) == len(list(model.parameters()))
    assert len(aux) == (2 if name.startswith("roi") else 1)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_real_coding_odd_size_round_trip(name):
    model = make(name).eval()
    model.update(force=True)
    torch.manual_seed(2)
    img = torch.rand(1, 3, 100, 131)
    cond = cond_for(model, pad_image(img, model.min_div)[0])
    data = encode_image(model, img, cond=cond)
    first = decode_image(model, data)
    second = decode_image(model, data)
    assert first.shape == (1, 3, 100, 131)
    assert torch.equal(first, second)
    assert 0 <= first.min() and first.max() <= 1

    # Real coding reproduces the eval forward pass (rounding instead of noise) bit for bit in the latents.
    x_pad, pad = pad_image(img, model.min_div)
    with torch.no_grad():
        expected = crop_image(model(x_pad, cond)["x_hat"], pad).clamp(0, 1)
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=0)


def test_full_kitti_frame_hyperprior():
    model = make("hyperprior").eval()
    model.update(force=True)
    torch.manual_seed(3)
    frame = torch.randint(0, 256, (3, 375, 1242), dtype=torch.uint8)
    data = encode_image(model, frame)
    out = decode_image(model, data)
    assert out.shape == (1, 3, 375, 1242)
    assert torch.equal(out, decode_image(model, data))


@pytest.mark.parametrize(
    ("factory", "cls", "zoo_name"),
    [
        (factorized, FactorizedImageCodec, "bmshj2018-factorized"),
        (hyperprior, HyperpriorImageCodec, "bmshj2018-hyperprior"),
        (mean_scale, MeanScaleImageCodec, "mbt2018-mean"),
    ],
)
def test_quality_tables_match_compressai_zoo(factory, cls, zoo_name):
    assert cls.quality_channels == compressai_cfgs[zoo_name]
    for quality in range(1, 9):
        model = factory(quality)
        assert (model.N, model.M) == compressai_cfgs[zoo_name][quality]
        assert model.g_a[0].weight.shape[0] == model.N and model.g_a[-1].weight.shape[0] == model.M
    for bad in (0, 9, 2.5, "3"):
        with pytest.raises(ValueError, match=r"1\.\.8"):
            factory(bad)
    with pytest.raises(ValueError, match="N and M"):
        factory()
    overridden = factory(8, N=64)
    assert (overridden.N, overridden.M) == (64, compressai_cfgs[zoo_name][8][1])
    assert (factory(N=16, M=24).N, factory(N=16, M=24).M) == (16, 24)


def test_class_attributes():
    assert (FactorizedImageCodec.min_div, HyperpriorImageCodec.min_div, MeanScaleImageCodec.min_div) == (16, 64, 64)
    assert RoiHyperprior.min_div == 64
    assert RoiHyperprior(N=8, M=8, cond_channels=4).needs_features
    assert not RoiHyperprior(N=8, M=8, cond_channels=4, zero_features=True).needs_features
    names = [c.codec_name for c in (FactorizedImageCodec, HyperpriorImageCodec, MeanScaleImageCodec, RoiHyperprior)]
    assert names == ["factorized", "hyperprior", "mean_scale", "roi_hyperprior"]
    assert not any(c.needs_features for c in (FactorizedImageCodec, HyperpriorImageCodec, MeanScaleImageCodec))


# ---------------------------------------------------------------------- helpers of vcm.codecs.base
def test_pad_and_crop():
    x = torch.rand(2, 3, 100, 131)
    x_pad, pad = pad_image(x, 64)
    assert x_pad.shape == (2, 3, 128, 192) and pad == (0, 61, 0, 28)
    assert torch.equal(x_pad[..., :100, :131], x)
    assert torch.equal(x_pad[..., 99, 131:], x[..., 99, 130:131].expand(-1, -1, 61))  # replicate
    assert torch.equal(crop_image(x_pad, pad), x)
    same, no_pad = pad_image(torch.rand(1, 3, 64, 64), 64)
    assert no_pad == (0, 0, 0, 0) and same.shape == (1, 3, 64, 64)
    with pytest.raises(ValueError):
        pad_image(torch.rand(3, 8, 8), 16)


def test_weights_hash():
    a, b = make("hyperprior"), make("hyperprior")
    h = weights_hash(a)
    assert len(h) == 16 and int(h, 16) >= 0
    assert weights_hash(b) == h  # same seed, same weights
    a.update(force=True)
    updated = weights_hash(a)
    assert updated != h  # the CDF tables are part of the identity
    b.load_state_dict(a.state_dict())  # a decoder rebuilt from the encoder's weights and tables
    assert weights_hash(b) == updated
    with torch.no_grad():
        a.g_s[0].weight[0, 0, 0, 0] += 1e-3  # in place: the cached hash must not be reused
    assert weights_hash(a) != updated
    assert weights_hash(a) == weights_hash(a, use_cache=False)


def test_net_aux_split_rejects_shared_parameter():
    model = make("factorized")
    model.shared = torch.nn.Module()
    model.shared.quantiles = model.g_a[0].weight  # the same tensor under an aux name
    with pytest.raises(ValueError, match="both"):
        net_aux_parameters(model)


def test_count_bits():
    lik = {"y": torch.tensor([0.5, 0.25]), "z": torch.tensor([[0.125]])}
    assert count_bits(lik).item() == pytest.approx(1 + 2 + 3)


# ---------------------------------------------------------------------- ROI hyperprior
def test_roi_two_sizes_same_weights():
    model = make("roi_hyperprior").eval()
    for h, w in ((64, 128), (128, 192)):
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            out = model(x, fpn_levels(fpn_sizes(h, w), 1))
        assert out["x_hat"].shape == x.shape
        assert out["likelihoods"]["w"].shape == (1, 32, h // 64, w // 64)


def test_roi_feature_checks():
    model = make("roi_hyperprior")
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="needs detector features"):
        model(x)
    levels = fpn_levels(fpn_sizes(64, 64), 1)
    del levels["p4"]
    with pytest.raises(ValueError, match="p4"):
        model(x, levels)
    with pytest.raises(ValueError, match="B=1, 256"):
        model(x, {k: torch.zeros(2, 256, 4, 4) for k in ("p3", "p4", "p5")})
    with pytest.raises(ValueError, match="multiple of 64"):
        model(torch.rand(1, 3, 60, 64), fpn_levels(fpn_sizes(60, 64), 1))
    # zero-features ablation: no cond needed, same parameters
    zero = make("roi_hyperprior_zero_features")
    assert zero(x)["x_hat"].shape == x.shape
    assert [n for n, _ in zero.named_parameters()] == [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="feature_norm='batch'"):
        RoiHyperprior(N=8, M=8, feature_norm="batch")


def test_roi_features_are_standardised_per_image_and_level():
    # what the encoder sees does not depend on the detector's activation scale or offset, per image
    model = with_trained_projections(make("roi_hyperprior").eval())
    x = torch.rand(2, 3, 64, 128)
    levels = fpn_levels(fpn_sizes(64, 128), 2)
    scaled = {k: v * torch.tensor([40.0, 0.1]).view(2, 1, 1, 1) + 3.0 for k, v in levels.items()}
    with torch.no_grad():
        ya, yb = latent(model, x, levels), latent(model, x, scaled)
        torch.testing.assert_close(ya, yb, atol=1e-4, rtol=1e-3)  # float32 statistics of a 0.1x + 3 map
        a, b = model(x, levels), model(x, scaled)
    for k in ("y", "z", "w"):
        torch.testing.assert_close(a["likelihoods"][k], b["likelihoods"][k], atol=2e-4, rtol=1e-4)
    # without standardisation the raw scale reaches the encoder
    raw = make("roi_hyperprior").eval()
    raw.load_state_dict(model.state_dict())
    raw.feature_norm = "none"
    with torch.no_grad():
        ra, rb = latent(raw, x, levels), latent(raw, x, scaled)
    assert not torch.allclose(ra, rb, atol=1e-3)


def test_roi_projections_start_at_zero():
    # a new model ignores the detector's features (codes like the scale hyperprior) until trained
    model = make("roi_hyperprior").train()
    for name in ("proj_p3", "proj_p4", "proj_p5", "proj_obj"):
        assert not getattr(model, name).weight.any() and not getattr(model, name).bias.any()
    x = torch.rand(1, 3, 64, 128)
    outs = outputs_under_two_feature_seeds(model, x)
    assert torch.equal(outs[0]["x_hat"], outs[1]["x_hat"])
    # ... but the projections learn: their weights get a gradient from the features
    out = model(x, fpn_levels(fpn_sizes(64, 128), 1))
    (out["x_hat"].square().mean() + sum(-lk.log2().sum() for lk in out["likelihoods"].values())).backward()
    for name in ("proj_p3", "proj_p4", "proj_p5", "proj_obj"):
        assert getattr(model, name).weight.grad.abs().sum() > 0, name


def test_roi_features_reach_the_encoder():
    # train mode (no rounding, which would map the small latents of random weights to 0) with equal noise
    model = with_trained_projections(make("roi_hyperprior").train())
    a, b = outputs_under_two_feature_seeds(model, torch.rand(1, 3, 64, 128))
    assert not torch.equal(a["x_hat"], b["x_hat"])
    assert not torch.equal(a["likelihoods"]["w"], b["likelihoods"]["w"])


def test_roi_rate_includes_w_and_decoder_needs_no_detector():
    model = make("roi_hyperprior").eval()
    model.update(force=True)
    x = torch.rand(1, 3, 64, 128)
    cond = fpn_levels(fpn_sizes(64, 128), 1)
    out = model(x, cond)
    assert set(out["likelihoods"]) == {"y", "z", "w"}
    assert count_bits(out["likelihoods"]) > count_bits({k: out["likelihoods"][k] for k in ("y", "z")})

    assert list(inspect.signature(model.decompress).parameters) == ["strings", "shape", "check", "gain"]
    enc = model.compress(x, cond)
    assert len(enc["strings"]) == 3 and all(len(g) == 1 for g in enc["strings"])
    assert enc["shape"] == (1, 2, 1, 2)
    before = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    # wreck every projection of detector features: the decoder must not notice
    with torch.no_grad():
        for name in ("proj_p3", "proj_p4", "proj_p5", "proj_obj"):
            getattr(model, name).weight.fill_(float("nan"))
            getattr(model, name).bias.fill_(float("nan"))
    after = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.equal(before, after)


@dataclass
class FakeDetectorFeatures:
    levels: OrderedDict
    image_sizes: list
    original_sizes: list


def test_roi_detector_geometry():
    model = with_trained_projections(make("roi_hyperprior").eval())
    x = torch.rand(1, 3, 128, 192)
    levels = fpn_levels(fpn_sizes(128, 192), 1)
    with torch.no_grad():
        plain = latent(model, x, levels)
        # Detector saw the image at its own size: the aligned resampling equals plain bilinear resizing.
        same = latent(model, x, FakeDetectorFeatures(levels, [(128, 192)], [(128, 192)]))
        torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)
        # The detector's batch padding (garbage at the bottom/right) never leaks into the encoder.
        padded = OrderedDict((k, F.pad(v, (0, 3, 0, 2), value=1e3)) for k, v in levels.items())
        unpadded = latent(model, x, FakeDetectorFeatures(padded, [(128, 192)], [(128, 192)]))
        torch.testing.assert_close(unpadded, plain, atol=1e-5, rtol=1e-5)
        # ...whereas resizing the whole padded map (no geometry known) would shift and pollute it
        assert not torch.allclose(latent(model, x, padded), plain, atol=1e-3)
        # A detector that saw the image at twice its size: same field of view, so the same result.
        big = fpn_levels(fpn_sizes(256, 384), 1)
        scaled = latent(model, x, FakeDetectorFeatures(big, [(256, 384)], [(128, 192)]))
        torch.testing.assert_close(scaled, latent(model, x, big), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2 images"):
        model(x, FakeDetectorFeatures(levels, [(128, 192)] * 2, [(128, 192)] * 2))


def test_gaussian_codecs_use_the_fine_scale_table():
    from vcm.codecs.image import hyperprior, mean_scale
    from vcm.codecs.lmsfc import lmsfc

    for m in (hyperprior(N=16, M=16), mean_scale(N=16, M=16), lmsfc(N=16, M=16, entropy_model="hyperprior")):
        m.update(force=True)
        assert m.gaussian_conditional.scale_table.numel() == 512
        # An explicit table still wins.
        m.update(scale_table=torch.linspace(0.11, 256, 64), force=True)
        assert m.gaussian_conditional.scale_table.numel() == 64


def test_roi_hyperprior_checkpoint_loads_after_update():
    from vcm.codecs.roi_hyperprior import RoiHyperprior

    torch.manual_seed(0)
    a = RoiHyperprior(N=16, M=16, cond_channels=8, zero_features=True)
    a.update(force=True)
    b = RoiHyperprior(N=16, M=16, cond_channels=8, zero_features=True)
    b.load_state_dict(a.state_dict())  # CDF buffers of every entropy model resized, no key remapping
    from vcm.codecs.base import weights_hash

    assert weights_hash(a) == weights_hash(b)
    x = torch.rand(1, 3, 64, 64)
    assert a.compress(x)["strings"] == b.compress(x)["strings"]


def test_roi_hyperprior_warm_starts_from_a_hyperprior():
    # fine-tuning: a trained scale hyperprior's weights start the ROI codec; with its projections at
    # zero the ROI codec's analysis and synthesis then compute exactly what the hyperprior's do
    from vcm.codecs.base import warm_start
    from vcm.codecs.image import hyperprior

    torch.manual_seed(0)
    src = hyperprior(N=32, M=48)
    roi = RoiHyperprior(N=32, M=48, cond_channels=8)
    report = warm_start(roi, src.state_dict())
    # the object hyperprior starts as a copy of the side path (h_a_obj on its leading |y| channels)
    assert report["partial"] == ["g_a.1.0.weight", "g_a.2.0.weight", "g_a.3.weight", "h_a_obj.0.weight"]
    assert "g_a.0.0.weight" in report["loaded"] and "g_s.6.weight" in report["loaded"]
    assert "entropy_bottleneck.quantiles" in report["loaded"] and "h_s.4.weight" in report["loaded"]
    assert {"entropy_bottleneck_obj.quantiles", "h_s_obj.4.weight", "h_a_obj.2.weight"} <= set(report["loaded"])
    assert {"proj_p3.weight", "proj_obj.weight", "h_s_fuse.0.weight"} <= set(report["skipped"])
    assert report["unused"] == []
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        y = latent(roi, x, fpn_levels(fpn_sizes(64, 128), 1))
        torch.testing.assert_close(y, src.g_a(x))
        torch.testing.assert_close(roi.g_s(y), src.g_s(y))
        torch.testing.assert_close(roi.h_a(y.abs()), src.h_a(y.abs()))
        # with the projections at zero, w = z: the object side latent costs what z costs
        w = roi.h_a_obj(torch.cat([y.abs(), torch.zeros(1, 8, *y.shape[-2:])], dim=1))
        torch.testing.assert_close(w, src.h_a(y.abs()))
        _, lw = roi.entropy_bottleneck_obj(w, training=False)
        _, lz = src.entropy_bottleneck(src.h_a(y.abs()), training=False)
        torch.testing.assert_close(lw, lz)
    # a source of another kind fits nothing
    with pytest.raises(ValueError, match="no weight of the source checkpoint fits RoiHyperprior"):
        warm_start(roi, {"fenet.stage2.0.weight": torch.zeros(3)})


def test_roi_scale_fusion_starts_from_the_hyperprior_scales():
    model = make("roi_hyperprior")
    z_hat, w_hat = torch.randn(1, 32, 2, 3).abs() * 3, torch.randn(1, 32, 2, 3)
    hs = model.h_s(z_hat)
    fused = model._scales(z_hat, w_hat)
    direct = F.softplus(hs + F.conv2d(model.h_s_obj(w_hat), model.h_s_fuse[0].weight[:, 48:]))
    torch.testing.assert_close(fused, direct)
    # the object path is small but alive
    w = model.h_s_fuse[0].weight[:, 48:]
    assert 0 < w.abs().max() < 0.05


# ---------------------------------------------------------------- roi_source=boxes: the ROI map as the condition
def test_box_condition_is_the_roi_coverage_of_each_cell():
    from vcm.codecs.roi_hyperprior import box_condition
    from vcm.losses.image import boxes_to_mask

    boxes = [torch.tensor([[8.0, 0.0, 24.0, 16.0], [4.0, 40.0, 8.0, 48.0]]), torch.zeros(0, 4)]
    c = box_condition(boxes, 100, 131)
    assert {k: tuple(v.shape) for k, v in c.levels.items()} == {"p3": (2, 1, 13, 17), "p4": (2, 1, 7, 9), "p5": (2, 1, 4, 5)}
    p3 = c.levels["p3"][0, 0]
    assert p3[0:2, 1:3].eq(1).all() and p3[5, 0] == 0.5 and float(p3.sum()) == 4.5  # 16x16 box: 4 cells; 4x8 box: half a cell
    assert c.levels["p4"][0, 0, 0, 0] == 0.5  # the 16x16 box covers the right half of the first 16x16 cell
    assert not c.levels["p3"][1].any()  # an image without boxes has no ROI
    assert c.image_sizes == c.original_sizes == ((100, 131), (100, 131))
    # every level holds exactly the ROI pixels of the loss's mask
    roi_px = boxes_to_mask(boxes, 100, 131).flatten(1).sum(1).float()
    for k, s in (("p3", 8), ("p4", 16), ("p5", 32)):
        torch.testing.assert_close(c.levels[k].flatten(1).sum(1) * s * s, roi_px)


def test_roi_from_boxes_conditions_the_encoder_and_round_trips():
    from vcm.codecs.roi_hyperprior import box_condition

    torch.manual_seed(0)
    model = with_trained_projections(RoiHyperprior(N=32, M=48, cond_channels=8, roi_source="boxes")).eval()
    assert model.feature_channels == 1 and model.needs_boxes and not model.needs_detector
    img = torch.rand(1, 3, 100, 131)
    x, _ = pad_image(img, 64)
    left = box_condition([torch.tensor([[10.0, 20.0, 60.0, 80.0]])], 100, 131)
    right = box_condition([torch.tensor([[70.0, 10.0, 120.0, 90.0]])], 100, 131)
    with torch.no_grad():
        assert not torch.allclose(latent(model, x, left), latent(model, x, right), atol=1e-4)
    model.update(force=True)
    data = encode_image(model, img, cond=left)
    dec = decode_image(model, data)  # the decoder is given no boxes
    assert dec.shape == (1, 3, 100, 131)
    assert torch.equal(dec, decode_image(model, data))
    with pytest.raises(ValueError, match="box_condition"):
        model(x)
    with pytest.raises(ValueError, match=r"B=1, 1, h, w"):
        model(x, fpn_levels(fpn_sizes(128, 192), 1))  # detector features for a codec trained on ROI maps
    with pytest.raises(ValueError, match="1 channel per level"):
        RoiHyperprior(N=8, M=8, roi_source="boxes", feature_channels=256)
    with pytest.raises(ValueError, match="roi_source='gt'"):
        RoiHyperprior(N=8, M=8, roi_source="gt")
    assert RoiHyperprior(N=8, M=8).feature_channels == 256


def test_codec_condition_picks_the_codec_s_source():
    from vcm.codecs.roi_hyperprior import RoiMap
    from vcm.conditioning import codec_condition

    x = torch.rand(2, 3, 40, 72)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 16.0]])}, {"boxes": torch.zeros(0, 4)}]
    boxes_codec = RoiHyperprior(N=8, M=8, roi_source="boxes")
    cond = codec_condition(boxes_codec, x, targets)
    assert isinstance(cond, RoiMap) and cond.levels["p3"].shape == (2, 1, 5, 9) and cond.levels["p3"][0, 0, :2, :2].eq(1).all()
    with pytest.raises(ValueError, match="ROI boxes of each image"):
        codec_condition(boxes_codec, x, None)
    with pytest.raises(ValueError, match="configure a detector"):
        codec_condition(RoiHyperprior(N=8, M=8), x, targets)  # detector source: targets are not a substitute
    assert codec_condition(RoiHyperprior(N=8, M=8, zero_features=True), x, targets) is None
    assert codec_condition(hyperprior(N=8, M=8), x, targets) is None


def test_roi_map_reaches_the_encoder_as_it_is_whatever_feature_norm():
    """The ROI map is the condition itself: no ROI, all ROI and a small ROI stay distinguishable.

    Standardising a map per image would turn both an empty and a full map into zeros and blow a
    4x4-px box up to a large value."""
    from vcm.codecs.roi_hyperprior import box_condition

    model = RoiHyperprior(N=8, M=8, roi_source="boxes")  # feature_norm defaults to "standardize"
    assert model.feature_norm == "standardize"
    x = torch.rand(3, 3, 64, 64)
    boxes = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([[8.0, 8.0, 12.0, 12.0]])]
    cond = box_condition(boxes, 64, 64)
    feats, _ = model._features(cond, x)
    for k in ("p3", "p4", "p5"):
        torch.testing.assert_close(feats[k], cond.levels[k])
    assert not feats["p3"][0].any() and feats["p3"][1].eq(1).all()
    assert float(feats["p3"][2].max()) == 0.25  # a 4x4 box covers a quarter of one 8x8 cell


def test_roi_scale_activation_relu_starts_from_the_hyperprior_rate():
    # softplus lifts every scale the hyperprior sets to 0 (to 0.69), relu keeps them: with relu a
    # warm-started ROI codec's y costs what the hyperprior's does (within the object branch's
    # small share of the fusion); with softplus several times more
    from vcm.codecs.base import count_bits, warm_start
    from vcm.codecs.image import hyperprior

    torch.manual_seed(0)
    src = hyperprior(N=32, M=48).eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ref = float(count_bits(src(x)["likelihoods"]["y"]))
        bits = {}
        for act in ("relu", "softplus"):
            roi = RoiHyperprior(N=32, M=48, cond_channels=8, zero_features=True, scale_activation=act)
            warm_start(roi, src.state_dict())
            bits[act] = float(count_bits(roi.eval()(x, None)["likelihoods"]["y"]))
    assert abs(bits["relu"] / ref - 1) < 0.1 and bits["softplus"] > 1.5 * ref, (ref, bits)
    with pytest.raises(ValueError, match="scale_activation='gelu'"):
        RoiHyperprior(N=32, M=48, scale_activation="gelu")
