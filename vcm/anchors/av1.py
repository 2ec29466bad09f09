"""AV1 intra anchor: SVT-AV1 (``libsvtav1``) at a fixed QP through PyAV, decoded with ``libdav1d``."""
from __future__ import annotations

import os

import numpy as np

from vcm.anchors.base import check_choice, check_int
from vcm.anchors.pyav_io import PIX_FMTS, decode_picture, encode_picture
from vcm.anchors.yuv import YuvImageAnchor


class Av1Anchor(YuvImageAnchor):
    """Intra AV1 with SVT-AV1 at a fixed QP.

    Rate control is constant QP: ``rc=0`` with ``aq-mode=0`` (SVT-AV1's CQP mode; with adaptive
    quantisation on, ``qp`` would act as a CRF and vary per block). ``qp`` is SVT-AV1's 1..63 scale
    (mapped by the encoder to the 0..255 AV1 ``base_q_idx``). One picture is coded, so it is a key frame.

    Colour conversion and padding are vcm's (BT.709 limited range, multiple of 8, cropped after
    decoding). SVT-AV1 only codes 4:2:0 (AV1 Main profile), so ``chroma`` is "420".

    Bytes counted: the anchor header (15 bytes) plus the AV1 low-overhead OBU stream exactly as
    SVT-AV1 emits it (temporal delimiter, sequence header, frame OBUs). No IVF/MP4 container is used,
    so nothing is excluded.

    Args:
        qp: quantiser, 1..63 (larger = fewer bits).
        preset: SVT-AV1 preset, 0 (slowest, best) .. 13 (fastest).
        bit_depth: 10 (default) or 8.
        chroma: "420" only.
    """

    name = "av1"
    codec_id = 4
    min_side = 16

    def __init__(self, qp: int = 32, preset: int = 6, bit_depth: int = 10, chroma: str = "420"):
        self.qp = check_int("qp", qp, 1, 63)
        self.preset = check_int("preset", preset, 0, 13)
        self.bit_depth = check_choice("bit_depth", bit_depth, (8, 10))
        if str(chroma) != "420":
            raise ValueError(f"chroma={chroma!r} is not supported by SVT-AV1 (Main profile); valid values: '420'")
        self.chroma = "420"
        self.params = {"qp": self.qp, "preset": self.preset, "bit_depth": self.bit_depth, "chroma": self.chroma}

    def _code_planes(self, planes: list[np.ndarray], chroma: str, bit_depth: int) -> bytes:
        # SVT-AV1 prints its banner and warnings to stderr unless told otherwise (1 = errors only).
        os.environ.setdefault("SVT_LOG", "1")
        opts = {"preset": str(self.preset), "svtav1-params": f"rc=0:qp={self.qp}:aq-mode=0"}
        return encode_picture("libsvtav1", PIX_FMTS[(chroma, bit_depth)], planes, bit_depth, opts)

    def _decode_planes(self, payload: bytes, chroma: str, bit_depth: int, height: int, width: int) -> list[np.ndarray]:
        return decode_picture("libdav1d", payload, PIX_FMTS[(chroma, bit_depth)], bit_depth, self.name, (height, width))
