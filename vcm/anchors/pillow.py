"""JPEG and WebP anchors through Pillow."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vcm.anchors.base import ImageAnchor, check_choice, check_int
from vcm.errors import BitstreamError

_JPEG_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


def _pillow_decode(payload: bytes, height: int, width: int, fmt: str, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(payload), formats=[fmt]) as im:
            # the size is known from the file's header: refuse before any pixel is decoded
            if im.size != (width, height):
                raise BitstreamError(f"{name}: payload holds a {im.size[0]}x{im.size[1]} image, header says {width}x{height}")
            if getattr(im, "n_frames", 1) != 1:
                raise BitstreamError(f"{name}: payload holds {im.n_frames} pictures, expected 1")
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except BitstreamError:
        raise
    except (OSError, SyntaxError, ValueError, MemoryError, Image.DecompressionBombError) as e:
        raise BitstreamError(f"{name}: Pillow could not decode the {fmt} payload: {e}") from e


class JpegAnchor(ImageAnchor):
    """Baseline JPEG (libjpeg through Pillow).

    JPEG's own colour conversion is used (JFIF: BT.601 full range) since that is part of the format.

    Bytes counted: the anchor header (12 bytes: magic, version, codec id, H, W, payload length) plus
    the complete JFIF file Pillow writes (SOI, APP0, tables, scan, EOI). The JFIF segments are the
    format's interchange syntax that every JPEG decoder needs, so they are counted, not excluded.

    Args:
        quality: libjpeg quality 1..100 (larger = more bits).
        subsampling: chroma subsampling "420" (default), "422" or "444".
        optimize: compute optimal Huffman tables (fewer bytes at the same quality; default True).
    """

    name = "jpeg"
    codec_id = 1

    def __init__(self, quality: int = 75, subsampling: str = "420", optimize: bool = True):
        self.quality = check_int("quality", quality, 1, 100)
        self.subsampling = check_choice("subsampling", str(subsampling), tuple(_JPEG_SUBSAMPLING))
        self.optimize = bool(optimize)
        self.params = {"quality": self.quality, "subsampling": self.subsampling, "optimize": self.optimize}

    def _encode(self, rgb: np.ndarray) -> tuple[tuple, bytes]:
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(
            buf, format="JPEG", quality=self.quality, subsampling=_JPEG_SUBSAMPLING[self.subsampling],
            optimize=self.optimize,
        )  # fmt: skip
        return (), buf.getvalue()

    def _decode(self, payload: bytes, height: int, width: int, fields: tuple) -> np.ndarray:
        return _pillow_decode(payload, height, width, "JPEG", self.name)


class WebpAnchor(ImageAnchor):
    """WebP (libwebp through Pillow); lossy VP8 (always 4:2:0) by default, lossless VP8L on request.

    Bytes counted: the anchor header (12 bytes) plus the complete WebP file Pillow writes, including
    its 20-byte RIFF/chunk header (WebP defines no other interchange format, so it is counted).

    Args:
        quality: 0..100 (larger = more bits; for lossless, more compression effort).
        lossless: code losslessly (default False).
        method: libwebp effort 0 (fast) .. 6 (slowest, smallest); default 4 as in libwebp.
    """

    name = "webp"
    codec_id = 2

    def __init__(self, quality: int = 75, lossless: bool = False, method: int = 4):
        self.quality = check_int("quality", quality, 0, 100)
        self.lossless = bool(lossless)
        self.method = check_int("method", method, 0, 6)
        self.params = {"quality": self.quality, "lossless": self.lossless, "method": self.method}

    def _encode(self, rgb: np.ndarray) -> tuple[tuple, bytes]:
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(
            buf, format="WEBP", quality=self.quality, lossless=self.lossless, method=self.method, exif=b"", icc_profile=None
        )
        return (), buf.getvalue()

    def _decode(self, payload: bytes, height: int, width: int, fields: tuple) -> np.ndarray:
        return _pillow_decode(payload, height, width, "WEBP", self.name)
