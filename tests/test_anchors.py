"""Classical image anchors: real round trips on a synthetic KITTI-size frame (one real KITTI frame test), rate ordering, colour, headers, errors, VTM plumbing."""
from __future__ import annotations

import os
import stat
import struct
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vcm.anchors import (
    Av1Anchor,
    HevcAnchor,
    ImageAnchor,
    JpegAnchor,
    VtmAnchor,
    WebpAnchor,
    color,
)
from vcm.anchors.base import COMMON_HEADER_BYTES
from vcm.anchors.yuv import padded_size, read_yuv, write_yuv
from vcm.errors import BitstreamError, CodecUnavailableError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of BT.709 Y' (8-bit scale) between two RGB images."""
    w = np.array([0.2126, 0.7152, 0.0722])
    return psnr(a.astype(np.float64) @ w, b.astype(np.float64) @ w)


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> np.ndarray:
    """A synthetic KITTI-size road scene, uint8 RGB [375,1242,3] (runs without ../shared)."""
    from vcm.data.synthetic import generate

    tree = Path(generate(tmp_path_factory.mktemp("anchors") / "tree", num=1, seed=0))
    with Image.open(tree / "training" / "image_2" / "000000.png") as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture(scope="module")
def real_frame(shared_data: Path) -> np.ndarray:
    """A real KITTI frame, uint8 RGB [H,W,3] (370 x 1224 for 000000)."""
    with Image.open(shared_data / "kitti_tiny" / "training" / "image_2" / "000000.png") as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture(scope="module")
def odd_crop(frame: np.ndarray) -> np.ndarray:
    """Odd height and width, so every anchor must pad and crop."""
    return np.ascontiguousarray(frame[:369, :1223])


@pytest.fixture(scope="module")
def small_crop(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame[120:221, 400:531])  # 101 x 131


def conversion_only(rgb: np.ndarray, chroma: str) -> np.ndarray:
    """RGB after vcm's padding and colour conversion alone (no coding): the ceiling of a YUV anchor."""
    padded = color.pad_to_multiple(rgb, 8, 16)
    y, cb, cr = color.rgb_to_ycbcr(padded, 10, chroma)
    return color.ycbcr_to_rgb(y, cb, cr, 10)[: rgb.shape[0], : rgb.shape[1]]


# ----------------------------------------------------------------------------------------------- colour


def test_bt709_limited_reference_values():
    # ITU-R BT.709 10-bit limited-range codes of white, black and the primaries.
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y, cb, cr = color.rgb_to_ycbcr(px, 10, "444")
    assert y.ravel().tolist() == [940, 64, 250, 691, 127]
    assert cb.ravel().tolist() == [512, 512, 409, 167, 960]
    assert cr.ravel().tolist() == [512, 512, 960, 105, 471]


def test_bt601_full_range_matches_pillow():
    # Pillow's RGB->YCbCr is JFIF: BT.601, full range, 8 bits.
    x = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(x).convert("YCbCr")).astype(int)
    y, cb, cr = color.rgb_to_ycbcr(x, 8, "444", color.colour_code("bt601", full_range=True))
    assert np.abs(np.stack([y, cb, cr], -1).astype(int) - ref).max() <= 1


@pytest.mark.parametrize("code", [color.BT709_LIMITED, color.colour_code("bt601", True)])
def test_colour_round_trip_10bit_within_one_code(code: int):
    x = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    y, cb, cr = color.rgb_to_ycbcr(x, 10, "444", code)
    assert y.dtype == np.uint16 and y.max() <= 1023
    back = color.ycbcr_to_rgb(y, cb, cr, 10, code)
    assert np.abs(back.astype(int) - x).max() <= 1


def test_colour_round_trip_real_frame_444(real_frame: np.ndarray):
    y, cb, cr = color.rgb_to_ycbcr(real_frame, 10, "444")
    assert np.abs(color.ycbcr_to_rgb(y, cb, cr, 10).astype(int) - real_frame).max() <= 1


def test_420_round_trip_on_smooth_colour():
    # Colour that varies linearly survives 4:2:0 (box down, centred bilinear up) within one code value.
    rows, cols = np.arange(40)[:, None], np.arange(60)[None, :]
    smooth = np.stack([rows * 3 + cols * 2, 255 - rows * 2 - cols, 40 + rows + cols * 3], -1)
    smooth = np.clip(smooth, 0, 255).astype(np.uint8)
    y, cb, cr = color.rgb_to_ycbcr(smooth, 10, "420")
    assert y.shape == (40, 60) and cb.shape == cr.shape == (20, 30)
    back = color.ycbcr_to_rgb(y, cb, cr, 10)
    assert np.abs(back[1:-1, 1:-1].astype(int) - smooth[1:-1, 1:-1]).max() <= 1


def test_chroma_resampling():
    c = np.arange(12.0).reshape(3, 4)  # c[r, k] = 4 r + k
    up = color.upsample_420(c)
    assert up.shape == (6, 8)
    # Centred siting: output sample i sits at source position (i + 0.5) / 2 - 0.5, so away from the
    # replicated edges bilinear upsampling reproduces the ramp exactly.
    pos = (np.arange(8) + 0.5) / 2 - 0.5
    expected = 4 * pos[:6, None] + pos[None, :8]
    np.testing.assert_allclose(up[1:-1, 1:-1], expected[1:-1, 1:-1])
    np.testing.assert_allclose(color.downsample_420(np.full((4, 6), 7.0)), np.full((2, 3), 7.0))
    np.testing.assert_allclose(color.upsample_420(np.full((2, 3), 5.0)), np.full((4, 6), 5.0))
    with pytest.raises(ValueError, match="even"):
        color.downsample_420(np.zeros((3, 4)))


def test_padding_replicates_and_sizes():
    x = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    p = color.pad_to_multiple(x, 8)
    assert p.shape == (8, 8, 3)
    np.testing.assert_array_equal(p[:5, :7], x)
    np.testing.assert_array_equal(p[7, 7], x[4, 6])
    assert padded_size(101, 131) == (104, 136)
    assert padded_size(5, 7, 8, 16) == (16, 16)
    assert color.pad_to_multiple(x, 8, 16).shape == (16, 16, 3)


# -------------------------------------------------------------------------------------- PyAV anchors


@pytest.mark.parametrize(
    "anchor", [HevcAnchor(qp=32), HevcAnchor(qp=32, chroma="444"), Av1Anchor(qp=40, preset=8), JpegAnchor(), WebpAnchor()],
    ids=["hevc420", "hevc444", "av1", "jpeg", "webp"],
)  # fmt: skip
def test_round_trip_odd_sizes(anchor: ImageAnchor, odd_crop: np.ndarray, small_crop: np.ndarray):
    for img in (odd_crop, small_crop):
        data = anchor.encode(img)
        assert isinstance(data, bytes)
        out = anchor.decode(data)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert psnr(img, out) > 24
    # A [3,H,W] uint8 tensor and a float tensor in [0,1] code the same picture.
    t = torch.from_numpy(small_crop).permute(2, 0, 1).contiguous()
    assert anchor.encode(t) == anchor.encode(small_crop)
    assert anchor.encode(t.float() / 255) == anchor.encode(small_crop)


@pytest.mark.parametrize(
    "low,high", [(HevcAnchor(qp=22), HevcAnchor(qp=37)), (Av1Anchor(qp=20, preset=8), Av1Anchor(qp=50, preset=8)),
                 (JpegAnchor(quality=90), JpegAnchor(quality=30)), (WebpAnchor(quality=90), WebpAnchor(quality=30))],
    ids=["hevc", "av1", "jpeg", "webp"],
)  # fmt: skip
def test_higher_quality_more_bytes_higher_psnr(low: ImageAnchor, high: ImageAnchor, odd_crop: np.ndarray):
    d_low, d_high = low.encode(odd_crop), high.encode(odd_crop)
    assert len(d_low) > len(d_high)
    assert psnr(odd_crop, low.decode(d_low)) > psnr(odd_crop, high.decode(d_high)) + 0.3


def test_hevc_low_qp_quality(odd_crop: np.ndarray):
    # KITTI frames carry pixel-level colour (demosaicing fringes): 4:2:0 alone caps RGB PSNR near 29 dB,
    # so RGB PSNR > 40 dB needs 4:4:4; 4:2:0 reaches > 40 dB on luma and the conversion ceiling on RGB.
    a444 = HevcAnchor(qp=12, chroma="444", preset="veryfast")
    assert psnr(odd_crop, a444.decode(a444.encode(odd_crop))) > 40
    a420 = HevcAnchor(qp=12, preset="veryfast")
    out = a420.decode(a420.encode(odd_crop))
    assert luma_psnr(odd_crop, out) > 40
    assert psnr(odd_crop, out) > psnr(odd_crop, conversion_only(odd_crop, "420")) - 1.0


def test_av1_low_qp_quality(odd_crop: np.ndarray):
    a = Av1Anchor(qp=8, preset=8)
    out = a.decode(a.encode(odd_crop))
    assert luma_psnr(odd_crop, out) > 40
    assert psnr(odd_crop, out) > psnr(odd_crop, conversion_only(odd_crop, "420")) - 1.0


def test_hevc_444_beats_420_on_rgb(small_crop: np.ndarray):
    out420 = HevcAnchor(qp=22).decode(HevcAnchor(qp=22).encode(small_crop))
    d444 = HevcAnchor(qp=22, chroma="444").encode(small_crop)
    # The stream says 4:4:4 itself: an anchor configured for 4:2:0 decodes it.
    out444 = HevcAnchor(qp=37).decode(d444)
    assert psnr(small_crop, out444) > psnr(small_crop, out420) + 2


def test_hevc_stream_is_raw_annexb_and_fully_counted(small_crop: np.ndarray):
    a = HevcAnchor(qp=32)
    data = a.encode(small_crop)
    hb = a.header_bytes()
    assert hb == COMMON_HEADER_BYTES + 4 + 3 == 15
    assert data[:2] == b"VA" and data[3] == HevcAnchor.codec_id
    h, w, idc, depth, code, length = struct.unpack(">HHBBBI", data[4:hb])
    assert (h, w, idc, depth, code) == (101, 131, 1, 10, color.BT709_LIMITED)
    assert length == len(data) - hb
    payload = data[hb:]
    assert payload[:6] == b"\x00\x00\x00\x01\x40\x01"  # Annex-B start code + VPS NAL header
    assert b"x265" not in payload  # the encoder-settings SEI (~2 kB of text) is off
    frame = av.CodecContext.create("hevc", "r").decode(av.Packet(payload))[0]
    assert (frame.width, frame.height, frame.format.name) == (136, 104, "yuv420p10le")


def test_hevc_8bit(small_crop: np.ndarray):
    a = HevcAnchor(qp=22, bit_depth=8)
    assert psnr(small_crop, a.decode(a.encode(small_crop))) > 26


def test_av1_stream_is_raw_obu(small_crop: np.ndarray):
    a = Av1Anchor(qp=40, preset=8)
    data = a.encode(small_crop)
    payload = data[a.header_bytes() :]
    assert payload[:2] == b"\x12\x00"  # temporal delimiter OBU (no IVF/MP4 container)
    assert struct.unpack(">I", data[a.header_bytes() - 4 : a.header_bytes()])[0] == len(payload)


def test_pillow_payload_is_the_file(small_crop: np.ndarray):
    j = JpegAnchor(quality=50)
    payload = j.encode(small_crop)[j.header_bytes() :]
    assert payload[:2] == b"\xff\xd8" and payload[-2:] == b"\xff\xd9"
    w = WebpAnchor(quality=50)
    payload = w.encode(small_crop)[w.header_bytes() :]
    assert payload[:4] == b"RIFF" and payload[8:16] == b"WEBPVP8 "  # simple lossy file, no VP8X/metadata
    assert j.header_bytes() == w.header_bytes() == 12
    lossless = WebpAnchor(lossless=True)
    np.testing.assert_array_equal(lossless.decode(lossless.encode(small_crop)), small_crop)
    j444 = JpegAnchor(quality=95, subsampling="444")
    assert psnr(small_crop, j444.decode(j444.encode(small_crop))) > psnr(
        small_crop, JpegAnchor(quality=95).decode(JpegAnchor(quality=95).encode(small_crop))
    )


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: HevcAnchor(qp=52), "qp"),
        (lambda: HevcAnchor(qp=-1), "qp"),
        (lambda: HevcAnchor(qp=2.5), "qp"),
        (lambda: HevcAnchor(chroma="422"), "chroma"),
        (lambda: HevcAnchor(bit_depth=12), "bit_depth"),
        (lambda: HevcAnchor(preset="fastest"), "preset.*medium"),
        (lambda: Av1Anchor(qp=0), "qp"),
        (lambda: Av1Anchor(qp=64), "qp"),
        (lambda: Av1Anchor(chroma="444"), "chroma"),
        (lambda: Av1Anchor(preset=14), "preset"),
        (lambda: JpegAnchor(quality=0), "quality"),
        (lambda: JpegAnchor(subsampling="411"), "subsampling"),
        (lambda: WebpAnchor(quality=101), "quality"),
        (lambda: VtmAnchor(qp=64), "qp"),
        (lambda: VtmAnchor(chroma="400"), "chroma"),
        (lambda: VtmAnchor(timeout=0), "timeout"),
    ],
)
def test_bad_parameters(make, match: str):
    with pytest.raises(ValueError, match=match):
        make()


def test_params_and_names():
    a = HevcAnchor(qp=27, chroma="444", bit_depth=10, preset="fast")
    assert (a.name, a.kind) == ("hevc444", "image")  # 4:4:4 is its own curve, not the 4:2:0 anchor's
    assert a.params == {"qp": 27, "chroma": "444", "bit_depth": 10, "preset": "fast", "tune": "psnr"}
    assert {c.name for c in (JpegAnchor, WebpAnchor, HevcAnchor, Av1Anchor, VtmAnchor)} == {"jpeg", "webp", "hevc", "av1", "vtm"}
    assert len({c.codec_id for c in (JpegAnchor, WebpAnchor, HevcAnchor, Av1Anchor, VtmAnchor)}) == 5


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), np.uint8), torch.zeros(10, 10, 3, dtype=torch.uint8),
            torch.full((3, 10, 10), 2.0), [[1, 2, 3]]],
    ids=["float-array", "gray", "hwc-tensor", "float-out-of-range", "list"],
)  # fmt: skip
def test_bad_images(bad):
    with pytest.raises(TypeError if isinstance(bad, list) else ValueError):
        JpegAnchor().encode(bad)


@pytest.mark.parametrize(
    "anchor", [HevcAnchor(qp=37), Av1Anchor(qp=50, preset=10), JpegAnchor(quality=30), WebpAnchor(quality=30)],
    ids=["hevc", "av1", "jpeg", "webp"],
)  # fmt: skip
def test_corrupt_and_truncated_bitstreams(anchor: ImageAnchor, small_crop: np.ndarray):
    data = anchor.encode(small_crop)
    hb = anchor.header_bytes()
    rng = np.random.default_rng(0)
    bad = {
        "truncated": data[:-1],
        "header only": data[:hb],
        "cut in header": data[:6],
        "empty": b"",
        "trailing": data + b"\0",
        "magic": b"XX" + data[2:],
        "version": data[:2] + b"\x09" + data[3:],
        "zero payload": data[:hb] + bytes(len(data) - hb),
        "random payload": data[:hb] + rng.integers(0, 256, len(data) - hb, dtype=np.uint8).tobytes(),
        "not bytes": "hello",
    }
    for what, d in bad.items():
        try:
            anchor.decode(d)  # type: ignore[arg-type]
        except BitstreamError:
            continue
        pytest.fail(f"{what}: decoded without a BitstreamError")
    # A flipped payload byte may decode to a damaged picture (no codec checksums its data) but never crashes.
    flipped = bytearray(data)
    flipped[hb + (len(data) - hb) // 2] ^= 0xFF
    try:
        assert anchor.decode(bytes(flipped)).shape == small_crop.shape
    except BitstreamError:
        pass


def test_codec_mismatch_is_a_bitstream_error(small_crop: np.ndarray):
    data = HevcAnchor(qp=37).encode(small_crop)
    with pytest.raises(BitstreamError, match="hevc|HevcAnchor"):
        Av1Anchor().decode(data)
    with pytest.raises(BitstreamError):
        JpegAnchor().decode(data)


# ----------------------------------------------------------------------------------------------- VTM

FAKE_ENCODER = """\
#!{python}
# Stand-in for EncoderAppStatic: checks the input size implied by the arguments, then "codes" the
# picture losslessly by copying the YUV bytes behind a 4-byte marker.
import sys
args = sys.argv[1:]
def val(short, long):
    for i, a in enumerate(args):
        if a == short:
            return args[i + 1]
        if a.startswith(long + "="):
            return a.split("=", 1)[1]
    sys.exit("missing " + long)
w, h = int(val("--wdt", "--SourceWidth")), int(val("--hgt", "--SourceHeight"))
depth, fmt = int(val("", "--InputBitDepth")), val("", "--InputChromaFormat")
assert val("", "--ChromaFormatIDC") == fmt and val("-f", "--FramesToBeEncoded") == "1"
open(val("-c", "--c")).close()
samples = w * h * {{"400": 1.0, "420": 1.5, "444": 3.0}}[fmt]
data = open(val("-i", "--InputFile"), "rb").read()
if len(data) != samples * (2 if depth > 8 else 1):
    sys.exit("input has %d bytes, expected %d" % (len(data), samples * 2))
open(val("-b", "--BitstreamFile"), "wb").write(b"FVVC" + data)
print("fake encoder: %d bytes" % (len(data) + 4))
"""

FAKE_DECODER = """\
#!{python}
import sys
args = sys.argv[1:]
src, dst, depth = args[args.index("-b") + 1], args[args.index("-o") + 1], args[args.index("-d") + 1]
data = open(src, "rb").read()
if data[:4] != b"FVVC":
    sys.stderr.write("fake decoder: not a bitstream\\n")
    sys.exit(3)
open(dst, "wb").write(data[4:])
"""

FAILING = """\
#!{python}
import sys
sys.stderr.write("something went wrong in the codec\\n")
sys.exit(2)
"""


def write_script(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text).format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


@pytest.fixture
def fake_vtm(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "encoder_intra_vtm.cfg"
    cfg.write_text("# fake intra configuration\n")
    return {
        "encoder": write_script(tmp_path / "EncoderAppStatic", FAKE_ENCODER),
        "decoder": write_script(tmp_path / "DecoderAppStatic", FAKE_DECODER),
        "cfg": str(cfg),
    }


@pytest.fixture
def no_vtm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("VTM_ENCODER", "VTM_DECODER", "VTM_CFG"):
        monkeypatch.delenv(var, raising=False)


def test_vtm_missing_binary_names_the_setting(no_vtm_env, small_crop: np.ndarray, tmp_path: Path):
    a = VtmAnchor(qp=32)  # constructing never needs the binaries
    assert not a.available()
    with pytest.raises(CodecUnavailableError, match=r"codec\.encoder.*VTM_ENCODER"):
        a.encode(small_crop)
    with pytest.raises(CodecUnavailableError, match=r"codec\.decoder.*VTM_DECODER"):
        a.tools.decoder_path()
    with pytest.raises(CodecUnavailableError, match=r"codec\.cfg.*VTM_CFG"):
        a.tools.cfg_path()
    missing = tmp_path / "nowhere" / "EncoderAppStatic"
    with pytest.raises(CodecUnavailableError, match=rf"{missing}.*codec\.encoder.*VTM_ENCODER"):
        VtmAnchor(encoder=str(missing)).encode(small_crop)


def test_vtm_encoder_command(fake_vtm: dict[str, str], no_vtm_env):
    a = VtmAnchor(qp=27, **fake_vtm, extra_args=["--Level=6.2"])
    cmd = a.encoder_command("/tmp/in.yuv", "/tmp/out.bin", 136, 104)
    assert cmd == [
        fake_vtm["encoder"], "-c", str(Path(fake_vtm["cfg"]).resolve()), "-i", "/tmp/in.yuv", "-b", "/tmp/out.bin",
        "-q", "27", "--SourceWidth=136", "--SourceHeight=104", "--InputBitDepth=10", "--InternalBitDepth=10",
        "--OutputBitDepth=10", "--InputChromaFormat=420", "--ChromaFormatIDC=420", "-f", "1", "-fr", "1",
        "--SEIDecodedPictureHash=0", "--Level=6.2",
    ]  # fmt: skip
    assert a.decoder_command("/tmp/out.bin", "/tmp/rec.yuv") == [
        fake_vtm["decoder"], "-b", "/tmp/out.bin", "-o", "/tmp/rec.yuv", "-d", "10",
    ]  # fmt: skip


def test_vtm_env_fallback(fake_vtm: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VTM_ENCODER", fake_vtm["encoder"])
    monkeypatch.setenv("VTM_DECODER", fake_vtm["decoder"])
    monkeypatch.setenv("VTM_CFG", fake_vtm["cfg"])
    a = VtmAnchor(qp=32)
    assert a.available()
    assert a.encoder_command("a.yuv", "b.bin", 8, 8)[0] == fake_vtm["encoder"]


@pytest.mark.parametrize("chroma", ["420", "444"])
def test_vtm_fake_binary_round_trip_and_rate(fake_vtm: dict[str, str], small_crop: np.ndarray, chroma: str):
    a = VtmAnchor(qp=32, chroma=chroma, **fake_vtm)
    data = a.encode(small_crop)
    # The fake codes losslessly, so the rate is header + marker + the padded 10-bit YUV picture.
    samples = 104 * 136 * (1.5 if chroma == "420" else 3)
    assert len(data) == a.header_bytes() + 4 + int(samples) * 2
    out = a.decode(data)
    assert out.shape == small_crop.shape
    # ... and the picture is exactly what vcm's padding + colour conversion alone give.
    np.testing.assert_array_equal(out, conversion_only(small_crop, chroma))


def test_vtm_failures_carry_stderr(fake_vtm: dict[str, str], tmp_path: Path, small_crop: np.ndarray):
    failing = write_script(tmp_path / "failing", FAILING)
    with pytest.raises(RuntimeError, match="something went wrong in the codec"):
        VtmAnchor(**{**fake_vtm, "encoder": failing}).encode(small_crop)
    a = VtmAnchor(**fake_vtm)
    data = bytearray(a.encode(small_crop))
    data[a.header_bytes()] ^= 0xFF  # breaks the fake's marker: its decoder exits with an error
    with pytest.raises(BitstreamError, match="not a bitstream"):
        a.decode(bytes(data))


def test_yuv_file_round_trip(tmp_path: Path):
    rng = np.random.default_rng(4)
    planes = [rng.integers(0, 1024, s, dtype=np.uint16) for s in [(8, 16), (4, 8), (4, 8)]]
    n = write_yuv(tmp_path / "x.yuv", planes, 10)
    raw = (tmp_path / "x.yuv").read_bytes()
    assert n == len(raw) == (128 + 32 + 32) * 2
    assert raw[:2] == int(planes[0][0, 0]).to_bytes(2, "little")
    back = read_yuv(tmp_path / "x.yuv", 8, 16, "420", 10)
    for p, q in zip(planes, back):
        np.testing.assert_array_equal(p, q)
    # A 4:0:0 reader takes the luma plane of a file that also carries chroma.
    np.testing.assert_array_equal(read_yuv(tmp_path / "x.yuv", 8, 16, "400", 10)[0], planes[0])
    with pytest.raises(ValueError):
        write_yuv(tmp_path / "y.yuv", [np.full((2, 2), 1024, np.uint16)], 10)
    with pytest.raises(BitstreamError):
        read_yuv(tmp_path / "x.yuv", 16, 16, "444", 10)
    with pytest.raises(FileNotFoundError):
        read_yuv(tmp_path / "absent.yuv", 8, 16, "420", 10)


@pytest.mark.vtm
@pytest.mark.skipif(
    not (os.environ.get("VTM_ENCODER") and os.environ.get("VTM_DECODER") and os.environ.get("VTM_CFG")),
    reason="real VTM binaries not configured (set VTM_ENCODER, VTM_DECODER, VTM_CFG)",
)
def test_vtm_real_binaries(small_crop: np.ndarray):
    low, high = VtmAnchor(qp=22), VtmAnchor(qp=37)
    d_low, d_high = low.encode(small_crop), high.encode(small_crop)
    out_low, out_high = low.decode(d_low), high.decode(d_high)
    assert out_low.shape == small_crop.shape
    assert len(d_low) > len(d_high)
    assert psnr(small_crop, out_low) > psnr(small_crop, out_high)
