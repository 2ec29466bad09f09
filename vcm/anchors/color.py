"""Explicit RGB <-> Y'CbCr conversion and chroma resampling, shared by every YUV anchor.

vcm converts colours itself (not libswscale) so that the encoder and decoder sides use the very same
matrices and the conversion is the same for HEVC, AV1 and VTM. The anchors use ITU-R BT.709 with
limited ("video") range, the usual choice for HD video coding:

    Y' = Kr R + Kg G + Kb B,   Cb = (B - Y') / (2 (1 - Kb)),   Cr = (R - Y') / (2 (1 - Kr))
    Y  = (16 + 219 Y') * 2^(n-8),   C = (128 + 224 C') * 2^(n-8)       (limited range, n bits)
    Y  = (2^n - 1) Y',              C = 2^(n-1) + (2^n - 1) C'          (full range)

with (Kr, Kb) = (0.2126, 0.0722) for BT.709 and (0.299, 0.114) for BT.601. RGB in [0,1] is the 8-bit
value / 255. Colour spaces are named by their ITU-T H.273 ``matrix_coefficients`` code (1 = BT.709,
6 = BT.601), and the high bit of the one-byte code means full range; the anchors store that byte
in their header.

Chroma 4:2:0: each chroma sample is the mean of its 2x2 block of full-resolution chroma (the sample
sits at the block centre); the inverse is bilinear interpolation with the same, centred, sample
positions (edges replicated).
"""
from __future__ import annotations

import numpy as np

#: H.273 matrix_coefficients code -> (Kr, Kb).
MATRICES: dict[int, tuple[float, float]] = {1: (0.2126, 0.0722), 6: (0.299, 0.114)}
_NAMES = {"bt709": 1, "bt601": 6}
FULL_RANGE_BIT = 0x80
#: BT.709, limited range: the colour space every YUV anchor uses.
BT709_LIMITED = 1


def colour_code(matrix: str = "bt709", full_range: bool = False) -> int:
    """One-byte code of a colour space: H.273 matrix code, high bit set for full range."""
    if matrix not in _NAMES:
        raise ValueError(f"matrix={matrix!r} is not supported; valid values: {', '.join(map(repr, _NAMES))}")
    return _NAMES[matrix] | (FULL_RANGE_BIT if full_range else 0)


def _parse_code(code: int) -> tuple[float, float, bool]:
    matrix = code & ~FULL_RANGE_BIT
    if matrix not in MATRICES:
        raise ValueError(f"colour code {code:#04x} names matrix {matrix}; supported: {sorted(MATRICES)}")
    kr, kb = MATRICES[matrix]
    return kr, kb, bool(code & FULL_RANGE_BIT)


def _scales(bit_depth: int, full_range: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma scale, chroma offset, chroma scale) in n-bit code values."""
    if not 8 <= bit_depth <= 16:
        raise ValueError(f"bit_depth must be in 8..16, got {bit_depth}")
    if full_range:
        maxv = float(2**bit_depth - 1)
        return 0.0, maxv, float(2 ** (bit_depth - 1)), maxv
    k = float(2 ** (bit_depth - 8))
    return 16 * k, 219 * k, 128 * k, 224 * k


def downsample_420(c: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block.

    Args:
        c: float array [H,W] with H and W even.

    Returns:
        float64 array [H/2, W/2].
    """
    h, w = c.shape
    if h % 2 or w % 2:
        raise ValueError(f"4:2:0 downsampling needs even sizes, got {h}x{w}")
    return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3), dtype=np.float64)


def _upsample_axis(c: np.ndarray, axis: int) -> np.ndarray:
    # Output sample 2j sits at source position j - 1/4, 2j+1 at j + 1/4 (centred siting).
    c = np.moveaxis(c, axis, 0)
    prev = np.concatenate([c[:1], c[:-1]], axis=0)
    nxt = np.concatenate([c[1:], c[-1:]], axis=0)
    out = np.empty((2 * c.shape[0],) + c.shape[1:], dtype=np.float64)
    out[0::2] = 0.75 * c + 0.25 * prev
    out[1::2] = 0.75 * c + 0.25 * nxt
    return np.moveaxis(out, 0, axis)


def upsample_420(c: np.ndarray) -> np.ndarray:
    """Bilinear x2 upsampling with centred sample positions, the inverse siting of :func:`downsample_420`.

    Args:
        c: array [h,w].

    Returns:
        float64 array [2h, 2w].
    """
    return _upsample_axis(_upsample_axis(c.astype(np.float64), 0), 1)


def rgb_to_ycbcr(
    rgb: np.ndarray, bit_depth: int = 10, chroma: str = "420", code: int = BT709_LIMITED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert 8-bit RGB to n-bit Y'CbCr planes.

    Args:
        rgb: uint8 [H,W,3]; H and W must be even for 4:2:0.
        bit_depth: bits per sample of the output.
        chroma: "420" or "444".
        code: colour space code (see :func:`colour_code`); default BT.709 limited range.

    Returns:
        (Y [H,W], Cb, Cr) uint16 planes; chroma planes are [H/2,W/2] for 4:2:0.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 [H,W,3], got {rgb.dtype} {rgb.shape}")
    if chroma not in ("420", "444"):
        raise ValueError(f"chroma={chroma!r} is not supported; valid values: '420', '444'")
    kr, kb, full = _parse_code(code)
    yo, ys, co, cs = _scales(bit_depth, full)
    x = rgb.astype(np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    cb = (b - y) / (2.0 * (1.0 - kb))
    cr = (r - y) / (2.0 * (1.0 - kr))
    if chroma == "420":
        cb, cr = downsample_420(cb), downsample_420(cr)
    maxv = 2**bit_depth - 1

    def q(v: np.ndarray, off: float, scale: float) -> np.ndarray:
        return np.clip(np.rint(off + scale * v), 0, maxv).astype(np.uint16)

    return q(y, yo, ys), q(cb, co, cs), q(cr, co, cs)


def ycbcr_to_rgb(
    y: np.ndarray, cb: np.ndarray, cr: np.ndarray, bit_depth: int = 10, code: int = BT709_LIMITED
) -> np.ndarray:
    """Convert n-bit Y'CbCr planes back to 8-bit RGB with the matrices of :func:`rgb_to_ycbcr`.

    Args:
        y: [H,W] integer codes.
        cb, cr: [H,W] (4:4:4) or [H/2,W/2] (4:2:0) integer codes.
        bit_depth: bits per sample of the planes.
        code: colour space code.

    Returns:
        uint8 [H,W,3].
    """
    h, w = y.shape
    if cb.shape != cr.shape:
        raise ValueError(f"chroma planes differ in shape: {cb.shape} vs {cr.shape}")
    if cb.shape == (h, w):
        cbf, crf = cb.astype(np.float64), cr.astype(np.float64)
    elif cb.shape == ((h + 1) // 2, (w + 1) // 2):
        cbf, crf = upsample_420(cb)[:h, :w], upsample_420(cr)[:h, :w]
    else:
        raise ValueError(f"chroma planes {cb.shape} fit neither 4:4:4 nor 4:2:0 of luma {y.shape}")
    kr, kb, full = _parse_code(code)
    yo, ys, co, cs = _scales(bit_depth, full)
    yn = (y.astype(np.float64) - yo) / ys
    cbn = (cbf - co) / cs
    crn = (crf - co) / cs
    r = yn + 2.0 * (1.0 - kr) * crn
    b = yn + 2.0 * (1.0 - kb) * cbn
    g = (yn - kr * r - kb * b) / (1.0 - kr - kb)
    rgb = np.stack([r, g, b], axis=-1) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def pad_to_multiple(a: np.ndarray, multiple: int, minimum: int = 0) -> np.ndarray:
    """Replicate the last row/column so that both sides are multiples of ``multiple`` (and >= minimum).

    Args:
        a: array [H,W,...].
        multiple: required multiple of each side.
        minimum: smallest side allowed after padding.

    Returns:
        array [H',W',...] with the original in the top-left corner.
    """
    h, w = a.shape[:2]
    ph = max(-(-h // multiple) * multiple, -(-minimum // multiple) * multiple)
    pw = max(-(-w // multiple) * multiple, -(-minimum // multiple) * multiple)
    if (ph, pw) == (h, w):
        return a
    pad = [(0, ph - h), (0, pw - w)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, mode="edge")
