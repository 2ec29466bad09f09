"""PSNR, masked PSNR, ROI masks and MS-SSIM on 8-bit images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vcm.metrics.image import (
    MS_SSIM_MIN_SIZE,
    masked_psnr,
    ms_ssim,
    psnr,
    roi_mask_from_boxes,
    to_uint8_range,
)


def rand_image(h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def test_psnr_hand_computed():
    x = torch.zeros(3, 2, 2, dtype=torch.uint8)
    y = x.clone()
    y[0, 0, 0] = 10  # squared error 100 over 12 values -> MSE 100/12
    expected = 10 * math.log10(255**2 / (100 / 12))
    assert float(psnr(x, y)) == pytest.approx(expected, abs=1e-12)
    assert float(psnr(x, x)) == math.inf


def test_psnr_float_inputs_are_quantised_to_8_bit():
    x = rand_image()
    xf = x.float() / 255
    # a perturbation below half a level disappears after rounding
    assert float(psnr(xf + 0.4 / 255, x)) == math.inf
    # out-of-range values are clamped like a saved image would be
    assert float(psnr(torch.full((3, 4, 4), 1.7), torch.full((3, 4, 4), 255, dtype=torch.uint8))) == math.inf
    np.testing.assert_array_equal(to_uint8_range(xf).numpy(), x.double().numpy())
    y = rand_image(seed=1)
    assert float(psnr(xf, y.float() / 255)) == pytest.approx(float(psnr(x, y)), abs=1e-12)
    with pytest.raises(ValueError, match="uint8"):
        psnr(x.to(torch.int32), x)
    with pytest.raises(ValueError, match="RGB"):
        psnr(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))


def test_psnr_batched():
    x = torch.stack([rand_image(seed=0), rand_image(seed=1)])
    y = torch.stack([rand_image(seed=2), rand_image(seed=1)])
    out = psnr(x, y)
    assert out.shape == (2,)
    assert float(out[0]) == pytest.approx(float(psnr(x[0], y[0])))
    assert float(out[1]) == math.inf


def test_masked_psnr_uses_only_mask_pixels():
    x = rand_image()
    y = x.clone()
    y[:, 5, 6] = y[:, 5, 6] ^ 3  # error inside the mask
    mask = torch.zeros(24, 32, dtype=torch.bool)
    mask[2:10, 3:12] = True
    ref = float(masked_psnr(x, y, mask))
    d = (x[:, 5, 6].double() - y[:, 5, 6].double()) ** 2
    expected = 10 * math.log10(255**2 / (float(d.sum()) / (3 * int(mask.sum()))))
    assert ref == pytest.approx(expected, abs=1e-12)
    y2 = y.clone()
    y2[:, 20, 30] = 255 - y2[:, 20, 30]  # change outside the mask: no effect
    assert float(masked_psnr(x, y2, mask)) == ref
    assert float(masked_psnr(x, y2, ~mask)) < math.inf  # background sees it
    assert float(masked_psnr(x, y, ~mask)) == math.inf  # identical outside
    assert math.isnan(float(masked_psnr(x, y, torch.zeros(24, 32, dtype=torch.bool))))
    assert float(masked_psnr(x, y, torch.ones(24, 32, dtype=torch.bool))) == pytest.approx(float(psnr(x, y)))
    with pytest.raises(ValueError, match="bool"):
        masked_psnr(x, y, mask.int())
    with pytest.raises(ValueError, match="does not match"):
        masked_psnr(x, y, mask[:5])


def test_roi_mask_from_boxes_rule():
    m = roi_mask_from_boxes(torch.tensor([[1.5, 0.2, 3.0, 1.0]]), 3, 5)
    # columns floor(1.5)..ceil(3.0)-1 = 1..2, rows 0..0
    expected = torch.zeros(3, 5, dtype=torch.bool)
    expected[0, 1:3] = True
    assert torch.equal(m, expected)
    # union, clamping, and degenerate boxes covering nothing
    m = roi_mask_from_boxes(np.array([[-5, -5, 1.2, 1.1], [4.5, 2.5, 99, 99], [2, 2, 2, 3]]), 3, 5)
    expected = torch.zeros(3, 5, dtype=torch.bool)
    expected[0:2, 0:2] = True
    expected[2, 4] = True
    assert torch.equal(m, expected)
    assert not roi_mask_from_boxes(torch.zeros(0, 4), 3, 5).any()


def test_ms_ssim_identical_and_small_images():
    x = rand_image(MS_SSIM_MIN_SIZE, 170)
    assert float(ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    y = (x.double() * 0.8).round().to(torch.uint8)
    assert 0.0 < float(ms_ssim(x, y)) < 1.0
    small = rand_image(MS_SSIM_MIN_SIZE - 1, 300)
    assert math.isnan(float(ms_ssim(small, small)))
    batch = torch.stack([x, y])
    out = ms_ssim(batch, torch.stack([x, x]))
    assert out.shape == (2,) and float(out[0]) == pytest.approx(1.0, abs=1e-6)
