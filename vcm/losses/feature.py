"""Rate-distortion loss of the feature codecs (L-MSFC, TA-MSF)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcm.detectors.features import p6_from_p5

__all__ = ["FEATURE_LEVELS", "FeatureRateDistortionLoss"]

#: Levels a feature codec reconstructs (P6 rebuilt from P5).
FEATURE_LEVELS: tuple[str, ...] = ("p2", "p3", "p4", "p5", "p6")

_DEFAULT_WEIGHTS = {"p2": 0.2, "p3": 0.2, "p4": 0.2, "p5": 0.2, "p6": 0.2}


class FeatureRateDistortionLoss(nn.Module):
    r"""``L = lmbda * sum_l w_l * MSE(P_l_hat, P_l) + bpp`` over the FPN levels P2..P6.

    The rate is counted per pixel of the ORIGINAL image, not per feature element or per pixel of
    the detector-resized, batch-padded input: that is the unit the rate is reported in (``bpp_real``
    = bitstream bits over the original H x W), so one lambda means the same thing for images of any
    size. It does NOT make lambda independent of the detector's resize factor: the coded feature
    elements per original pixel grow with the square of that factor (and the features describe
    content at another scale), so a lambda trained at one factor is another trade-off at another.
    Training crops therefore go through the detector at their frames' factor, the one evaluation
    uses (``vcm.detectors.features.frame_scale_factors``); the detector's own transform would
    enlarge a 256x256 KITTI crop 1.46x, ~2.1x the elements per pixel of a full frame. The feature
    tensors do not carry the original size, hence ``num_pixels`` is a required argument.

    Args:
        lmbda: weight of the distortion term, >= 0 (``vcm.codecs.lmsfc.LMSFC_LAMBDAS``).
        weights: weight per level, keys among p2..p6, non-negative; missing levels weigh 0.
            Default: 0.2 for each of p2..p6 (the paper's equal weights).

    Raises:
        ValueError: negative or non-finite lmbda or weight, or an unknown level name.
    """

    def __init__(self, lmbda: float, weights: Mapping[str, float] | None = None):
        super().__init__()
        lmbda = float(lmbda)
        if not math.isfinite(lmbda) or lmbda < 0:
            raise ValueError(f"lmbda={lmbda!r} must be a finite number >= 0")
        weights = dict(_DEFAULT_WEIGHTS if weights is None else weights)
        for key, value in weights.items():
            if key not in FEATURE_LEVELS:
                raise ValueError(
                    f"weights has unknown level {key!r}; expected keys among {list(FEATURE_LEVELS)}"
                )
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"weights[{key!r}]={value!r} must be a finite number >= 0")
            weights[key] = value
        self.lmbda = lmbda
        self.weights = {k: weights.get(k, 0.0) for k in FEATURE_LEVELS}

    def forward(
        self,
        output: Mapping,
        levels: Mapping[str, Tensor],
        num_pixels: float | Sequence[float] | Tensor,
    ) -> dict[str, Tensor]:
        """Computes every term of the loss.

        Args:
            output: a feature codec's ``forward`` output: ``{"levels_hat": {p2..p6: [B,C,h_l,w_l]},
                "likelihoods": {name: Tensor}}``.
            levels: the target levels p2..p5 (p6 optional: when absent it is computed from p5 as
                the codec rebuilds it, ``max_pool2d(p5, kernel_size=1, stride=2)``), [B,C,h_l,w_l].
            num_pixels: H*W of the original image (one number for the whole batch), or one value
                per image (a sequence or tensor of length B) when the originals differ in size.

        Returns:
            ``{"loss", "bpp_loss", "feature_mse", "mse_p2", ..., "mse_p6"}`` (scalar tensors);
            ``feature_mse`` is the weighted sum of the per-level MSEs.

        Raises:
            ValueError: missing levels, shape mismatch, or non-positive ``num_pixels``.
        """
        levels_hat = output["levels_hat"]
        target = dict(levels)
        if "p6" not in target:
            if "p5" not in target:
                raise ValueError(f"target levels {list(levels)} lack 'p5'; expected p2..p5")
            target["p6"] = p6_from_p5(target["p5"])

        out: dict[str, Tensor] = {}
        feature_mse = None
        for name in FEATURE_LEVELS:
            if name not in levels_hat or name not in target:
                raise ValueError(
                    f"level {name!r} missing: output has {list(levels_hat)}, target has {list(target)}"
                )
            hat, ref = levels_hat[name], target[name]
            if hat.shape != ref.shape:
                raise ValueError(
                    f"level {name!r}: reconstruction {tuple(hat.shape)} and target {tuple(ref.shape)} differ"
                )
            mse = F.mse_loss(hat, ref)
            out[f"mse_{name}"] = mse
            term = self.weights[name] * mse
            feature_mse = term if feature_mse is None else feature_mse + term

        batch = target["p2"].shape[0]
        total_pixels = self._total_pixels(num_pixels, batch)
        bits = sum(torch.log(lik).sum() for lik in output["likelihoods"].values()) / -math.log(2)
        bpp = bits / total_pixels

        out["feature_mse"] = feature_mse
        out["bpp_loss"] = bpp
        out["loss"] = self.lmbda * feature_mse + bpp
        return out

    @staticmethod
    def _total_pixels(num_pixels, batch: int) -> float:
        """Original pixels in the batch: ``B * num_pixels``, or the sum of per-image counts."""
        if isinstance(num_pixels, Tensor):
            num_pixels = num_pixels.tolist()
        if isinstance(num_pixels, Sequence):
            if len(num_pixels) != batch:
                raise ValueError(f"num_pixels has {len(num_pixels)} entries for a batch of {batch} images")
            values = [float(v) for v in num_pixels]
        else:
            values = [float(num_pixels)] * batch
        if any(not math.isfinite(v) or v <= 0 for v in values):
            raise ValueError(f"num_pixels={num_pixels!r} must be positive (H*W of the original image)")
        return sum(values)
