"""L-MSFC and TA-MSF: learned compression of a detector's multi-scale FPN features.

Kim, Jeong, Yu, Kim, Lee, Jeong, Kim: "End-to-End Learnable Multi-Scale Feature Compression for
VCM", IEEE TCSVT 34(5), 2024 (code: github.com/VML-lambda/L-MSFC, ``src/model.py``). FENet fuses
the four FPN levels P2..P5 into one latent ``y`` at 1/16 of P2's resolution, a shared entropy model
codes it, and DRNet rebuilds the four levels from ``y_hat``. P6 is never coded: it is rebuilt from
the decoded P5 exactly as torchvision's FPN builds it from P5 (max-pooling with kernel 1 and
stride 2). As in the source's code, one width M serves the fusion stages, the latent ``y``, the
hyper latent ``z`` and DRNet's branches (M = 128 at qualities 1-3, 192 at 4-6); the ``light``
variant keeps a cheaper decoder (:class:`vcm.codecs.lmsfc_transforms.DRNetLight`) and N = 192.

TA-MSF (task-aware multi-scale feature compression) uses the same architecture with M = 192, a
joint autoregressive prior and an attention block in every fusion stage of FENet; only its training
loss differs (it adds the detector's losses on the reconstructed features).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import MaskedConv2d, conv3x3, subpel_conv3x3
from compressai.models import CompressionModel
from torch import Tensor, nn

from vcm.codecs.base import CodecContract, FineScaleTable, Needs, build_indexes
from vcm.codecs.exact import (
    decode_gaussian,
    encode_gaussian,
    exact_forward,
    on_grid,
    symbols_check,
    verify_check,
)
from vcm.codecs.guard import guarded_string
from vcm.codecs.lmsfc_transforms import DRNet, DRNetLight, FENet
from vcm.detectors.features import p6_from_p5
from vcm.errors import BitstreamError, ConfigError
from vcm.utils.config import lambda_table

__all__ = [
    "ENTROPY_MODELS",
    "LMSFC",
    "LMSFC_LAMBDAS",
    "LMSFC_M",
    "LMSFC_N",
    "LMSFC_N_LIGHT",
    "DRNet",
    "DRNetLight",
    "FENet",
    "lmsfc",
    "ta_msf",
]

#: The levels the codec transmits, finest first. P6 is rebuilt, never coded.
LEVELS: tuple[str, ...] = ("p2", "p3", "p4", "p5")

#: Downsampling of each coded level relative to P2.
_LEVEL_SCALE: tuple[int, ...] = (1, 2, 4, 8)

#: The padded P2 is a multiple of this, hence P3 of 32, P4 of 16 and P5 of 8: ``y`` is at 1/16 of
#: P2 and the hyper latent ``z`` at 1/64, so every strided stage divides exactly.
_P2_MULTIPLE = 64

#: Spatial ratio between ``y`` and ``z`` (two stride-2 stages in ``h_a``).
_Z_TO_Y = 4

#: Kernel size of the masked context-prediction convolution.
_CONTEXT_KERNEL = 5

#: Rate-distortion trade-off per quality, for :class:`vcm.losses.feature.FeatureRateDistortionLoss`:
#: the table of conf/model_base/lambdas_feature.yaml (written there once, for lmsfc and ta_msf).
LMSFC_LAMBDAS: dict[int, float] = lambda_table("feature")

#: Latent channels per quality (the source's training script: 128 for qualities 1-3, else 192).
LMSFC_M: dict[int, int] = {1: 128, 2: 128, 3: 128, 4: 192, 5: 192, 6: 192}

#: Channels of the fusion stages, of DRNet's branches and of the hyper latent per quality: the
#: source uses the one width M for all of them.
LMSFC_N: dict[int, int] = dict(LMSFC_M)

#: N of the ``light`` variant at every quality.
LMSFC_N_LIGHT = 192

#: Valid values of ``entropy_model``.
ENTROPY_MODELS: tuple[str, ...] = ("context", "hyperprior")

_FEATURE_CHANNELS = 256


def _check_quality(quality: int | None) -> None:
    if quality is not None and quality not in LMSFC_M:
        raise ConfigError(f"quality={quality!r} is not valid; expected one of {sorted(LMSFC_M)}")


def padded_p2_size(sizes: Sequence[Sequence[int]]) -> tuple[int, int]:
    """Padded size of P2 such that every padded level is P2's padded size over its scale.

    The padded P2 must hold P2 and every coarser level scaled up to P2's resolution; for the
    ``ceil``-halving sizes of an FPN this is simply P2 rounded up to a multiple of 64, but levels
    that do not halve exactly (any sizes are accepted) may need more.

    Args:
        sizes: ``[[h2, w2], [h3, w3], [h4, w4], [h5, w5]]``.

    Returns:
        ``(H2, W2)``, multiples of 64; level ``l`` is padded to ``(H2 / s_l, W2 / s_l)`` with
        ``s_l`` = 1, 2, 4, 8.
    """
    need_h = max(int(h) * s for (h, _), s in zip(sizes, _LEVEL_SCALE))
    need_w = max(int(w) * s for (_, w), s in zip(sizes, _LEVEL_SCALE))
    return (
        _P2_MULTIPLE * math.ceil(need_h / _P2_MULTIPLE),
        _P2_MULTIPLE * math.ceil(need_w / _P2_MULTIPLE),
    )


def _pad_bottom_right(x: Tensor, height: int, width: int) -> Tensor:
    """Pads ``x`` [B,C,h,w] at the bottom and right to [B,C,height,width].

    Reflect padding keeps the padded border statistically like the feature map, which costs fewer
    bits than a constant border; PyTorch's reflect needs the pad to be smaller than the size, so a
    dimension that must grow by at least its own size is replicated instead.
    """
    pad_w = width - x.shape[-1]
    pad_h = height - x.shape[-2]
    if pad_w < 0 or pad_h < 0:
        raise ValueError(f"cannot pad a level of size {tuple(x.shape[-2:])} to {(height, width)}")
    if pad_w > 0:
        mode = "reflect" if pad_w < x.shape[-1] else "replicate"
        x = F.pad(x, (0, pad_w, 0, 0), mode=mode)
    if pad_h > 0:
        mode = "reflect" if pad_h < x.shape[-2] else "replicate"
        x = F.pad(x, (0, 0, 0, pad_h), mode=mode)
    return x


class LMSFC(CodecContract, FineScaleTable, CompressionModel):
    r"""L-MSFC feature codec (Kim et al., IEEE TCSVT 2024); TA-MSF with ``attention_every_stage``.

    With ``N = M`` (the default) and ``light=False`` this is the architecture of the source's code
    (same layers, hence the same parameter counts); ``light=True`` swaps DRNet for
    :class:`vcm.codecs.lmsfc_transforms.DRNetLight`.

    .. code-block:: none

        P2..P5 ─ pad ─┬─►┌─────┐ y  ┌───┐ z ┌─┐ z_hat ┌───┐ params
                      └─►│FENet├─►─┬┤h_a├─►─┤Q├──EB──►┤h_s├──►─────────────┐
                         └─────┘   │└───┘   └─┘       └───┘                 │
                                  ┌┴┐                                       ▼
                                  │Q│  y_hat ──►─ CP ─► ctx ─► EP ◄─────────┘  ("context" only)
                                  └┬┘                           │ scales, means
                                   └─────────── GC ◄────────────┘
                             y_hat ─► DRNet ─► crop ─► P2..P5 hat;  P6 hat = maxpool_{k=1,s=2}(P5 hat)

    Quantisation of ``y``: additive uniform noise in training; in eval mode ``forward`` uses the
    decoder's rule ``y_hat = round(y - mu) + mu`` (for ``"context"`` computed position by position
    in the decoding order, as the decoder does, since ``mu`` depends on the symbols already decoded),
    so its reconstruction and estimated rate are those of the bitstream.

        EB = EntropyBottleneck, GC = GaussianConditional, CP = masked 5x5 context prediction,
        EP = entropy parameters (1x1 convolutions). With ``entropy_model="hyperprior"`` the scales
        and means come from ``h_s`` alone (mean-scale hyperprior, no context model).

    Padding rule: the padded P2 size is the smallest multiple of 64 that holds P2 and every coarser
    level scaled up to P2's resolution (see :func:`padded_p2_size`); P3, P4 and P5 are padded to
    exactly 1/2, 1/4 and 1/8 of it, so the padded sizes are consistent with the strided fusion.
    Padding is at the bottom and right (reflect; replicate where reflect is impossible) and is
    cropped off after decoding, so every output level has exactly its input size.

    Determinism of real coding: the decoder rebuilds the Gaussian parameters (and, for
    ``"context"``, the autoregressive context from already decoded symbols) and must obtain them
    bit for bit as the encoder did, or the rANS stream decodes to garbage. Floating-point results
    can differ between device types (and between CPU and GPU kernels), so ``compress`` and
    ``decompress`` must run on the same device type. The autoregressive ``"context"`` model codes
    on CPU only (both methods raise ``RuntimeError`` otherwise); vcm decodes on CPU with
    deterministic algorithms. The ``"hyperprior"`` variant follows CompressAI's convention and is
    not checked.

    Args:
        N: channels of FENet's fusion stages, of DRNet's branches and of the hyper latent ``z``;
            None: ``M``, as in the source.
        M: channels of the latent ``y``.
        entropy_model: ``"context"`` (joint autoregressive hierarchical prior, as CompressAI's
            mbt2018) or ``"hyperprior"`` (mean-scale hyperprior).
        attention_every_stage: TA-MSF's FENet with an attention block in every fusion stage.
        feature_channels: channels of each FPN level (256 for torchvision's FPN).
        light: the lighter decoder :class:`~vcm.codecs.lmsfc_transforms.DRNetLight` (same codec
            name; ``conf/model/lmsfc_light.yaml`` labels its curve with ``variant``). The source's
            DRNet mixes the levels at 256 channels whatever M, so at small M (CPU studies, M = 64)
            the light decoder costs ~3.5x less; at M = 128 it costs more, at M = 192 ~20 % less.
    """

    levels: tuple[str, ...] = LEVELS
    needs = Needs.DETECTOR  # its input is the frozen detector's P2..P5
    #: compress computes the entropy parameters exactly; decompress(..., exact=False) reads format-1 files
    exact_entropy_parameters = True

    def __init__(
        self,
        N: int | None = None,
        M: int = 192,
        entropy_model: str = "context",
        attention_every_stage: bool = False,
        feature_channels: int = _FEATURE_CHANNELS,
        light: bool = False,
    ):
        super().__init__()
        if N is None:
            N = M
        if entropy_model not in ENTROPY_MODELS:
            raise ConfigError(
                f"entropy_model={entropy_model!r} is not valid; expected one of {list(ENTROPY_MODELS)}"
            )
        for name, value in (("N", N), ("M", M), ("feature_channels", feature_channels)):
            if not isinstance(value, int) or value < 2:
                raise ConfigError(f"{name}={value!r} must be an integer >= 2")
        self.N = N
        self.M = M
        self.entropy_model = entropy_model
        self.attention_every_stage = bool(attention_every_stage)
        self.feature_channels = feature_channels
        self.light = bool(light)
        self.codec_name = "ta_msf" if self.attention_every_stage else "lmsfc"
        self.quality: int | None = None  # set by the factories

        self.g_a = FENet(N, M, attention_every_stage, feature_channels)
        self.g_s = (DRNetLight if self.light else DRNet)(N, M, feature_channels)

        # conv3x3 + LeakyReLU hyper transforms; two stride-2 stages put z at 1/4 of y.
        self.h_a = nn.Sequential(
            conv3x3(M, N),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N, stride=2),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N, stride=2),
        )
        self.h_s = nn.Sequential(
            conv3x3(N, M),
            nn.LeakyReLU(inplace=True),
            subpel_conv3x3(M, M, 2),
            nn.LeakyReLU(inplace=True),
            conv3x3(M, M * 3 // 2),
            nn.LeakyReLU(inplace=True),
            subpel_conv3x3(M * 3 // 2, M * 3 // 2, 2),
            nn.LeakyReLU(inplace=True),
            conv3x3(M * 3 // 2, M * 2),
        )
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        if entropy_model == "context":
            self.context_prediction = MaskedConv2d(
                M, 2 * M, kernel_size=_CONTEXT_KERNEL, padding=_CONTEXT_KERNEL // 2, stride=1
            )
            self.entropy_parameters = nn.Sequential(
                nn.Conv2d(M * 12 // 3, M * 10 // 3, 1),
                nn.LeakyReLU(inplace=True),
                nn.Conv2d(M * 10 // 3, M * 8 // 3, 1),
                nn.LeakyReLU(inplace=True),
                nn.Conv2d(M * 8 // 3, M * 6 // 3, 1),
            )

    # ------------------------------------------------------------------ helpers

    def _check_levels(self, levels: Mapping[str, Tensor]) -> tuple[list[Tensor], list[list[int]]]:
        if not isinstance(levels, Mapping):
            raise TypeError(f"expected a dict of FPN levels {list(LEVELS)}, got {type(levels).__name__}")
        missing = [k for k in LEVELS if k not in levels]
        if missing:
            raise ValueError(f"missing FPN levels {missing}; got {list(levels)}, expected {list(LEVELS)}")
        tensors = [levels[k] for k in LEVELS]
        batch = tensors[0].shape[0] if tensors[0].dim() == 4 else None
        for name, t in zip(LEVELS, tensors):
            if t.dim() != 4 or t.shape[1] != self.feature_channels or t.shape[0] != batch:
                raise ValueError(
                    f"level {name!r} has shape {tuple(t.shape)}; expected "
                    f"[B,{self.feature_channels},h,w] with the same B for every level"
                )
            if t.shape[-2] < 1 or t.shape[-1] < 1:
                raise ValueError(f"level {name!r} is empty: shape {tuple(t.shape)}")
        return tensors, [[int(t.shape[-2]), int(t.shape[-1])] for t in tensors]

    def _pad(self, tensors: list[Tensor], sizes: list[list[int]]) -> list[Tensor]:
        h2, w2 = padded_p2_size(sizes)
        return [_pad_bottom_right(t, h2 // s, w2 // s) for t, s in zip(tensors, _LEVEL_SCALE)]

    def _reconstruct(self, y_hat: Tensor, sizes: Sequence[Sequence[int]]) -> OrderedDict[str, Tensor]:
        """DRNet, crop to the original level sizes and rebuild P6.

        Args:
            y_hat: [B,M,h,w].
            sizes: original ``[h_l, w_l]`` of P2..P5.

        Returns:
            OrderedDict p2..p6 of [B,F,h_l,w_l].
        """
        padded = self.g_s(y_hat)
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, t, (h, w) in zip(LEVELS, padded, sizes):
            out[name] = t[..., : int(h), : int(w)]
        out["p6"] = p6_from_p5(out["p5"])
        return out

    def _require_cpu(self, what: str) -> None:
        if self.entropy_model == "context":
            device = next(self.parameters()).device
            if device.type != "cpu":
                raise RuntimeError(
                    f"LMSFC.{what} with the autoregressive context model runs on CPU only (the model "
                    f"is on {device}): encoder and decoder must compute bit-identical entropy "
                    "parameters; move the codec to CPU first"
                )

    # ------------------------------------------------------------------ contract

    def forward(self, levels: Mapping[str, Tensor]) -> dict:
        """Codes and rebuilds the levels: noise in training, the decoder's quantisation in eval mode.

        Args:
            levels: dict with "p2".."p5" (others, e.g. "p6", are ignored), each [B,F,h_l,w_l].

        Returns:
            ``{"levels_hat": OrderedDict p2..p6 [B,F,h_l,w_l], "likelihoods": {"y": [B,M,h,w],
            "z": [B,N,h/4,w/4]}}`` where h, w = padded P2 size / 16.
        """
        tensors, sizes = self._check_levels(levels)
        y = self.g_a(*self._pad(tensors, sizes))
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        params = self.h_s(z_hat)
        if self.entropy_model == "context":
            if self.training:
                y_hat = self.gaussian_conditional.quantize(y, "noise")
            else:
                # round(y - mu) + mu in the decoding order, exactly what the bitstream carries
                y_hat = self._quantize_ar(y, params)
            ctx_params = self.context_prediction(y_hat)
            gaussian_params = self.entropy_parameters(torch.cat((params, ctx_params), dim=1))
            scales_hat, means_hat = gaussian_params.chunk(2, 1)
            # in eval mode, the likelihood of the coded y_hat (re-quantising it around the same means
            # leaves it unchanged)
            _, y_likelihoods = self.gaussian_conditional(y if self.training else y_hat, scales_hat, means=means_hat)
        else:
            scales_hat, means_hat = params.chunk(2, 1)
            y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        return {
            "levels_hat": self._reconstruct(y_hat, sizes),
            "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
        }

    def _hyper_params(self, z_hat: Tensor, exact: bool) -> Tensor:
        """``h_s(z_hat)`` [B,2M,h,w]: float64 and CPU-independent when ``exact`` (:mod:`vcm.codecs.exact`)."""
        return exact_forward(self.h_s, z_hat, "h_s") if exact else self.h_s(z_hat)

    @torch.no_grad()
    def _encode(
        self, levels: Mapping[str, Tensor]
    ) -> tuple[list[list[bytes]], tuple[int, int], Tensor, list[list[int]], int]:
        """Entropy-codes the levels; also returns the ``y_hat`` the decoder will rebuild.

        Returns:
            ``(strings, z_shape, y_hat [B,M,h,w], sizes, check)``.
        """
        self._require_cpu("compress")
        tensors, sizes = self._check_levels(levels)
        y = self.g_a(*self._pad(tensors, sizes))
        z = self.h_a(y)
        z_shape = (int(z.shape[-2]), int(z.shape[-1]))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z_shape)
        params = self._hyper_params(z_hat, exact=True)
        if self.entropy_model == "context":
            p = _CONTEXT_KERNEL // 2
            y_hat = F.pad(y, (p, p, p, p))
            coded = [self._compress_ar(y_hat[i : i + 1], params[i : i + 1]) for i in range(y.shape[0])]
            y_strings = [string for string, _ in coded]
            check = symbols_check([z_hat, *(t for _, parts in coded for t in parts)])
            y_hat = y_hat[..., p:-p, p:-p]
        else:
            scales_hat, means_hat = params.chunk(2, 1)
            y_strings, check = encode_gaussian(self.gaussian_conditional, y, scales_hat, means_hat, side=[z_hat])
            y_hat = self.gaussian_conditional.quantize(y, "dequantize", means_hat.to(y.device, torch.float32))
        return [y_strings, z_strings], z_shape, y_hat, sizes, check

    def compress(self, levels: Mapping[str, Tensor]) -> dict:
        """Real entropy coding (call ``update(force=True)`` first), CPU-independent entropy parameters.

        Args:
            levels: dict with "p2".."p5", each [B,F,h_l,w_l].

        Returns:
            ``{"strings": [y_strings, z_strings] (one bytes per image each), "shape": (h_z, w_z),
            "sizes": [[h2,w2],[h3,w3],[h4,w4],[h5,w5]], "check": CRC32 of the decoded symbols}``.
        """
        strings, z_shape, _, sizes, check = self._encode(levels)
        return {"strings": strings, "shape": z_shape, "sizes": sizes, "check": check}

    @torch.no_grad()
    def decompress(
        self, strings: list[list[bytes]], shape: Sequence[int], sizes: Sequence[Sequence[int]],
        check: int | None = None, exact: bool = True,
    ) -> dict:
        """Decodes the bitstreams made by :meth:`compress`.

        Args:
            strings: ``[y_strings, z_strings]``.
            shape: ``(h_z, w_z)`` from :meth:`compress`.
            sizes: original ``[h_l, w_l]`` of P2..P5 from :meth:`compress`.
            check: the encoder's :func:`~vcm.codecs.exact.symbols_check`, verified when given.
            exact: CPU-independent entropy parameters (what :meth:`compress` writes); False decodes
                format-1 files, written with float parameters.

        Returns:
            ``{"levels_hat": OrderedDict p2..p6 of [B,F,h_l,w_l]}``.

        Raises:
            BitstreamError: the strings, shape and sizes do not belong together, or the decoded
                symbols fail ``check``.
            RuntimeError: the context model is not on CPU.
        """
        self._require_cpu("decompress")
        if not isinstance(strings, (list, tuple)) or len(strings) != 2:
            raise BitstreamError("expected strings = [y_strings, z_strings]")
        if len(strings[0]) != len(strings[1]):
            raise BitstreamError(
                f"{len(strings[0])} y strings but {len(strings[1])} z strings; expected one each per image"
            )
        if len(sizes) != len(LEVELS) or any(len(s) != 2 or min(s) < 1 for s in sizes):
            raise BitstreamError(
                f"sizes={sizes!r}; expected four positive [h, w] pairs for {list(LEVELS)}"
            )
        shape = (int(shape[0]), int(shape[1]))
        ratio = _P2_MULTIPLE
        expected = padded_p2_size(sizes)
        if (shape[0] * ratio, shape[1] * ratio) != expected:
            raise BitstreamError(
                f"hyper-latent shape {shape} does not match level sizes {sizes} "
                f"(padded P2 {expected} needs shape {(expected[0] // ratio, expected[1] // ratio)})"
            )
        z_hat = self.entropy_bottleneck.decompress(list(strings[1]), shape)
        params = self._hyper_params(z_hat, exact)
        if self.entropy_model == "context":
            p = _CONTEXT_KERNEL // 2
            height, width = shape[0] * _Z_TO_Y, shape[1] * _Z_TO_Y
            y_hat = torch.zeros(
                (z_hat.shape[0], self.M, height + 2 * p, width + 2 * p),
                dtype=torch.float32,
                device=z_hat.device,
            )
            parts = [self._decompress_ar(y_string, y_hat[i : i + 1], params[i : i + 1], exact)
                     for i, y_string in enumerate(strings[0])]
            if exact:
                verify_check(check, symbols_check([z_hat, *(t for image in parts for t in image)]))
            y_hat = y_hat[..., p:-p, p:-p]
        else:
            scales_hat, means_hat = params.chunk(2, 1)
            if exact:
                y_hat = decode_gaussian(self.gaussian_conditional, strings[0], scales_hat, means_hat, check=check,
                                        side=[z_hat], device=z_hat.device)
            else:
                indexes = self.gaussian_conditional.build_indexes(scales_hat)
                y_hat = self.gaussian_conditional.decompress(
                    list(strings[0]), indexes, dtype=means_hat.dtype, means=means_hat
                )
        return {"levels_hat": self._reconstruct(y_hat, sizes)}

    # ------------------------------------------------------------------ autoregressive coding

    def _gaussian_params_at(self, y_pad: Tensor, params: Tensor, h: int, w: int, exact: bool) -> tuple[Tensor, Tensor]:
        """Scales and means [1,M,1,1] at position (h, w) from the decoded neighbourhood.

        Encoder and decoder both call this on the same crop; with ``exact`` the result has the same
        bits on every CPU (:mod:`vcm.codecs.exact`), and the means come back as float32.
        """
        k = _CONTEXT_KERNEL
        crop = y_pad[:, :, h : h + k, w : w + k]
        p = params[:, :, h : h + 1, w : w + 1]
        if exact:
            ctx_p = exact_forward(self.context_prediction, crop, "context_prediction", padding=0)
            gaussian_params = exact_forward(self.entropy_parameters, torch.cat((on_grid(p), ctx_p), dim=1),
                                            "entropy_parameters")
            scales_hat, means_hat = gaussian_params.chunk(2, 1)
            return scales_hat, means_hat.to(y_pad.device, torch.float32)
        weight = self.context_prediction.weight * self.context_prediction.mask
        ctx_p = F.conv2d(crop, weight, bias=self.context_prediction.bias)
        gaussian_params = self.entropy_parameters(torch.cat((p, ctx_p), dim=1))
        scales_hat, means_hat = gaussian_params.chunk(2, 1)
        return scales_hat, means_hat

    def _cdf_tables(self) -> tuple[list, list, list]:
        gc = self.gaussian_conditional
        return gc.quantized_cdf.tolist(), gc.cdf_length.tolist(), gc.offset.tolist()

    @torch.no_grad()
    def _quantize_ar(self, y: Tensor, params: Tensor) -> Tensor:
        """``y_hat`` [B,M,h,w] as the decoder rebuilds it: ``round(y - mu) + mu`` position by position.

        Args:
            y: [B,M,h,w].
            params: [B,2M,h,w] from ``h_s``.
        """
        p = _CONTEXT_KERNEL // 2
        y_pad = F.pad(y, (p, p, p, p))
        for i in range(y.shape[0]):
            self._scan_ar(y_pad[i : i + 1], params[i : i + 1])
        return y_pad[..., p:-p, p:-p]

    def _scan_ar(
        self, y_pad: Tensor, params: Tensor, symbols: list[int] | None = None, indexes: list[int] | None = None,
        means: list[Tensor] | None = None,
    ) -> None:
        """Quantises one image's ``y`` in the decoding order, writing ``y_hat`` into ``y_pad`` in place.

        Args:
            y_pad: [1,M,h+4,w+4], ``y`` zero-padded by 2; overwritten with ``y_hat``.
            params: [1,2M,h,w] from ``h_s``.
            symbols, indexes, means: when given, receive the symbols and CDF indexes to entropy-code
                and the means they are coded around.
        """
        p = _CONTEXT_KERNEL // 2
        for h in range(params.shape[-2]):
            for w in range(params.shape[-1]):
                scales_hat, means_hat = self._gaussian_params_at(y_pad, params, h, w, exact=True)
                y_cur = y_pad[:, :, h + p : h + p + 1, w + p : w + p + 1]
                y_q = self.gaussian_conditional.quantize(y_cur, "symbols", means_hat)
                y_pad[:, :, h + p : h + p + 1, w + p : w + p + 1] = self.gaussian_conditional.dequantize(
                    y_q, means_hat
                )
                if symbols is not None and indexes is not None and means is not None:
                    symbols.extend(y_q.flatten().tolist())
                    indexes.extend(build_indexes(self.gaussian_conditional, scales_hat).flatten().tolist())
                    means.append(means_hat.flatten())

    def _compress_ar(self, y_pad: Tensor, params: Tensor) -> tuple[bytes, list[Tensor]]:
        """Codes one image's ``y`` position by position, writing ``y_hat`` into ``y_pad`` in place.

        Args:
            y_pad: [1,M,h+4,w+4], ``y`` zero-padded by 2; overwritten with ``y_hat``.
            params: [1,2M,h,w] from ``h_s``.

        Returns:
            The string, and the symbols, indexes and means its check covers.
        """
        cdf, cdf_lengths, offsets = self._cdf_tables()
        symbols: list[int] = []
        indexes: list[int] = []
        means: list[Tensor] = []
        self._scan_ar(y_pad, params, symbols, indexes, means)
        encoder = BufferedRansEncoder()
        encoder.encode_with_indexes(symbols, indexes, cdf, cdf_lengths, offsets)
        return encoder.flush(), _check_parts(symbols, indexes, means)

    def _decompress_ar(self, y_string: bytes, y_pad: Tensor, params: Tensor, exact: bool) -> list[Tensor]:
        """Decodes one image's ``y_hat`` into ``y_pad`` [1,M,h+4,w+4] (zeros on entry).

        Returns:
            The decoded symbols, indexes and means (what the encoder's check covers).
        """
        cdf, cdf_lengths, offsets = self._cdf_tables()
        p = _CONTEXT_KERNEL // 2
        decoder = RansDecoder()
        decoder.set_stream(guarded_string(y_string, self.M * params.shape[-2] * params.shape[-1], "y string"))
        symbols: list[int] = []
        all_indexes: list[int] = []
        means: list[Tensor] = []
        for h in range(params.shape[-2]):
            for w in range(params.shape[-1]):
                scales_hat, means_hat = self._gaussian_params_at(y_pad, params, h, w, exact)
                indexes = build_indexes(self.gaussian_conditional, scales_hat).flatten().tolist()
                rv = decoder.decode_stream(indexes, cdf, cdf_lengths, offsets)
                symbols.extend(rv)
                all_indexes.extend(indexes)
                means.append(means_hat.flatten())
                rv = torch.tensor(rv, dtype=torch.int32, device=y_pad.device).reshape(1, -1, 1, 1)
                y_pad[:, :, h + p : h + p + 1, w + p : w + p + 1] = self.gaussian_conditional.dequantize(
                    rv, means_hat
                )
        return _check_parts(symbols, all_indexes, means)


def _check_parts(symbols: list[int], indexes: list[int], means: list[Tensor]) -> list[Tensor]:
    """What the check of one autoregressively coded image covers, as tensors."""
    return [torch.tensor(symbols, dtype=torch.int32), torch.tensor(indexes, dtype=torch.int32),
            torch.cat(means) if means else torch.zeros(0)]


def lmsfc(
    quality: int | None = None,
    N: int | None = None,
    M: int | None = None,
    entropy_model: str = "context",
    attention_every_stage: bool = False,
    light: bool = False,
) -> LMSFC:
    """Builds L-MSFC at a quality of the source's table (or with explicit N, M).

    Args:
        quality: 1..6; sets M (128 for 1-3, 192 for 4-6) unless given explicitly. The matching
            lambda is ``LMSFC_LAMBDAS[quality]``. None: M = 192 unless given.
        N: overrides the channels of the fusion stages, DRNet's branches and ``z``; None: ``M``
            (the source), or ``LMSFC_N_LIGHT`` with ``light``.
        M: overrides the channels of ``y``.
        entropy_model: ``"context"`` or ``"hyperprior"``.
        attention_every_stage: TA-MSF's FENet.
        light: the lighter decoder (see :class:`LMSFC`).

    Returns:
        The model, with attribute ``quality`` (int or None).

    Raises:
        ConfigError (a ValueError): unknown quality or entropy model.
    """
    _check_quality(quality)
    if M is None:
        M = LMSFC_M[quality] if quality is not None else 192
    if N is None:
        N = LMSFC_N_LIGHT if light else M
    model = LMSFC(N=N, M=M, entropy_model=entropy_model, attention_every_stage=attention_every_stage, light=light)
    model.quality = quality
    return model


def ta_msf(
    quality: int | None = None,
    N: int | None = None,
    M: int = 192,
    entropy_model: str = "context",
    light: bool = False,
) -> LMSFC:
    """Builds the TA-MSF codec: L-MSFC with M = 192 and attention in every fusion stage.

    TA-MSF keeps the same architecture at every rate (the rate is set by its loss's lambda), so
    ``quality`` is only validated and recorded in ``model.quality``. ``N`` (None: ``M``, or
    ``LMSFC_N_LIGHT`` with ``light``) and ``light`` as in :func:`lmsfc`.

    Raises:
        ConfigError (a ValueError): unknown quality or entropy model.
    """
    _check_quality(quality)
    if N is None:
        N = LMSFC_N_LIGHT if light else M
    model = LMSFC(N=N, M=M, entropy_model=entropy_model, attention_every_stage=True, light=light)
    model.quality = quality
    return model
