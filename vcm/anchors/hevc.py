"""HEVC intra anchor: libx265 at a fixed QP through PyAV, decoded with FFmpeg's ``hevc`` decoder."""
from __future__ import annotations

import numpy as np

from vcm.anchors.base import check_choice, check_int
from vcm.anchors.pyav_io import PIX_FMTS, decode_picture, encode_picture
from vcm.anchors.yuv import YuvImageAnchor

X265_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip
X265_TUNES = (None, "psnr", "ssim", "grain", "fastdecode", "zerolatency", "animation")


def x265_options(qp: int, preset: str, tune: str | None) -> dict[str, str]:
    """Encoder options for one intra picture at a constant QP.

    ``qp=`` selects constant-QP rate control (x265 then also turns adaptive quantisation and cu-tree
    off); ``ipratio=1`` keeps x265 from lowering the QP of I pictures by 6*log2(1.4) ~ 3, so the
    slice QP is exactly ``qp``; ``info=0`` drops the SEI with the encoder's version and settings
    (about 2 kB of text that would otherwise be counted in the rate).
    """
    params = f"qp={qp}:keyint=1:min-keyint=1:ipratio=1:info=0:log-level=error"
    opts = {"preset": preset, "x265-params": params}
    if tune is not None:
        opts["tune"] = tune
    return opts


class HevcAnchor(YuvImageAnchor):
    """Intra HEVC (H.265) with libx265 at a fixed QP.

    The picture is padded to a multiple of 8 (x265's smallest CU; 4:2:0 also needs even sizes, and
    x265 refuses pictures smaller than 16x16), converted to Y'CbCr by vcm (BT.709, limited range,
    see :mod:`vcm.anchors.color`) and coded as one IDR picture with no rate control.

    Bytes counted: the anchor header (15 bytes: magic, version, codec id, H, W, chroma_format_idc,
    bit depth, colour code, payload length) plus the HEVC Annex-B elementary stream exactly as x265
    writes it (VPS, SPS, PPS, slice, with start codes). No container is used, so nothing is excluded.

    Args:
        qp: quantisation parameter, 0..51 (larger = fewer bits).
        chroma: "420" (default) or "444".
        bit_depth: 10 (default, Main 10 / Main 4:4:4 10) or 8.
        preset: x265 speed preset.
        tune: x265 tuning; "psnr" (default) turns psycho-visual optimisations off, as fits an
            anchor measured by PSNR and task accuracy; None keeps x265's defaults.
    """

    name = "hevc"
    codec_id = 3
    min_side = 16

    def __init__(
        self, qp: int = 32, chroma: str = "420", bit_depth: int = 10, preset: str = "medium", tune: str | None = "psnr"
    ):
        self.qp = check_int("qp", qp, 0, 51)
        self.chroma = check_choice("chroma", str(chroma), ("420", "444"))
        # its own RD curve: 4:4:4 is another codec than the 4:2:0 anchor (vcm/conf/codec/hevc444.yaml)
        self.name = "hevc" if self.chroma == "420" else f"hevc{self.chroma}"
        self.bit_depth = check_choice("bit_depth", bit_depth, (8, 10))
        self.preset = check_choice("preset", preset, X265_PRESETS)
        self.tune = check_choice("tune", tune, X265_TUNES)
        self.params = {"qp": self.qp, "chroma": self.chroma, "bit_depth": self.bit_depth, "preset": preset, "tune": tune}

    def _code_planes(self, planes: list[np.ndarray], chroma: str, bit_depth: int) -> bytes:
        opts = x265_options(self.qp, self.preset, self.tune)
        return encode_picture("libx265", PIX_FMTS[(chroma, bit_depth)], planes, bit_depth, opts)

    def _decode_planes(self, payload: bytes, chroma: str, bit_depth: int, height: int, width: int) -> list[np.ndarray]:
        return decode_picture("hevc", payload, PIX_FMTS[(chroma, bit_depth)], bit_depth, self.name, (height, width))
