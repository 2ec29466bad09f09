"""Learned image codecs of CompressAI with vcm's common signature.

The three classes are CompressAI's models, unchanged in architecture, with what every vcm codec
declares: ``codec_name``, ``min_div`` (inputs must be multiples of it), ``needs`` (nothing, see
:class:`vcm.codecs.base.CodecContract`) and
``forward(x, cond=None)`` / ``compress(x, cond=None)`` so that one training and evaluation path serves
the unconditioned codecs and the detector-conditioned :class:`~vcm.codecs.roi_hyperprior.RoiHyperprior`.

The factories :func:`factorized`, :func:`hyperprior` and :func:`mean_scale` map a quality 1..8 to the
channel numbers (N, M) of CompressAI's model zoo, so ``quality`` means what it means in CompressAI.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from compressai.models import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior
from compressai.zoo.image import cfgs as ZOO_CFGS
from torch import Tensor

from vcm.codecs.base import CodecContract, FineScaleTable
from vcm.codecs.exact import (
    LatentAnalysis,
    code_analysis,
    decode_gaussian,
    exact_forward,
    symbols_check,
    verify_check,
)
from vcm.errors import BitstreamError

__all__ = [
    "FactorizedImageCodec",
    "HyperpriorImageCodec",
    "MeanScaleImageCodec",
    "factorized",
    "hyperprior",
    "mean_scale",
]

# CompressAI's zoo: quality -> (N, M) of each model (mbt2018-mean's wider model starts one quality earlier).
_BMSHJ2018_FACTORIZED_CHANNELS: dict[int, tuple[int, int]] = ZOO_CFGS["bmshj2018-factorized"]
_BMSHJ2018_HYPERPRIOR_CHANNELS: dict[int, tuple[int, int]] = ZOO_CFGS["bmshj2018-hyperprior"]
_MBT2018_MEAN_CHANNELS: dict[int, tuple[int, int]] = ZOO_CFGS["mbt2018-mean"]


class _ImageCodecMixin(CodecContract):
    """What vcm adds to a CompressAI image model: declared attributes and the ``cond`` argument."""

    codec_name: ClassVar[str]
    min_div: ClassVar[int]
    quality_channels: ClassVar[dict[int, tuple[int, int]]]
    quality: int | None = None  # set by from_quality; None when built from N and M

    @classmethod
    def from_quality(cls, quality: int | None = None, N: int | None = None, M: int | None = None, **kwargs: Any):
        """Build the model for a CompressAI zoo quality; explicit ``N`` / ``M`` override the table.

        Args:
            quality: 1..8 (CompressAI's zoo), or None when both ``N`` and ``M`` are given.
            N: channels of the transforms (and of ``z`` for the hyperpriors).
            M: channels of the latent ``y``.
            **kwargs: passed to the CompressAI constructor.

        Raises:
            ValueError: quality outside 1..8, or neither a quality nor both N and M.
        """
        if quality is not None:
            valid = sorted(cls.quality_channels)
            if isinstance(quality, bool) or not isinstance(quality, int) or quality not in cls.quality_channels:
                raise ValueError(
                    f"{cls.codec_name}: quality must be an integer in {valid[0]}..{valid[-1]}, got {quality!r}"
                )
            n_q, m_q = cls.quality_channels[quality]
            N = n_q if N is None else N
            M = m_q if M is None else M
        if N is None or M is None:
            raise ValueError(
                f"{cls.codec_name}: give a quality in {min(cls.quality_channels)}..{max(cls.quality_channels)} "
                f"or both N and M (got quality=None, N={N}, M={M})"
            )
        if int(N) < 1 or int(M) < 1:
            raise ValueError(f"{cls.codec_name}: N and M must be positive, got N={N}, M={M}")
        model = cls(int(N), int(M), **kwargs)
        model.quality = quality
        return model

    def forward(self, x: Tensor, cond: Any = None) -> dict:
        """Code ``x`` with quantisation noise (training) or rounding (eval).

        Args:
            x: images [B, 3, H, W] in [0, 1], H and W multiples of ``min_div``.
            cond: ignored (these codecs see no detector features).

        Returns:
            ``{"x_hat": [B, 3, H, W], "likelihoods": {"y": ..., ("z": ...)}}``.
        """
        return super().forward(x)

    def compress(self, x: Tensor, cond: Any = None, gain: Tensor | None = None) -> dict:
        """Entropy-code ``x`` (needs ``update()`` first), with CPU-independent entropy parameters.

        Args:
            x: images [B, 3, H, W] in [0, 1], H and W multiples of ``min_div``.
            cond: ignored.
            gain: a gain map on the latent grid [1, 1, H/16, W/16] (:mod:`vcm.codecs.roi_gain`;
                hyperprior-family codecs only), or None.

        Returns:
            ``{"strings": list of groups, each a list of B bytes, "shape": latent (h, w), "check":
            CRC32 of the decoded symbols, indexes and means (:mod:`vcm.codecs.exact`)}``.
        """
        return code_analysis(self.gaussian_conditional, self.analyse(x, cond), gain)

    def analyse(self, x: Tensor, cond: Any = None) -> LatentAnalysis:
        """Everything :meth:`compress` computes before coding ``y`` (z coded, exact scales and means)."""
        return analyse_hyperprior(self, x)

    def decompress(self, strings: list, shape: Any, check: int | None = None, gain: Tensor | None = None) -> dict:
        """Decode what :meth:`compress` wrote (entropy parameters computed exactly, ``check`` verified).

        Returns:
            ``{"x_hat": [B, 3, H, W]}`` in [0, 1].

        Raises:
            BitstreamError: the decoded symbols fail ``check``.
        """
        return {"x_hat": self.g_s(decode_hyperprior(self, strings, shape, check, gain)).clamp_(0, 1)}

    def decompress_float(self, strings: list, shape: Any) -> dict:
        """CompressAI's own decoding with float entropy parameters (format-1 files, written that way)."""
        return super().decompress(strings, shape)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The ``shape`` :meth:`compress` writes for an input of ``height`` x ``width`` (multiples of ``min_div``)."""
        return (height // self.min_div, width // self.min_div)


def _check_groups(strings: Any, n: int, codec: str) -> None:
    if not isinstance(strings, (list, tuple)) or len(strings) != n:
        got = len(strings) if isinstance(strings, (list, tuple)) else type(strings).__name__
        raise BitstreamError(f"{codec} expects {n} string groups, got {got}")


def _hyper_parameters(model: ScaleHyperprior, z_hat: Tensor) -> tuple[Tensor, Tensor | None]:
    params = exact_forward(model.h_s, z_hat, "h_s")
    if isinstance(model, MeanScaleHyperprior):
        scales, means = params.chunk(2, 1)
        return scales, means
    return params, None


def analyse_hyperprior(model: ScaleHyperprior, x: Tensor) -> LatentAnalysis:
    """The encoder of a scale or mean-scale hyperprior (CompressAI's structure: ``g_a``, ``h_a``, ``h_s``)
    up to the coding of ``y``: z coded and decoded, the exact scales (and means) from it."""
    y = model.g_a(x)
    z = model.h_a(y if isinstance(model, MeanScaleHyperprior) else torch.abs(y))
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
    scales, means = _hyper_parameters(model, z_hat)
    return LatentAnalysis(y, scales, means, [z_strings], [z_hat], tuple(int(s) for s in z.shape[-2:]))


def decode_hyperprior(model: ScaleHyperprior, strings: list, shape: Any, check: int | None = None,
                      gain: Tensor | None = None, codec: str = "hyperprior") -> Tensor:
    """``y_hat`` of what :func:`analyse_hyperprior` and :func:`~vcm.codecs.exact.code_analysis` wrote."""
    _check_groups(strings, 2, getattr(model, "codec_name", codec))
    z_hat = model.entropy_bottleneck.decompress(list(strings[1]), tuple(int(s) for s in shape))
    scales, means = _hyper_parameters(model, z_hat)
    return decode_gaussian(model.gaussian_conditional, strings[0], scales, means, check=check, side=[z_hat],
                           device=z_hat.device, gain=gain)


class FactorizedImageCodec(_ImageCodecMixin, FactorizedPrior):
    """Ballé et al. 2018 factorized prior (CompressAI ``FactorizedPrior``), y at stride 16.

    ``strings = [y_strings]``, ``shape = y (h, w)``. No gain map: its tables are fixed per channel.
    """

    codec_name = "factorized"
    min_div = 16
    quality_channels = _BMSHJ2018_FACTORIZED_CHANNELS

    # no network between the symbols and their tables: the stored tables make it CPU-independent
    def compress(self, x: Tensor, cond: Any = None, gain: Tensor | None = None) -> dict:
        if gain is not None:
            raise ValueError("the factorized prior codes with fixed tables: a gain map needs a hyperprior codec")
        y = self.g_a(x)
        strings = self.entropy_bottleneck.compress(y)
        y_hat = self.entropy_bottleneck.decompress(strings, y.shape[-2:])
        return {"strings": [strings], "shape": tuple(int(s) for s in y.shape[-2:]), "check": symbols_check([y_hat])}

    def analyse(self, x: Tensor, cond: Any = None) -> LatentAnalysis:
        raise ValueError("the factorized prior has no Gaussian latent to analyse (no gain map, no rate control)")

    def decompress(self, strings: list, shape: Any, check: int | None = None, gain: Tensor | None = None) -> dict:
        if gain is not None:
            raise BitstreamError("a factorized-prior file carries no gain map")
        _check_groups(strings, 1, self.codec_name)
        y_hat = self.entropy_bottleneck.decompress(list(strings[0]), tuple(int(s) for s in shape))
        verify_check(check, symbols_check([y_hat]))
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}


class HyperpriorImageCodec(FineScaleTable, _ImageCodecMixin, ScaleHyperprior):
    """Ballé et al. 2018 scale hyperprior (CompressAI ``ScaleHyperprior``), z at stride 64.

    ``strings = [y_strings, z_strings]``, ``shape = z (h, w)``.
    """

    codec_name = "hyperprior"
    min_div = 64
    quality_channels = _BMSHJ2018_HYPERPRIOR_CHANNELS


class MeanScaleImageCodec(FineScaleTable, _ImageCodecMixin, MeanScaleHyperprior):
    """Minnen et al. 2018 mean-scale hyperprior (CompressAI ``MeanScaleHyperprior``), z at stride 64.

    ``strings = [y_strings, z_strings]``, ``shape = z (h, w)``.
    """

    codec_name = "mean_scale"
    min_div = 64
    quality_channels = _MBT2018_MEAN_CHANNELS


def factorized(quality: int | None = None, N: int | None = None, M: int | None = None) -> FactorizedImageCodec:
    """Factorized-prior image codec at a CompressAI zoo quality (1..8); N / M override the table."""
    return FactorizedImageCodec.from_quality(quality, N=N, M=M)


def hyperprior(quality: int | None = None, N: int | None = None, M: int | None = None) -> HyperpriorImageCodec:
    """Scale-hyperprior image codec at a CompressAI zoo quality (1..8); N / M override the table."""
    return HyperpriorImageCodec.from_quality(quality, N=N, M=M)


def mean_scale(quality: int | None = None, N: int | None = None, M: int | None = None) -> MeanScaleImageCodec:
    """Mean-scale-hyperprior image codec at a CompressAI zoo quality (1..8); N / M override the table."""
    return MeanScaleImageCodec.from_quality(quality, N=N, M=M)
