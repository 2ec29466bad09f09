"""MPEG-style feature anchor: tiling, 10-bit normalisation, header, HEVC 4:0:0 coding, VTM plumbing."""
from __future__ import annotations

import stat
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fpn_levels, fpn_sizes
from PIL import Image

from vcm.anchors import FeatureHevcAnchor, FeatureVtmAnchor, HevcAnchor
from vcm.anchors.feature import (
    FeatureHeader,
    dequantize,
    frame_layout,
    quantize,
    tile_levels,
    untile_levels,
)
from vcm.errors import BitstreamError, CodecUnavailableError

HEADER_BYTES = 67  # 4 prefix + 3 fields + 4 levels x 14 + 4 payload length


def half_step(x: torch.Tensor, bit_depth: int = 10) -> float:
    return float(x.max() - x.min()) / (2**bit_depth - 1) / 2


@pytest.fixture(scope="module")
def levels() -> OrderedDict[str, torch.Tensor]:
    return fpn_levels(fpn_sizes(4 * 24, 4 * 40), smooth=True)


# --------------------------------------------------------------------------------------------- tiling


def test_layout_for_fpn_levels():
    layout = frame_layout([(256, 24, 40), (256, 12, 20), (256, 6, 10), (256, 3, 5)], ["p2", "p3", "p4", "p5"])
    assert layout.grids == ((16, 16),) * 4
    # p2's mosaic on top, p3..p5 side by side below it.
    assert layout.offsets == ((0, 0), (384, 0), (384, 320), (384, 480))
    assert (layout.height, layout.width) == (384 + 192, 640)
    assert frame_layout([(3, 2, 2)]).grids == ((2, 2),)
    assert frame_layout([(5, 2, 2)]).grids == ((2, 3),)
    assert frame_layout([(1, 7, 9)]).grids == ((1, 1),)
    with pytest.raises(ValueError):
        frame_layout([(0, 2, 2)])


@pytest.mark.parametrize("c,h,w", [(256, 24, 40), (10, 7, 5), (3, 1, 1)])
def test_tile_untile_exact(c: int, h: int, w: int):
    lv = fpn_levels(fpn_sizes(4 * h, 4 * w), channels=c, seed=1, smooth=True)
    lv.pop("p6")
    frame, layout = tile_levels(lv)
    assert frame.dtype == np.float32 and frame.shape == (layout.height, layout.width)
    back = untile_levels(frame, layout)
    assert list(back) == ["p2", "p3", "p4", "p5"]
    for k in lv:
        assert torch.equal(back[k], lv[k])
    # Padded frames (as a codec returns them) untile the same.
    padded = np.pad(frame, ((0, 5), (0, 3)), constant_values=99)
    assert all(torch.equal(untile_levels(padded, layout)[k], lv[k]) for k in lv)


def test_tile_places_channels_and_fill():
    x = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(1, 5, 2, 3)
    frame, layout = tile_levels(OrderedDict(a=x), fill=-1)
    assert layout.grids == ((2, 3),)
    np.testing.assert_array_equal(frame[0:2, 3:6], x[0, 1].numpy())  # channel 1: tile (0, 1)
    np.testing.assert_array_equal(frame[2:4, 3:6], x[0, 4].numpy())  # channel 4: tile (1, 1)
    assert (frame[2:4, 6:9] == -1).all()  # the sixth tile is unused
    codes = OrderedDict(a=np.arange(24, dtype=np.uint16).reshape(1, 6, 2, 2))
    f16, lay16 = tile_levels(codes)
    assert f16.dtype == np.uint16
    np.testing.assert_array_equal(untile_levels(f16, lay16)["a"].numpy(), codes["a"])


# --------------------------------------------------------------------------------------- quantisation


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (1e-3, 5.0), (300.0, -20.0)])
@pytest.mark.parametrize("bit_depth", [8, 10])
def test_quantize_error_within_half_step(scale: float, offset: float, bit_depth: int):
    x = torch.randn(256, 13, 17, generator=torch.Generator().manual_seed(2)) * scale + offset
    codes, lo, hi = quantize(x, bit_depth)
    assert codes.dtype == np.uint16 and codes.min() == 0 and codes.max() == 2**bit_depth - 1
    assert (lo, hi) == (float(x.min()), float(x.max()))
    rec = dequantize(codes, lo, hi, bit_depth)
    assert rec.dtype == np.float32
    err = np.abs(rec - x.numpy()).max()
    # Half a step, plus float32 rounding of the reconstruction.
    assert err <= half_step(x, bit_depth) + 4 * np.finfo(np.float32).eps * (abs(offset) + 4 * scale)


def test_quantize_constant_and_bad_input():
    codes, lo, hi = quantize(torch.full((2, 3), 1.5))
    assert (codes == 0).all() and lo == hi == 1.5
    assert (dequantize(codes, lo, hi) == 1.5).all()
    with pytest.raises(ValueError, match="non-finite"):
        quantize(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError):
        quantize(torch.zeros(0))


# ----------------------------------------------------------------------------------------------- header


def test_header_round_trip():
    h = FeatureHeader(10, 2, ((256, 24, 40), (256, 12, 20), (256, 6, 10), (256, 3, 5)),
                      ((-1.25, 3.5), (0.0, 0.0), (-7.0, 2.0**-10), (2.0, 2.5)))  # fmt: skip
    data = h.pack(FeatureHevcAnchor.codec_id, b"payload")
    assert len(data) == HEADER_BYTES + len(b"payload")
    back, payload = FeatureHeader.unpack(data, FeatureHevcAnchor.codec_id, "feature_hevc")
    assert back == h and payload == b"payload"
    assert back.names == ("p2", "p3", "p4", "p5")
    for bad in (data[:-1], data[:20], data + b"x", data[:3]):
        with pytest.raises(BitstreamError):
            FeatureHeader.unpack(bad, FeatureHevcAnchor.codec_id, "feature_hevc")
    with pytest.raises(BitstreamError, match="codec id"):
        FeatureHeader.unpack(data, FeatureVtmAnchor.codec_id, "feature_vtm")
    # Bounds travel as float32: a value that is not one comes back rounded to float32.
    h32 = FeatureHeader(10, 2, ((4, 2, 2),), ((-0.1, 0.3),))
    back32, _ = FeatureHeader.unpack(h32.pack(FeatureHevcAnchor.codec_id, b"x"), FeatureHevcAnchor.codec_id, "f")
    assert back32.bounds == ((float(np.float32(-0.1)), float(np.float32(0.3))),)


# ----------------------------------------------------------------------------------- HEVC feature anchor


def test_feature_hevc_round_trip_and_rate(levels):
    a = FeatureHevcAnchor(qp=32, preset="veryfast")
    assert (a.name, a.kind) == ("feature_hevc", "feature")
    data = a.encode(levels)
    assert int.from_bytes(data[HEADER_BYTES - 4 : HEADER_BYTES], "big") == len(data) - HEADER_BYTES
    out = a.decode(data)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for k in ["p2", "p3", "p4", "p5", "p6"]:
        assert out[k].shape == levels[k].shape and out[k].dtype == torch.float32
    assert torch.equal(out["p6"], F.max_pool2d(out["p5"], kernel_size=1, stride=2))
    # p6 is not transmitted: the same bytes with or without it.
    without_p6 = OrderedDict((k, v) for k, v in levels.items() if k != "p6")
    assert a.encode(without_p6) == data


def test_feature_hevc_frame_is_monochrome_10bit(levels):
    data = FeatureHevcAnchor(qp=37, preset="ultrafast").encode(levels)
    frame = av.CodecContext.create("hevc", "r").decode(av.Packet(data[HEADER_BYTES:]))[0]
    layout = frame_layout([tuple(levels[k].shape[1:]) for k in ["p2", "p3", "p4", "p5"]])
    assert frame.format.name == "gray10le"  # 4:0:0: no chroma planes are coded
    assert (frame.height, frame.width) == (layout.height, layout.width)  # 576 x 640, already multiples of 8


def test_feature_hevc_low_qp_error_bound(levels):
    # At QP 0 (preset medium) the coding error of the 10-bit codes is a few code values. Stated bound, per
    # level, in quantisation steps (hi - lo) / 1023: at most 8 at the worst sample and 1.5 RMS
    # (measured on these levels: at most 4.4 and 0.84; normalisation alone contributes <= 0.5).
    a = FeatureHevcAnchor(qp=0, preset="medium")
    out = a.decode(a.encode(levels))
    for k in ["p2", "p3", "p4", "p5"]:
        step = 2 * half_step(levels[k])
        err = (out[k] - levels[k]).abs()
        assert err.max() <= 8 * step, k
        assert err.pow(2).mean().sqrt() <= 1.5 * step, k


def test_feature_hevc_qp_orders_rate_and_error(levels):
    sizes, mses = [], []
    for qp in (12, 27, 42):
        a = FeatureHevcAnchor(qp=qp, preset="ultrafast")
        data = a.encode(levels)
        out = a.decode(data)
        sizes.append(len(data))
        mses.append(sum(float(F.mse_loss(out[k], levels[k])) for k in ["p2", "p3", "p4", "p5"]))
    assert sizes[0] > sizes[1] > sizes[2]
    assert mses[0] < mses[1] < mses[2]


def test_feature_hevc_on_real_image_derived_levels(shared_data: Path):
    # Real image statistics: four "levels" from a KITTI frame at strides 4..32, 3 channels each.
    with Image.open(shared_data / "kitti_tiny" / "training" / "image_2" / "000000.png") as im:
        x = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255
    lv = OrderedDict((f"p{k}", F.avg_pool2d(x, 2**k, ceil_mode=True) * 2 - 1) for k in range(2, 6))
    a = FeatureHevcAnchor(qp=22, preset="ultrafast")
    out = a.decode(a.encode(lv))
    for k, v in lv.items():
        assert out[k].shape == v.shape
        assert float((out[k] - v).abs().mean()) < 20 * 2 * half_step(v)


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda lv: OrderedDict((k, v) for k, v in lv.items() if k != "p3"), "p3"),
        (lambda lv: OrderedDict(lv, p7=lv["p6"]), "p7"),
        (lambda lv: OrderedDict((k, v.expand(2, -1, -1, -1)) for k, v in lv.items()), "one image"),
        (lambda lv: OrderedDict(lv, p4=lv["p4"] * float("nan")), "NaN"),
        (lambda lv: OrderedDict(lv, p2=lv["p2"].to(torch.int32)), "float"),
        (lambda lv: [lv["p2"]], "mapping"),
    ],
    ids=["missing", "unknown", "batch", "nan", "int", "list"],
)
def test_feature_bad_levels(levels, bad, match: str):
    with pytest.raises(TypeError if match == "mapping" else ValueError, match=match):
        FeatureHevcAnchor(qp=32).encode(bad(levels))


def test_feature_bad_params():
    for kwargs, match in [({"qp": 52}, "qp"), ({"bit_depth": 12}, "bit_depth"), ({"preset": "x"}, "preset")]:
        with pytest.raises(ValueError, match=match):
            FeatureHevcAnchor(**kwargs)
    with pytest.raises(ValueError, match="qp"):
        FeatureVtmAnchor(qp=64)


def test_feature_corrupt_bitstreams(levels):
    a = FeatureHevcAnchor(qp=42, preset="ultrafast")
    data = a.encode(levels)
    for bad in (data[:-1], data[:HEADER_BYTES], data[:HEADER_BYTES] + bytes(len(data) - HEADER_BYTES), b"", data + b"\0"):
        with pytest.raises(BitstreamError):
            a.decode(bad)
    image_stream = HevcAnchor(qp=42).encode(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(BitstreamError, match="codec id"):
        a.decode(image_stream)


# ------------------------------------------------------------------------------------ VTM feature anchor

FAKE_ENCODER = """\
#!{python}
import sys
args = sys.argv[1:]
opt = {{a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--") and "=" in a}}
assert opt["--InputChromaFormat"] == "400" and opt["--ChromaFormatIDC"] == "400", opt
w, h = int(opt["--SourceWidth"]), int(opt["--SourceHeight"])
data = open(args[args.index("-i") + 1], "rb").read()
assert len(data) == w * h * 2, (len(data), w, h)
open(args[args.index("-b") + 1], "wb").write(b"FVVC" + data)
"""

FAKE_DECODER = """\
#!{python}
import sys
args = sys.argv[1:]
data = open(args[args.index("-b") + 1], "rb").read()
assert data[:4] == b"FVVC"
# Like VTM writing a 4:0:0 picture into a 4:2:0 file: constant chroma after the luma.
open(args[args.index("-o") + 1], "wb").write(data[4:] + b"\\x00\\x02" * (len(data[4:]) // 4))
"""


def _script(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text).format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def test_feature_vtm_fake_binaries(tmp_path: Path, levels):
    cfg = tmp_path / "encoder_intra_vtm.cfg"
    cfg.write_text("")
    a = FeatureVtmAnchor(
        qp=30, encoder=_script(tmp_path / "enc", FAKE_ENCODER), decoder=_script(tmp_path / "dec", FAKE_DECODER), cfg=str(cfg)
    )
    cmd = a.encoder_command("in.yuv", "out.bin", 640, 576)
    assert "--InputChromaFormat=400" in cmd and "--ChromaFormatIDC=400" in cmd and cmd[cmd.index("-q") + 1] == "30"
    data = a.encode(levels)
    assert len(data) == HEADER_BYTES + 4 + 576 * 640 * 2  # header + fake marker + the 10-bit frame
    out = a.decode(data)
    # The fake codes losslessly: only the 10-bit normalisation error is left.
    for k in ["p2", "p3", "p4", "p5"]:
        assert float((out[k] - levels[k]).abs().max()) <= half_step(levels[k]) * (1 + 1e-4) + 1e-6
    assert torch.equal(out["p6"], F.max_pool2d(out["p5"], 1, 2))


def test_feature_vtm_missing_binary(monkeypatch: pytest.MonkeyPatch, levels):
    for var in ("VTM_ENCODER", "VTM_DECODER", "VTM_CFG"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CodecUnavailableError, match=r"codec\.encoder.*VTM_ENCODER"):
        FeatureVtmAnchor(qp=32).encode(levels)
