"""vcm bitstream files: a small versioned header, the codec's strings, and a CRC32.

Every byte of the file counts in ``bpp_real = 8 * len(file) / (H * W)``, so the header is made of
varints (LEB128: 7 bits per byte, 1 byte below 128, 2 below 16384). Layout, version 2:

=================  ===================================================================  ==========
field              encoding                                                             bytes
=================  ===================================================================  ==========
magic              ``b"VCM1"``                                                          4
format version     u8 (= 1)                                                             1
codec name         varint length + UTF-8                                                1 + len
weights hash       the 16 hex characters of :func:`~vcm.codecs.base.weights_hash`, raw  8
original H, W      varint each                                                          2 + 2 (KITTI)
latent shape       value (see below)                                                    1 + dims
extra              varint count, then per entry: varint-length UTF-8 key + value        1 if empty
strings            varint number of groups; per group: varint number of strings,        1 + G +
                   then per string: varint length + bytes                               sum(len + 1..3)
symbols check      u8 flag (0: none, 1: present), then u32 little-endian: CRC32 of       1 + 4
                   the decoded symbols, table indexes and means
                   (:func:`vcm.codecs.exact.symbols_check`), verified by the decoder
CRC32              u32 little-endian, over every byte before it                         4
=================  ===================================================================  ==========

A *value* (latent shape, extra entries) is an integer or a nested list of integers, written as
varints: ``v << 2`` for an integer v >= 0, ``((-v - 1) << 2) | 2`` for v < 0, ``(n << 1) | 1`` for a
list of n values (which follow). Integers 0..31 and lists shorter than 64 take one byte, so a latent
shape ``(6, 20)`` takes 3. Lists decode as tuples.

For a scale hyperprior on a 375x1242 KITTI frame (codec name "hyperprior", 2 groups of 1 string) the
overhead over the strings is 4 + 1 + 11 + 8 + 4 + 3 + 1 + (1 + 2 + 2 + 1..2) + 4 = 42..43 bytes,
i.e. 0.0007 bpp.

Compatibility rule: files written by an earlier vcm must keep decoding to the same pixels (the golden
bitstreams of ``tests/golden/`` check it, for every codec family and every zoo codec). A deliberate
change of this layout, or of how a codec turns latents into strings, bumps ``FORMAT_VERSION`` and,
in the same change, either keeps a reader for the old version (``unpack`` dispatching on the version
byte) or refuses it with a one-line ``BitstreamError`` that names the version and the last vcm
release that reads it; never decode an old file with the new reader. The old goldens stay
committed; new ones are added with ``python -m tests.golden.make``. Versions 1 and 2 are read; a
file with any other version byte is refused.
"""
from __future__ import annotations

import math
import operator
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vcm.codecs.base import crop_image, is_updated, pad_image, weights_hash
from vcm.codecs.guard import guard_entropy_coders
from vcm.codecs.roi_gain import Y_STRIDE, RoiGain
from vcm.errors import BitstreamError
from vcm.utils.limits import check_picture_size

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "READABLE_VERSIONS",
    "Payload",
    "decode_image",
    "decompress_payload",
    "encode_image",
    "pack",
    "unpack",
]

MAGIC = b"VCM1"
FORMAT_VERSION = 2
#: the versions this vcm reads (1: float entropy parameters, no symbols check)
READABLE_VERSIONS = (1, 2)
_CRC_BYTES = 4
_MAX_VARINT_BYTES = 10
_MAX_DEPTH = 8
#: codec names and extra keys: short identifiers (a file is refused otherwise, before anything else)
MAX_NAME = 64
_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_NAME}}}")


@dataclass(frozen=True)
class Payload:
    """The content of a vcm bitstream.

    Attributes:
        codec: codec name (``model.codec_name``).
        weights_hash: 16 hex characters identifying the weights (and CDF tables) that made it.
        orig_hw: (H, W) of the original, unpadded image.
        shape: the latent shape passed to ``decompress``; nested lists come back as tuples.
        extra: further integers or nested tuples of integers (e.g. feature-level sizes).
        strings: groups of byte strings, as returned by ``compress``.
        check: CRC32 of the decoded symbols, table indexes and means (:func:`vcm.codecs.exact.symbols_check`),
            None when the codec writes none (CompressAI's own models) or the file is format 1.
        version: the file's format version.
    """

    codec: str
    weights_hash: str
    orig_hw: tuple[int, int]
    shape: tuple
    extra: dict[str, Any] = field(default_factory=dict)
    strings: list[list[bytes]] = field(default_factory=list)
    check: int | None = None
    version: int = FORMAT_VERSION


# ---------------------------------------------------------------------- writing
def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"varint needs a non-negative integer, got {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _as_int(v: Any, what: str) -> int:
    if isinstance(v, Tensor):
        if v.numel() != 1 or v.is_floating_point():
            raise ValueError(f"{what}: expected an integer, got a tensor of shape {tuple(v.shape)} ({v.dtype})")
        return int(v.item())
    try:
        return operator.index(v)
    except TypeError:
        raise ValueError(f"{what}: expected an integer or a list of integers, got {v!r}") from None


def _value(v: Any, what: str, depth: int = 0) -> bytes:
    if depth > _MAX_DEPTH:
        raise ValueError(f"{what}: lists nested deeper than {_MAX_DEPTH}")
    if isinstance(v, (list, tuple, torch.Size)) or (isinstance(v, Tensor) and v.dim() > 0):
        items = list(v)
        return _varint((len(items) << 1) | 1) + b"".join(_value(i, what, depth + 1) for i in items)
    n = _as_int(v, what)
    return _varint(n << 2) if n >= 0 else _varint(((-n - 1) << 2) | 2)


def _text(s: str, what: str) -> bytes:
    if not isinstance(s, str) or not _NAME.fullmatch(s):
        raise ValueError(f"{what} must be 1-{MAX_NAME} letters, digits, '_', '-' or '.', got {s!r}")
    raw = s.encode("utf-8")
    return _varint(len(raw)) + raw


def _hash_bytes(h: str) -> bytes:
    if not isinstance(h, str) or len(h) != 16:
        raise ValueError(f"weights hash must be 16 hex characters (vcm.codecs.base.weights_hash), got {h!r}")
    try:
        return bytes.fromhex(h)
    except ValueError:
        raise ValueError(f"weights hash must be 16 hex characters, got {h!r}") from None


def pack(
    codec_name: str,
    weights_hash: str,
    orig_hw: Sequence[int],
    strings: Sequence[Sequence[bytes]],
    shape: Any,
    extra: Mapping[str, Any] | None = None,
    check: int | None = None,
) -> bytes:
    """Write a vcm bitstream.

    Args:
        codec_name: ``model.codec_name``.
        weights_hash: :func:`vcm.codecs.base.weights_hash` of the model after ``update()``.
        orig_hw: (H, W) of the original, unpadded image, both >= 1.
        strings: ``compress(...)["strings"]``: groups of byte strings.
        shape: ``compress(...)["shape"]``: an integer or (nested) sequence of integers.
        extra: further named integers / (nested) integer lists, e.g. ``{"sizes": [[h, w], ...]}``.
        check: ``compress(...)["check"]`` (CRC32 of the decoded symbols), or None.

    Returns:
        The complete file content.
    """
    if len(orig_hw) != 2 or any(_as_int(s, "orig_hw") < 1 for s in orig_hw):
        raise ValueError(f"orig_hw must be (H, W) with H, W >= 1, got {tuple(orig_hw)}")
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION)
    out += _text(codec_name, "codec name")
    out += _hash_bytes(weights_hash)
    out += _varint(_as_int(orig_hw[0], "orig_hw")) + _varint(_as_int(orig_hw[1], "orig_hw"))
    out += _value(shape, "shape")
    extra = dict(extra or {})
    out += _varint(len(extra))
    for key, v in extra.items():
        out += _text(key, "extra key")
        out += _value(v, f"extra[{key!r}]")
    if isinstance(strings, (bytes, bytearray)) or not isinstance(strings, Sequence):
        raise ValueError(f"strings must be a list of groups of bytes, got {type(strings).__name__}")  # noqa: TRY004
    out += _varint(len(strings))
    for g, group in enumerate(strings):
        if isinstance(group, (bytes, bytearray)) or not isinstance(group, Sequence):
            raise ValueError(f"strings[{g}] must be a list of bytes, got {type(group).__name__}")  # noqa: TRY004
        out += _varint(len(group))
        for s in group:
            if not isinstance(s, (bytes, bytearray)):
                raise ValueError(f"strings[{g}] holds a {type(s).__name__}, expected bytes")  # noqa: TRY004
            out += _varint(len(s))
            out += s
    if check is None:
        out.append(0)
    else:
        if not 0 <= int(check) <= 0xFFFFFFFF:
            raise ValueError(f"check must be an unsigned 32-bit integer, got {check!r}")
        out.append(1)
        out += struct.pack("<I", int(check))
    out += struct.pack("<I", zlib.crc32(out) & 0xFFFFFFFF)
    return bytes(out)


# ---------------------------------------------------------------------- reading
class _Reader:
    def __init__(self, data: bytes, end: int):
        self.data = data
        self.pos = 0
        self.end = end

    def _truncated(self, what: str) -> BitstreamError:
        return BitstreamError(
            f"truncated vcm bitstream: it ends while reading {what} (byte {self.pos} of {len(self.data)})"
        )

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise self._truncated(what)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        n = 0
        for i in range(_MAX_VARINT_BYTES):
            if self.pos >= self.end:
                raise self._truncated(what)
            byte = self.data[self.pos]
            self.pos += 1
            n |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return n
        raise BitstreamError(f"corrupt vcm bitstream: {what} is not a valid varint (byte {self.pos})")

    def text(self, what: str) -> str:
        length = self.varint(f"the length of {what}")
        if length > MAX_NAME:
            raise BitstreamError(f"corrupt vcm bitstream: {what} is {length} bytes long (at most {MAX_NAME})")
        raw = self.take(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BitstreamError(f"corrupt vcm bitstream: {what} is not UTF-8 ({raw!r})") from None

    def value(self, what: str, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise BitstreamError(f"corrupt vcm bitstream: {what} is nested deeper than {_MAX_DEPTH}")
        v = self.varint(what)
        if v & 1:
            return tuple(self.value(what, depth + 1) for _ in range(v >> 1))
        return -(v >> 2) - 1 if v & 2 else v >> 2


def _parse(data: bytes, end: int, version: int = FORMAT_VERSION) -> tuple[Payload, int]:
    """Read the fields after magic and version from ``data[:end]``; returns the payload and where it stopped."""
    r = _Reader(data, end)
    r.pos = len(MAGIC) + 1
    codec = r.text("the codec name")
    if not _NAME.fullmatch(codec):
        raise BitstreamError(f"corrupt vcm bitstream: codec name {codec[:40]!r} (expected 1-{MAX_NAME} letters, "
                             "digits, '_', '-', '.')")
    weights = r.take(8, "the weights hash").hex()
    orig_h = r.varint("the original height")
    orig_w = r.varint("the original width")
    shape = r.value("the latent shape")
    extra: dict[str, Any] = {}
    for i in range(r.varint("the number of extra entries")):
        key = r.text(f"the name of extra entry {i}")
        if not _NAME.fullmatch(key):
            raise BitstreamError(f"corrupt vcm bitstream: extra entry name {key[:40]!r}")
        extra[key] = r.value(f"extra entry {key!r}")
    strings: list[list[bytes]] = []
    for g in range(r.varint("the number of string groups")):
        group = []
        for s in range(r.varint(f"the number of strings in group {g}")):
            length = r.varint(f"the length of string {s} of group {g}")
            group.append(r.take(length, f"string {s} of group {g} ({length} bytes)"))
        strings.append(group)
    check = None
    if version >= 2:
        flag = r.take(1, "the symbols-check flag")[0]
        if flag not in (0, 1):
            raise BitstreamError(f"corrupt vcm bitstream: symbols-check flag {flag} (expected 0 or 1)")
        if flag:
            check = struct.unpack("<I", r.take(4, "the symbols check"))[0]
    if orig_h < 1 or orig_w < 1:
        raise BitstreamError(f"corrupt vcm bitstream: original size {orig_h}x{orig_w}")
    shape = shape if isinstance(shape, tuple) else (shape,)
    return Payload(codec, weights, (orig_h, orig_w), shape, extra, strings, check, version), r.pos


def unpack(data: bytes, expected_codec: str | None = None, expected_hash: str | None = None) -> Payload:
    """Read and check a vcm bitstream.

    Args:
        data: the file content.
        expected_codec: when given, the codec name the file must have been made by.
        expected_hash: when given, the weights hash it must have been made with.

    Returns:
        The :class:`Payload`.

    Raises:
        BitstreamError: not a vcm bitstream (magic), unsupported format version, truncated (naming the
            field being read), CRC mismatch (corrupt), or made by another codec / other weights.
    """
    data = bytes(data)
    head = data[: len(MAGIC)]
    if head != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise BitstreamError(f"truncated vcm bitstream: its {len(data)} bytes end inside the magic {MAGIC!r}")
        raise BitstreamError(f"not a vcm bitstream: it starts with {head!r}, expected the magic {MAGIC!r}")
    if len(data) < len(MAGIC) + 1:
        raise BitstreamError(f"truncated vcm bitstream: it ends while reading the format version (byte {len(data)})")
    version = data[len(MAGIC)]
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"unsupported vcm bitstream format version {version}; this vcm reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    body_end = len(data) - _CRC_BYTES
    stored = struct.unpack("<I", data[body_end:])[0] if body_end > len(MAGIC) else None
    computed = zlib.crc32(data[:body_end]) & 0xFFFFFFFF if stored is not None else None
    if stored is not None and stored == computed:
        payload, pos = _parse(data, body_end, version)
        if pos != body_end:
            raise BitstreamError(f"corrupt vcm bitstream: {body_end - pos} unexplained bytes before the CRC32")
    else:
        # Say what is missing when the file was cut short; a complete file with a wrong CRC is corrupt.
        try:
            _, pos = _parse(data, len(data), version)
        except BitstreamError as e:
            # a flipped length byte also reads past the end: the CRC cannot say which happened
            hint = "; or the file is corrupt (its CRC32 does not match)" if "truncated" in str(e) else ""
            raise BitstreamError(f"{e}{hint}") from None
        if len(data) - pos < _CRC_BYTES:
            raise BitstreamError(
                f"truncated vcm bitstream: it ends while reading the CRC32 (byte {len(data)}, "
                f"{len(data) - pos} of {_CRC_BYTES} bytes present)"
            )
        raise BitstreamError(
            f"corrupt vcm bitstream: CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"
            if len(data) - pos == _CRC_BYTES
            else f"corrupt vcm bitstream: {len(data) - pos - _CRC_BYTES} unexplained bytes before the CRC32"
        )
    _check_expected(payload, expected_codec, expected_hash)
    return payload


def _check_expected(
    payload: Payload, codec: str | None, weights: str | None, model_codec: str | None = None
) -> None:
    """Raise when the payload was made by another codec or other weights.

    ``model_codec`` only labels the model in the message when its name is not checked.
    """
    codec_ok = codec is None or payload.codec == codec
    hash_ok = weights is None or payload.weights_hash == weights.lower()
    if codec_ok and hash_ok:
        return
    this_codec = codec if codec is not None else (model_codec or payload.codec)
    this_hash = "?" if weights is None else weights
    raise BitstreamError(
        f"this bitstream was made by codec {payload.codec!r} with weights {payload.weights_hash}, "
        f"this model is {this_codec!r}/{this_hash}"
        + ("" if codec_ok else " (another codec)")
        + ("" if hash_ok else " (other weights or entropy tables: decoding would give garbage)")
    )


# ---------------------------------------------------------------------- images
def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _require_updated(model: nn.Module) -> None:
    if not is_updated(model):
        raise ValueError(
            f"{type(model).__name__} has no entropy-coding tables: call model.update(force=True) before coding"
        )


def _codec_name(model: nn.Module) -> str:
    return getattr(model, "codec_name", None) or type(model).__name__


@torch.no_grad()
def encode_image(model: nn.Module, x: Tensor, cond: Any = None, codec_name: str | None = None,
                 roi: RoiGain | None = None) -> bytes:
    """Code one image into a complete vcm bitstream.

    The image is padded (replicate) to ``model.min_div``, coded with ``model.compress`` and packed with
    the original size and :func:`~vcm.codecs.base.weights_hash` of the model, so ``decode_image``
    crops back and refuses bitstreams of other weights. The model must be updated
    (``update(force=True)``) and is not changed; put it in eval mode if it has mode-dependent layers.

    Args:
        model: an image codec (``min_div``, ``compress(x[, cond])``).
        x: one image, [3, H, W] or [1, 3, H, W], uint8 in 0..255 or float in [0, 1].
        cond: detector features for codecs with ``needs_features`` (see ``RoiHyperprior``).
        codec_name: name to write; defaults to ``model.codec_name``.
        roi: a gain map's definition (:class:`~vcm.codecs.roi_gain.RoiGain`, boxes of this image):
            coded with it and carried in the file (hyperprior-family codecs); None: plain coding.

    Returns:
        The bitstream; ``bpp_real = 8 * len(bytes) / (H * W)``.
    """
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"encode_image codes one RGB image [3, H, W] or [1, 3, H, W], got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise ValueError(f"encode_image expects uint8 or float pixels, got {x.dtype}")
    elif x.numel() and (x.min() < -1e-4 or x.max() > 1 + 1e-4):
        raise ValueError(
            f"encode_image expects float pixels in [0, 1], got [{x.min().item():.4g}, {x.max().item():.4g}]"
        )
    else:
        x = x.clamp(0, 1)  # float noise of a resize or colour conversion
    _require_updated(model)
    x = x.to(_model_device(model))
    h, w = x.shape[-2:]
    x_pad, _ = pad_image(x, int(getattr(model, "min_div", 1)))
    if roi is None:
        out = model.compress(x_pad) if cond is None else model.compress(x_pad, cond=cond)
        return pack(codec_name or _codec_name(model), weights_hash(model), (h, w), out["strings"], out["shape"],
                    check=out.get("check"))
    roi.validate(h, w, ValueError)
    gain = roi.map((x_pad.shape[-2] // Y_STRIDE, x_pad.shape[-1] // Y_STRIDE))
    out = model.compress(x_pad, cond=cond, gain=gain)
    return pack(codec_name or _codec_name(model), weights_hash(model), (h, w), out["strings"], out["shape"],
                extra=roi.to_extra(), check=out.get("check"))


@torch.no_grad()
def decode_image(model: nn.Module, data: bytes, codec_name: str | None = None) -> Tensor:
    """Decode a bitstream made by :func:`encode_image` with the same model and weights.

    The weights hash is always checked (it identifies the weights and entropy tables that decoding
    needs); the codec name only when ``codec_name`` is given, because a bitstream may carry a
    custom name (``encode_image(..., codec_name=...)``) for the very same model.

    Args:
        model: the image codec, updated (``update(force=True)``) exactly as at encoding.
        data: the bitstream.
        codec_name: the codec name the bitstream must carry, or None to accept any.

    Returns:
        The image [1, 3, H, W], float in [0, 1], at its original size.

    Raises:
        BitstreamError: the bitstream is not readable (see :func:`unpack`), was made by another codec or
            other weights, or the decoder fails on it.
    """
    _require_updated(model)
    payload = unpack(data, expected_codec=codec_name)
    _check_expected(payload, codec_name, weights_hash(model), model_codec=_codec_name(model))
    h, w = payload.orig_hw
    check_picture_size(h, w, "vcm bitstream")
    min_div = int(getattr(model, "min_div", 1))
    padded = (math.ceil(h / min_div) * min_div, math.ceil(w / min_div) * min_div)
    if any(len(group) != 1 for group in payload.strings):
        raise BitstreamError(
            f"decode_image decodes one image, the bitstream holds {[len(g) for g in payload.strings]} strings per group"
        )
    latent_shape = getattr(model, "latent_shape", None)
    if latent_shape is not None:
        expected = tuple(latent_shape(*padded))
        if tuple(payload.shape) != expected:
            raise BitstreamError(f"corrupt vcm bitstream: latent shape {payload.shape} for a {h}x{w} image "
                                 f"(this codec codes it as {expected})")
    else:
        flat = _flatten(payload.shape)
        if not flat or len(flat) > 4 or any(s < 1 or s > max(padded) for s in flat):
            raise BitstreamError(f"corrupt vcm bitstream: latent shape {payload.shape} for a {h}x{w} image")
    roi = RoiGain.from_extra(payload.extra, h, w)
    gain = None if roi is None else roi.map((padded[0] // Y_STRIDE, padded[1] // Y_STRIDE))
    try:
        x_hat = decompress_payload(model, payload, gain=gain)["x_hat"]
    except BitstreamError:
        raise
    except (ValueError, AssertionError, RuntimeError, IndexError, TypeError, KeyError, MemoryError, OverflowError) as e:
        raise BitstreamError(f"the {payload.codec} decoder failed on this bitstream: {e}") from e
    want = padded
    if tuple(x_hat.shape[-2:]) != want:
        raise BitstreamError(
            f"decoded image is {tuple(x_hat.shape[-2:])}, expected {want} for a {h}x{w} image padded to {min_div}"
        )
    return crop_image(x_hat, (0, want[1] - w, 0, want[0] - h)).clamp(0, 1)


def decompress_payload(model: nn.Module, payload: Payload, gain: Tensor | None = None, **kwargs: Any) -> dict:
    """``model.decompress`` as the payload's format version asks: format 1 with the codec's float
    entropy parameters (``decompress_float``, as such files were written), format 2 with its exact
    ones, the encoder's symbols check (:mod:`vcm.codecs.exact`) and the file's gain map. The range
    decoder only ever sees bounded copies of the strings (:mod:`vcm.codecs.guard`).

    Args:
        model: the codec.
        payload: from :func:`unpack`.
        gain: the gain map the file's ``roi``/``gain`` entries define (:mod:`vcm.codecs.roi_gain`), or None.
        **kwargs: further arguments of the codec's ``decompress`` (e.g. a feature codec's ``sizes``).
    """
    guard_entropy_coders(model)
    if payload.version == 1:
        if hasattr(model, "decompress_float"):
            return model.decompress_float(payload.strings, payload.shape, **kwargs)
        if getattr(model, "exact_entropy_parameters", False):
            return model.decompress(payload.strings, payload.shape, exact=False, **kwargs)
        return model.decompress(payload.strings, payload.shape, **kwargs)
    if gain is not None:
        kwargs["gain"] = gain
    return model.decompress(payload.strings, payload.shape, check=payload.check, **kwargs)


def _flatten(v: Any) -> list[int]:
    if isinstance(v, tuple):
        return [i for item in v for i in _flatten(item)]
    return [v]
