"""How large a picture a decoder accepts from an untrusted file.

A header may claim any size; every decoder checks it against this limit before it allocates anything
for the picture, so a crafted file cannot make it exhaust memory. The default, 64 MP, is four 4K
UHD frames; ``VCM_MAX_PIXELS`` (or ``vcm-decompress --max-pixels``) sets another.
"""
from __future__ import annotations

import os

from vcm.errors import BitstreamError, ConfigError

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_PIXELS_ENV", "check_picture_size", "max_pixels"]

DEFAULT_MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "VCM_MAX_PIXELS"


def max_pixels() -> int:
    """The largest H x W a decoder accepts: ``VCM_MAX_PIXELS`` when set, else 64 MP."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive integer number of pixels") from None
    if value < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive integer number of pixels")
    return value


def check_picture_size(height: int, width: int, what: str) -> None:
    """Raise :class:`BitstreamError` when ``height`` x ``width`` is empty or above :func:`max_pixels`."""
    if height < 1 or width < 1:
        raise BitstreamError(f"{what}: picture size {height}x{width} is empty")
    limit = max_pixels()
    if height * width > limit:
        raise BitstreamError(
            f"{what}: picture size {height}x{width} ({height * width / 1e6:.1f} MP) is above the decoder's limit of "
            f"{limit / 1e6:.1f} MP (set {MAX_PIXELS_ENV} or --max-pixels to allow it)"
        )
