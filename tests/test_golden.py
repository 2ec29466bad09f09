"""Golden bitstreams (see tests/golden/make.py): committed files decode to the recorded pixels, and
re-encoding the same input with the same model gives the same bytes.

A failure here means a ``.vcm`` (or anchor) file written by an earlier vcm would decode differently
now, or is written differently: a change of the container, of a codec's quantisation or of the
entropy coder's tables (e.g. a CompressAI upgrade). Deliberate format changes bump the format
version and keep old files readable or refused in one line; see the container's docstring.
"""
from __future__ import annotations

import hashlib

import pytest
from golden import make

from vcm.errors import BitstreamError

MANIFEST = make.read_manifest()
CASES = {c.name: c for c in make.cases()}


def _recorded(name: str) -> dict:
    if name not in MANIFEST["cases"]:
        pytest.fail(f"no golden for {name}: run `python -m tests.golden.make` and commit tests/golden/")
    return MANIFEST["cases"][name]


def _skip_if_unavailable(case: make.Case) -> None:
    lacking = make.missing_codecs(case)
    if lacking:
        pytest.skip(f"PyAV here lacks {lacking}")


def _current_version(case: make.Case) -> int:
    from vcm.anchors.base import HEADER_VERSION
    from vcm.codecs.container import FORMAT_VERSION

    return FORMAT_VERSION if case.container == "vcm" else HEADER_VERSION


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_file_decodes_to_the_recorded_pixels(name: str):
    case, rec = CASES[name], _recorded(name)
    data = (make.GOLDEN / rec["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec["bytes_sha256"], f"{rec['file']} was changed after it was recorded"
    _skip_if_unavailable(case)
    coder = case.build()
    if rec["format_version"] != _current_version(case):
        # an older format: the reader decodes it exactly as before, or refuses it naming the version
        try:
            decoded = coder.decode(data)
        except BitstreamError as e:
            assert "version" in str(e) and "\n" not in str(e)
            return
    else:
        decoded = coder.decode(data)
    assert make.decoded_sha256(decoded) == rec["decoded_sha256"], (
        f"{rec['file']} decodes to other values than when it was written (with {rec['versions']})")


def _real_frame_crop(request):
    request.getfixturevalue("shared_data")  # skips without ../shared (these cases carry needs_shared)
    image = make.kitti_input()
    assert make.decoded_sha256(image) == MANIFEST["inputs"]["kitti"]["sha256"], "the KITTI frame in ../shared changed"
    return image


@pytest.fixture
def golden_input(request):
    return _real_frame_crop(request) if request.param == "kitti" else make.input_of(request.param)


def _reencode_params():
    out = []
    for name in sorted(CASES):
        marks = [pytest.mark.needs_shared] if CASES[name].input == "kitti" else []
        out.append(pytest.param(name, CASES[name].input, marks=marks, id=name))
    return out


@pytest.mark.parametrize(("name", "golden_input"), _reencode_params(), indirect=["golden_input"])
def test_reencoding_the_input_gives_the_golden_bytes(name: str, golden_input):
    case, rec = CASES[name], _recorded(name)
    _skip_if_unavailable(case)
    if rec["format_version"] != _current_version(case):
        pytest.skip(f"recorded in format version {rec['format_version']}; this vcm writes {_current_version(case)}")
    if case.container == "anchor":
        # anchors' payloads come from libjpeg/libwebp/x265/SVT-AV1 inside Pillow and PyAV: bytes are
        # comparable only with the versions that wrote them (their decoding is checked above anyway)
        now = make.versions()
        changed = {k: (rec["versions"][k], now[k]) for k in ("av", "pillow") if rec["versions"][k] != now[k]}
        if changed:
            pytest.skip(f"encoder libraries changed {changed}: anchor payload bytes may differ")
    data = case.build().encode(golden_input)
    assert hashlib.sha256(data).hexdigest() == rec["bytes_sha256"], (
        f"{name}: re-encoding gives {len(data)} bytes, the golden has {rec['bytes']} (written with {rec['versions']})")


def test_every_codec_family_and_zoo_codec_has_a_golden():
    """A new family (or zoo entry) without a golden fails here until the generator is re-run."""
    from vcm.zoo import entries

    families = {c.family for c in CASES.values()}
    assert set(make.FAMILIES) <= families
    assert {f"zoo:{n}" for n, e in entries().items() if e.kind != "detector"} <= families
    missing = [n for n, c in CASES.items() if n not in MANIFEST["cases"] or not make.file_of(c).is_file()]
    assert not missing, f"no golden for {missing}: run `python -m tests.golden.make` and commit tests/golden/"


def test_goldens_start_with_their_recorded_format_version():
    from vcm.anchors.base import MAGIC as ANCHOR_MAGIC
    from vcm.codecs.container import MAGIC

    for name, case in CASES.items():
        rec, data = _recorded(name), make.file_of(case).read_bytes()
        if case.container == "vcm":
            assert data[:4] == MAGIC and data[4] == rec["format_version"], name
        else:
            assert data[:2] == ANCHOR_MAGIC and data[2] == rec["format_version"], name


def test_a_newer_format_version_is_refused_in_one_line():
    from vcm.codecs.container import FORMAT_VERSION

    data = bytearray(make.file_of(CASES["hyperprior-synthetic"]).read_bytes())
    data[4] = FORMAT_VERSION + 1
    with pytest.raises(BitstreamError, match=rf"unsupported vcm bitstream format version {FORMAT_VERSION + 1}") as e:
        CASES["hyperprior-synthetic"].build().decode(bytes(data))
    assert "\n" not in str(e.value)
