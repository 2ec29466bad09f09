"""The vcm bitstream container: exact round trips, every corruption caught, a small header."""
from __future__ import annotations

import pytest
import torch

from vcm.codecs.container import (
    FORMAT_VERSION,
    MAGIC,
    Payload,
    decode_image,
    encode_image,
    pack,
    unpack,
)
from vcm.codecs.image import factorized, hyperprior
from vcm.errors import BitstreamError
from vcm.utils.io import atomic_write_bytes

HASH = "0123456789abcdef"


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def random_bytes(n: int, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())


@pytest.fixture
def payload_args():
    strings = [[random_bytes(300, 0), random_bytes(5, 1)], [random_bytes(40, 2), b""], [random_bytes(200, 3), b"x"]]
    return {
        "codec_name": "roi_hyperprior",
        "weights_hash": HASH,
        "orig_hw": (375, 1242),
        "strings": strings,
        "shape": torch.Size([6, 20]),
        "extra": {"sizes": [[96, 312], [48, 156]], "offset": -3, "flag": 1},
    }


def test_round_trip(payload_args):
    data = pack(**payload_args)
    p = unpack(data, expected_codec="roi_hyperprior", expected_hash=HASH)
    assert p == Payload(
        codec="roi_hyperprior",
        weights_hash=HASH,
        orig_hw=(375, 1242),
        shape=(6, 20),
        extra={"sizes": ((96, 312), (48, 156)), "offset": -3, "flag": 1},
        strings=payload_args["strings"],
    )
    assert data[:4] == MAGIC and data[4] == FORMAT_VERSION
    nested = unpack(pack("c", HASH, (1, 1), [], ((1, 2), (3, (4, 5))), {})).shape
    assert nested == ((1, 2), (3, (4, 5)))
    assert unpack(pack("c", HASH, (1, 1), [[]], 7)).shape == (7,)


def test_truncated_everywhere(payload_args):
    data = pack(**payload_args)
    for cut in range(len(data)):  # every prefix, including cuts inside strings, lengths and the CRC
        with pytest.raises(BitstreamError, match="truncated") as err:
            unpack(data[:cut])
        if cut > 40:
            assert "reading" in str(err.value)
    with pytest.raises(BitstreamError, match="string 0 of group 0"):
        unpack(data[:100])
    with pytest.raises(BitstreamError, match="CRC32"):
        unpack(data[:-2])


def test_random_and_corrupt_bytes(payload_args):
    for seed in range(20):
        with pytest.raises(BitstreamError, match="not a vcm bitstream"):
            unpack(random_bytes(200, seed))
        with pytest.raises(BitstreamError):
            unpack(MAGIC + bytes([FORMAT_VERSION]) + random_bytes(200, seed))
    data = bytearray(pack(**payload_args))
    for pos in (5, 20, 30, 100, len(data) - 50, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(BitstreamError):
            unpack(bytes(bad))
    flipped = bytearray(data)
    flipped[200] ^= 0x01  # inside a string: the structure parses, only the CRC can tell
    with pytest.raises(BitstreamError, match="CRC32 mismatch"):
        unpack(bytes(flipped))
    with pytest.raises(BitstreamError, match=f"unsupported .* version {FORMAT_VERSION + 1}"):
        unpack(MAGIC + bytes([FORMAT_VERSION + 1]) + bytes(data[5:]))


def test_wrong_codec_or_weights(payload_args):
    data = pack(**payload_args)
    with pytest.raises(BitstreamError, match=r"made by codec 'roi_hyperprior' with weights 0123456789abcdef.*'hyperprior'"):
        unpack(data, expected_codec="hyperprior")
    with pytest.raises(BitstreamError, match=r"0123456789abcdef, this model is 'roi_hyperprior'/ffffffffffffffff"):
        unpack(data, expected_hash="ffffffffffffffff")


def test_bad_arguments_to_pack():
    with pytest.raises(ValueError, match="16 hex"):
        pack("c", "abc", (1, 1), [[b""]], (1,))
    with pytest.raises(ValueError, match="orig_hw"):
        pack("c", HASH, (0, 5), [[b""]], (1,))
    with pytest.raises(ValueError, match="bytes"):
        pack("c", HASH, (1, 1), [["text"]], (1,))
    with pytest.raises(ValueError, match="shape"):
        pack("c", HASH, (1, 1), [[b""]], (1.5,))


def test_header_is_small_and_counted():
    """Overhead = the documented field sizes; a KITTI hyperprior frame pays 47 bytes (0.0008 bpp)."""
    y, z = random_bytes(3000, 4), random_bytes(60, 5)
    data = pack("hyperprior", HASH, (375, 1242), [[y], [z]], (6, 20), check=0xDEADBEEF)
    overhead = len(data) - len(y) - len(z)
    expected = (
        4 + 1  # magic, version
        + 1 + len("hyperprior")  # codec name
        + 8  # weights hash
        + _varint_len(375) + _varint_len(1242)
        + 3  # shape: list header + two small ints
        + 1  # no extra
        + 1 + 2 * 1 + _varint_len(3000) + _varint_len(60)  # groups, counts, lengths
        + 1 + 4  # symbols check: flag, CRC32
        + 4  # CRC32
    )
    assert overhead == expected == 47
    assert unpack(data).check == 0xDEADBEEF
    assert len(pack("hyperprior", HASH, (375, 1242), [[y], [z]], (6, 20))) == len(data) - 4  # no check: the flag alone
    small = pack("factorized", HASH, (100, 131), [[random_bytes(500, 6)]], (7, 9))
    assert len(small) - 500 <= 40


def test_image_round_trip_and_file_size(tmp_path):
    torch.manual_seed(0)
    model = hyperprior(N=32, M=48).eval()
    img = torch.randint(0, 256, (3, 100, 131), dtype=torch.uint8)
    with pytest.raises(ValueError, match="update"):
        encode_image(model, img)
    model.update(force=True)
    data = encode_image(model, img)
    path = atomic_write_bytes(tmp_path / "frame.vcm", data)
    assert path.stat().st_size == len(data)
    p = unpack(path.read_bytes())
    assert p.orig_hw == (100, 131) and p.codec == "hyperprior" and p.shape == (2, 3)
    # the file is the strings plus the documented header and CRC, nothing else
    lengths = [len(s) for g in p.strings for s in g]
    header = 4 + 1 + 1 + len("hyperprior") + 8 + 1 + 2 + 3 + 1 + 1 + 2 + sum(map(_varint_len, lengths)) + 5 + 4
    assert path.stat().st_size == sum(lengths) + header
    out = decode_image(model, path.read_bytes())
    assert out.shape == (1, 3, 100, 131) and out.dtype == torch.float32
    # the float and uint8 inputs code the same image
    assert encode_image(model, img.float() / 255) == data


def test_decode_refuses_other_models_and_broken_payloads():
    torch.manual_seed(0)
    model = hyperprior(N=32, M=48).eval()
    model.update(force=True)
    data = encode_image(model, torch.rand(1, 3, 64, 64))

    torch.manual_seed(1)
    other = hyperprior(N=32, M=48).eval()
    other.update(force=True)
    with pytest.raises(BitstreamError, match="other weights"):
        decode_image(other, data)
    fact = factorized(N=32, M=48).eval()
    fact.update(force=True)
    with pytest.raises(BitstreamError, match="codec 'hyperprior'.*this model is 'factorized'"):
        decode_image(fact, data)

    # a custom name for the same weights decodes; the name is enforced only when asked for
    img = torch.rand(1, 3, 64, 64)
    named = encode_image(model, img, codec_name="hyperprior_q3")
    assert unpack(named).codec == "hyperprior_q3"
    assert torch.equal(decode_image(model, named), decode_image(model, encode_image(model, img)))
    with pytest.raises(BitstreamError, match="another codec"):
        decode_image(model, named, codec_name="hyperprior")

    from vcm.codecs.base import weights_hash

    h = weights_hash(model)
    one_group = pack("hyperprior", h, (64, 64), [[b"\x00\x01"]], (1, 1))
    with pytest.raises(BitstreamError, match="expects 2 string groups"):
        decode_image(model, one_group)
    huge = pack("hyperprior", h, (64, 64), [[b"a"], [b"b"]], (100000, 1))
    with pytest.raises(BitstreamError, match="latent shape"):
        decode_image(model, huge)
    batch = pack("hyperprior", h, (64, 64), [[b"a", b"b"], [b"c", b"d"]], (1, 1))
    with pytest.raises(BitstreamError, match="one image"):
        decode_image(model, batch)
    with pytest.raises(ValueError, match="one RGB image"):
        encode_image(model, torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_image(model, torch.rand(1, 3, 64, 64) * 2)
