"""A file from the network cannot crash, hang, leak memory into its output or exhaust the decoder.

Every case runs in tests/untrusted_worker.py, a process of its own under a 4 GiB address-space cap
and a timeout: a crash, a hang or memory beyond the cap fails the test without taking pytest down.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "untrusted_worker.py"
#: the one crafted file that decodes: bytes after the end of an HEVC slice, which the standard has the
#: decoder ignore (the picture is the clean stream's)
DECODES = {"anchor: HEVC with trailing garbage"}


def _worker(*args: str, timeout: int) -> list[dict]:
    done = subprocess.run([sys.executable, str(WORKER), *args], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, (f"the decoder process died (exit {done.returncode}) after {len(results)} cases, "
                                  f"the last {results[-1:]}: {done.stderr[-2000:]}")
    return results


def _assert_safe(results: list[dict]) -> None:
    for r in results:
        if r["outcome"] == "error":
            assert "\n" not in r["message"] and len(r["message"]) <= 400, r
        else:
            assert r["same"], f"{r['case']}: two decodes of the same file differ"
        assert r["seconds"] < 10, r


@pytest.mark.slow
@pytest.mark.guard
@pytest.mark.timeout(300)
def test_every_crafted_file_is_refused_in_one_line():
    results = _worker("cases", timeout=280)
    assert len(results) >= 23
    _assert_safe(results)
    wrong = [r["case"] for r in results if (r["outcome"] == "decoded") != (r["case"] in DECODES)]
    assert not wrong, f"these crafted files were not refused: {wrong}"


FUZZ_QUICK = {"image": 200, "feature": 40, "anchor": 300}  # ~40 s in all on two idle cores
FUZZ_LONG = {"image": 2000, "feature": 400, "anchor": 3000}


def _fuzz_params():
    quick = [pytest.param(k, FUZZ_QUICK[k], 0, marks=[pytest.mark.slow, pytest.mark.guard], id=f"{k}-quick")
             for k in sorted(FUZZ_QUICK)]
    long = [pytest.param(k, FUZZ_LONG[k], 1, marks=[pytest.mark.slow, pytest.mark.timeout(3600)], id=f"{k}-long")
            for k in sorted(FUZZ_LONG)]
    return quick + long


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("kind", "count", "seed"), _fuzz_params())
def test_mutants_decode_or_fail_in_one_line(kind, count, seed):
    """Seeded mutants of a valid file of each container kind (CRC recomputed where there is one):
    a one-line vcm error or a decode, twice the same; quick ones in make test, many in test-all."""
    results = _worker("fuzz", kind, str(count), str(seed), timeout=3500)
    assert len(results) == count
    _assert_safe(results)
    assert any(r["outcome"] == "error" for r in results)


@pytest.mark.slow
@pytest.mark.guard
def test_vcm_decompress_refuses_a_crafted_file_with_exit_code_2(tmp_path, shared_data):
    """A truthful header with an enormous size, and a limit below the frame: exit 2, one line, no PNG."""
    from vcm.cli.bitstream import compress_main
    from vcm.codecs.container import pack, unpack

    frame = shared_data / "kitti_tiny" / "training" / "image_2" / "000001.png"
    good = tmp_path / "good.vcm"
    assert compress_main(["--model", "hyperprior-kitti-q3", str(frame), str(good)]) == 0
    p = unpack(good.read_bytes())
    crafted = tmp_path / "crafted.vcm"
    crafted.write_bytes(pack(p.codec, p.weights_hash, (60000, 60000), p.strings, (938, 938), p.extra, p.check))
    cli = [sys.executable, "-c", "import sys; from vcm.cli.bitstream import decompress_main; sys.exit(decompress_main())",
           "--model", "hyperprior-kitti-q3"]
    for args, what in (([str(crafted)], "limit of 64.0 MP"), (["--max-pixels", "100000", str(good)], "limit of 0.1 MP")):
        out = tmp_path / "out.png"
        done = subprocess.run([*cli, *args, str(out)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and what in lines[0], done.stderr
        assert not out.exists()
