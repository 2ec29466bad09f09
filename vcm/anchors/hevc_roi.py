"""ROI-aware intra HEVC anchor: libx265 with per-block QP offsets from object boxes.

The boxes reach x265 the way FFmpeg carries regions of interest: an ``addroi`` filter per box (PyAV's
:class:`av.filter.Graph`) attaches ``AVRegionOfInterest`` side data to the frame, and FFmpeg's libx265
wrapper turns it into x265's per-block ``quantOffsets``. The decoder needs nothing besides the HEVC
stream: each quantisation group's QP is coded in it (``cu_qp_delta``).

Data flow of one picture::

    RGB --pad, BT.709--> Y'CbCr planes --> AVFrame --addroi x N (boxes), addroi (whole frame: background)-->
        AVFrame + REGIONS_OF_INTEREST --libx265 (CRF = qp, AQ on)--> Annex-B --FFmpeg hevc--> planes --> RGB

Three conditions, each checked here with FFmpeg 8 (PyAV 18.1) and x265 4.2, make the offsets count:

1. x265's adaptive quantisation must be on: FFmpeg drops the ROI side data when ``aq-mode`` is 0
   ("Adaptive quantization must be enabled to use ROI encoding, skipping ROI").
2. No constant-QP rate control: ``qp=`` (what :class:`~vcm.anchors.hevc.HevcAnchor` uses) makes x265
   turn AQ off, and with it the offsets (the bytes stay the same with and without ROI). This anchor
   uses CRF with ``qcomp=1``, under which x265's frame QP is exactly ``crf`` whatever the picture's
   complexity (rate factor ``1 / qscale(crf)``), and ``ipratio=1`` so the I picture gets no offset.
3. ``aq-strength`` must be above 0: at 0 (what ``tune=psnr`` sets) x265 switches AQ off as well. An
   ``aq_strength`` of 0 here is therefore sent as 1e-4, at which x265's own variance offsets are below
   0.005 QP (``strength * (log2(energy) - const)``, energy < 2^40) and round away: the QPs are ``qp``
   plus the ROI / background offsets alone.

Offsets: FFmpeg's ``qoffset`` is a fraction in [-1, 1] of the QP range that libx265 multiplies by
``51 + 6 * (bit_depth - 8)`` (63 for 10 bit, 51 for 8 bit); an integer offset ``d`` is sent exactly as
the rational ``d / range``. Each 16x16 block (8x8 with ``qg_size=8``) that a box's pixels touch gets
``qp + roi_qp_offset``; every other block gets ``qp + bg_qp_offset`` (the first region of the list
wins where regions overlap, so the boxes come first and a whole-frame region last). x265 clips the
resulting QPs to its range. Box pixels follow :mod:`vcm.data.masks` (columns ``floor(x1)..ceil(x2)-1``),
the rule of the ROI metrics and of the learned ROI codec.

Not identical to ``hevc444`` without boxes: with AQ on, every quantisation group may signal a QP
delta, which costs bits and changes x265's RD decisions, so the stream differs from the constant-QP
one (measured on kitti_mini frames: within ~1 % of the bytes at the same QP). What is exact: no boxes
and ``bg_qp_offset=0`` attach no side data, and offsets of 0 give the same bytes as no boxes.
"""
from __future__ import annotations

import fractions
import math
from collections.abc import Sequence

import av
import numpy as np
import torch

from vcm.anchors import color
from vcm.anchors.base import _SIZE, as_rgb_uint8, check_choice, check_int, pack_stream
from vcm.anchors.hevc import HevcAnchor
from vcm.anchors.pyav_io import CHROMA_IDC, PIX_FMTS, encode_picture
from vcm.anchors.yuv import PAD_MULTIPLE
from vcm.errors import ConfigError

#: x265 quantisation-group sizes; FFmpeg maps ROI to 8x8 blocks for 8, to 16x16 blocks otherwise.
QG_SIZES = (8, 16, 32, 64)
#: x265's adaptive-quantisation modes that keep AQ on (0 = off would drop the ROI offsets).
AQ_MODES = (1, 2, 3, 4)
#: what ``aq_strength=0`` is sent as: the smallest strength that keeps x265's AQ (and the offsets) on.
MIN_AQ_STRENGTH = 1e-4


def qp_range(bit_depth: int) -> int:
    """The QP span libx265 multiplies FFmpeg's ``qoffset`` fraction by (51 at 8 bit, 63 at 10 bit)."""
    return 51 + 6 * (bit_depth - 8)


def qoffset_fraction(qp_offset: int, bit_depth: int) -> str:
    """FFmpeg ``addroi`` qoffset (a rational in [-1, 1]) that libx265 turns into ``qp_offset`` QPs."""
    return f"{int(qp_offset)}/{qp_range(bit_depth)}"


def box_regions(boxes, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Pixel rectangles ``(x, y, w, h)`` of the boxes, by the pixel rule of :mod:`vcm.data.masks`.

    Args:
        boxes: ``[N, 4]`` xyxy pixel boxes (tensor, array or nested sequence; N may be 0) of the
            original ``height x width`` image; parts outside the image are clipped, boxes that cover
            no pixel (zero area, or wholly outside) are dropped.
        height, width: the original image size.

    Returns:
        One rectangle per box that covers pixels, in the boxes' order.

    Raises:
        ValueError: not an ``[N, 4]`` array of finite numbers, or a box with ``x2 < x1`` or ``y2 < y1``.
    """
    try:
        b = torch.as_tensor(np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes,
                                       dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ValueError(f"boxes must be an [N, 4] array of xyxy pixel coordinates: {e}") from None
    if b.numel() == 0:
        return []
    if b.dim() != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] xyxy pixel coordinates, got shape {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError("boxes hold NaN or infinite coordinates")
    bad = ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"boxes must be xyxy with x2 >= x1 and y2 >= y1; box {bad[0]} is {b[bad[0]].tolist()} "
                         "(xywh boxes must be converted first)")
    regions = []
    for x1, y1, x2, y2 in b.tolist():
        c0, c1 = max(math.floor(x1), 0), min(math.ceil(x2), int(width))
        r0, r1 = max(math.floor(y1), 0), min(math.ceil(y2), int(height))
        if c1 > c0 and r1 > r0 and x2 > x1 and y2 > y1:
            regions.append((c0, r0, c1 - c0, r1 - r0))
    return regions


def attach_rois(frame: av.VideoFrame, regions: Sequence[tuple[int, int, int, int, str]]) -> av.VideoFrame:
    """The same picture with FFmpeg ROI side data: one ``addroi`` filter per region, in order.

    Args:
        frame: the picture to code (pts and time base set).
        regions: ``(x, y, w, h, qoffset)`` per region, pixels and an FFmpeg rational string; where
            regions overlap, the first one applies (libx265's rule).

    Returns:
        The filtered frame (pixels unchanged) carrying ``REGIONS_OF_INTEREST`` side data.
    """
    graph = av.filter.Graph()
    last = src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                  time_base=frame.time_base or fractions.Fraction(1, 1))
    for x, y, w, h, q in regions:
        node = graph.add("addroi", x=str(x), y=str(y), w=str(w), h=str(h), qoffset=q)
        last.link_to(node)
        last = node
    sink = graph.add("buffersink")
    last.link_to(sink)
    graph.configure()
    src.push(frame)
    out = sink.pull()
    if av.sidedata.sidedata.Type.REGIONS_OF_INTEREST not in out.side_data:
        raise RuntimeError("FFmpeg's addroi filter attached no REGIONS_OF_INTEREST side data")
    return out


class HevcRoiAnchor(HevcAnchor):
    """Intra HEVC (libx265) whose QP is lowered inside object boxes (raised outside if asked).

    ``encode(image, boxes)`` takes the ROI boxes; ``decode(data)`` is the plain HEVC decode (the QPs
    are in the stream). Bytes counted as for :class:`~vcm.anchors.hevc.HevcAnchor`: the 15-byte
    anchor header plus the Annex-B stream. The mechanism and its conditions: see the module docstring.

    Args:
        qp: base QP, 0..51 (the frame QP; background blocks get ``qp + bg_qp_offset``).
        roi_qp_offset: QP offset of the blocks that boxes touch, relative to ``qp`` (negative = better
            ROI), -51..51; sent to FFmpeg as ``qoffset = roi_qp_offset / (51 + 6 * (bit_depth - 8))``.
        bg_qp_offset: QP offset of every other block, relative to ``qp`` (positive = cheaper
            background), -51..51.
        chroma: "444" (default) or "420".
        bit_depth: 10 (default) or 8.
        preset: x265 speed preset.
        tune: x265 tuning ("psnr" by default, as for ``hevc``).
        aq_mode: x265 ``aq-mode`` 1..4 (0 would make FFmpeg drop the ROI); which variance formula x265
            adds to the offsets, so it matters only with ``aq_strength`` > 0.
        aq_strength: x265's own variance-based AQ on top of the offsets; 0 (default) = offsets only
            (sent as 1e-4, see the module docstring).
        qg_size: x265 quantisation-group size (8, 16, 32, 64): the granularity of the QP map. 16
            (default) matches FFmpeg's 16x16 ROI blocks; 32 or 64 average the blocks' offsets per group.
    """

    codec_id = 6
    name = "hevc444_roi"

    def __init__(self, qp: int = 32, roi_qp_offset: int = -10, bg_qp_offset: int = 0, chroma: str = "444",
                 bit_depth: int = 10, preset: str = "medium", tune: str | None = "psnr", aq_mode: int = 1,
                 aq_strength: float = 0.0, qg_size: int = 16, roi: str = "labels", score_threshold: float = 0.5):
        super().__init__(qp=qp, chroma=chroma, bit_depth=bit_depth, preset=preset, tune=tune)
        # where an evaluation takes the boxes from (the encoder's input; the stream carries the QPs)
        self.roi_source = check_choice("roi", roi, ("labels", "detector", "none"))
        self.score_threshold = float(score_threshold)
        self.name = f"hevc{self.chroma}_roi" if self.chroma != "420" else "hevc_roi"
        self.roi_qp_offset = check_int("roi_qp_offset", roi_qp_offset, -51, 51)
        self.bg_qp_offset = check_int("bg_qp_offset", bg_qp_offset, -51, 51)
        self.aq_mode = check_choice("aq_mode", aq_mode, AQ_MODES)
        if isinstance(aq_strength, bool) or not isinstance(aq_strength, (int, float)) or not 0 <= aq_strength <= 3:
            raise ConfigError(f"aq_strength must be a number in 0..3 (x265's range), got {aq_strength!r}")
        self.aq_strength = float(aq_strength)
        self.qg_size = check_choice("qg_size", qg_size, QG_SIZES)
        self.params = {"qp": self.qp, "roi_qp_offset": self.roi_qp_offset, "bg_qp_offset": self.bg_qp_offset,
                       "chroma": self.chroma, "bit_depth": self.bit_depth, "preset": preset, "tune": tune,
                       "aq_mode": self.aq_mode, "aq_strength": self.aq_strength, "qg_size": self.qg_size,
                       "variant": f"roi-{self.roi_source}"}

    def x265_options(self) -> dict[str, str]:
        """Encoder options: CRF = qp with qcomp=1 (frame QP exactly ``qp``), AQ on, one IDR picture."""
        strength = max(self.aq_strength, MIN_AQ_STRENGTH)
        params = (f"crf={self.qp}:qcomp=1:ipratio=1:aq-mode={self.aq_mode}:aq-strength={strength:g}:"
                  f"qg-size={self.qg_size}:no-cutree=1:keyint=1:min-keyint=1:info=0:log-level=error")
        opts = {"preset": self.preset, "x265-params": params}
        if self.tune is not None:
            opts["tune"] = self.tune
        return opts

    def encode(self, image: np.ndarray | torch.Tensor, boxes=None) -> bytes:
        """Code one image with the QP lowered by ``roi_qp_offset`` where ``boxes`` are.

        Args:
            image: uint8 RGB [H,W,3] numpy array or [3,H,W] tensor (uint8, or float in [0,1]).
            boxes: ``[N, 4]`` xyxy pixel boxes of ``image`` (N may be 0); None = no ROI.

        Returns:
            The complete bitstream: header + HEVC Annex-B stream.

        Raises:
            ValueError: malformed boxes (see :func:`box_regions`).
        """
        rgb = as_rgb_uint8(image)
        h, w = rgb.shape[:2]
        rects = box_regions([] if boxes is None else boxes, h, w)
        padded = color.pad_to_multiple(rgb, PAD_MULTIPLE, self.min_side)
        regions = [(*r, qoffset_fraction(self.roi_qp_offset, self.bit_depth)) for r in rects]
        if self.bg_qp_offset:
            ph, pw = padded.shape[:2]
            regions.append((0, 0, pw, ph, qoffset_fraction(self.bg_qp_offset, self.bit_depth)))
        code = color.BT709_LIMITED
        planes = list(color.rgb_to_ycbcr(padded, self.bit_depth, self.chroma, code))
        payload = encode_picture("libx265", PIX_FMTS[(self.chroma, self.bit_depth)], planes, self.bit_depth,
                                 self.x265_options(), prepare=(lambda f: attach_rois(f, regions)) if regions else None)
        fields = (CHROMA_IDC[self.chroma], self.bit_depth, code)
        return pack_stream(self.codec_id, _SIZE.pack(h, w) + self.fields_struct.pack(*fields), payload)

    def _code_planes(self, planes: list[np.ndarray], chroma: str, bit_depth: int) -> bytes:
        # the path of ImageAnchor.encode, which has no boxes: the same options, no ROI side data
        return encode_picture("libx265", PIX_FMTS[(chroma, bit_depth)], planes, bit_depth, self.x265_options())
