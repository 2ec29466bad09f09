"""Untrusted strings never make CompressAI's native range decoder read memory vcm does not own.

CompressAI's rANS decoder (``compressai.ans.RansDecoder``, C++) reads its string without bounds
checks: it reads 8 bytes to start, then one 32-bit word whenever its state runs low, so a string
that is empty, shorter than 8 bytes or cut short makes it read past the end of its buffer (a crash,
or process memory in the decoded image). vcm therefore refuses strings shorter than the 8 bytes
every rANS string holds (the flushed state) and hands the decoder each string followed by zero
bytes, enough for every read a stream of that length and symbol count can ask for:

* inside the string: at most ``len(string) / 4`` words, and the escape ("bypass") values an
  adversarial string can announce in it cost at most 15 words per string word (``32 * len`` bytes
  covers both with margin);
* past the string, in the zeros: at most 30 words per symbol (one renormalisation of the symbol,
  one of its escape length, at most 9 escape-length words and 18 escape-value words: each word read
  from zeros brings 32 zero bits, which end the escape-length loop), i.e. 128 bytes per symbol.

A valid string is decoded exactly as without the zeros (its decoder stops at its own end). What a
damaged or crafted string decodes to then depends only on bytes vcm owns, so two decodes of a file
always agree; the symbols check of format-2 files (:mod:`vcm.codecs.exact`) refuses such output.
"""
from __future__ import annotations

from collections.abc import Sequence

from compressai.entropy_models import EntropyModel
from torch import nn

from vcm.errors import BitstreamError

__all__ = ["MIN_STRING_BYTES", "GuardedEntropyCoder", "guard_entropy_coders", "guarded_string"]

#: every rANS string holds at least the encoder's flushed 64-bit state
MIN_STRING_BYTES = 8
_BYTES_PER_STRING_BYTE = 32
_BYTES_PER_SYMBOL = 128


def guarded_string(string: bytes, n_symbols: int, what: str = "string") -> bytes:
    """``string`` followed by the zero bytes its decoding may read past its end.

    Raises:
        BitstreamError: not bytes, or shorter than :data:`MIN_STRING_BYTES`.
    """
    if not isinstance(string, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"{what} is a {type(string).__name__}, expected bytes")
    if len(string) < MIN_STRING_BYTES:
        raise BitstreamError(f"{what} has {len(string)} bytes; a range-coded string has at least {MIN_STRING_BYTES}")
    return bytes(string) + bytes(_BYTES_PER_STRING_BYTE * len(string) + _BYTES_PER_SYMBOL * int(n_symbols) + 64)


class GuardedEntropyCoder:
    """CompressAI's entropy-coder proxy, decoding only :func:`guarded_string` copies of its strings."""

    def __init__(self, inner):
        self.inner = inner
        self.name = getattr(inner, "name", "ans")

    def encode_with_indexes(self, *args, **kwargs):
        return self.inner.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, string: bytes, indexes: Sequence[int], *args, **kwargs):
        return self.inner.decode_with_indexes(guarded_string(string, len(indexes)), indexes, *args, **kwargs)


def guard_entropy_coders(model: nn.Module) -> nn.Module:
    """Put a :class:`GuardedEntropyCoder` in front of every entropy model of ``model`` (idempotent)."""
    for module in model.modules():
        if isinstance(module, EntropyModel) and not isinstance(module.entropy_coder, GuardedEntropyCoder):
            module.entropy_coder = GuardedEntropyCoder(module.entropy_coder)
    return model
