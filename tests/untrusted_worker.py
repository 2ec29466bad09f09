"""Decodes crafted and mutated bitstreams in a process of its own, under a memory cap.

Run by tests/test_untrusted_bitstreams.py (``python tests/untrusted_worker.py MODE ...``): a crash, a
hang or memory beyond the cap ends this process, never the test run; what it finds is printed as one
JSON line per case (``{"case", "outcome": "error"|"decoded", "message", "seconds", "same"}``).

Modes:
    cases              every crafted file of the issue list (learned image, feature and anchor files)
    fuzz KIND N SEED   N seeded mutants of a valid KIND file (image, feature, anchor), CRC recomputed
"""
from __future__ import annotations

import hashlib
import json
import random
import resource
import struct
import sys
import time
import zlib
from pathlib import Path

MEMORY_CAP = 4 << 30  # bytes of address space
resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from golden import make

from vcm.codecs.container import pack, unpack
from vcm.errors import VcmError

torch.set_num_threads(1)


def digest(out) -> str:
    if isinstance(out, dict):
        return make.decoded_sha256({k: v for k, v in out.items()})
    return make.decoded_sha256(out)


def attempt(name: str, decode, data: bytes) -> dict:
    """Decode ``data`` twice; a vcm error (one line) or two equal decodes."""
    t0 = time.perf_counter()
    try:
        first = digest(decode(data))
    except VcmError as e:
        return {"case": name, "outcome": "error", "message": str(e), "seconds": time.perf_counter() - t0}
    second = digest(decode(data))
    return {"case": name, "outcome": "decoded", "same": first == second, "seconds": time.perf_counter() - t0}


def repack(data: bytes, **changes) -> bytes:
    """``data`` with payload fields replaced, CRC recomputed (what any sender can write)."""
    p = unpack(data)
    fields = {"codec_name": p.codec, "weights_hash": p.weights_hash, "orig_hw": p.orig_hw, "strings": p.strings,
              "shape": p.shape, "extra": p.extra, "check": p.check}
    fields.update(changes)
    return pack(**fields)


def with_codec_name(data: bytes, name: bytes) -> bytes:
    """``data`` with any codec-name bytes (pack refuses bad names; a sender need not)."""
    body = data[:-4]
    start = 5
    old_len = body[start]
    new = body[:start] + _varint(len(name)) + name + body[start + 1 + old_len:]
    return new + struct.pack("<I", zlib.crc32(new) & 0xFFFFFFFF)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def image_coder():
    return make._learned_image(make.small_model("hyperprior"))


def feature_coder():
    return make._learned_feature(make.small_model("lmsfc"))


def anchor_payload(anchor, data: bytes) -> tuple[bytes, bytes]:
    """(header, payload) of an anchor image file."""
    from vcm.anchors import base

    reader = base.StreamReader(data, anchor.codec_id, anchor.name)
    reader.take(base._SIZE)
    reader.take(anchor.fields_struct)
    payload = reader.payload()
    return data[: len(data) - len(payload) - 4], payload


def anchor_file(anchor, height: int, width: int, payload: bytes, fields: bytes) -> bytes:
    from vcm.anchors import base

    return base.pack_stream(anchor.codec_id, base._SIZE.pack(height, width) + fields, payload)


def crafted_cases() -> list[tuple[str, object, bytes]]:
    from vcm.anchors.av1 import Av1Anchor
    from vcm.anchors.hevc import HevcAnchor

    out = []
    coder = image_coder()
    data = coder.encode(make.synthetic_input())
    p = unpack(data)
    y, z = p.strings[0][0], p.strings[1][0]
    out += [
        ("image: 60000x60000 header", coder.decode, repack(data, orig_hw=(60000, 60000), shape=(938, 938))),
        ("image: empty y string", coder.decode, repack(data, strings=[[b""], [z]])),
        ("image: both strings empty", coder.decode, repack(data, strings=[[b""], [b""]])),
        ("image: y cut to 10 bytes", coder.decode, repack(data, strings=[[y[:10]], [z]])),
        ("image: y cut to half", coder.decode, repack(data, strings=[[y[: len(y) // 2]], [z]])),
        ("image: 370x1224 header, latent (1224, 1224)", coder.decode, repack(data, orig_hw=(370, 1224), shape=(1224, 1224))),
        ("image: 370x1224 header, latent (100, 100)", coder.decode, repack(data, orig_hw=(370, 1224), shape=(100, 100))),
        ("image: empty codec name", coder.decode, with_codec_name(data, b"")),
        ("image: 100 kB codec name", coder.decode, with_codec_name(data, b"x" * 100_000)),
        ("image: codec name with path characters", coder.decode, with_codec_name(data, b"../../etc/passwd")),
    ]
    fcoder = feature_coder()
    fdata = fcoder.encode(make.levels_input())
    for n in (1024**2, 2**20 * 64, 2**40):
        out.append((f"feature: level size {n}", fcoder.decode, repack(fdata, extra={"sizes": (n, n) * 4})))
    out += [
        ("feature: no sizes", fcoder.decode, repack(fdata, extra={})),
        ("feature: integer sizes", fcoder.decode, repack(fdata, extra={"sizes": 7})),
        ("feature: 60000x60000 original", fcoder.decode, repack(fdata, orig_hw=(60000, 60000))),
    ]
    hevc = HevcAnchor(qp=37)
    rng = np.random.default_rng(0)
    small = hevc.encode(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    big = hevc.encode(rng.integers(0, 256, (512, 640, 3), dtype=np.uint8))
    head, payload = anchor_payload(hevc, small)
    _, big_payload = anchor_payload(hevc, big)
    fields = head[4 + 4 :]  # after magic, version, id and H, W
    out += [
        ("anchor: 640x512 HEVC payload under a 16x16 header", hevc.decode, anchor_file(hevc, 16, 16, big_payload, fields)),
        ("anchor: two HEVC streams concatenated", hevc.decode, anchor_file(hevc, 16, 16, payload + payload, fields)),
        ("anchor: HEVC with trailing garbage", hevc.decode, anchor_file(hevc, 16, 16, payload + b"\x12\x34" * 20, fields)),
        ("anchor: HEVC with a garbage NAL unit appended", hevc.decode,
         anchor_file(hevc, 16, 16, payload + b"\x00\x00\x01" + b"\x12\x34" * 20, fields)),
        ("anchor: 65535x65535 header", hevc.decode, anchor_file(hevc, 65535, 65535, payload, fields)),
    ]
    av1 = Av1Anchor(qp=40, preset=8)
    a1 = av1.encode(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    ahead, apayload = anchor_payload(av1, a1)
    afields = ahead[8:]
    out += [
        ("anchor: AV1 payload under the HEVC id", hevc.decode, anchor_file(hevc, 64, 64, apayload, fields)),
        ("anchor: AV1 with trailing garbage", av1.decode, anchor_file(av1, 64, 64, apayload + b"\x12\x34" * 20, afields)),
        ("anchor: two AV1 streams concatenated", av1.decode, anchor_file(av1, 64, 64, apayload + apayload, afields)),
    ]
    return out


def mutate(data: bytes, rng: random.Random, container: bool) -> bytes:
    """One random mutation; for vcm containers the CRC is recomputed afterwards."""
    body = bytearray(data[:-4] if container else data)
    op = rng.randrange(5)
    if op == 0:  # flip bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(body))
            body[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # overwrite a byte
        body[rng.randrange(len(body))] = rng.randrange(256)
    elif op == 2:  # cut
        del body[rng.randrange(len(body)):][: rng.randint(1, 64)]
    elif op == 3:  # insert
        i = rng.randrange(len(body) + 1)
        body[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:  # duplicate a slice
        i = rng.randrange(len(body))
        body[i:i] = body[i : i + rng.randint(1, 32)]
    body = bytes(body)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF) if container else body


def fuzz(kind: str, n: int, seed: int):
    rng = random.Random(seed)
    if kind == "image":
        coder = image_coder()
        sources = [(coder.decode, coder.encode(make.synthetic_input()), True)]
    elif kind == "feature":
        coder = feature_coder()
        sources = [(coder.decode, coder.encode(make.levels_input()), True)]
    else:
        from vcm.anchors.hevc import HevcAnchor
        from vcm.anchors.pillow import JpegAnchor

        image = make.synthetic_input().permute(1, 2, 0).numpy()
        sources = [(a.decode, a.encode(image), False) for a in (JpegAnchor(quality=50), HevcAnchor(qp=32))]
    for i in range(n):
        decode, data, container = sources[i % len(sources)]
        mutant = mutate(data, rng, container)
        yield attempt(f"{kind} mutant {i} ({hashlib.sha256(mutant).hexdigest()[:8]})", decode, mutant)


def main() -> int:
    mode = sys.argv[1]
    results = ((attempt(name, decode, data) for name, decode, data in crafted_cases()) if mode == "cases"
               else fuzz(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    for r in results:  # one line each, as it happens: a crash leaves the cases before it readable
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
