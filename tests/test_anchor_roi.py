"""The ROI-aware HEVC anchor (hevc444_roi): x265's QP lowered inside object boxes through FFmpeg's
ROI side data, measured on a real KITTI frame with its label boxes and vcm's ROI metrics."""
from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vcm.anchors import HevcAnchor, HevcRoiAnchor
from vcm.anchors.base import COMMON_HEADER_BYTES
from vcm.anchors.hevc_roi import attach_rois, box_regions, qoffset_fraction, qp_range
from vcm.anchors.pyav_io import encode_picture
from vcm.data.kitti import ClassSpec, load_image, objects_to_target, parse_label_file
from vcm.errors import BitstreamError, ConfigError
from vcm.evaluation.pipeline import image_quality

QP = 32
ROI_TYPE = av.sidedata.sidedata.Type.REGIONS_OF_INTEREST


@pytest.fixture(scope="module")
def labelled(shared_data: Path) -> tuple[torch.Tensor, dict]:
    """kitti_tiny 000001 (uint8 [3,375,1242]) and its vcm target (Truck/Car/Cyclist boxes, 4 DontCare)."""
    root = shared_data / "kitti_tiny" / "training"
    image = load_image(root / "image_2" / "000001.png")
    objects = parse_label_file(root / "label_2" / "000001.txt")
    _, h, w = image.shape
    return image, objects_to_target(objects, ClassSpec(), h, w, image_id=1, name="000001")


@pytest.fixture(scope="module")
def coded(labelled):
    """Bytes and quality of the frame at QP 32 for a few (roi_qp_offset, bg_qp_offset) settings."""
    image, target = labelled
    out = {}
    for offsets in [(0, 0), (-10, 0), (0, 6)]:
        anchor = HevcRoiAnchor(qp=QP, roi_qp_offset=offsets[0], bg_qp_offset=offsets[1])
        data = anchor.encode(image, target["boxes"])
        decoded = torch.from_numpy(anchor.decode(data)).permute(2, 0, 1)
        out[offsets] = (data, image_quality(image, decoded, target))
    return out


def test_roi_offset_costs_bytes_and_lifts_roi_psnr_over_background(labelled, coded):
    _, target = labelled
    assert len(target["boxes"]) == 2  # the Car and the Cyclist are ROI (the Truck is no configured class)
    flat_data, flat = coded[(0, 0)]
    roi_data, roi = coded[(-10, 0)]
    assert flat_data != roi_data and len(roi_data) > len(flat_data)  # the ROI blocks are coded at QP 22
    assert len(roi_data) < 1.2 * len(flat_data)  # the boxes cover ~0.5 % of the frame
    assert roi["roi_psnr"] - flat["roi_psnr"] > 3.0  # measured 27.47 -> 32.24 dB
    assert abs(roi["bg_psnr"] - flat["bg_psnr"]) < 0.2  # the background keeps its QP
    assert (roi["roi_psnr"] - roi["bg_psnr"]) - (flat["roi_psnr"] - flat["bg_psnr"]) > 3.0


def test_bg_offset_makes_the_background_cheaper_not_the_roi(coded):
    flat_data, flat = coded[(0, 0)]
    bg_data, bg = coded[(0, 6)]
    assert len(bg_data) < 0.7 * len(flat_data)
    assert flat["bg_psnr"] - bg["bg_psnr"] > 1.5
    assert (bg["roi_psnr"] - bg["bg_psnr"]) > (flat["roi_psnr"] - flat["bg_psnr"])


def test_no_boxes_is_the_zero_offset_stream_and_close_to_plain_hevc444(labelled, coded):
    """Exact: no boxes, an empty [0,4] box array and boxes at offset 0 give the same bytes. Not exact
    against hevc444 (constant QP, no AQ): x265 ignores the ROI there, and with AQ on each quantisation
    group may code a QP delta, which costs bits and moves the RD decisions (see vcm.anchors.hevc_roi)."""
    image, target = labelled
    anchor = HevcRoiAnchor(qp=QP, roi_qp_offset=-10)
    no_boxes = anchor.encode(image)
    assert no_boxes == anchor.encode(image, np.zeros((0, 4), np.float32)) == anchor.encode(image, torch.zeros(0, 4))
    assert no_boxes == coded[(0, 0)][0]
    plain = HevcAnchor(qp=QP, chroma="444")
    plain_data = plain.encode(image)
    decoded = torch.from_numpy(plain.decode(plain_data)).permute(2, 0, 1)
    plain_q = image_quality(image, decoded, target)
    assert abs(len(no_boxes) - len(plain_data)) < 0.02 * len(plain_data)
    assert abs(coded[(0, 0)][1]["psnr"] - plain_q["psnr"]) < 0.1


def test_round_trip_header_and_plain_hevc_payload(labelled):
    image, target = labelled
    anchor = HevcRoiAnchor(qp=37, roi_qp_offset=-6)
    data = anchor.encode(image.permute(1, 2, 0).numpy(), target["boxes"].numpy())
    assert data[:4] == b"VA\x01\x06"  # magic, header version, codec id 6
    assert anchor.header_bytes() == COMMON_HEADER_BYTES + 7 == HevcAnchor.header_bytes()
    assert data[anchor.header_bytes():].startswith(b"\x00\x00\x00\x01")  # Annex-B, counted in full
    decoded = anchor.decode(data)
    assert decoded.shape == (375, 1242, 3) and decoded.dtype == np.uint8
    # the decoder needs no boxes: a fresh anchor with other offsets decodes the same picture
    assert np.array_equal(HevcRoiAnchor(qp=22, roi_qp_offset=0).decode(data), decoded)
    with pytest.raises(BitstreamError, match="codec id 6"):
        HevcAnchor(chroma="444").decode(data)
    with pytest.raises(BitstreamError, match="truncated"):
        anchor.decode(data[:-10])


def test_side_data_holds_the_box_pixels_and_exact_offsets():
    frame = av.VideoFrame(64, 48, "yuv444p10le")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 1)
    rects = box_regions([[3.2, 5.0, 12.5, 25.0], [40.0, 40.0, 90.0, 90.0], [70, 1, 80, 2], [5, 5, 5, 9]], 48, 64)
    assert rects == [(3, 5, 10, 20), (40, 40, 24, 8)]  # vcm.data.masks' pixel rule, clipped, empty dropped
    regions = [(*r, qoffset_fraction(-10, 10)) for r in rects] + [(0, 0, 64, 48, qoffset_fraction(6, 10))]
    out = attach_rois(frame, regions)
    roi = np.frombuffer(bytes(out.side_data[ROI_TYPE]), dtype="<i4").reshape(-1, 7)
    # AVRegionOfInterest: self_size, top, bottom, left, right, qoffset num / den
    assert roi.tolist() == [[28, 5, 25, 3, 13, -10, 63], [28, 40, 48, 40, 64, -10, 63], [28, 0, 48, 0, 64, 6, 63]]
    assert qp_range(10) == 63 and qp_range(8) == 51 and qoffset_fraction(-12, 8) == "-12/51"


def test_x265_honours_roi_only_with_crf_and_aq_strength_above_zero(labelled):
    """Why the anchor uses CRF (= qp, qcomp=1) and sends aq_strength 0 as 1e-4: under ``qp=`` or at
    aq-strength 0 x265 switches AQ off and the same ROI side data changes nothing."""
    from vcm.anchors import color

    image, _ = labelled
    crop = image[:, 128:256, 384:640].permute(1, 2, 0).numpy()
    planes = list(color.rgb_to_ycbcr(crop, 10, "444", color.BT709_LIMITED))
    base = "keyint=1:min-keyint=1:ipratio=1:info=0:log-level=error"
    roi = [(0, 32, 128, 64, qoffset_fraction(-10, 10))]

    def sizes(params: str) -> tuple[int, int]:
        opts = {"preset": "medium", "tune": "psnr", "x265-params": f"{params}:{base}"}
        plain = encode_picture("libx265", "yuv444p10le", planes, 10, opts)
        with_roi = encode_picture("libx265", "yuv444p10le", planes, 10, opts, prepare=lambda f: attach_rois(f, roi))
        return len(plain), len(with_roi)

    a, b = sizes("qp=32:aq-mode=1:aq-strength=1")
    assert a == b
    a, b = sizes("crf=32:qcomp=1:aq-mode=1:aq-strength=0")
    assert a == b
    a, b = sizes("crf=32:qcomp=1:aq-mode=1:aq-strength=0.0001:qg-size=16")
    assert b > 1.1 * a


@pytest.mark.parametrize(
    "boxes, match",
    [
        ([1.0, 2.0, 3.0, 4.0], r"\[N, 4\]"),
        (np.zeros((2, 5)), r"\[N, 4\]"),
        ([[0, 0, float("nan"), 10]], "NaN or infinite"),
        ([[0, 0, 10, float("inf")]], "NaN or infinite"),
        ([[100, 50, 40, 80]], "x2 >= x1"),
        ([["a", 0, 1, 1]], "xyxy pixel"),
    ],
)
def test_bad_boxes_are_refused_before_coding(boxes, match):
    image = np.zeros((32, 48, 3), np.uint8)
    with pytest.raises(ValueError, match=match):
        HevcRoiAnchor().encode(image, boxes)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="aq_mode=0 is not supported; valid values: 1, 2, 3, 4"):
        HevcRoiAnchor(aq_mode=0)
    with pytest.raises(ConfigError, match="roi_qp_offset must be in -51..51"):
        HevcRoiAnchor(roi_qp_offset=-60)
    with pytest.raises(ConfigError, match="aq_strength"):
        HevcRoiAnchor(aq_strength=-1.0)
    with pytest.raises(ConfigError, match="qg_size"):
        HevcRoiAnchor(qg_size=12)


def test_config_builds_the_anchor_with_its_own_curve_name():
    import hydra
    from omegaconf import OmegaConf

    from vcm.utils.config import CONF_DIR

    anchor = hydra.utils.instantiate(OmegaConf.load(CONF_DIR / "codec" / "hevc444_roi.yaml"))
    assert isinstance(anchor, HevcRoiAnchor)
    assert anchor.name == "hevc444_roi" and anchor.params["roi_qp_offset"] == -10 and anchor.params["chroma"] == "444"
    assert HevcRoiAnchor(chroma="420").name == "hevc_roi"
