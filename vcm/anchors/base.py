"""One interface for classical anchor codecs, and the small header every anchor bitstream starts with.

Every anchor returns ``bytes`` that hold everything its decoder needs, so the evaluator computes the real
rate as ``8 * len(data) / (H * W)`` for every codec, learned or classical. The layout is::

    offset  size  field
    0       2     magic b"VA" (vcm anchor)
    2       1     header version (1)
    3       1     codec id (one per anchor class, e.g. 3 = hevc)
    4       n     codec fields (fixed struct per codec; image anchors start with H, W as uint16)
    4+n     4     payload length in bytes (uint32), so truncation and trailing bytes are detected
    8+n     ...   payload: the codec's own bitstream

All integers are big-endian. The header is part of the bitstream and is counted in the rate.
"""
from __future__ import annotations

import abc
import struct
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np
import torch

from vcm.errors import BitstreamError, ConfigError
from vcm.utils.limits import check_picture_size

MAGIC = b"VA"
HEADER_VERSION = 1
_PREFIX = struct.Struct(">2sBB")
_LENGTH = struct.Struct(">I")
#: Bytes of the header that every anchor adds besides its codec fields (prefix + payload length).
COMMON_HEADER_BYTES = _PREFIX.size + _LENGTH.size
#: Image anchors begin their codec fields with the original size.
_SIZE = struct.Struct(">HH")
MAX_SIDE = 65535

_CODEC_IDS: dict[int, str] = {}


def _register_codec_id(cls: type) -> None:
    """Give each concrete anchor class a unique one-byte id; a duplicate is a programming error."""
    codec_id = cls.__dict__.get("codec_id")
    if codec_id is None:
        return
    if not 0 < codec_id < 256:
        raise ValueError(f"{cls.__qualname__}.codec_id must be in 1..255, got {codec_id}")
    other = _CODEC_IDS.get(codec_id)
    if other is not None and other != f"{cls.__module__}.{cls.__qualname__}":
        raise ValueError(f"codec id {codec_id} of {cls.__qualname__} is already used by {other}")
    _CODEC_IDS[codec_id] = f"{cls.__module__}.{cls.__qualname__}"


def pack_stream(codec_id: int, fields: bytes, payload: bytes) -> bytes:
    """Prefix ``payload`` with the anchor header.

    Args:
        codec_id: the anchor's one-byte id.
        fields: the codec fields, already packed.
        payload: the codec's bitstream.

    Returns:
        The complete bitstream (header + payload), all of it counted in the rate.
    """
    if len(payload) >= 2**32:
        raise ValueError(f"payload of {len(payload)} bytes does not fit the 32-bit length field")
    return _PREFIX.pack(MAGIC, HEADER_VERSION, codec_id) + fields + _LENGTH.pack(len(payload)) + payload


class StreamReader:
    """Reads an anchor bitstream field by field; any inconsistency raises :class:`BitstreamError`."""

    def __init__(self, data: bytes, codec_id: int, name: str):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BitstreamError(f"{name}: expected the bitstream as bytes, got {type(data).__name__}")
        self.data = bytes(data)
        self.name = name
        self.pos = 0
        magic, version, cid = self.take(_PREFIX)
        if magic != MAGIC:
            raise BitstreamError(f"{name}: not a vcm anchor bitstream (magic {magic!r}, expected {MAGIC!r})")
        if version != HEADER_VERSION:
            raise BitstreamError(f"{name}: header version {version} is not supported (expected {HEADER_VERSION})")
        if cid != codec_id:
            other = _CODEC_IDS.get(cid, "an unknown codec")
            raise BitstreamError(f"{name}: bitstream was made by codec id {cid} ({other}), expected id {codec_id}")

    def take(self, st: struct.Struct) -> tuple:
        """Read one struct; raises when the data ends first."""
        end = self.pos + st.size
        if end > len(self.data):
            raise BitstreamError(
                f"{self.name}: bitstream truncated in the header ({len(self.data)} bytes, need at least {end})"
            )
        values = st.unpack_from(self.data, self.pos)
        self.pos = end
        return values

    def payload(self) -> bytes:
        """Read the payload length and return exactly that many bytes; truncation or extra bytes raise."""
        (length,) = self.take(_LENGTH)
        rest = len(self.data) - self.pos
        if rest < length:
            raise BitstreamError(f"{self.name}: bitstream truncated: payload has {rest} of {length} bytes")
        if rest > length:
            raise BitstreamError(f"{self.name}: {rest - length} unexpected bytes after the {length}-byte payload")
        if length == 0:
            raise BitstreamError(f"{self.name}: empty payload")
        return self.data[self.pos :]


def as_rgb_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Bring an image to a C-contiguous uint8 RGB array.

    Args:
        image: uint8 numpy array [H,W,3]; or a tensor [3,H,W] that is uint8, or float in [0,1]
            (rounded to the nearest 8-bit value).

    Returns:
        uint8 array [H,W,3].
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"image tensor must be [3,H,W] RGB, got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            arr = t.permute(1, 2, 0).numpy()
        elif t.is_floating_point():
            if t.numel() and (not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1):
                raise ValueError("float image tensor must hold finite values in [0, 1]")
            arr = (t.double() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        else:
            raise ValueError(f"image tensor must be uint8 or float in [0,1], got {t.dtype}")
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 [H,W,3] RGB, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must be uint8 [H,W,3] RGB, got shape {image.shape}")
        arr = image
    else:
        raise TypeError(f"image must be a numpy array [H,W,3] or a tensor [3,H,W], got {type(image).__name__}")
    h, w = arr.shape[:2]
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ValueError(f"image size {h}x{w} is outside 1..{MAX_SIDE} per side")
    return np.ascontiguousarray(arr)


def check_choice(name: str, value: Any, valid: tuple) -> Any:
    """Raise a ConfigError (a ValueError: the user's setting) listing the valid values when ``value``
    is not one of them."""
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not supported; valid values: {', '.join(map(repr, valid))}")
    return value


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """Return ``value`` as int, raising a ConfigError (a ValueError: the user's setting) when it is not
    an integer in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{name} must be in {lo}..{hi}, got {value}")
    return int(value)


class _Anchor(abc.ABC):
    name: ClassVar[str]
    kind: ClassVar[str]
    codec_id: ClassVar[int]
    params: dict

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register_codec_id(cls)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class ImageAnchor(_Anchor):
    """A classical image codec with the same encode/decode contract for every codec.

    Subclasses implement :meth:`_encode` (returns the codec fields after H, W and the payload) and
    :meth:`_decode`; this class adds and checks the header, so ``len(encode(x))`` is the whole rate.
    """

    kind: ClassVar[str] = "image"
    #: struct of the codec's own header fields (after H, W); empty by default.
    fields_struct: ClassVar[struct.Struct] = struct.Struct(">")

    @classmethod
    def header_bytes(cls) -> int:
        """Bytes the anchor header adds to the codec's payload (all counted in the rate)."""
        return COMMON_HEADER_BYTES + _SIZE.size + cls.fields_struct.size

    def encode(self, image: np.ndarray | torch.Tensor) -> bytes:
        """Code one image.

        Args:
            image: uint8 RGB [H,W,3] numpy array or [3,H,W] tensor (uint8, or float in [0,1]).

        Returns:
            The complete bitstream: header + the codec's payload.
        """
        rgb = as_rgb_uint8(image)
        h, w = rgb.shape[:2]
        fields, payload = self._encode(rgb)
        return pack_stream(self.codec_id, _SIZE.pack(h, w) + self.fields_struct.pack(*fields), payload)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode a bitstream made by :meth:`encode` of the same codec.

        Args:
            data: the complete bitstream.

        Returns:
            uint8 RGB [H,W,3] of the original size.

        Raises:
            BitstreamError: wrong codec, truncated or corrupt data.
        """
        reader = StreamReader(data, self.codec_id, self.name)
        h, w = reader.take(_SIZE)
        if h == 0 or w == 0:
            raise BitstreamError(f"{self.name}: header holds an empty image size {h}x{w}")
        check_picture_size(h, w, self.name)
        fields = reader.take(self.fields_struct)
        payload = reader.payload()
        out = self._decode(payload, h, w, fields)
        if out.shape != (h, w, 3) or out.dtype != np.uint8:
            raise BitstreamError(f"{self.name}: decoded image is {out.shape} {out.dtype}, expected ({h}, {w}, 3) uint8")
        return out

    @abc.abstractmethod
    def _encode(self, rgb: np.ndarray) -> tuple[tuple, bytes]:
        """Code uint8 [H,W,3]; return (values of ``fields_struct``, payload)."""

    @abc.abstractmethod
    def _decode(self, payload: bytes, height: int, width: int, fields: tuple) -> np.ndarray:
        """Decode ``payload`` to uint8 [height,width,3]; raise BitstreamError on bad data."""


class FeatureAnchor(_Anchor):
    """A classical codec for detector feature levels p2..p5 (p6 is rebuilt from p5 after decoding)."""

    kind: ClassVar[str] = "feature"

    @abc.abstractmethod
    def encode(self, levels: OrderedDict[str, torch.Tensor]) -> bytes:
        """Code levels p2..p5, each [1,256,h,w] float; p6 is ignored. Returns the complete bitstream."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> OrderedDict[str, torch.Tensor]:
        """Return p2..p5 reconstructed and p6 = max_pool2d(p5, kernel 1, stride 2), each [1,C,h,w] float32."""
