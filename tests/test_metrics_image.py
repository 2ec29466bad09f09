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


def _ms_ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """MS-SSIM written from Wang, Simoncelli & Bovik (2003) in numpy/scipy, independently of vcm:
    11-tap Gaussian (sigma 1.5), K1=0.01, K2=0.03, L=255, 5 scales with the paper's exponents,
    2x2 average downsampling; per colour channel, then the mean over channels (negative terms
    clipped to 0, as pytorch_msssim and CompressAI's evaluation do)."""
    from scipy.ndimage import correlate1d

    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    t = np.arange(11) - 5
    g = np.exp(-(t**2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(a):  # "valid" separable filtering
        a = correlate1d(correlate1d(a, g, axis=0, mode="constant"), g, axis=1, mode="constant")
        return a[5:-5, 5:-5]

    def down(a):  # 2x2 mean; an odd side is padded with zeros (count_include_pad), as avg_pool2d(padding=1) does
        ph, pw = a.shape[0] % 2, a.shape[1] % 2
        a = np.pad(a, ((ph, ph), (pw, pw)))
        h2, w2 = (a.shape[0] - 2) // 2 + 1, (a.shape[1] - 2) // 2 + 1
        return a[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2).mean(axis=(1, 3))

    out = []
    for ch in range(x.shape[0]):
        a, b = x[ch].astype(np.float64), y[ch].astype(np.float64)
        terms = []
        for level in range(5):
            mu_a, mu_b = blur(a), blur(b)
            var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
            cs = (2 * cov + c2) / (var_a + var_b + c2)
            ssim = ((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)) * cs
            terms.append(max(float(cs.mean()), 0.0) if level < 4 else max(float(ssim.mean()), 0.0))
            a, b = down(a), down(b)
        out.append(float(np.prod(np.array(terms) ** weights)))
    return float(np.mean(out))


def test_ms_ssim_matches_the_papers_definition():
    """Against an independent implementation, on a smooth image and two distortions of it."""
    yy, xx = np.mgrid[0:180, 0:200]
    base = np.stack([128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0), 100 + 0.5 * xx, 90 + 0.6 * yy])
    x = np.clip(base, 0, 255).round().astype(np.uint8)
    noisy = np.clip(base + np.random.default_rng(0).normal(0, 12, base.shape), 0, 255).round().astype(np.uint8)
    darker = np.clip(base * 0.85, 0, 255).round().astype(np.uint8)
    for y in (noisy, darker):
        ref = _ms_ssim_reference(x, y)
        assert 0.3 < ref < 0.999
        assert float(ms_ssim(torch.from_numpy(x), torch.from_numpy(y))) == pytest.approx(ref, abs=2e-4)


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
