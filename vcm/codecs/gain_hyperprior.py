"""The learned ROI codec on the gain map: a scale hyperprior whose transforms know the gain map.

The training-free ROI gain (:mod:`vcm.codecs.roi_gain`) scales the latent per cell before rounding; the
transforms never learn what the gain does to them. This codec conditions both transforms on the gain
map ``G`` (on the latent grid, known to both sides: the file carries its boxes and gains)::

    y      = g_a(x | log2 G)            the encoder may shape y for the quantiser it gets
    sym    = round(y * G)               coded at scales sigma * G (sigma = h_s(z_hat), as the plain codec)
    x_hat  = g_s(sym / G | log2 G)      the decoder knows where the quantiser was coarse or fine

The conditioning is a spatial feature transform (SFT, Wang et al. 2018; as in Song et al., ICCV 2021,
for quality maps) after each GDN of ``g_a`` and each inverse GDN of ``g_s``: ``f * (1 + gamma) + beta``
with ``gamma, beta`` computed from ``log2 G`` by a small network per side. Their last layers start at
zero, so a codec warm-started from a zoo hyperprior (``init_from``) *is* that hyperprior with the
training-free gain until it is trained. ``h_a``, ``h_s`` and the entropy models are the plain
hyperprior's, so the exact entropy parameters (:mod:`vcm.codecs.exact`) and the container are
unchanged; only the analysis (encoder, any float) and the synthesis (decoder, pixels) depend on ``G``.

One model covers the rate range: a uniform ``G`` is a rate point, a map with ``g_roi > g_bg`` an ROI
coding. Trained by :class:`vcm.modules.gain_codec.GainCodecModule` with random gain maps per crop and
the gain-weighted RD loss (:class:`vcm.losses.image.GainWeightedRateDistortionLoss`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor, nn

from vcm.codecs.exact import LatentAnalysis, code_analysis
from vcm.codecs.image import HyperpriorImageCodec, _hyper_parameters, decode_hyperprior
from vcm.codecs.roi_gain import Y_STRIDE
from vcm.errors import BitstreamError

__all__ = ["GainHyperprior", "GainTransform", "gain_hyperprior"]


class GainTransform(nn.Module):
    """``f * (1 + gamma) + beta``, ``gamma, beta`` from the gain features resized to ``f`` (zero at start)."""

    def __init__(self, cond_channels: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cond_channels, cond_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(cond_channels, 2 * channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, f: Tensor, cond: Tensor) -> Tensor:
        c = F.interpolate(cond, size=f.shape[-2:], mode="nearest") if cond.shape[-2:] != f.shape[-2:] else cond
        gamma, beta = self.out(self.body(c)).chunk(2, 1)
        return f * (1 + gamma) + beta


def _trunk(cond_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, cond_channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cond_channels, cond_channels, 3, padding=1), nn.ReLU(inplace=True))


class GainHyperprior(HyperpriorImageCodec):
    """Scale hyperprior (CompressAI's layout, so zoo weights load as they are) with gain-map-conditioned
    transforms; ``strings = [y_strings, z_strings]``, ``shape = z (h, w)`` as the plain codec.

    Args:
        N, M: channels of the transforms and of ``y`` (the zoo's q1-q5: 128, 192).
        cond_channels: channels of the gain-conditioning networks.
    """

    codec_name = "gain_hyperprior"
    #: the analysis depends on the gain map: rate control re-analyses for every gain it tries
    analysis_takes_gain = True

    def __init__(self, N: int, M: int, cond_channels: int = 32, **kwargs: Any):
        super().__init__(N, M, **kwargs)
        self.enc_trunk = _trunk(cond_channels)
        self.dec_trunk = _trunk(cond_channels)
        n_enc = sum(isinstance(m, GDN) and not m.inverse for m in self.g_a)
        n_dec = sum(isinstance(m, GDN) and m.inverse for m in self.g_s)
        self.enc_gain = nn.ModuleList(GainTransform(cond_channels, N) for _ in range(n_enc))
        self.dec_gain = nn.ModuleList(GainTransform(cond_channels, N) for _ in range(n_dec))

    # ------------------------------------------------------------------ the conditioned transforms
    @staticmethod
    def _gain(gain: Tensor | None, y_hw: tuple[int, int], batch: int, ref: Tensor) -> Tensor:
        """The gain map as float [B, 1, h, w] on ``ref``'s device (ones when None)."""
        if gain is None:
            return torch.ones(batch, 1, *y_hw, device=ref.device, dtype=torch.float32)
        if gain.dim() != 4 or gain.shape[1] != 1 or tuple(gain.shape[-2:]) != tuple(y_hw):
            raise ValueError(f"gain map must be [B, 1, {y_hw[0]}, {y_hw[1]}] on the latent grid, got {tuple(gain.shape)}")
        return gain.to(ref.device, torch.float32).expand(batch, -1, -1, -1)

    def _conditioned(self, layers: nn.Sequential, transforms: nn.ModuleList, trunk: nn.Module, x: Tensor,
                     log_gain: Tensor) -> Tensor:
        cond = trunk(log_gain.to(x.dtype))
        k = 0
        for layer in layers:
            x = layer(x)
            if isinstance(layer, GDN):
                x = transforms[k](x, cond)
                k += 1
        return x

    def analysis(self, x: Tensor, gain: Tensor | None = None) -> Tensor:
        """``y = g_a(x | log2 G)``; ``gain`` on the latent grid (None: G = 1)."""
        y_hw = (x.shape[-2] // Y_STRIDE, x.shape[-1] // Y_STRIDE)
        g = self._gain(gain, y_hw, x.shape[0], x)
        return self._conditioned(self.g_a, self.enc_gain, self.enc_trunk, x, torch.log2(g))

    def synthesis(self, y_hat: Tensor, gain: Tensor | None = None) -> Tensor:
        """``x_hat = g_s(y_hat | log2 G)``."""
        g = self._gain(gain, tuple(y_hat.shape[-2:]), y_hat.shape[0], y_hat)
        return self._conditioned(self.g_s, self.dec_gain, self.dec_trunk, y_hat, torch.log2(g))

    # ------------------------------------------------------------------ training / coding
    def forward(self, x: Tensor, cond: Any = None, gain: Tensor | None = None) -> dict:
        """Code ``x`` at the gain map ``gain`` [B or 1, 1, H/16, W/16] (None: 1) with quantisation noise
        (training) or rounding (eval): ``y * G`` at scales ``sigma * G``, decoded as ``/ G``."""
        y_hw = (x.shape[-2] // Y_STRIDE, x.shape[-1] // Y_STRIDE)
        g = self._gain(gain, y_hw, x.shape[0], x)
        log_gain = torch.log2(g)
        y = self._conditioned(self.g_a, self.enc_gain, self.enc_trunk, x, log_gain)
        z = self.h_a(torch.abs(y))
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales = self.h_s(z_hat)
        # the gain in fp32 (the entropy models' precision), also under mixed precision
        y_hat, y_likelihoods = self.gaussian_conditional(y.float() * g, scales.float() * g)
        x_hat = self._conditioned(self.g_s, self.dec_gain, self.dec_trunk, y_hat / g, log_gain)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def compress(self, x: Tensor, cond: Any = None, gain: Tensor | None = None) -> dict:
        return code_analysis(self.gaussian_conditional, self.analyse(x, cond, gain), gain)

    def analyse(self, x: Tensor, cond: Any = None, gain: Tensor | None = None) -> LatentAnalysis:
        """As the plain hyperprior's, with ``y`` analysed at the gain map ``gain`` (None: G = 1)."""
        y = self.analysis(x, gain)
        z = self.h_a(torch.abs(y))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = _hyper_parameters(self, z_hat)
        return LatentAnalysis(y, scales, means, [z_strings], [z_hat], tuple(int(s) for s in z.shape[-2:]))

    def decompress(self, strings: list, shape: Any, check: int | None = None, gain: Tensor | None = None) -> dict:
        y_hat = decode_hyperprior(self, strings, shape, check, gain, codec=self.codec_name)
        return {"x_hat": self.synthesis(y_hat, gain).clamp_(0, 1)}

    def decompress_float(self, strings: list, shape: Any) -> dict:
        raise BitstreamError("a gain_hyperprior file must be container format 2 or later (decoded exactly)")


def gain_hyperprior(quality: int | None = None, N: int | None = None, M: int | None = None,
                    cond_channels: int = 32) -> GainHyperprior:
    """Gain-map-conditioned scale hyperprior at a CompressAI zoo quality (1..8); N / M override the table."""
    return GainHyperprior.from_quality(quality, N=N, M=M, cond_channels=cond_channels)
