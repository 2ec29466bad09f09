"""Single-picture encode/decode through PyAV with planes copied in and out by vcm.

Planes are written into and read from ``frame.planes[i]`` directly, honouring each plane's
``line_size`` (FFmpeg pads every line for alignment), so no pixel-format conversion happens in
libswscale: what vcm computes is exactly what the encoder codes.
"""
from __future__ import annotations

import fractions
from collections.abc import Callable, Sequence

import av
import numpy as np

from vcm.errors import BitstreamError, CodecUnavailableError

#: (chroma, bit depth) -> FFmpeg pixel format; chroma "400" is monochrome.
PIX_FMTS: dict[tuple[str, int], str] = {
    ("420", 8): "yuv420p",
    ("420", 10): "yuv420p10le",
    ("444", 8): "yuv444p",
    ("444", 10): "yuv444p10le",
    ("400", 8): "gray",
    ("400", 10): "gray10le",
}
#: chroma_format_idc as in HEVC/VVC, stored in anchor headers.
CHROMA_IDC = {"400": 0, "420": 1, "444": 3}
IDC_CHROMA = {v: k for k, v in CHROMA_IDC.items()}


def codec_available(codec: str, mode: str) -> bool:
    """True when PyAV's FFmpeg has the encoder (mode "w") or decoder (mode "r") ``codec``."""
    try:
        av.codec.Codec(codec, mode)
    except (av.FFmpegError, ValueError):
        return False
    return True


def _require(codec: str, mode: str) -> None:
    if not codec_available(codec, mode):
        what = "encoder" if mode == "w" else "decoder"
        raise CodecUnavailableError(
            f"the FFmpeg inside PyAV {av.__version__} has no {codec!r} {what}; install a PyAV build with it "
            "(the PyPI wheels of PyAV 18 bundle libx265, libsvtav1 and libdav1d)"
        )


def _plane_view(plane, width: int, bytes_per_sample: int) -> np.ndarray:
    lines = np.frombuffer(plane, dtype=np.uint8)[: plane.height * plane.line_size]
    lines = lines.reshape(plane.height, plane.line_size)[:, : width * bytes_per_sample]
    return lines.view("<u2" if bytes_per_sample == 2 else np.uint8)


def write_planes(frame: av.VideoFrame, planes: Sequence[np.ndarray], bit_depth: int) -> None:
    """Copy ``planes`` into ``frame``'s buffers.

    Args:
        frame: a frame whose format matches the planes.
        planes: uint16 (or uint8) arrays [h_i, w_i], one per frame plane, of the plane's size.
        bit_depth: 8 or 10 (10-bit samples are little-endian uint16).
    """
    if len(planes) != len(frame.planes):
        raise ValueError(f"{frame.format.name} has {len(frame.planes)} planes, got {len(planes)}")
    bps = 1 if bit_depth == 8 else 2
    for plane, arr in zip(frame.planes, planes):
        if arr.shape != (plane.height, plane.width):
            raise ValueError(f"plane of shape {arr.shape} does not fit {plane.height}x{plane.width}")
        view = _plane_view(plane, plane.width, bps)
        view[...] = arr


def read_planes(frame: av.VideoFrame, bit_depth: int) -> list[np.ndarray]:
    """Copy every plane of ``frame`` out as uint16 arrays [h_i, w_i] (the line padding is dropped)."""
    bps = 1 if bit_depth == 8 else 2
    return [_plane_view(p, p.width, bps).astype(np.uint16) for p in frame.planes]


def encode_picture(
    codec: str, pix_fmt: str, planes: Sequence[np.ndarray], bit_depth: int, options: dict[str, str],
    prepare: Callable[[av.VideoFrame], av.VideoFrame] | None = None,
) -> bytes:
    """Code one picture and return the encoder's raw packets concatenated (no container).

    Args:
        codec: FFmpeg encoder name, e.g. "libx265".
        pix_fmt: FFmpeg pixel format of the planes.
        planes: the picture's planes, luma first.
        bit_depth: 8 or 10.
        options: encoder options (AVOptions).
        prepare: called with the filled frame (pts 0, time base 1/1) before it is encoded; returns the
            frame to encode, e.g. the same pixels with side data (ROI) attached by a filter graph.

    Returns:
        The elementary stream (e.g. HEVC Annex-B, AV1 OBUs) with parameter sets in band.
    """
    _require(codec, "w")
    height, width = planes[0].shape
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = fractions.Fraction(1, 1)
    ctx.options = dict(options)
    frame = av.VideoFrame(width, height, pix_fmt)
    write_planes(frame, planes, bit_depth)
    frame.pts = 0
    if prepare is not None:
        frame.time_base = ctx.time_base
        frame = prepare(frame)
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    if ctx.extradata:
        # Parameter sets are expected in band; out-of-band ones would be uncounted bytes.
        raise RuntimeError(f"{codec} put {len(ctx.extradata)} bytes in extradata; they would not be counted")
    data = b"".join(bytes(p) for p in packets)
    if not data:
        raise RuntimeError(f"{codec} produced no data for a {width}x{height} {pix_fmt} picture")
    return data


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise ValueError("an OBU size runs past the end")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("an OBU size is longer than 8 bytes")


def av1_temporal_units(data: bytes) -> int:
    """Temporal units of an AV1 low-overhead OBU stream (every OBU with its size, as SVT-AV1 writes it).

    Raises:
        ValueError: not such a stream, or bytes after its last OBU.
    """
    pos, units = 0, 0
    while pos < len(data):
        header = data[pos]
        if header & 0x80 or not header & 0x02:
            raise ValueError(f"byte {pos} is no OBU header with a size field")
        obu_type = (header >> 3) & 0x0F
        size, pos = _leb128(data, pos + 1 + (1 if header & 0x04 else 0))
        pos += size
        if pos > len(data):
            raise ValueError("the last OBU runs past the end")
        units += obu_type == 2  # OBU_TEMPORAL_DELIMITER
    return units


#: NAL unit types one intra HEVC picture is made of: VCL slices (0-9 trailing/leading, 16-21 IRAP),
#: VPS, SPS, PPS, access unit delimiter, end of sequence / bitstream, prefix and suffix SEI
_HEVC_NAL_TYPES = frozenset((*range(10), *range(16, 22), 32, 33, 34, 35, 36, 37, 39, 40))


def hevc_nal_types(data: bytes) -> list[int]:
    """The NAL unit types of an HEVC Annex-B stream, each header checked.

    Raises:
        ValueError: a NAL unit header that no single-layer HEVC picture holds (forbidden bit set, a
            layer other than 0, temporal id 0, or an unexpected type): e.g. bytes appended after a
            start code.
    """
    types = []
    starts = [i + 3 for i in range(len(data) - 2) if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1]
    for pos in starts:
        if pos + 2 > len(data):
            raise ValueError(f"a NAL unit header at byte {pos} is cut off")
        b0, b1 = data[pos], data[pos + 1]
        nal_type, layer, tid = (b0 >> 1) & 0x3F, ((b0 & 1) << 5) | (b1 >> 3), b1 & 0x07
        if b0 & 0x80 or layer != 0 or tid == 0 or nal_type not in _HEVC_NAL_TYPES:
            raise ValueError(f"byte {pos} holds no NAL unit of an HEVC picture (type {nal_type}, layer {layer}, "
                             f"temporal id {tid - 1})")
        types.append(nal_type)
    return types


def _check_stream_kind(codec: str, data: bytes, name: str) -> None:
    """Refuse a payload that is not the header's codec's kind of stream (e.g. AV1 under an HEVC id)."""
    if codec == "hevc":
        if not data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
            raise BitstreamError(f"{name}: the payload is no HEVC Annex-B stream (it starts with {data[:4].hex()})")
        try:
            hevc_nal_types(data)
        except ValueError as e:
            raise BitstreamError(f"{name}: {e}") from None
    if codec == "libdav1d":
        try:
            units = av1_temporal_units(data)
        except ValueError as e:
            raise BitstreamError(f"{name}: the payload is no AV1 OBU stream: {e}") from None
        if units != 1:
            raise BitstreamError(f"{name}: the payload holds {units} AV1 temporal units, expected 1")


def decode_picture(codec: str, data: bytes, pix_fmt: str, bit_depth: int, name: str,
                   size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Decode exactly one picture; anything else raises :class:`BitstreamError`.

    The payload is checked before the picture is decoded: the header's kind of stream, one access
    unit (FFmpeg's parser splits concatenated pictures), and the coded size the parser reads from
    the parameter sets equal to ``size``, so a crafted payload cannot make the decoder allocate a
    larger picture than the header declares (and the caller checked against the pixel limit).

    Args:
        codec: FFmpeg decoder name, e.g. "hevc" or "libdav1d".
        data: the elementary stream.
        pix_fmt: expected pixel format of the decoded picture.
        bit_depth: 8 or 10.
        name: anchor name for messages.
        size: the coded (padded) (height, width) the header implies; None: not checked.

    Returns:
        The decoded planes (uint16 [h_i, w_i], luma first), of the coded (padded) size.
    """
    _require(codec, "r")
    _check_stream_kind(codec, data, name)
    try:
        ctx = av.CodecContext.create(codec, "r")
        packets = list(ctx.parse(data)) + list(ctx.parse(None))
        if len(packets) != 1:
            raise BitstreamError(f"{name}: payload holds {len(packets)} pictures, expected 1")
        coded = (ctx.height, ctx.width)
        if size is not None and coded != (0, 0) and coded != tuple(size):
            raise BitstreamError(f"{name}: payload codes a {coded[1]}x{coded[0]} picture, the header implies "
                                 f"{size[1]}x{size[0]}")
        frames = list(ctx.decode(packets[0])) + list(ctx.decode(None))
    except BitstreamError:
        raise
    except (av.FFmpegError, ValueError, OSError, MemoryError) as e:
        raise BitstreamError(f"{name}: the {codec} decoder rejected the payload: {e}") from e
    if len(frames) != 1:
        raise BitstreamError(f"{name}: payload decoded to {len(frames)} pictures, expected 1")
    frame = frames[0]
    if size is not None and (frame.height, frame.width) != tuple(size):
        raise BitstreamError(f"{name}: decoded picture is {frame.width}x{frame.height}, the header implies "
                             f"{size[1]}x{size[0]}")
    if frame.format.name != pix_fmt:
        raise BitstreamError(f"{name}: decoded picture is {frame.format.name}, header says {pix_fmt}")
    return read_planes(frame, bit_depth)
