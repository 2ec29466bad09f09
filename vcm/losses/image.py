"""Rate-distortion losses for image codecs, plain and ROI-weighted.

Both follow CompressAI's convention: ``loss = bpp + lmbda * distortion`` with the MSE distortion on the
0..255 scale (``255**2 * mse`` for images in [0, 1]), so a ``lmbda`` of CompressAI's tables means the
same here. Both take the same call signature so a training module can switch between them by config.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_msssim import ms_ssim
from torch import Tensor, nn

from vcm.codecs.base import count_bits
from vcm.data.masks import boxes_to_mask

# boxes_to_mask (vcm.data.masks): the masks the losses take, re-exported for callers

__all__ = ["GainWeightedRateDistortionLoss", "RateDistortionLoss", "RoiRateDistortionLoss", "boxes_to_mask"]

_METRICS = ("mse", "ms-ssim")
# pytorch_msssim's default 11x11 window at 5 scales needs more than (11 - 1) * 2**4 pixels per side
_MS_SSIM_MIN_SIDE = 161


def _as_mask(mask: Tensor | None, target: Tensor, name: str) -> Tensor | None:
    if mask is None:
        return None
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    b, _, h, w = target.shape
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != b or tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(f"{name} must be [B, 1, H, W] = [{b}, 1, {h}, {w}] (or [B, H, W]), got {tuple(mask.shape)}")
    return mask.to(device=target.device, dtype=torch.bool)


def _check_lmbda(lmbda: float) -> float:
    if not isinstance(lmbda, (int, float)) or isinstance(lmbda, bool) or not math.isfinite(lmbda) or lmbda < 0:
        raise ValueError(f"lmbda must be a finite number >= 0, got {lmbda!r}")
    return float(lmbda)


def _bpp(output: dict, target: Tensor, num_pixels: Any, valid: Tensor | None) -> Tensor:
    """Estimated bits per pixel of the batch: all bits / all (original) pixels."""
    bits = count_bits(output["likelihoods"])
    if num_pixels is None:
        total = valid.sum() if valid is not None else target.shape[0] * target.shape[-2] * target.shape[-1]
    else:
        counts = torch.as_tensor(num_pixels, dtype=torch.float64)
        if counts.dim() == 0:  # one count, the same for every image
            total = target.shape[0] * counts
        elif counts.numel() == target.shape[0]:
            total = counts.sum()
        else:
            raise ValueError(
                f"num_pixels must be one count or one per image ({target.shape[0]}), got {counts.numel()} values"
            )
    total = torch.as_tensor(total, dtype=bits.dtype, device=bits.device)
    if total <= 0:
        raise ValueError(f"num_pixels must be positive, got {num_pixels!r}")
    return bits / total


def _squared_error(output: dict, target: Tensor) -> Tensor:
    """Squared error summed over channels: [B, 1, H, W] (float32 even under mixed precision)."""
    x_hat = output["x_hat"]
    if x_hat.shape != target.shape:
        raise ValueError(f"x_hat {tuple(x_hat.shape)} and target {tuple(target.shape)} differ in shape")
    return (x_hat.float() - target.float()).pow(2).sum(dim=1, keepdim=True)


def _region_mse(se: Tensor, region: Tensor | None, channels: int) -> tuple[Tensor, Tensor]:
    """MSE over the pixels of ``region`` only (0 when empty) and the pixel count."""
    if region is None:
        return se.sum() / (channels * se.numel()), torch.tensor(se.numel(), device=se.device)
    count = region.sum()
    return (se * region).sum() / (channels * count.clamp(min=1)), count


class RateDistortionLoss(nn.Module):
    """``loss = bpp + lmbda * 255**2 * mse`` (or ``bpp + lmbda * (1 - ms_ssim)``), as in CompressAI.

    Args:
        lmbda: Lagrange multiplier, >= 0 (CompressAI's MSE table: 0.0018 .. 0.0483).
        metric: ``"mse"`` or ``"ms-ssim"``.
    """

    def __init__(self, lmbda: float, metric: str = "mse"):
        super().__init__()
        self.lmbda = _check_lmbda(lmbda)
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {list(_METRICS)}, got {metric!r}")
        self.metric = metric

    def forward(
        self,
        output: dict,
        target: Tensor,
        num_pixels: int | Sequence[int] | Tensor | None = None,
        roi_mask: Tensor | None = None,
        ignore_mask: Tensor | None = None,
        valid_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the loss and its parts.

        Args:
            output: codec output ``{"x_hat": [B, 3, H, W], "likelihoods": {...}}``.
            target: images [B, 3, H, W] in [0, 1] (padded like ``x_hat``).
            num_pixels: original (unpadded) pixels per image, one number or one per image; defaults to
                the count of ``valid_mask``, else H * W.
            roi_mask: not used: this loss weights every pixel alike (same signature as
                :class:`RoiRateDistortionLoss`).
            ignore_mask: not used, as ``roi_mask``.
            valid_mask: bool [B, 1, H, W], the original pixels of a padded batch; the distortion is
                measured on them only (for MS-SSIM it must be a top-left-anchored rectangle per image).

        Returns:
            ``loss``, ``bpp_loss``, ``distortion`` (``255**2 * mse`` or ``1 - ms_ssim``) and
            ``mse_loss`` (MSE in [0, 1] units) or ``ms_ssim_loss`` (= ``1 - ms_ssim``; CompressAI stores
            the MS-SSIM index itself under that key) with ``ms_ssim``.
        """
        valid = _as_mask(valid_mask, target, "valid_mask")
        out: dict[str, Tensor] = {"bpp_loss": _bpp(output, target, num_pixels, valid)}
        if self.metric == "mse":
            mse, _ = _region_mse(_squared_error(output, target), valid, target.shape[1])
            out["mse_loss"] = mse
            out["distortion"] = 255**2 * mse
        else:
            value = self._ms_ssim(output["x_hat"], target, valid)
            out["ms_ssim"] = value
            out["ms_ssim_loss"] = 1 - value
            out["distortion"] = 1 - value
        out["loss"] = self.lmbda * out["distortion"] + out["bpp_loss"]
        return out

    @staticmethod
    def _ms_ssim(x_hat: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        crops: list[tuple[Tensor, Tensor]] = []
        if valid is None:
            crops = [(x_hat, target)]
        else:
            for i in range(target.shape[0]):
                rows = valid[i, 0].any(dim=1).nonzero()
                cols = valid[i, 0].any(dim=0).nonzero()
                if rows.numel() == 0:
                    raise ValueError(f"valid_mask of image {i} is empty")
                h, w = int(rows.max()) + 1, int(cols.max()) + 1
                if not bool(valid[i, 0, :h, :w].all()) or int(valid[i, 0].sum()) != h * w:
                    raise ValueError(f"ms-ssim needs valid_mask of image {i} to be a rectangle at the top-left")
                crops.append((x_hat[i : i + 1, :, :h, :w], target[i : i + 1, :, :h, :w]))
        values = []
        for a, b in crops:
            if min(a.shape[-2:]) < _MS_SSIM_MIN_SIDE:
                raise ValueError(f"ms-ssim needs images of at least {_MS_SSIM_MIN_SIDE} px per side, got {tuple(a.shape[-2:])}")
            values.append(ms_ssim(a.float(), b.float(), data_range=1.0, size_average=False))
        return torch.cat(values).mean()


class RoiRateDistortionLoss(nn.Module):
    """``L = bpp + lmbda * 255**2 * [alpha * D_roi + (1 - alpha) * D_bg]``.

    Each region's MSE is measured over its own pixels only (sum of squared errors over the region's
    pixels and channels / (3 * pixels in the region)), pooled over the whole batch: a batch's ROI
    pixels form one region, so images with larger objects weigh more.

    Pixel sets, with ``valid`` = ``valid_mask`` (all pixels when None):

    * ROI = ``roi_mask & valid`` (ROI takes precedence over DontCare: a labelled object stays an
      object where a DontCare box overlaps it);
    * ignored = ``ignore_mask & ~roi_mask`` when ``ignore_dontcare`` (else nothing is ignored and
      DontCare pixels are background);
    * background = ``valid & ~ROI & ~ignored``.

    Empty region: its term is 0 and the weights are *not* renormalised. So a batch without objects
    gives ``bpp + lmbda * 255**2 * (1 - alpha) * D_bg``. This keeps the weight of a background pixel,
    ``(1 - alpha) / |background|``, independent of whether the batch happens to hold an object;
    renormalising would give object-free batches ``1 / (1 - alpha)`` (200x at alpha = 0.995) more
    background weight and teach the codec two different trade-offs.

    Args:
        lmbda: Lagrange multiplier, >= 0.
        alpha: share of the distortion weight given to ROIs, in [0, 1] (1: background ignored).
        ignore_dontcare: exclude ``ignore_mask`` pixels (DontCare) from both regions.
    """

    def __init__(self, lmbda: float, alpha: float, ignore_dontcare: bool = True):
        super().__init__()
        self.lmbda = _check_lmbda(lmbda)
        if (
            not isinstance(alpha, (int, float))
            or isinstance(alpha, bool)
            or not math.isfinite(alpha)
            or not 0.0 <= alpha <= 1.0
        ):
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.ignore_dontcare = bool(ignore_dontcare)

    def forward(
        self,
        output: dict,
        target: Tensor,
        num_pixels: int | Sequence[int] | Tensor | None = None,
        roi_mask: Tensor | None = None,
        ignore_mask: Tensor | None = None,
        valid_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the loss and its parts.

        Args:
            output: codec output ``{"x_hat": [B, 3, H, W], "likelihoods": {...}}``.
            target: images [B, 3, H, W] in [0, 1].
            num_pixels: original pixels per image for the rate (see :class:`RateDistortionLoss`).
            roi_mask: bool [B, 1, H, W], union of the object boxes (:func:`boxes_to_mask`). Required.
            ignore_mask: bool [B, 1, H, W], DontCare regions, or None.
            valid_mask: bool [B, 1, H, W], original pixels of a padded batch, or None for all.

        Returns:
            ``loss``, ``bpp_loss``, ``distortion`` (``255**2 * (alpha * roi_mse + (1 - alpha) * bg_mse)``),
            ``roi_mse``, ``bg_mse`` (each over its own pixels, [0, 1] units, 0 when empty),
            ``mse_loss`` (over all valid pixels, DontCare included) and ``roi_fraction``
            (ROI pixels / (ROI + background pixels)).
        """
        if roi_mask is None:
            raise ValueError("RoiRateDistortionLoss needs roi_mask (bool [B, 1, H, W]; see boxes_to_mask)")
        roi = _as_mask(roi_mask, target, "roi_mask")
        ignore = _as_mask(ignore_mask, target, "ignore_mask")
        valid = _as_mask(valid_mask, target, "valid_mask")
        valid_all = valid if valid is not None else torch.ones_like(roi)
        roi_px = roi & valid_all
        bg_px = valid_all & ~roi
        if ignore is not None and self.ignore_dontcare:
            bg_px = bg_px & ~ignore

        se = _squared_error(output, target)
        channels = target.shape[1]
        roi_mse, n_roi = _region_mse(se, roi_px, channels)
        bg_mse, n_bg = _region_mse(se, bg_px, channels)
        mse, _ = _region_mse(se, valid, channels)
        distortion = 255**2 * (self.alpha * roi_mse + (1 - self.alpha) * bg_mse)
        bpp = _bpp(output, target, num_pixels, valid)
        return {
            "loss": bpp + self.lmbda * distortion,
            "bpp_loss": bpp,
            "distortion": distortion,
            "roi_mse": roi_mse,
            "bg_mse": bg_mse,
            "mse_loss": mse,
            "roi_fraction": n_roi.float() / (n_roi + n_bg).clamp(min=1).float(),
        }


class GainWeightedRateDistortionLoss(nn.Module):
    """``L = bpp + lmbda * 255**2 * mean(G**2 * squared error)``: each pixel weighted by the square of
    the gain its latent cell is quantised with (:mod:`vcm.codecs.gain_hyperprior`).

    A quantiser step ``1 / G`` is rate-distortion optimal at a Lagrange multiplier ``lmbda * G**2``
    (distortion grows with the square of the step, the rate with its logarithm), so one model trained
    on random gain maps learns the trade-off of every local rate: ``G = 1`` everywhere is the plain RD
    loss at ``lmbda``, a map with ``g_roi > g_bg`` an ROI-weighted one (ROI / background weight
    ``(g_roi / g_bg)**2``).

    Args:
        lmbda: Lagrange multiplier at ``G = 1``, >= 0.
    """

    def __init__(self, lmbda: float):
        super().__init__()
        self.lmbda = _check_lmbda(lmbda)

    def forward(
        self,
        output: dict,
        target: Tensor,
        num_pixels: int | Sequence[int] | Tensor | None = None,
        roi_mask: Tensor | None = None,
        ignore_mask: Tensor | None = None,
        valid_mask: Tensor | None = None,
        weight_map: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the loss and its parts.

        Args:
            output, target, num_pixels, valid_mask: as :class:`RateDistortionLoss`.
            roi_mask: bool [B, 1, H, W] of the map's ROI pixels, or None: only reported (``roi_mse``, ``bg_mse``).
            ignore_mask: not used.
            weight_map: float [B, 1, H, W], ``G**2`` per pixel. Required.

        Returns:
            ``loss``, ``bpp_loss``, ``distortion`` (``255**2 * mean(G**2 * se) / 3``), ``mse_loss`` and,
            with ``roi_mask``, ``roi_mse`` and ``bg_mse`` ([0, 1] units, each over its own pixels).
        """
        if weight_map is None:
            raise ValueError("GainWeightedRateDistortionLoss needs weight_map (float [B, 1, H, W]: G**2 per pixel)")
        if weight_map.dim() != 4 or weight_map.shape[1] != 1 or weight_map.shape[0] != target.shape[0] \
                or tuple(weight_map.shape[-2:]) != tuple(target.shape[-2:]):
            raise ValueError(f"weight_map must be [B, 1, H, W] like the target {tuple(target.shape)}, got {tuple(weight_map.shape)}")
        valid = _as_mask(valid_mask, target, "valid_mask")
        se = _squared_error(output, target)
        channels = target.shape[1]
        weighted, _ = _region_mse(se * weight_map.float(), valid, channels)
        mse, _ = _region_mse(se, valid, channels)
        bpp = _bpp(output, target, num_pixels, valid)
        out = {"loss": bpp + self.lmbda * 255**2 * weighted, "bpp_loss": bpp, "distortion": 255**2 * weighted,
               "mse_loss": mse}
        if roi_mask is not None:
            roi = _as_mask(roi_mask, target, "roi_mask")
            valid_all = valid if valid is not None else torch.ones_like(roi)
            out["roi_mse"], _ = _region_mse(se, roi & valid_all, channels)
            out["bg_mse"], _ = _region_mse(se, valid_all & ~roi, channels)
        return out
