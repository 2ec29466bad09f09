"""Shared pieces of the Y'CbCr anchors (HEVC, AV1, VTM): padding, colour conversion, header fields, raw YUV files.

Every YUV image anchor stores, after H and W, three one-byte fields: ``chroma_format_idc`` (1 = 4:2:0,
3 = 4:4:4), the bit depth and the colour-space code of :mod:`vcm.anchors.color`. The picture is padded
(edge replication) to a multiple of 8 on each side (the smallest coding block of HEVC and VVC, and
even as 4:2:0 requires) before conversion, and the decoder crops back to H x W, so the padding never
needs to be transmitted.
"""
from __future__ import annotations

import abc
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from vcm.anchors import color
from vcm.anchors.base import ImageAnchor
from vcm.anchors.pyav_io import CHROMA_IDC, IDC_CHROMA
from vcm.errors import BitstreamError
from vcm.utils.io import atomic_write_bytes

#: Pictures are padded to a multiple of this on each side.
PAD_MULTIPLE = 8


def padded_size(height: int, width: int, multiple: int = PAD_MULTIPLE, minimum: int = 0) -> tuple[int, int]:
    """Size after :func:`vcm.anchors.color.pad_to_multiple`."""
    m = max(-(-minimum // multiple) * multiple, 0)
    return max(-(-height // multiple) * multiple, m), max(-(-width // multiple) * multiple, m)


def plane_shapes(height: int, width: int, chroma: str) -> list[tuple[int, int]]:
    """Shapes of the planes of a picture (luma first); 4:2:0 needs even sizes."""
    if chroma == "400":
        return [(height, width)]
    if chroma == "444":
        return [(height, width)] * 3
    if chroma == "420":
        if height % 2 or width % 2:
            raise ValueError(f"4:2:0 needs even picture sizes, got {height}x{width}")
        return [(height, width)] + [(height // 2, width // 2)] * 2
    raise ValueError(f"chroma={chroma!r} is not supported; valid values: '400', '420', '444'")


def write_yuv(path: str | Path, planes: Sequence[np.ndarray], bit_depth: int) -> int:
    """Write one planar picture (Y, then Cb, then Cr) as a raw YUV file.

    Samples of bit depth > 8 are 16-bit little-endian words (the layout VTM/HM read); 8-bit ones are bytes.

    Args:
        path: output file (written atomically).
        planes: integer arrays, luma first.
        bit_depth: 8..16.

    Returns:
        The number of bytes written.
    """
    dtype = np.dtype("<u2") if bit_depth > 8 else np.dtype(np.uint8)
    maxv = 2**bit_depth - 1
    parts = []
    for p in planes:
        if p.size and (p.min() < 0 or p.max() > maxv):
            raise ValueError(f"plane values must be in 0..{maxv} for {bit_depth}-bit YUV")
        parts.append(np.ascontiguousarray(p, dtype=dtype).tobytes())
    data = b"".join(parts)
    atomic_write_bytes(path, data)
    return len(data)


def read_yuv(path: str | Path, height: int, width: int, chroma: str, bit_depth: int) -> list[np.ndarray]:
    """Read the first picture of a raw planar YUV file written like :func:`write_yuv`.

    A 4:0:0 file may also carry chroma planes (some decoders write constant chroma); they are ignored.

    Returns:
        uint16 planes, luma first.
    """
    shapes = plane_shapes(height, width, chroma)
    bps = 2 if bit_depth > 8 else 1
    need = sum(h * w for h, w in shapes) * bps
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YUV file {path} does not exist")
    data = path.read_bytes()
    if len(data) < need:
        raise BitstreamError(f"YUV file {path} has {len(data)} bytes, expected at least {need} for {width}x{height} {chroma}")
    dtype = np.dtype("<u2") if bps == 2 else np.dtype(np.uint8)
    planes, pos = [], 0
    for h, w in shapes:
        n = h * w * bps
        planes.append(np.frombuffer(data, dtype=dtype, count=h * w, offset=pos).reshape(h, w).astype(np.uint16))
        pos += n
    return planes


class YuvImageAnchor(ImageAnchor):
    """Base of the anchors that code Y'CbCr planes converted by vcm (BT.709 limited range)."""

    #: chroma_format_idc, bit depth, colour code.
    fields_struct: ClassVar[struct.Struct] = struct.Struct(">BBB")
    #: smallest picture side the encoder accepts (after padding).
    min_side: ClassVar[int] = 0
    chroma: str
    bit_depth: int

    def _encode(self, rgb: np.ndarray) -> tuple[tuple, bytes]:
        padded = color.pad_to_multiple(rgb, PAD_MULTIPLE, self.min_side)
        code = color.BT709_LIMITED
        planes = color.rgb_to_ycbcr(padded, self.bit_depth, self.chroma, code)
        payload = self._code_planes(list(planes), self.chroma, self.bit_depth)
        return (CHROMA_IDC[self.chroma], self.bit_depth, code), payload

    def _decode(self, payload: bytes, height: int, width: int, fields: tuple) -> np.ndarray:
        idc, bit_depth, code = fields
        if idc not in IDC_CHROMA or IDC_CHROMA[idc] == "400":
            raise BitstreamError(f"{self.name}: header holds an unsupported chroma_format_idc {idc}")
        if bit_depth not in (8, 10):
            raise BitstreamError(f"{self.name}: header holds an unsupported bit depth {bit_depth}")
        if (code & ~color.FULL_RANGE_BIT) not in color.MATRICES:
            raise BitstreamError(f"{self.name}: header holds an unknown colour code {code:#04x}")
        chroma = IDC_CHROMA[idc]
        ph, pw = padded_size(height, width, PAD_MULTIPLE, self.min_side)
        planes = self._decode_planes(payload, chroma, bit_depth, ph, pw)
        expected = plane_shapes(ph, pw, chroma)
        if len(planes) != 3 or any(p.shape[0] < h or p.shape[1] < w for p, (h, w) in zip(planes, expected)):
            got = [p.shape for p in planes]
            raise BitstreamError(f"{self.name}: decoded planes {got} do not cover the coded size {expected}")
        y, cb, cr = (p[:h, :w] for p, (h, w) in zip(planes, expected))
        return np.ascontiguousarray(color.ycbcr_to_rgb(y, cb, cr, bit_depth, code)[:height, :width])

    @abc.abstractmethod
    def _code_planes(self, planes: list[np.ndarray], chroma: str, bit_depth: int) -> bytes:
        """Code uint16 planes (luma first, padded size) and return the elementary stream."""

    @abc.abstractmethod
    def _decode_planes(self, payload: bytes, chroma: str, bit_depth: int, height: int, width: int) -> list[np.ndarray]:
        """Decode the elementary stream to uint16 planes of (at least) the padded size."""
