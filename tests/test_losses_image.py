"""Rate-distortion losses: CompressAI's values, and each region measured over its own pixels."""
from __future__ import annotations

import math

import pytest
import torch
from compressai.losses import RateDistortionLoss as CompressaiRDLoss

from vcm.losses import RateDistortionLoss, RoiRateDistortionLoss, boxes_to_mask

H, W = 16, 20


def output_with_error(x: torch.Tensor, err: torch.Tensor) -> dict:
    """A fake codec output: x_hat = x + err, and likelihoods worth exactly 3 bits per image."""
    b = x.shape[0]
    return {"x_hat": x + err, "likelihoods": {"y": torch.full((b, 3), 0.5), "z": torch.ones(b, 2)}}


@pytest.fixture
def batch():
    torch.manual_seed(0)
    x = torch.rand(2, 3, H, W)
    err = 0.1 * torch.randn(2, 3, H, W)
    return x, err


def test_plain_loss_matches_compressai(batch):
    x, err = batch
    out = output_with_error(x, err)
    ours = RateDistortionLoss(lmbda=0.013)(out, x)
    ref = CompressaiRDLoss(lmbda=0.013)(out, x)
    for key in ("loss", "bpp_loss", "mse_loss"):
        torch.testing.assert_close(ours[key], ref[key])
    assert ours["bpp_loss"].item() == pytest.approx(3 / (H * W))
    torch.testing.assert_close(ours["distortion"], 255**2 * ours["mse_loss"])
    # the rate is per ORIGINAL pixel when the caller says so (padded batch)
    assert RateDistortionLoss(0.01)(out, x, num_pixels=100)["bpp_loss"].item() == pytest.approx(6 / 200)
    assert RateDistortionLoss(0.01)(out, x, num_pixels=[100, 50])["bpp_loss"].item() == pytest.approx(6 / 150)


def test_plain_loss_valid_mask(batch):
    x, err = batch
    valid = boxes_to_mask([torch.tensor([[0.0, 0.0, 12.0, 10.0]])] * 2, H, W)
    out = output_with_error(x, err)
    res = RateDistortionLoss(0.01)(out, x, valid_mask=valid)
    torch.testing.assert_close(res["mse_loss"], err[..., :10, :12].pow(2).mean())
    assert res["bpp_loss"].item() == pytest.approx(6 / (2 * 120))


def test_ms_ssim_loss():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 176, 176)
    out = output_with_error(x, 0.05 * torch.randn_like(x))
    ours = RateDistortionLoss(lmbda=2.0, metric="ms-ssim")(out, x)
    ref = CompressaiRDLoss(lmbda=2.0, metric="ms-ssim")(out, x)
    torch.testing.assert_close(ours["loss"], ref["loss"])
    torch.testing.assert_close(ours["ms_ssim_loss"], 1 - ref["ms_ssim_loss"])
    with pytest.raises(ValueError, match="161"):
        RateDistortionLoss(1.0, metric="ms-ssim")(output_with_error(x[..., :64, :64], 0 * x[..., :64, :64]), x[..., :64, :64])
    with pytest.raises(ValueError, match="mse"):
        RateDistortionLoss(1.0, metric="psnr")


def test_boxes_to_mask_pixel_rule():
    m = boxes_to_mask([torch.tensor([[2.0, 1.0, 5.0, 3.0], [10.2, 0.0, 10.8, 1.0]]), torch.zeros(0, 4)], 6, 12)
    assert m.shape == (2, 1, 6, 12) and m.dtype == torch.bool
    expected = torch.zeros(6, 12, dtype=torch.bool)
    expected[1:3, 2:5] = True  # edges on integer coordinates: columns 2..4, rows 1..2
    expected[0, 10] = True  # a sub-pixel box still covers the pixel it overlaps
    assert torch.equal(m[0, 0], expected)
    assert not m[1].any()
    clipped = boxes_to_mask([torch.tensor([[-5.0, -5.0, 100.0, 2.5]])], 6, 12)
    assert clipped[0, 0, :3].all() and not clipped[0, 0, 3:].any()
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        boxes_to_mask([torch.zeros(2, 3)], 6, 12)


def _masks(roi_box, ignore_box=None):
    roi = boxes_to_mask([torch.tensor([roi_box])], H, W)
    ignore = boxes_to_mask([torch.tensor([ignore_box])], H, W) if ignore_box else None
    return roi, ignore


def test_all_roi_and_no_roi():
    torch.manual_seed(1)
    x, err = torch.rand(1, 3, H, W), 0.1 * torch.randn(1, 3, H, W)
    out = output_with_error(x, err)
    loss = RoiRateDistortionLoss(lmbda=0.01, alpha=0.7)
    full = loss(out, x, roi_mask=torch.ones(1, 1, H, W, dtype=torch.bool))
    assert full["bg_mse"].item() == 0 and full["roi_fraction"].item() == 1
    torch.testing.assert_close(full["roi_mse"], full["mse_loss"])
    torch.testing.assert_close(full["loss"], full["bpp_loss"] + 0.01 * 255**2 * 0.7 * full["mse_loss"])

    none = loss(out, x, roi_mask=torch.zeros(1, 1, H, W, dtype=torch.bool))
    assert none["roi_mse"].item() == 0 and none["roi_fraction"].item() == 0
    torch.testing.assert_close(none["bg_mse"], none["mse_loss"])
    # no renormalisation: an object-free batch keeps the background weight (1 - alpha)
    torch.testing.assert_close(none["loss"], none["bpp_loss"] + 0.01 * 255**2 * 0.3 * none["mse_loss"])


def test_regions_measured_over_their_own_pixels():
    x = torch.zeros(1, 3, H, W)
    err = torch.zeros(1, 3, H, W)
    err[..., :4, :5] = 0.2  # error 0.2 inside the ROI, 0.05 outside
    err[..., 4:, :] = 0.05
    err[..., :4, 5:] = 0.05
    roi, _ = _masks([0.0, 0.0, 5.0, 4.0])
    res = RoiRateDistortionLoss(lmbda=1.0, alpha=0.5)(output_with_error(x, err), x, roi_mask=roi)
    assert res["roi_mse"].item() == pytest.approx(0.04)
    assert res["bg_mse"].item() == pytest.approx(0.0025)
    assert res["roi_fraction"].item() == pytest.approx(20 / (H * W))
    # doubling the ROI area with the same per-pixel error keeps D_roi: no dilution by the ROI fraction
    err2 = torch.full((1, 3, H, W), 0.05)
    err2[..., :4, :10] = 0.2
    roi2, _ = _masks([0.0, 0.0, 10.0, 4.0])
    res2 = RoiRateDistortionLoss(lmbda=1.0, alpha=0.5)(output_with_error(x, err2), x, roi_mask=roi2)
    assert res2["roi_mse"].item() == pytest.approx(res["roi_mse"].item())
    assert res2["bg_mse"].item() == pytest.approx(res["bg_mse"].item())
    assert res2["roi_fraction"].item() == pytest.approx(2 * res["roi_fraction"].item())


def test_alpha_one_ignores_background():
    torch.manual_seed(2)
    x, err = torch.rand(1, 3, H, W), 0.1 * torch.randn(1, 3, H, W)
    roi, _ = _masks([3.0, 2.0, 11.0, 9.0])
    loss = RoiRateDistortionLoss(lmbda=0.05, alpha=1.0)
    a = loss(output_with_error(x, err), x, roi_mask=roi)
    err_bg = torch.where(roi, err, err + torch.randn_like(err))  # change every background pixel
    b = loss(output_with_error(x, err_bg), x, roi_mask=roi)
    assert a["loss"].item() == b["loss"].item()
    assert a["bg_mse"].item() != b["bg_mse"].item()
    c = loss(output_with_error(x, torch.where(roi, 2 * err, err)), x, roi_mask=roi)
    assert c["loss"].item() > a["loss"].item()


def test_dontcare_excluded():
    torch.manual_seed(3)
    x, err = torch.rand(1, 3, H, W), 0.1 * torch.randn(1, 3, H, W)
    roi, ignore = _masks([0.0, 0.0, 4.0, 4.0], [10.0, 8.0, 18.0, 14.0])
    loss = RoiRateDistortionLoss(lmbda=0.05, alpha=0.4)
    a = loss(output_with_error(x, err), x, roi_mask=roi, ignore_mask=ignore)
    b = loss(output_with_error(x, torch.where(ignore, 5 * err, err)), x, roi_mask=roi, ignore_mask=ignore)
    assert a["loss"].item() == b["loss"].item()
    bg = ~roi & ~ignore
    torch.testing.assert_close(a["bg_mse"], err.pow(2).sum(1, keepdim=True)[bg].sum() / (3 * bg.sum()))
    assert a["roi_fraction"].item() == pytest.approx(16 / (16 + bg.sum().item()))
    # without ignore_dontcare the DontCare pixels are background
    kept = RoiRateDistortionLoss(lmbda=0.05, alpha=0.4, ignore_dontcare=False)(
        output_with_error(x, err), x, roi_mask=roi, ignore_mask=ignore
    )
    torch.testing.assert_close(kept["bg_mse"], err.pow(2).sum(1, keepdim=True)[~roi].sum() / (3 * (~roi).sum()))
    # a labelled object overlapping a DontCare box stays ROI
    over = loss(output_with_error(x, err), x, roi_mask=roi, ignore_mask=roi.clone())
    torch.testing.assert_close(over["roi_mse"], a["roi_mse"])


def test_valid_mask_and_batch_pooling():
    torch.manual_seed(4)
    x, err = torch.rand(2, 3, H, W), 0.1 * torch.randn(2, 3, H, W)
    roi = boxes_to_mask([torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([[2.0, 2.0, 10.0, 6.0]])], H, W)
    valid = boxes_to_mask([torch.tensor([[0.0, 0.0, 15.0, 12.0]])] * 2, H, W)
    res = RoiRateDistortionLoss(lmbda=0.05, alpha=0.9)(output_with_error(x, err), x, roi_mask=roi, valid_mask=valid)
    se = err.pow(2).sum(1, keepdim=True)
    torch.testing.assert_close(res["roi_mse"], se[roi & valid].sum() / (3 * (roi & valid).sum()))
    torch.testing.assert_close(res["bg_mse"], se[~roi & valid].sum() / (3 * (~roi & valid).sum()))
    torch.testing.assert_close(res["mse_loss"], se[valid].sum() / (3 * valid.sum()))
    assert res["bpp_loss"].item() == pytest.approx(6 / (2 * 15 * 12))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan, "0.5"])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        RoiRateDistortionLoss(lmbda=0.01, alpha=alpha)


@pytest.mark.parametrize("lmbda", [-1e-3, math.inf])
def test_bad_lmbda(lmbda):
    with pytest.raises(ValueError, match="lmbda"):
        RoiRateDistortionLoss(lmbda=lmbda, alpha=0.5)
    with pytest.raises(ValueError, match="lmbda"):
        RateDistortionLoss(lmbda=lmbda)


def test_roi_loss_needs_roi_mask_of_right_shape():
    x = torch.rand(1, 3, H, W)
    loss = RoiRateDistortionLoss(lmbda=0.01, alpha=0.5)
    with pytest.raises(ValueError, match="roi_mask"):
        loss(output_with_error(x, 0 * x), x)
    with pytest.raises(ValueError, match="roi_mask"):
        loss(output_with_error(x, 0 * x), x, roi_mask=torch.ones(1, 1, H, W + 1, dtype=torch.bool))


def test_roi_loss_gradient_flows():
    x = torch.rand(1, 3, H, W)
    x_hat = (x + 0.1).requires_grad_()
    lik = torch.full((1, 4), 0.5, requires_grad=True)
    roi, _ = _masks([0.0, 0.0, 4.0, 4.0])
    res = RoiRateDistortionLoss(lmbda=0.01, alpha=0.9)({"x_hat": x_hat, "likelihoods": {"y": lik}}, x, roi_mask=roi)
    res["loss"].backward()
    assert x_hat.grad is not None and lik.grad is not None
    # per-pixel weights: alpha / |ROI| inside, (1 - alpha) / |background| outside
    g = x_hat.grad[0, 0]
    ratio = g[0, 0] / g[10, 10]
    assert ratio.item() == pytest.approx((0.9 / 16) / (0.1 / (H * W - 16)), rel=1e-4)
