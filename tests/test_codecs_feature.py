"""L-MSFC / TA-MSF feature codecs: shapes, padding, real coding round trips, gradients, presets."""
from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from compressai.layers import AttentionBlock
from helpers import fpn_levels

from vcm.codecs.lmsfc import (
    LMSFC,
    LMSFC_LAMBDAS,
    LMSFC_M,
    LMSFC_N,
    LMSFC_N_LIGHT,
    _pad_bottom_right,
    lmsfc,
    padded_p2_size,
    ta_msf,
)
from vcm.errors import BitstreamError
from vcm.losses.feature import FeatureRateDistortionLoss

LEVELS = ("p2", "p3", "p4", "p5")


def fpn_sizes(height: int, width: int) -> list[list[int]]:
    """Level sizes of torchvision's ResNet-FPN for a batch-padded input of ``height x width``.

    Every stride-2 stage of the ResNet (7x7 conv, max-pool, 3x3 convs) maps n to ceil(n / 2).
    """
    sizes, h, w = [], height, width
    for _ in range(5):  # conv1 + maxpool (stride 4) give P2, then layer2..4 give P3..P5
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        sizes.append([h, w])
    return sizes[1:]


# KITTI 375x1242 with min_size=375 is not resized and is batch-padded to multiples of 32: 384x1248.
KITTI_SIZES = fpn_sizes(384, 1248)
# A 101x131 crop, batch-padded to 128x160.
CROP_SIZES = fpn_sizes(128, 160)
# Levels that do not halve exactly (any sizes must work).
ODD_SIZES = [[25, 33], [13, 17], [7, 9], [4, 5]]
# Coarser levels larger than half the finer one: padding each level to its own multiple would not
# give consistent sizes; the padded P2 must grow to hold them.
UNEVEN_SIZES = [[60, 70], [40, 36], [9, 9], [10, 4]]

SIZE_CASES = {"kitti": KITTI_SIZES, "crop": CROP_SIZES, "odd": ODD_SIZES, "uneven": UNEVEN_SIZES}
FACTORIES = {"lmsfc": lmsfc, "ta_msf": ta_msf, "lmsfc_light": partial(lmsfc, light=True)}
VARIANTS = [(a, e) for a in FACTORIES for e in ("context", "hyperprior")]


def tiny(arch: str, entropy_model: str) -> LMSFC:
    torch.manual_seed(0)
    return FACTORIES[arch](N=32, M=48, entropy_model=entropy_model)


@pytest.mark.parametrize(
    "sizes, expected",
    [
        (KITTI_SIZES, (128, 320)),
        (CROP_SIZES, (64, 64)),
        (ODD_SIZES, (64, 64)),
        (UNEVEN_SIZES, (128, 128)),
        ([[64, 64], [32, 32], [16, 16], [8, 8]], (64, 64)),
        ([[10, 10], [10, 10], [10, 10], [10, 10]], (128, 128)),
    ],
)
def test_padded_p2_size_holds_every_level_and_is_consistent(sizes, expected):
    h2, w2 = padded_p2_size(sizes)
    assert (h2, w2) == expected
    assert h2 % 64 == 0 and w2 % 64 == 0
    for (h, w), s in zip(sizes, (1, 2, 4, 8)):
        assert h <= h2 // s and w <= w2 // s


def test_pad_reflects_and_falls_back_to_replicate():
    x = torch.arange(4 * 5, dtype=torch.float32).reshape(1, 1, 4, 5)
    y = _pad_bottom_right(x, 8, 8)  # height grows by 4 = its size: replicate; width by 3 < 5: reflect
    assert y.shape == (1, 1, 8, 8)
    assert torch.equal(y[..., :4, :5], x)
    # reflect along width (without repeating the edge column)
    assert torch.equal(y[..., :4, 5:8], x[..., :, [3, 2, 1]])
    # replicate along height
    for r in range(4, 8):
        assert torch.equal(y[..., r, :], y[..., 3, :])
    with pytest.raises(ValueError, match="cannot pad"):
        _pad_bottom_right(x, 3, 8)


@pytest.mark.parametrize("case", list(SIZE_CASES))
def test_levels_are_padded_consistently_at_the_bottom_right(case):
    sizes = SIZE_CASES[case]
    model = tiny("lmsfc", "hyperprior")
    levels = fpn_levels(sizes)
    padded = model._pad(list(levels.values()), sizes)
    h2, w2 = padded_p2_size(sizes)
    for name, t, (h, w), s in zip(LEVELS, padded, sizes, (1, 2, 4, 8)):
        assert t.shape[-2:] == (h2 // s, w2 // s)
        assert torch.equal(t[..., :h, :w], levels[name])


@pytest.mark.parametrize("arch, entropy_model", VARIANTS)
@pytest.mark.parametrize("case", list(SIZE_CASES))
def test_forward_shapes_and_exact_crop(arch, entropy_model, case):
    sizes = SIZE_CASES[case]
    model = tiny(arch, entropy_model).eval()
    levels = fpn_levels(sizes, batch=2 if case == "odd" else 1)
    with torch.no_grad():
        out = model(levels)
    hat = out["levels_hat"]
    assert list(hat) == ["p2", "p3", "p4", "p5", "p6"]
    for name, (h, w) in zip(LEVELS, sizes):
        assert hat[name].shape == levels[name].shape == (levels["p2"].shape[0], 256, h, w)
        assert torch.isfinite(hat[name]).all()
    assert torch.equal(hat["p6"], F.max_pool2d(hat["p5"], kernel_size=1, stride=2))
    assert hat["p6"].shape[-2:] == (math.ceil(sizes[3][0] / 2), math.ceil(sizes[3][1] / 2))
    h2, w2 = padded_p2_size(sizes)
    assert out["likelihoods"]["y"].shape[1:] == (48, h2 // 16, w2 // 16)
    assert out["likelihoods"]["z"].shape[1:] == (32, h2 // 64, w2 // 64)


def test_p6_in_the_input_is_ignored():
    model = tiny("lmsfc", "hyperprior").eval()
    levels = fpn_levels(CROP_SIZES)
    with_p6 = OrderedDict(levels, p6=torch.randn(1, 256, 2, 3))
    with torch.no_grad():
        a = model(levels)["levels_hat"]
        b = model(with_p6)["levels_hat"]
    for name in a:
        assert torch.equal(a[name], b[name])


@pytest.mark.parametrize("arch, entropy_model", VARIANTS)
@pytest.mark.parametrize("case", ["odd", "crop", "uneven"])
def test_compress_decompress_round_trip(arch, entropy_model, case):
    sizes = SIZE_CASES[case]
    model = tiny(arch, entropy_model).eval()
    model.update(force=True)
    levels = fpn_levels(sizes, batch=2, seed=1)

    enc = model.compress(levels)
    assert set(enc) == {"strings", "shape", "sizes", "check"} and 0 <= enc["check"] < 2**32
    y_strings, z_strings = enc["strings"]
    assert len(y_strings) == len(z_strings) == 2
    assert all(isinstance(s, bytes) and len(s) > 0 for s in y_strings + z_strings)
    h2, w2 = padded_p2_size(sizes)
    assert tuple(enc["shape"]) == (h2 // 64, w2 // 64)
    assert enc["sizes"] == sizes

    dec1 = model.decompress(enc["strings"], enc["shape"], enc["sizes"])["levels_hat"]
    dec2 = model.decompress(enc["strings"], enc["shape"], enc["sizes"])["levels_hat"]
    assert list(dec1) == ["p2", "p3", "p4", "p5", "p6"]
    for name in dec1:
        assert torch.equal(dec1[name], dec2[name])
    for name, (h, w) in zip(LEVELS, sizes):
        assert dec1[name].shape == (2, 256, h, w)
    assert torch.equal(dec1["p6"], F.max_pool2d(dec1["p5"], kernel_size=1, stride=2))

    if entropy_model == "hyperprior":
        # Same quantisation round(y - mu) + mu as the eval-mode forward pass, up to the coder's means
        # being on the exact 2**-16 grid (vcm.codecs.exact): at most 2**-17 apart before DRNet.
        with torch.no_grad():
            ref = model(levels)["levels_hat"]
        for name in dec1:
            torch.testing.assert_close(dec1[name], ref[name], rtol=0, atol=5e-5)
    else:
        # CompressAI's convention: the decoder rebuilds exactly the y_hat the encoder coded.
        _, _, y_hat, enc_sizes, _ = model._encode(levels)
        with torch.no_grad():
            ref = model._reconstruct(y_hat, enc_sizes)
        for name in dec1:
            assert torch.equal(dec1[name], ref[name])


@pytest.mark.parametrize("arch, entropy_model", VARIANTS)
def test_eval_forward_reconstructs_what_the_decoder_does(arch, entropy_model):
    """In eval mode forward quantises as the decoder does (round(y - mu) + mu, for the context model in
    the decoding order), so val/loss and bpp_estimated describe the bitstream's reconstruction."""
    model = tiny(arch, entropy_model).eval()
    model.update(force=True)
    levels = fpn_levels(ODD_SIZES, batch=2, seed=5)
    enc = model.compress(levels)
    dec = model.decompress(enc["strings"], enc["shape"], enc["sizes"])["levels_hat"]
    with torch.no_grad():
        out = model(levels)
    for name in dec:
        torch.testing.assert_close(out["levels_hat"][name], dec[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("entropy_model", ["context", "hyperprior"])
def test_each_image_decodes_on_its_own(entropy_model):
    model = tiny("lmsfc", entropy_model).eval()
    model.update(force=True)
    levels = fpn_levels(ODD_SIZES, batch=2, seed=2)
    enc = model.compress(levels)
    both = model.decompress(enc["strings"], enc["shape"], enc["sizes"])["levels_hat"]
    y_strings, z_strings = enc["strings"]
    second = model.decompress([[y_strings[1]], [z_strings[1]]], enc["shape"], enc["sizes"])["levels_hat"]
    for name in both:
        torch.testing.assert_close(second[name], both[name][1:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("entropy_model", ["context", "hyperprior"])
def test_a_loaded_state_dict_decodes_the_bitstream(entropy_model):
    model = tiny("lmsfc", entropy_model).eval()
    model.update(force=True)
    levels = fpn_levels(ODD_SIZES, seed=4)
    enc = model.compress(levels)
    expected = model.decompress(enc["strings"], enc["shape"], enc["sizes"])["levels_hat"]
    torch.manual_seed(123)
    other = lmsfc(N=32, M=48, entropy_model=entropy_model).eval()
    other.load_state_dict(model.state_dict())  # resizes the CDF buffers filled by update()
    got = other.decompress(enc["strings"], enc["shape"], enc["sizes"])["levels_hat"]
    for name in expected:
        assert torch.equal(got[name], expected[name])


def test_kitti_sizes_round_trip_context_model():
    model = tiny("ta_msf", "context").eval()
    model.update(force=True)
    levels = fpn_levels(KITTI_SIZES, seed=3)
    enc = model.compress(levels)
    dec = model.decompress(enc["strings"], enc["shape"], enc["sizes"])["levels_hat"]
    _, _, y_hat, sizes, _ = model._encode(levels)
    with torch.no_grad():
        ref = model._reconstruct(y_hat, sizes)
    for name, (h, w) in zip(LEVELS, KITTI_SIZES):
        assert dec[name].shape[-2:] == (h, w)
        assert torch.equal(dec[name], ref[name])


def test_decompress_rejects_sizes_that_do_not_match_the_shape():
    model = tiny("lmsfc", "hyperprior").eval()
    model.update(force=True)
    enc = model.compress(fpn_levels(ODD_SIZES))
    with pytest.raises(BitstreamError, match="does not match"):
        model.decompress(enc["strings"], enc["shape"], KITTI_SIZES)
    with pytest.raises(BitstreamError, match="four positive"):
        model.decompress(enc["strings"], enc["shape"], ODD_SIZES[:3])
    with pytest.raises(BitstreamError, match="y strings"):
        model.decompress([enc["strings"][0] * 2, enc["strings"][1]], enc["shape"], ODD_SIZES)


def test_context_model_codes_on_cpu_only():
    model = tiny("lmsfc", "context").to("meta")
    with pytest.raises(RuntimeError, match="CPU only"):
        model.compress(fpn_levels(ODD_SIZES))
    with pytest.raises(RuntimeError, match="CPU only"):
        model.decompress([[b""], [b""]], (1, 1), ODD_SIZES)


@pytest.mark.parametrize("arch, entropy_model", VARIANTS)
def test_every_parameter_gets_a_gradient(arch, entropy_model):
    model = tiny(arch, entropy_model).train()
    levels = fpn_levels(ODD_SIZES, batch=2)
    out = model(levels)
    loss = FeatureRateDistortionLoss(lmbda=0.1)(out, levels, num_pixels=100 * 132)["loss"]
    loss.backward()
    aux, net = [], []
    for name, p in model.named_parameters():
        (aux if name.endswith(".quantiles") else net).append((name, p))
    assert aux and net
    missing = [n for n, p in net if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient from the RD loss: {missing}"
    assert all(p.grad is None for _, p in aux)  # quantiles are trained by the aux loss only
    model.aux_loss().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in aux)


def test_bpp_is_normalised_by_the_original_image():
    model = tiny("lmsfc", "hyperprior").eval()
    levels = fpn_levels(CROP_SIZES)
    with torch.no_grad():
        out = model(levels)
    crit = FeatureRateDistortionLoss(lmbda=0.0)
    one = crit(out, levels, num_pixels=101 * 131)
    two = crit(out, levels, num_pixels=2 * 101 * 131)
    torch.testing.assert_close(two["bpp_loss"], one["bpp_loss"] / 2)
    bits = sum(-torch.log2(v).sum() for v in out["likelihoods"].values())
    torch.testing.assert_close(one["bpp_loss"], bits / (101 * 131))


@pytest.mark.parametrize("quality", sorted(LMSFC_M))
def test_quality_presets(quality):
    model = lmsfc(quality, entropy_model="hyperprior")
    assert model.quality == quality
    assert model.M == (128 if quality <= 3 else 192) == LMSFC_M[quality]
    assert model.N == model.M == LMSFC_N[quality]  # the source uses one width
    assert model.codec_name == "lmsfc" and model.levels == LEVELS and not model.light
    assert model.g_a.stage5[0].out_channels == model.M
    light = lmsfc(quality, entropy_model="hyperprior", light=True)
    assert (light.N, light.M, light.light, light.codec_name) == (LMSFC_N_LIGHT, model.M, True, "lmsfc")


# Parameter counts of the source's L-MSFC with context model (github.com/VML-lambda/L-MSFC,
# src/model.py: FeatureCompressor(N=256, M), M = 128 for qualities 1-3 and 192 for 4-6 as in its
# train.py), counted on a rebuild of that class from CompressAI's layers (the same layers in the
# same order; the JointAutoregressiveHierarchicalPriors transforms it replaces are not counted).
SOURCE_PARAMETER_COUNTS = {
    128: {"g_a": 3_806_848, "g_s": 30_720_896, "h_a": 737_920, "h_s": 2_729_792, "entropy_bottleneck": 7_808,
          "context_prediction": 819_456, "entropy_parameters": 451_697, "total": 39_274_417},
    192: {"g_a": 7_602_624, "g_s": 49_879_360, "h_a": 1_659_840, "h_s": 6_140_640, "entropy_bottleneck": 11_712,
          "context_prediction": 1_843_584, "entropy_parameters": 1_017_344, "total": 68_155_104},
}


@pytest.mark.parametrize("quality", sorted(LMSFC_M))
def test_parameter_counts_match_the_source(quality):
    model = lmsfc(quality)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    expected = SOURCE_PARAMETER_COUNTS[LMSFC_M[quality]]
    got = {name: count(getattr(model, name)) for name in expected if name != "total"}
    got["total"] = count(model)
    assert got == expected


def test_lambdas_increase_with_quality():
    values = [LMSFC_LAMBDAS[q] for q in sorted(LMSFC_LAMBDAS)]
    assert sorted(LMSFC_LAMBDAS) == [1, 2, 3, 4, 5, 6]
    assert values[:5] == [0.0125, 0.025, 0.125, 0.25, 0.375]
    assert all(a < b for a, b in itertools.pairwise(values))


def test_ta_msf_has_attention_in_every_fusion_stage():
    def attention_stages(model):
        return [
            any(isinstance(m, AttentionBlock) for m in getattr(model.g_a, f"stage{i}").modules())
            for i in (2, 3, 4, 5)
        ]

    assert attention_stages(tiny("lmsfc", "context")) == [False, True, False, True]
    model = ta_msf(quality=3, N=32, M=48)
    assert attention_stages(model) == [True, True, True, True]
    assert model.codec_name == "ta_msf" and model.quality == 3
    default = ta_msf()
    assert (default.N, default.M, default.entropy_model) == (192, 192, "context")


def test_default_sizes_shapes():
    torch.manual_seed(0)
    model = lmsfc(1).eval()
    levels = fpn_levels(CROP_SIZES)
    with torch.no_grad():
        out = model(levels)
    for name, (h, w) in zip(LEVELS, CROP_SIZES):
        assert out["levels_hat"][name].shape == (1, 256, h, w)
    assert out["likelihoods"]["y"].shape == (1, 128, 4, 4)
    assert out["likelihoods"]["z"].shape == (1, 128, 1, 1)  # z has M channels, as in the source


@pytest.mark.parametrize("factory", [lmsfc, ta_msf])
def test_invalid_quality_lists_the_valid_ones(factory):
    with pytest.raises(ValueError, match=r"quality=7 .*\[1, 2, 3, 4, 5, 6\]"):
        factory(7)


def test_invalid_entropy_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'checkerboard'.*\['context', 'hyperprior'\]"):
        lmsfc(N=32, M=48, entropy_model="checkerboard")


def test_bad_levels_are_rejected():
    model = tiny("lmsfc", "hyperprior")
    levels = fpn_levels(ODD_SIZES)
    with pytest.raises(ValueError, match=r"missing FPN levels \['p4'\]"):
        model({k: v for k, v in levels.items() if k != "p4"})
    with pytest.raises(ValueError, match="'p3' has shape"):
        model(OrderedDict(levels, p3=torch.randn(1, 128, 13, 17)))
    with pytest.raises(ValueError, match="'p5' has shape"):
        model(OrderedDict(levels, p5=torch.randn(2, 256, 4, 5)))


def test_ta_msf_warm_starts_from_lmsfc():
    # fine-tuning TA-MSF from a trained L-MSFC: everything but its two extra attention blocks carries over
    from vcm.codecs.base import warm_start
    from vcm.codecs.lmsfc import LMSFC

    torch.manual_seed(0)
    src = LMSFC(N=8, M=8, entropy_model="hyperprior", feature_channels=8)
    dst = LMSFC(N=8, M=8, entropy_model="hyperprior", feature_channels=8, attention_every_stage=True)
    report = warm_start(dst, src.state_dict())
    assert report["partial"] == [] and report["unused"] == []
    assert report["skipped"] and all(k.startswith(("g_a.stage2.2.", "g_a.stage4.2.")) for k in report["skipped"])
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    for k in report["loaded"]:
        assert torch.equal(dst_sd[k], src_sd[k]), k
