"""Classical anchor codecs (JPEG, WebP, HEVC, HEVC with ROI QP offsets, AV1, VVC/VTM) and the MPEG-style feature anchors.

Every image anchor has ``encode(image) -> bytes`` and ``decode(bytes) -> uint8 [H,W,3]``; every feature
anchor has ``encode(levels) -> bytes`` and ``decode(bytes) -> levels``. The bytes are the whole bitstream
(a small header included), so rate = 8 * len(bytes) / (H * W) for every codec.
"""
from vcm.anchors.av1 import Av1Anchor
from vcm.anchors.base import FeatureAnchor, ImageAnchor
from vcm.anchors.feature import FeatureHevcAnchor, FeatureVtmAnchor
from vcm.anchors.hevc import HevcAnchor
from vcm.anchors.hevc_roi import HevcRoiAnchor
from vcm.anchors.pillow import JpegAnchor, WebpAnchor
from vcm.anchors.vtm import VtmAnchor

__all__ = [
    "Av1Anchor",
    "FeatureAnchor",
    "FeatureHevcAnchor",
    "FeatureVtmAnchor",
    "HevcAnchor",
    "HevcRoiAnchor",
    "ImageAnchor",
    "JpegAnchor",
    "VtmAnchor",
    "WebpAnchor",
]
