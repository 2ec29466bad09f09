"""FeatureRateDistortionLoss: values against a direct computation, normalisation, validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vcm.losses.feature import FeatureRateDistortionLoss

SIZES = {"p2": (8, 10), "p3": (4, 5), "p4": (2, 3), "p5": (1, 2)}


def make_case(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = {k: torch.randn(batch, 4, h, w, generator=g) for k, (h, w) in SIZES.items()}
    target["p6"] = F.max_pool2d(target["p5"], kernel_size=1, stride=2)
    levels_hat = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in target.items()}
    likelihoods = {
        "y": torch.rand(batch, 3, 2, 2, generator=g).clamp_min(1e-3),
        "z": torch.rand(batch, 2, 1, 1, generator=g).clamp_min(1e-3),
    }
    return {"levels_hat": levels_hat, "likelihoods": likelihoods}, target


def test_values_match_a_direct_computation():
    output, target = make_case()
    weights = {"p2": 0.5, "p3": 0.1, "p4": 0.2, "p5": 0.15, "p6": 0.05}
    lmbda, num_pixels = 0.25, 375 * 1242
    out = FeatureRateDistortionLoss(lmbda, weights)(output, target, num_pixels)

    assert set(out) == {"loss", "bpp_loss", "feature_mse"} | {f"mse_p{i}" for i in range(2, 7)}
    mses = {k: ((output["levels_hat"][k] - target[k]) ** 2).mean() for k in weights}
    for k, v in mses.items():
        torch.testing.assert_close(out[f"mse_{k}"], v)
    feature_mse = sum(weights[k] * mses[k] for k in weights)
    bits = sum(-(v.log() / math.log(2)).sum() for v in output["likelihoods"].values())
    bpp = bits / (2 * num_pixels)
    torch.testing.assert_close(out["feature_mse"], feature_mse)
    torch.testing.assert_close(out["bpp_loss"], bpp)
    torch.testing.assert_close(out["loss"], lmbda * feature_mse + bpp)


def test_default_weights_are_equal_over_p2_to_p6():
    output, target = make_case()
    out = FeatureRateDistortionLoss(1.0)(output, target, 100)
    expected = 0.2 * sum(out[f"mse_p{i}"] for i in range(2, 7))
    torch.testing.assert_close(out["feature_mse"], expected)


def test_doubling_num_pixels_halves_bpp():
    output, target = make_case()
    crit = FeatureRateDistortionLoss(0.0)
    one = crit(output, target, 1000)
    two = crit(output, target, 2000)
    torch.testing.assert_close(two["bpp_loss"], one["bpp_loss"] / 2)
    torch.testing.assert_close(one["loss"], one["bpp_loss"])  # lmbda = 0: rate only


def test_per_image_pixel_counts_are_summed():
    output, target = make_case()
    crit = FeatureRateDistortionLoss(0.1)
    per_image = crit(output, target, [1000, 3000])
    same = crit(output, target, 2000)
    as_tensor = crit(output, target, torch.tensor([1000, 3000]))
    torch.testing.assert_close(per_image["bpp_loss"], same["bpp_loss"])
    torch.testing.assert_close(as_tensor["bpp_loss"], same["bpp_loss"])


def test_missing_target_p6_is_max_pooled_from_p5():
    output, target = make_case()
    without = {k: v for k, v in target.items() if k != "p6"}
    crit = FeatureRateDistortionLoss(0.1)
    a = crit(output, target, 500)
    b = crit(output, without, 500)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_a_level_with_weight_zero_does_not_count():
    output, target = make_case()
    out = FeatureRateDistortionLoss(1.0, {"p2": 1.0})(output, target, 100)
    torch.testing.assert_close(out["feature_mse"], out["mse_p2"])


def test_gradient_flows_to_the_reconstruction():
    output, target = make_case()
    output["levels_hat"] = {k: v.requires_grad_() for k, v in output["levels_hat"].items()}
    FeatureRateDistortionLoss(1.0)(output, target, 100)["loss"].backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in output["levels_hat"].values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lmbda": -0.1}, "lmbda=-0.1"),
        ({"lmbda": float("nan")}, "lmbda=nan"),
        ({"lmbda": 1.0, "weights": {"p2": -0.2}}, r"weights\['p2'\]=-0.2"),
        ({"lmbda": 1.0, "weights": {"p7": 0.2}}, "'p7'"),
        ({"lmbda": 1.0, "weights": {"p3": float("inf")}}, r"weights\['p3'\]=inf"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureRateDistortionLoss(**kwargs)


def test_bad_inputs_raise():
    output, target = make_case()
    crit = FeatureRateDistortionLoss(0.1)
    with pytest.raises(ValueError, match="num_pixels"):
        crit(output, target, 0)
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        crit(output, target, [1, 2, 3])
    bad = dict(target, p3=target["p3"][..., :-1])
    with pytest.raises(ValueError, match="'p3'"):
        crit(output, bad, 100)
    with pytest.raises(ValueError, match="'p4' missing"):
        crit(output, {k: v for k, v in target.items() if k != "p4"}, 100)
