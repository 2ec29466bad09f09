"""Bitstreams that decode on any machine: the same file under other CPU kernels.

PyTorch picks its element-wise kernels by ``ATEN_CPU_CAPABILITY`` (default / avx2 / avx512) and
oneDNN its convolutions by ``ONEDNN_MAX_CPU_ISA`` (SSE41 / AVX2 / the machine's best): together they
stand in for another CPU. Both are read at process start, so every case runs in a subprocess.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from golden import make

from vcm.errors import BitstreamError

ROOT = Path(__file__).resolve().parents[1]
KERNELS = {
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten-avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
}
#: the two settings make test runs (the rest: make test-all); the farthest from this machine's default
IN_MAKE_TEST = ("aten-default", "onednn-sse41")


def _run(code_or_args: list[str], kernel: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **kernel, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run([sys.executable, *code_or_args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _kernel_params():
    return [pytest.param(name, marks=[pytest.mark.slow, *([pytest.mark.guard] if name in IN_MAKE_TEST else [])], id=name)
            for name in KERNELS]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kernel", _kernel_params())
def test_golden_tests_pass_under_other_cpu_kernels(kernel):
    done = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "tests/test_golden.py"],
                KERNELS[kernel], timeout=850)
    assert done.returncode == 0, f"{KERNELS[kernel]}: {done.stdout[-3000:]}{done.stderr[-2000:]}"


# Encodes every learned golden case's input (small models and zoo codecs) and writes the files and what
# this process decodes from them; run under one kernel setting, decoded under another.
_ENCODE = r"""
import json, sys, torch
from golden import make
torch.set_num_threads(1)
out = sys.argv[1]
names = []
for case in make.cases():
    if case.container != "vcm" or (case.input == "kitti" and make.kitti_input() is None):
        continue
    coder = case.build()
    data = coder.encode(make.input_of(case.input))
    open(f"{out}/{case.name}.vcm", "wb").write(data)
    make.write_reference(make.reference_of(f"{out}/{case.name}", coder.decode(data)), coder.decode(data))
    names.append(case.name)
json.dump(names, open(f"{out}/names.json", "w"))
"""


@pytest.mark.slow
@pytest.mark.guard
@pytest.mark.timeout(900)
def test_a_file_encoded_under_other_kernels_decodes_here(tmp_path):
    """Every learned family and zoo codec: encoded with SSE4.1 convolutions and scalar element-wise
    kernels, decoded here: the same symbols (the decoder verifies the encoder's check) and an output
    within the golden tolerance of what the encoding process decoded."""
    done = _run(["-c", _ENCODE, str(tmp_path)], {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert done.returncode == 0, done.stderr[-3000:]
    names = json.loads((tmp_path / "names.json").read_text())
    families = {c.family for c in make.cases() if c.name in names}
    assert {"hyperprior", "mean_scale", "roi_hyperprior", "lmsfc", "ta_msf", "zoo:hyperprior-kitti-q3"} <= families
    cases = {c.name: c for c in make.cases()}
    for name in names:
        data = (tmp_path / f"{name}.vcm").read_bytes()
        decoded = cases[name].build().decode(data)  # raises BitstreamError when the symbols differ
        reference = make.read_reference(make.reference_of(str(tmp_path / name), decoded))
        assert make.within_tolerance(decoded, reference) is None, name


def test_a_desynchronised_decoder_fails_with_a_clear_error(monkeypatch):
    """A decoder whose scales differ from the encoder's (here: nudged by 2 % on the decoder side only,
    what another CPU's float convolutions do to a codec without exact parameters) refuses the file
    in one line instead of decoding garbage."""
    import vcm.codecs.image as image_codecs

    coder = make._learned_image(make.small_model("hyperprior"))
    data = coder.encode(make.synthetic_input())
    exact = image_codecs.exact_forward
    monkeypatch.setattr(image_codecs, "exact_forward", lambda *a, **k: exact(*a, **k) * 1.02)
    with pytest.raises(BitstreamError, match="decoded symbols fail the encoder's check") as e:
        coder.decode(data)
    assert "\n" not in str(e.value)


def test_vcm_compress_on_one_kernel_setting_and_decompress_on_another(tmp_path, shared_data):
    frame = shared_data / "kitti_tiny" / "training" / "image_2" / "000001.png"
    stream, png = tmp_path / "f.vcm", tmp_path / "f.png"
    enc = _run(["-c", "import sys; from vcm.cli.bitstream import compress_main; sys.exit(compress_main())",
                "--model", "hyperprior-kitti-q3", str(frame), str(stream)], KERNELS["onednn-sse41"])
    assert enc.returncode == 0, enc.stderr[-2000:]
    dec = _run(["-c", "import sys; from vcm.cli.bitstream import decompress_main; sys.exit(decompress_main())",
                "--model", "hyperprior-kitti-q3", str(stream), str(png)], KERNELS["aten-default"])
    assert dec.returncode == 0, dec.stderr[-2000:]
    from vcm.data.kitti import load_image
    from vcm.metrics.image import psnr

    decoded, original = load_image(png), load_image(frame)
    assert float(psnr(decoded, original)) > 20  # the zoo q3 model: ~26 dB on KITTI frames
