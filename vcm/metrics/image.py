"""Image quality metrics on 8-bit RGB: PSNR, ROI / background PSNR, MS-SSIM.

Every metric first brings both images to the 8-bit picture a user would see: ``uint8`` inputs are
taken as they are, floating-point inputs are read as [0, 1] and quantised with
``round(clamp(x * 255, 0, 255))``. The numbers are therefore those of the decoded 8-bit images and
do not depend on whether a codec's output was rounded before it reached the metric.

Images are channel-first ``[..., 3, H, W]`` (any leading batch dims); every metric returns one
float64 value per image, shape ``[...]`` (a 0-dim tensor for a single image).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

# the ROI of the metrics: the union of the boxes under the one pixel rule of vcm.data.masks
from vcm.data.masks import box_union_mask as roi_mask_from_boxes

__all__ = ["MS_SSIM_MIN_SIZE", "masked_psnr", "ms_ssim", "psnr", "roi_mask_from_boxes", "to_uint8_range"]

#: Smallest image side MS-SSIM accepts: 5 scales (4 halvings) of an 11-tap window need > 160 px.
MS_SSIM_MIN_SIZE = 161


def to_uint8_range(x: Tensor | np.ndarray) -> Tensor:
    """Image as float64 in [0, 255] holding 8-bit values.

    Args:
        x: ``uint8`` in [0, 255] or floating point in [0, 1], shape ``[..., 3, H, W]``.

    Returns:
        float64 tensor of the same shape with integer values in [0, 255].

    Raises:
        ValueError: for other dtypes or when the channel dim is not 3.
    """
    x = torch.as_tensor(x)
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected an RGB image [..., 3, H, W], got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(torch.float64)
    if x.is_floating_point():
        # quantise in float64 so that 0.5/255 steps round the same way on every platform
        return (x.to(torch.float64) * 255.0).clamp(0.0, 255.0).round()
    raise ValueError(f"expected a uint8 image or a float image in [0, 1], got dtype {x.dtype}")


def _pair(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    a, b = to_uint8_range(x), to_uint8_range(y)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b.to(a.device)


def _psnr_from_mse(mse: Tensor, data_range: float) -> Tensor:
    # mse == 0 gives +inf (identical images) through the division, which is the intended value
    return 10.0 * torch.log10(data_range**2 / mse)


def psnr(x: Tensor | np.ndarray, y: Tensor | np.ndarray, data_range: float = 255.0) -> Tensor:
    """PSNR of each image, on the 8-bit values.

    Args:
        x, y: images ``[..., 3, H, W]``, ``uint8`` or float in [0, 1] (see the module docstring).
        data_range: peak value of the [0, 255] scale the images are brought to.

    Returns:
        float64 ``[...]``: ``10 log10(data_range^2 / MSE)`` with the MSE over all pixels and
        channels of an image; ``+inf`` for identical images.
    """
    a, b = _pair(x, y)
    mse = ((a - b) ** 2).mean(dim=(-3, -2, -1))
    return _psnr_from_mse(mse, data_range)


def masked_psnr(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, mask: Tensor | np.ndarray, data_range: float = 255.0
) -> Tensor:
    """PSNR over the pixels of a mask only (ROI-PSNR; pass ``~mask`` for background PSNR).

    Args:
        x, y: images ``[..., 3, H, W]``, ``uint8`` or float in [0, 1].
        mask: bool ``[H, W]`` (or ``[..., H, W]`` matching the images' leading dims).
        data_range: peak value of the [0, 255] scale.

    Returns:
        float64 ``[...]``: PSNR with the MSE averaged over the mask's pixels and the 3 channels;
        NaN where the mask is empty, ``+inf`` where the masked pixels are identical.
    """
    a, b = _pair(x, y)
    m = torch.as_tensor(mask, device=a.device)
    if m.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got dtype {m.dtype}")
    if m.shape[-2:] != a.shape[-2:]:
        raise ValueError(f"mask shape {tuple(m.shape)} does not match image size {tuple(a.shape[-2:])}")
    m = m.unsqueeze(-3).to(torch.float64)  # [..., 1, H, W]
    sq = ((a - b) ** 2 * m).sum(dim=(-3, -2, -1))
    count = (m.sum(dim=(-3, -2, -1)) * a.shape[-3]).expand_as(sq)
    mse = torch.where(count > 0, sq / count.clamp(min=1), torch.full_like(sq, math.nan))
    return _psnr_from_mse(mse, data_range)


def ms_ssim(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> Tensor:
    """MS-SSIM of each image on the 8-bit values (``pytorch_msssim``, 5 scales, 11-tap Gaussian).

    MS-SSIM halves the image 4 times and needs the smaller side to exceed 160 px
    (:data:`MS_SSIM_MIN_SIZE` = 161). For smaller images the value is undefined and NaN is
    returned, so that a metric table over a mixed set shows the gap instead of crashing or
    silently using another definition.

    Args:
        x, y: images ``[..., 3, H, W]``, ``uint8`` or float in [0, 1].

    Returns:
        float64 ``[...]`` in [0, 1]; 1 for identical images.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = _pair(x, y)
    lead = a.shape[:-3]
    h, w = a.shape[-2:]
    if min(h, w) < MS_SSIM_MIN_SIZE:
        return torch.full(lead, math.nan, dtype=torch.float64)
    a4 = a.reshape(-1, *a.shape[-3:])
    b4 = b.reshape(-1, *b.shape[-3:])
    if a4.shape[0] == 0:
        return torch.zeros(lead, dtype=torch.float64)
    val = _ms_ssim(a4, b4, data_range=255.0, size_average=False)
    return val.reshape(lead).to(torch.float64)
