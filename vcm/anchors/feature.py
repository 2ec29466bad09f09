"""MPEG-style feature anchor: every FPN level tiled into one monochrome 10-bit frame, coded intra at a QP.

Pipeline (encoder)::

    p2..p5 [1,C,h,w] float --quantize per level--> codes in 0..2^n-1 (bounds lo, hi per level, float32)
        --tile--> one frame [H,W] uint16 --pad (replicate) to a multiple of 8--> 4:0:0 picture
        --HEVC (libx265 gray10le) or VVC (VTM, 4:0:0)--> payload

and the decoder runs it backwards, then rebuilds p6 = max_pool2d(p5_hat, kernel 1, stride 2), as the
detector's FPN does. Every transmitted level is coded and every byte counted.

Tiling: a level of C channels becomes a mosaic of ``rows x cols`` tiles, ``cols = ceil(sqrt(C))``,
``rows = ceil(C / cols)`` (16 x 16 for C = 256), channel ``c`` at tile ``(c // cols, c % cols)``;
unused tiles (when C is not rows*cols) hold ``fill`` (code 0). The first level's mosaic takes the top
of the frame; the other levels' mosaics sit left to right on a row below it (each FPN level is half
the size of the previous one, so they fit under the first: the frame is about 1/3 larger than the
first mosaic, instead of 2x for a vertical stack). Areas not covered by a mosaic hold ``fill``.
The layout is a pure function of the level shapes, which the header carries, so it costs no bits.

Normalisation: per level, ``code = round((x - lo) / (hi - lo) * (2^n - 1))`` with ``lo``, ``hi`` the
level's minimum and maximum as float32; the reconstruction ``lo + code * (hi - lo) / (2^n - 1)``
is within half a step, ``(hi - lo) / (2^n - 1) / 2``, of the input before coding.

Header (counted in the rate): magic, version, codec id (4 bytes); bit depth, number of levels,
index of the first level (3 bytes); per level C, h, w (uint16) and lo, hi (float32) (14 bytes each);
payload length (4 bytes): 67 bytes for p2..p5.
"""
from __future__ import annotations

import abc
import math
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vcm.anchors.base import (
    FeatureAnchor,
    StreamReader,
    check_choice,
    check_int,
    pack_stream,
)
from vcm.anchors.color import pad_to_multiple
from vcm.anchors.hevc import X265_PRESETS, X265_TUNES, x265_options
from vcm.anchors.pyav_io import PIX_FMTS, decode_picture, encode_picture
from vcm.anchors.vtm import VtmTools
from vcm.anchors.yuv import PAD_MULTIPLE, padded_size
from vcm.detectors.features import p6_from_p5
from vcm.errors import BitstreamError
from vcm.utils.limits import check_picture_size

#: Levels every feature anchor transmits; p6 is rebuilt from p5.
CODED_LEVELS = ("p2", "p3", "p4", "p5")
_FIELDS = struct.Struct(">BBB")
_LEVEL = struct.Struct(">HHHff")


@dataclass(frozen=True)
class FrameLayout:
    """Where each level's mosaic sits in the packed frame.

    Attributes:
        names: level names, in order.
        shapes: (C, h, w) per level.
        grids: (rows, cols) of tiles per level.
        offsets: (y, x) of each mosaic's top-left corner in the frame.
        height, width: frame size (before padding for the codec).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, int, int], ...]
    grids: tuple[tuple[int, int], ...]
    offsets: tuple[tuple[int, int], ...]
    height: int
    width: int


def frame_layout(shapes: Sequence[tuple[int, int, int]], names: Sequence[str] | None = None) -> FrameLayout:
    """Layout of the packed frame for levels of the given shapes (see the module docstring).

    Args:
        shapes: (C, h, w) per level, first level first.
        names: level names; default "l0", "l1", ...

    Returns:
        The frame layout.
    """
    if not shapes:
        raise ValueError("at least one level is needed to build a frame layout")
    names = tuple(names) if names is not None else tuple(f"l{i}" for i in range(len(shapes)))
    if len(names) != len(shapes):
        raise ValueError(f"{len(names)} names for {len(shapes)} level shapes")
    grids, sizes = [], []
    for c, h, w in shapes:
        if min(c, h, w) <= 0:
            raise ValueError(f"level shape (C={c}, h={h}, w={w}) must be positive")
        cols = math.isqrt(c - 1) + 1  # ceil(sqrt(C))
        rows = -(-c // cols)
        grids.append((rows, cols))
        sizes.append((rows * h, cols * w))
    offsets = [(0, 0)]
    x = 0
    for mh, mw in sizes[1:]:
        offsets.append((sizes[0][0], x))
        x += mw
    height = sizes[0][0] + max((mh for mh, _ in sizes[1:]), default=0)
    width = max(sizes[0][1], x)
    return FrameLayout(
        names, tuple(tuple(int(v) for v in s) for s in shapes), tuple(grids), tuple(offsets), int(height), int(width)
    )


def _as_chw(name: str, x: torch.Tensor | np.ndarray) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"level {name!r}: feature anchors code one image at a time, got batch size {a.shape[0]}")
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"level {name!r} must be [1,C,h,w] or [C,h,w], got shape {a.shape}")
    return a


def tile_levels(
    levels: Mapping[str, torch.Tensor | np.ndarray], fill: float = 0
) -> tuple[np.ndarray, FrameLayout]:
    """Pack levels into one frame (see the module docstring for the layout).

    Args:
        levels: name -> [1,C,h,w] or [C,h,w] tensor/array, all of one dtype, first level first.
        fill: value of unused tiles and uncovered frame areas.

    Returns:
        (frame [H,W] of the levels' dtype, layout); :func:`untile_levels` inverts it exactly.
    """
    arrays = [_as_chw(k, v) for k, v in levels.items()]
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1:
        raise ValueError(f"levels must share one dtype, got {sorted(map(str, dtypes))}")
    layout = frame_layout([a.shape for a in arrays], list(levels))
    frame = np.full((layout.height, layout.width), fill, dtype=arrays[0].dtype)
    for a, (rows, cols), (y0, x0) in zip(arrays, layout.grids, layout.offsets):
        c, h, w = a.shape
        padded = np.full((rows * cols, h, w), fill, dtype=a.dtype)
        padded[:c] = a
        mosaic = padded.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
        frame[y0 : y0 + rows * h, x0 : x0 + cols * w] = mosaic
    return frame, layout


def _untile_np(frame: np.ndarray, layout: FrameLayout) -> OrderedDict[str, np.ndarray]:
    if frame.ndim != 2 or frame.shape[0] < layout.height or frame.shape[1] < layout.width:
        raise ValueError(f"frame of shape {frame.shape} does not cover the layout's {layout.height}x{layout.width}")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, (c, h, w), (rows, cols), (y0, x0) in zip(layout.names, layout.shapes, layout.grids, layout.offsets):
        mosaic = frame[y0 : y0 + rows * h, x0 : x0 + cols * w]
        tiles = mosaic.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(rows * cols, h, w)
        out[name] = np.ascontiguousarray(tiles[:c])[None]
    return out


def untile_levels(frame: np.ndarray, layout: FrameLayout) -> OrderedDict[str, torch.Tensor]:
    """Inverse of :func:`tile_levels`.

    Args:
        frame: [H',W'] with H' >= layout.height, W' >= layout.width (codec padding is ignored).
        layout: the layout of the frame.

    Returns:
        name -> tensor [1,C,h,w] of the frame's dtype.
    """
    return OrderedDict((k, torch.from_numpy(v)) for k, v in _untile_np(np.asarray(frame), layout).items())


def quantize(x: torch.Tensor | np.ndarray, bit_depth: int = 10) -> tuple[np.ndarray, float, float]:
    """Min-max normalise to n-bit integer codes.

    Args:
        x: float tensor/array of any shape, finite.
        bit_depth: bits per code (1..16).

    Returns:
        (codes uint16 of x's shape, lo, hi) with lo, hi the float32 minimum and maximum of x.
    """
    check_int("bit_depth", bit_depth, 1, 16)
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.size == 0:
        raise ValueError("cannot quantise an empty array")
    if not np.isfinite(a).all():
        raise ValueError("cannot quantise non-finite values (NaN or inf in the features)")
    lo, hi = np.float32(a.min()), np.float32(a.max())
    maxv = 2**bit_depth - 1
    if hi == lo:
        return np.zeros(a.shape, np.uint16), float(lo), float(hi)
    # float64 arithmetic from the float32 bounds the header stores, so both sides agree exactly.
    scaled = (a.astype(np.float64) - np.float64(lo)) * (maxv / (np.float64(hi) - np.float64(lo)))
    return np.clip(np.rint(scaled), 0, maxv).astype(np.uint16), float(lo), float(hi)


def dequantize(codes: torch.Tensor | np.ndarray, lo: float, hi: float, bit_depth: int = 10) -> np.ndarray:
    """Inverse of :func:`quantize`: ``lo + code * (hi - lo) / (2^n - 1)`` as float32."""
    check_int("bit_depth", bit_depth, 1, 16)
    c = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    lo64, hi64 = np.float64(np.float32(lo)), np.float64(np.float32(hi))
    step = (hi64 - lo64) / (2**bit_depth - 1)
    return (lo64 + c.astype(np.float64) * step).astype(np.float32)


@dataclass(frozen=True)
class FeatureHeader:
    """Everything the feature decoder needs besides the coded frame.

    Attributes:
        bit_depth: bits per code.
        first_level: index k of the first level name "pk" (2 for p2..p5).
        shapes: (C, h, w) per level.
        bounds: (lo, hi) float32 per level.
    """

    bit_depth: int
    first_level: int
    shapes: tuple[tuple[int, int, int], ...]
    bounds: tuple[tuple[float, float], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"p{self.first_level + i}" for i in range(len(self.shapes)))

    def pack(self, codec_id: int, payload: bytes) -> bytes:
        """The complete bitstream: header fields + payload."""
        fields = _FIELDS.pack(self.bit_depth, len(self.shapes), self.first_level)
        for (c, h, w), (lo, hi) in zip(self.shapes, self.bounds):
            fields += _LEVEL.pack(c, h, w, lo, hi)
        return pack_stream(codec_id, fields, payload)

    @classmethod
    def unpack(cls, data: bytes, codec_id: int, name: str) -> tuple[FeatureHeader, bytes]:
        """Parse a bitstream from :meth:`pack`; raises BitstreamError when it is not one."""
        reader = StreamReader(data, codec_id, name)
        bit_depth, n, first = reader.take(_FIELDS)
        if bit_depth not in (8, 10) or n == 0:
            raise BitstreamError(f"{name}: header holds bit depth {bit_depth} and {n} levels; expected 8/10 and >= 1")
        shapes, bounds = [], []
        for _ in range(n):
            c, h, w, lo, hi = reader.take(_LEVEL)
            if min(c, h, w) == 0 or not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
                raise BitstreamError(f"{name}: corrupt level entry C={c} h={h} w={w} bounds=({lo}, {hi})")
            shapes.append((c, h, w))
            bounds.append((lo, hi))
        return cls(bit_depth, first, tuple(shapes), tuple(bounds)), reader.payload()


def check_levels(levels: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Select p2..p5 ([1,C,h,w] float, finite) from ``levels``; p6 may be present and is dropped."""
    if not isinstance(levels, Mapping):
        raise TypeError(f"levels must be a mapping name -> tensor, got {type(levels).__name__}")
    missing = [k for k in CODED_LEVELS if k not in levels]
    unknown = [k for k in levels if k not in CODED_LEVELS and k != "p6"]
    if missing or unknown:
        raise ValueError(f"levels must hold {', '.join(CODED_LEVELS)} (p6 optional); missing {missing}, unknown {unknown}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k in CODED_LEVELS:
        v = levels[k]
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise ValueError(f"level {k!r} must be a float tensor [1,C,h,w], got {type(v).__name__} {getattr(v, 'dtype', '')}")
        if v.ndim != 4 or v.shape[0] != 1:
            raise ValueError(f"level {k!r} must be [1,C,h,w] (one image at a time), got {tuple(v.shape)}")
        if max(v.shape[1:]) > 65535:
            raise ValueError(f"level {k!r} of shape {tuple(v.shape)} exceeds 65535 in a dimension")
        if not torch.isfinite(v).all():
            raise ValueError(f"level {k!r} holds NaN or inf")
        out[k] = v.detach().to("cpu", torch.float32)
    return out


class FrameFeatureAnchor(FeatureAnchor):
    """Quantise, tile and code p2..p5 as one 4:0:0 picture; subclasses supply the picture codec."""

    #: smallest picture side the picture codec accepts (after padding).
    min_side: int = 0
    bit_depth: int

    def encode(self, levels: OrderedDict[str, torch.Tensor]) -> bytes:
        """Code p2..p5.

        Args:
            levels: "p2".."p5" (and optionally "p6", ignored), each [1,C,h,w] float.

        Returns:
            The complete bitstream: 67-byte header + the coded frame.
        """
        coded = check_levels(levels)
        codes, bounds = OrderedDict(), []
        for k, v in coded.items():
            q, lo, hi = quantize(v, self.bit_depth)
            codes[k] = q
            bounds.append((lo, hi))
        frame, layout = tile_levels(codes, fill=0)
        frame = pad_to_multiple(frame, PAD_MULTIPLE, self.min_side)
        payload = self._code_frame(frame)
        header = FeatureHeader(self.bit_depth, int(CODED_LEVELS[0][1:]), layout.shapes, tuple(bounds))
        return header.pack(self.codec_id, payload)

    def decode(self, data: bytes) -> OrderedDict[str, torch.Tensor]:
        """Decode to p2..p5 and p6 = max_pool2d(p5, 1, 2), each [1,C,h,w] float32.

        Raises:
            BitstreamError: wrong codec, truncated or corrupt data.
        """
        header, payload = FeatureHeader.unpack(data, self.codec_id, self.name)
        layout = frame_layout(header.shapes, header.names)
        ph, pw = padded_size(layout.height, layout.width, PAD_MULTIPLE, self.min_side)
        check_picture_size(ph, pw, f"{self.name} (the frame its levels tile)")
        frame = self._decode_frame(payload, header.bit_depth, ph, pw)
        if frame.shape[0] < layout.height or frame.shape[1] < layout.width:
            raise BitstreamError(f"{self.name}: decoded frame {frame.shape} is smaller than the layout's {ph}x{pw}")
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for (k, q), (lo, hi) in zip(_untile_np(frame, layout).items(), header.bounds):
            out[k] = torch.from_numpy(dequantize(q, lo, hi, header.bit_depth))
        last = next(reversed(out))
        out[f"p{header.first_level + len(out)}"] = p6_from_p5(out[last])
        return out

    @abc.abstractmethod
    def _code_frame(self, frame: np.ndarray) -> bytes:
        """Code one uint16 [H,W] picture (sides multiples of 8) as 4:0:0; return the elementary stream."""

    @abc.abstractmethod
    def _decode_frame(self, payload: bytes, bit_depth: int, height: int, width: int) -> np.ndarray:
        """Decode to uint16 [>=height, >=width]."""


class FeatureHevcAnchor(FrameFeatureAnchor):
    """The MPEG-style feature anchor coded with HEVC: libx265, 4:0:0 (``gray10le``), intra, fixed QP.

    Bytes counted: the 67-byte header (module docstring) plus the HEVC Annex-B elementary stream of
    the monochrome frame (VPS, SPS, PPS, slice); no container, nothing excluded.

    Args:
        qp: quantisation parameter 0..51.
        bit_depth: 10 (default, Main 4:4:4 10 profile's 4:0:0) or 8.
        preset: x265 speed preset.
        tune: x265 tuning ("psnr" by default: no psycho-visual optimisation on feature data).
    """

    name = "feature_hevc"
    codec_id = 16
    min_side = 16

    def __init__(self, qp: int = 32, bit_depth: int = 10, preset: str = "medium", tune: str | None = "psnr"):
        self.qp = check_int("qp", qp, 0, 51)
        self.bit_depth = check_choice("bit_depth", bit_depth, (8, 10))
        self.preset = check_choice("preset", preset, X265_PRESETS)
        self.tune = check_choice("tune", tune, X265_TUNES)
        self.params = {"qp": self.qp, "bit_depth": self.bit_depth, "preset": preset, "tune": tune}

    def _code_frame(self, frame: np.ndarray) -> bytes:
        opts = x265_options(self.qp, self.preset, self.tune)
        return encode_picture("libx265", PIX_FMTS[("400", self.bit_depth)], [frame], self.bit_depth, opts)

    def _decode_frame(self, payload: bytes, bit_depth: int, height: int, width: int) -> np.ndarray:
        (y,) = decode_picture("hevc", payload, PIX_FMTS[("400", bit_depth)], bit_depth, self.name, (height, width))
        return y


class FeatureVtmAnchor(FrameFeatureAnchor):
    """The MPEG-style feature anchor coded with VVC (VTM), 4:0:0, intra, fixed QP.

    Bytes counted: the 67-byte header plus the complete VTM bitstream file (Annex-B NAL units).

    Args:
        qp: quantisation parameter 0..63.
        encoder, decoder, cfg: VTM binaries and intra configuration (see :mod:`vcm.anchors.vtm`),
            falling back to ``VTM_ENCODER``, ``VTM_DECODER``, ``VTM_CFG``.
        bit_depth: 10 (default) or 8.
        timeout: seconds allowed per encoder/decoder run.
        extra_args: additional encoder arguments.
    """

    name = "feature_vtm"
    codec_id = 17

    def __init__(
        self,
        qp: int = 32,
        encoder: str | None = None,
        decoder: str | None = None,
        cfg: str | None = None,
        bit_depth: int = 10,
        timeout: float = 3600.0,
        extra_args: Sequence[str] = (),
    ):
        self.qp = check_int("qp", qp, 0, 63)
        self.bit_depth = check_choice("bit_depth", bit_depth, (8, 10))
        self.tools = VtmTools(encoder, decoder, cfg, timeout, list(extra_args))
        self.params = {
            "qp": self.qp, "bit_depth": self.bit_depth, "encoder": encoder, "decoder": decoder, "cfg": cfg,
            "timeout": timeout, "extra_args": list(extra_args),
        }  # fmt: skip

    def encoder_command(self, yuv: str, bitstream: str, width: int, height: int) -> list[str]:
        """The encoder command line this anchor runs for a ``width`` x ``height`` 4:0:0 frame."""
        return self.tools.encoder_command(yuv, bitstream, width, height, self.qp, "400", self.bit_depth)

    def available(self) -> bool:
        """True when the VTM encoder, decoder and configuration are all found."""
        return self.tools.available()

    def _code_frame(self, frame: np.ndarray) -> bytes:
        return self.tools.encode([frame], "400", self.bit_depth, self.qp)

    def _decode_frame(self, payload: bytes, bit_depth: int, height: int, width: int) -> np.ndarray:
        (y,) = self.tools.decode(payload, height, width, "400", bit_depth)
        return y
