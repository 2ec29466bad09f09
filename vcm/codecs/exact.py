"""Entropy parameters that are bit-identical on every CPU: fixed-point evaluation of the layers that
turn decoded latents into Gaussian scales and means, and the check of the decoded symbols.

Why: the range coder needs the encoder and the decoder to pick the same CDF table for every latent.
The table index comes from the predicted scale (``GaussianConditional.build_indexes``), and the
scale from a float network (the hyperprior's ``h_s``, a context model). Float convolutions differ
from CPU to CPU (oneDNN's SSE4.1 / AVX2 / AVX-512 kernels sum in other orders: ~1e-5 on a scale),
which moves a scale across a table boundary now and then, and the decoder then reads garbage.

How (the "integer network" idea of Ballé et al., ICLR 2019, done in float64): every tensor that
enters a convolution is put on a fixed-point grid (activations on multiples of ``2**-ACT_BITS``,
weights on multiples of ``2**-WEIGHT_BITS``), so every product is a multiple of
``2**-(ACT_BITS + WEIGHT_BITS)``. While every partial sum stays below ``2**53`` of those units, each
one is an exact float64 number, so the sum is exact in any order, with or without FMA, blocked or
not: every CPU gives the same bits. Each layer's output is rounded back onto the activation grid
(an exact operation), element-wise layers are single IEEE operations (correctly rounded, hence
identical everywhere), and the bound is checked on every convolution before it runs
(:class:`ExactRangeError` when a layer could leave the exact range: never a silent inexact result).

The guarantee: for the same weights, the same decoded hyper-latents (and, for context models, the
same decoded neighbours), encoder and decoder compute the same scales and means bit for bit on any
CPU, whatever ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA``, because these layers always run on
the CPU in float64. The grids change the parameters by less than ``2**-17`` (activations) and
``2**-21`` (weights) in absolute value, far below what moves a rate (``make bench``).

:func:`symbols_check` is the second line of defence: a CRC32 of what the entropy decoder must
reproduce (symbols, table indexes, means), written by the encoder into the container and checked
by the decoder, so any desynchronisation (another model, a codec whose parameters are not computed
here) fails with a one-line error instead of decoding to garbage.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcm.codecs.base import build_indexes
from vcm.errors import BitstreamError

__all__ = [
    "ACT_BITS",
    "WEIGHT_BITS",
    "ExactRangeError",
    "LatentAnalysis",
    "UnsupportedLayerError",
    "code_analysis",
    "decode_gaussian",
    "encode_gaussian",
    "exact_forward",
    "on_grid",
    "symbols_check",
    "verify_check",
]

#: fractional bits of activations (inputs and outputs of every exact layer)
ACT_BITS = 16
#: fractional bits of weights; biases are on the grid of the products (ACT_BITS + WEIGHT_BITS)
WEIGHT_BITS = 20
#: a convolution's sum of |w| |a| (plus |b|) must stay below this for every partial sum to be exact
EXACT_LIMIT = 2.0 ** (53 - ACT_BITS - WEIGHT_BITS)


class ExactRangeError(ValueError):
    """A layer's sums could leave float64's exact range: the result would depend on the CPU."""


class UnsupportedLayerError(TypeError):
    """A layer this module has no CPU-independent evaluation of (a codec built with it cannot code exactly)."""


def on_grid(x: Tensor, bits: int = ACT_BITS) -> Tensor:
    """``x`` rounded to the nearest multiple of ``2**-bits`` (half to even), as float64 on the CPU.

    Scaling by a power of two and rounding are exact operations, so every CPU gives the same result.
    """
    scale = float(2**bits)
    return torch.round(x.detach().to("cpu", torch.float64) * scale) / scale


class _GridLayer:
    """A convolution's weights and bias on their grids, and the bound of its filters (cached)."""

    def __init__(self, module: nn.Module):
        weight = module.weight.detach()
        mask = getattr(module, "mask", None)  # CompressAI's MaskedConv2d zeroes the future taps
        if mask is not None:
            weight = weight * mask
        self.weight = on_grid(weight, WEIGHT_BITS)
        bias = module.bias
        self.bias = None if bias is None else on_grid(bias, ACT_BITS + WEIGHT_BITS)
        w = self.weight.abs()
        # the largest sum of |w| over one output's taps: the transposed convolution's weight is
        # [in, out, kh, kw], the others' [out, in, kh, kw]
        per_out = w.sum(dim=(0, 2, 3)) if isinstance(module, nn.ConvTranspose2d) else w.sum(dim=(1, 2, 3))
        self.l1 = float(per_out.max()) if per_out.numel() else 0.0
        self.bias_max = 0.0 if self.bias is None else float(self.bias.abs().max())


def _grid_layer(module: nn.Module) -> _GridLayer:
    key = tuple((p.data_ptr(), p._version) for p in (module.weight, module.bias, getattr(module, "mask", None))
                if p is not None)
    cached = module.__dict__.get("_vcm_grid_layer")
    if cached is None or cached[0] != key:
        cached = (key, _GridLayer(module))
        module.__dict__["_vcm_grid_layer"] = cached
    return cached[1]


def _conv(module: nn.Module, x: Tensor, name: str, padding: int | None = None) -> Tensor:
    layer = _grid_layer(module)
    bound = float(x.abs().max()) * layer.l1 + layer.bias_max if x.numel() else 0.0
    if not bound < EXACT_LIMIT:
        raise ExactRangeError(
            f"{name}: |inputs| up to {float(x.abs().max()):.4g} times filter norm {layer.l1:.4g} exceeds the exact "
            f"fixed-point range ({EXACT_LIMIT:.0f}); the entropy parameters cannot be computed the same on every CPU"
        )
    if isinstance(module, nn.ConvTranspose2d):
        out = F.conv_transpose2d(x, layer.weight, layer.bias, module.stride, module.padding, module.output_padding,
                                 module.groups, module.dilation)
    else:
        if module.padding_mode != "zeros":
            raise UnsupportedLayerError(f"{name}: padding_mode={module.padding_mode!r} has no exact evaluation")
        out = F.conv2d(x, layer.weight, layer.bias, module.stride, module.padding if padding is None else padding,
                       module.dilation, module.groups)
    return on_grid(out)


def exact_forward(module: nn.Module, x: Tensor, name: str = "", padding: int | None = None) -> Tensor:
    """Run ``module`` on ``x`` with the same bits on every CPU (see the module docstring).

    Supported layers: ``nn.Sequential`` of ``Conv2d`` (CompressAI's ``MaskedConv2d`` included),
    ``ConvTranspose2d``, ``ReLU``, ``LeakyReLU``, ``PixelShuffle`` and ``Identity``.

    Args:
        module: the layers.
        x: input [B, C, H, W] (any dtype or device); put on the activation grid first.
        name: the module's name, for messages.
        padding: for a single ``Conv2d``, the padding to use instead of its own (e.g. 0 for a
            context model evaluated on a crop around one position).

    Returns:
        float64 [B, C', H', W'] on the CPU, every value a multiple of ``2**-ACT_BITS``.

    Raises:
        ExactRangeError: a convolution's inputs are too large for exact float64 sums.
        UnsupportedLayerError: a layer type without an exact evaluation.
    """
    x = on_grid(x)
    name = name or type(module).__name__
    if padding is not None:
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"{name}: a padding override needs a Conv2d, got {type(module).__name__}")
        return _conv(module, x, name, padding)
    return _run(module, x, name)


def _run(module: nn.Module, x: Tensor, name: str) -> Tensor:
    if isinstance(module, nn.Sequential):
        for i, layer in enumerate(module):
            x = _run(layer, x, f"{name}.{i}")
        return x
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return _conv(module, x, name)
    if isinstance(module, nn.ReLU):
        return torch.clamp_min(x, 0.0)
    if isinstance(module, nn.LeakyReLU):
        # one IEEE multiplication (correctly rounded everywhere), then back onto the grid
        return on_grid(torch.where(x < 0, x * float(module.negative_slope), x))
    if isinstance(module, nn.Softplus):
        if module.beta != 1:
            raise UnsupportedLayerError(f"{name}: Softplus with beta={module.beta} has no exact evaluation")
        return on_grid(softplus(x))
    if isinstance(module, nn.PixelShuffle):
        return F.pixel_shuffle(x, module.upscale_factor)
    if isinstance(module, nn.Identity):
        return x
    raise UnsupportedLayerError(f"{name}: {type(module).__name__} has no exact (CPU-independent) evaluation")


def _exp_neg(a: Tensor) -> Tensor:
    """``exp(-a)`` for float64 ``a`` in [0, 40] from IEEE +, *, / only (bit-identical on every CPU).

    ``exp(-a) = exp(-a / 1024) ** 1024``: a degree-10 Taylor polynomial at ``a / 1024 <= 0.04``
    (truncation < 1e-20), then ten squarings (relative error ~1e-13: far below the grid).
    """
    u = a / 1024.0
    term = torch.ones_like(u)
    total = torch.ones_like(u)
    for k in range(1, 11):
        term = term * (-u) / float(k)
        total = total + term
    for _ in range(10):
        total = total * total
    return total


def _log1p_unit(t: Tensor) -> Tensor:
    """``log(1 + t)`` for float64 ``t`` in [0, 1] from IEEE +, *, / only: ``2 atanh(s)``, ``s = t / (2 + t) <= 1/3``."""
    s = t / (t + 2.0)
    s2 = s * s
    power = s
    total = s
    for k in range(1, 18):  # (1/9)**18 / 37 < 1e-18
        power = power * s2
        total = total + power / float(2 * k + 1)
    return total * 2.0


def softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` of a float64 tensor, the same bits on every CPU (no libm, no vector math library).

    ``softplus(x) = max(x, 0) + log1p(exp(-|x|))``; beyond |x| = 40 the second term (< 5e-18) is
    below any grid this module uses and is dropped.
    """
    a = x.abs().clamp_max(40.0)
    return torch.clamp_min(x, 0.0) + _log1p_unit(_exp_neg(a))


def symbols_check(tensors: Iterable[Tensor]) -> int:
    """CRC32 of what entropy decoding must reproduce exactly: symbols, table indexes, means.

    Integer tensors are hashed as int32, floating-point ones as float64 (both little-endian, C order),
    so the encoder's and the decoder's copies compare equal whatever dtype each side holds them in.

    Args:
        tensors: e.g. ``(y_symbols, indexes, means)``.

    Returns:
        An unsigned 32-bit integer.
    """
    crc = 0
    for t in tensors:
        t = t.detach().to("cpu")
        t = t.to(torch.float64) if t.is_floating_point() else t.to(torch.int32)
        crc = zlib.crc32(t.contiguous().numpy().tobytes(), crc)
    return crc & 0xFFFFFFFF


@dataclass
class LatentAnalysis:
    """What an encoder computes before range-coding ``y``; coding it with several gain maps (rate
    control) reuses it.

    Attributes:
        y: latents [B, M, h, w].
        scales, means: exact entropy parameters (float64, CPU; means None for zero-mean codecs).
        side_strings: the side-information string groups (z, w, ...), already coded.
        side: the decoded side latents the check covers.
        shape: the container's latent shape.
    """

    y: Tensor
    scales: Tensor
    means: Tensor | None
    side_strings: list[list[bytes]]
    side: list[Tensor]
    shape: tuple[int, ...]


def code_analysis(gc: nn.Module, a: LatentAnalysis, gain: Tensor | None = None) -> dict:
    """``compress``'s output for an analysis: ``{"strings": [y, *side], "shape", "check"}``."""
    y_strings, check = encode_gaussian(gc, a.y, a.scales, a.means, side=a.side, gain=gain)
    return {"strings": [y_strings, *a.side_strings], "shape": a.shape, "check": check}


def encode_gaussian(gc: nn.Module, y: Tensor, scales: Tensor, means: Tensor | None = None,
                    side: Iterable[Tensor] = (), gain: Tensor | None = None) -> tuple[list[bytes], int]:
    """Range-code ``y`` with CompressAI's ``GaussianConditional`` at exactly computed parameters.

    Args:
        gc: the codec's ``GaussianConditional`` (updated).
        y: latents [B, M, h, w].
        scales: from :func:`exact_forward` (float64, CPU), [B, M, h, w].
        means: likewise, or None (zero-mean).
        side: further decoded tensors the check covers (e.g. ``z_hat``).
        gain: a gain map [1, 1, h, w] (float64; :mod:`vcm.codecs.roi_gain`): ``round((y - mu) G)`` is
            coded at scales ``sigma G``; None: no gain (the plain strings).

    Returns:
        ``(strings, check)``: one byte string per image, and :func:`symbols_check` of the symbols,
        table indexes, means, the gain map and ``side``.
    """
    means32 = _on(means, y)
    if gain is None:
        indexes = build_indexes(gc, scales.to(y.device))
        symbols = gc.quantize(y, "symbols", means32)
        strings = gc.compress(y, indexes, means=means32)
        parts = [symbols, indexes, *([] if means32 is None else [means32]), *side]
        return strings, symbols_check(parts)
    indexes = build_indexes(gc, (scales * gain).to(y.device))
    centered = y.detach().to("cpu", torch.float64)
    if means32 is not None:
        centered = centered - means32.to("cpu", torch.float64)
    symbols = torch.round(centered * gain).to(torch.int32)
    strings = gc.compress(symbols.to(y.device, torch.float32), indexes)
    parts = [symbols, indexes, *([] if means32 is None else [means32]), gain, *side]
    return strings, symbols_check(parts)


def verify_check(check: int | None, found: int) -> None:
    """Raise when the decoder's :func:`symbols_check` differs from the one the encoder wrote (None: no check)."""
    if check is not None and found != check:
        raise BitstreamError(
            f"decoded symbols fail the encoder's check (crc {found:08x}, the file says {check:08x}): the decoder's "
            "entropy parameters differ from the encoder's (other weights or tables, a codec without exact "
            "parameters on another CPU, or a stream damaged inside a valid container)"
        )


def _on(t: Tensor | None, like: Tensor) -> Tensor | None:
    """An exact float64 CPU tensor as float32 on ``like``'s device (a deterministic IEEE conversion)."""
    return None if t is None else t.to(device=like.device, dtype=torch.float32)


def decode_gaussian(gc: nn.Module, strings: list[bytes], scales: Tensor, means: Tensor | None = None,
                    check: int | None = None, side: Iterable[Tensor] = (), device: torch.device | str = "cpu",
                    gain: Tensor | None = None) -> Tensor:
    """Decode what :func:`encode_gaussian` wrote, and verify its check when one is given.

    Returns:
        ``y_hat`` [B, M, h, w] float32 on ``device``: symbols (divided by the gain) + means.

    Raises:
        BitstreamError: the decoded symbols, indexes or means differ from the encoder's (``check``).
    """
    indexes = build_indexes(gc, (scales if gain is None else scales * gain).to(device))
    symbols = gc.decompress(list(strings), indexes, torch.float32)
    means32 = None if means is None else means.to(device=device, dtype=torch.float32)
    if check is not None:
        parts = [symbols.to(torch.int32), indexes, *([] if means32 is None else [means32]),
                 *([] if gain is None else [gain]), *side]
        verify_check(check, symbols_check(parts))
    if gain is None:
        return symbols if means32 is None else symbols + means32
    y_hat = symbols.to("cpu", torch.float64) / gain
    if means32 is not None:
        y_hat = y_hat + means32.to("cpu", torch.float64)
    return y_hat.to(device=device, dtype=torch.float32)
