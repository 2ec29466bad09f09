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
    decode_gaussian,
    encode_gaussian,
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

    def compress(self, x: Tensor, cond: Any = None) -> dict:
        """Entropy-code ``x`` (needs ``update()`` first), with CPU-independent entropy parameters.

        Args:
            x: images [B, 3, H, W] in [0, 1], H and W multiples of ``min_div``.
            cond: ignored.

        Returns:
            ``{"strings": list of groups, each a list of B bytes, "shape": latent (h, w), "check":
            CRC32 of the decoded symbols, indexes and means (:mod:`vcm.codecs.exact`)}``.
        """
        return self._compress_exact(x)

    def decompress(self, strings: list, shape: Any, check: int | None = None) -> dict:
        """Decode what :meth:`compress` wrote (entropy parameters computed exactly, ``check`` verified).

        Returns:
            ``{"x_hat": [B, 3, H, W]}`` in [0, 1].

        Raises:
            BitstreamError: the decoded symbols fail ``check``.
        """
        return self._decompress_exact(strings, shape, check)

    def decompress_float(self, strings: list, shape: Any) -> dict:
        """CompressAI's own decoding with float entropy parameters (format-1 files, written that way)."""
        return super().decompress(strings, shape)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The ``shape`` :meth:`compress` writes for an input of ``height`` x ``width`` (multiples of ``min_div``)."""
        return (height // self.min_div, width // self.min_div)


def _check_groups(strings: Any, n: int, codec: str) -> None:
    if not isinstance(strings, (list, tuple)) or len(strings) != n:
        raise BitstreamError(f"{codec} expects {n} string groups, got {len(strings) if isinstance(strings, (list, tuple)) else strings!r}")


class FactorizedImageCodec(_ImageCodecMixin, FactorizedPrior):
    """Ballé et al. 2018 factorized prior (CompressAI ``FactorizedPrior``), y at stride 16.

    ``strings = [y_strings]``, ``shape = y (h, w)``.
    """

    codec_name = "factorized"
    min_div = 16
    quality_channels = _BMSHJ2018_FACTORIZED_CHANNELS

    # no network between the symbols and their tables: the stored tables make it CPU-independent
    def _compress_exact(self, x: Tensor) -> dict:
        y = self.g_a(x)
        strings = self.entropy_bottleneck.compress(y)
        y_hat = self.entropy_bottleneck.decompress(strings, y.shape[-2:])
        return {"strings": [strings], "shape": tuple(int(s) for s in y.shape[-2:]), "check": symbols_check([y_hat])}

    def _decompress_exact(self, strings: list, shape: Any, check: int | None) -> dict:
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

    def _compress_exact(self, x: Tensor) -> dict:
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        y_strings, check = encode_gaussian(self.gaussian_conditional, y, exact_forward(self.h_s, z_hat, "h_s"),
                                           side=[z_hat])
        return {"strings": [y_strings, z_strings], "shape": tuple(int(s) for s in z.shape[-2:]), "check": check}

    def _decompress_exact(self, strings: list, shape: Any, check: int | None) -> dict:
        _check_groups(strings, 2, self.codec_name)
        z_hat = self.entropy_bottleneck.decompress(list(strings[1]), tuple(int(s) for s in shape))
        y_hat = decode_gaussian(self.gaussian_conditional, strings[0], exact_forward(self.h_s, z_hat, "h_s"),
                                check=check, side=[z_hat], device=z_hat.device)
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}


class MeanScaleImageCodec(FineScaleTable, _ImageCodecMixin, MeanScaleHyperprior):
    """Minnen et al. 2018 mean-scale hyperprior (CompressAI ``MeanScaleHyperprior``), z at stride 64.

    ``strings = [y_strings, z_strings]``, ``shape = z (h, w)``.
    """

    codec_name = "mean_scale"
    min_div = 64
    quality_channels = _MBT2018_MEAN_CHANNELS

    def _compress_exact(self, x: Tensor) -> dict:
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = exact_forward(self.h_s, z_hat, "h_s").chunk(2, 1)
        y_strings, check = encode_gaussian(self.gaussian_conditional, y, scales, means, side=[z_hat])
        return {"strings": [y_strings, z_strings], "shape": tuple(int(s) for s in z.shape[-2:]), "check": check}

    def _decompress_exact(self, strings: list, shape: Any, check: int | None) -> dict:
        _check_groups(strings, 2, self.codec_name)
        z_hat = self.entropy_bottleneck.decompress(list(strings[1]), tuple(int(s) for s in shape))
        scales, means = exact_forward(self.h_s, z_hat, "h_s").chunk(2, 1)
        y_hat = decode_gaussian(self.gaussian_conditional, strings[0], scales, means, check=check, side=[z_hat],
                                device=z_hat.device)
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}


def factorized(quality: int | None = None, N: int | None = None, M: int | None = None) -> FactorizedImageCodec:
    """Factorized-prior image codec at a CompressAI zoo quality (1..8); N / M override the table."""
    return FactorizedImageCodec.from_quality(quality, N=N, M=M)


def hyperprior(quality: int | None = None, N: int | None = None, M: int | None = None) -> HyperpriorImageCodec:
    """Scale-hyperprior image codec at a CompressAI zoo quality (1..8); N / M override the table."""
    return HyperpriorImageCodec.from_quality(quality, N=N, M=M)


def mean_scale(quality: int | None = None, N: int | None = None, M: int | None = None) -> MeanScaleImageCodec:
    """Mean-scale-hyperprior image codec at a CompressAI zoo quality (1..8); N / M override the table."""
    return MeanScaleImageCodec.from_quality(quality, N=N, M=M)
