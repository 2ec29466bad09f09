"""Golden bitstreams (see tests/golden/make.py): committed files decode to the recorded symbols and
output, and re-encoding the same input with the same model gives the same bytes, on any CPU (this file
also runs under other CPU kernels: tests/test_portability.py).

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
#: files of an earlier format, kept to show they still decode: manifest name -> the case that builds their coder
LEGACY = {n: r["legacy_of"] for n, r in MANIFEST["cases"].items() if r.get("legacy_of")}


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


@pytest.mark.parametrize("name", sorted([*CASES, *LEGACY]))
def test_golden_file_decodes_to_the_recorded_output(name: str):
    """Anchors decode to exactly the recorded pixels. A learned codec's file decodes to exactly the
    recorded symbols (the container's symbols check, recorded here and verified by the decoder) and
    to an output within the stated tolerance of the recorded one (g_s is float arithmetic, which
    differs slightly from CPU to CPU); format-1 files, written before the check, by tolerance alone."""
    case, rec = CASES[LEGACY.get(name, name)], _recorded(name)
    data = (make.GOLDEN / rec["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec["bytes_sha256"], f"{rec['file']} was changed after it was recorded"
    _skip_if_unavailable(case)
    coder = case.build()
    decoded = coder.decode(data)
    if case.container == "anchor":
        assert make.decoded_sha256(decoded) == rec["decoded_sha256"], (
            f"{rec['file']} decodes to other values than when it was written (with {rec['versions']})")
        return
    from vcm.codecs.container import unpack

    assert unpack(data).check == rec.get("symbols_check"), "the file's symbols check is not the recorded one"
    differs = make.within_tolerance(decoded, make.read_reference(make.GOLDEN / rec["decoded_file"]))
    assert differs is None, f"{rec['file']} decodes to another output than recorded: {differs}"


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


def _configured_families() -> set[str]:
    """Every codec a config can build: the codec of each ``conf/model`` file and each classical anchor
    of ``conf/codec`` (VTM's need its binaries, which a test machine does not have)."""
    import importlib

    import yaml

    from vcm.utils.config import CONF_DIR

    def target(dotted: str):
        module, attr = dotted.rsplit(".", 1)
        return getattr(importlib.import_module(module), attr)

    def read(path):
        return yaml.safe_load(path.read_text()) or {}

    def anchor_target(path) -> str:  # a group file's _target_, or the one of the sibling it extends
        cfg = read(path)
        bases = [d for d in cfg.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        return cfg.get("_target_") or next((anchor_target(path.with_name(f"{b}.yaml")) for b in bases), "")

    families = set()
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        cfg = read(path)
        codec = cfg.get("codec") or (cfg.get("model") or {}).get("codec")  # group file, or @package _global_
        if codec and "_target_" in codec:
            built = target(codec["_target_"])
            families.add(getattr(built, "codec_name", built.__name__))
    for path in sorted((CONF_DIR / "codec").glob("*.yaml")):
        if anchor_target(path).startswith("vcm.anchors.") and "vtm" not in path.stem:
            families.add(path.stem)
    return families


def test_every_codec_family_and_zoo_codec_has_a_golden():
    """A new codec config or zoo entry without a golden fails here until the generator is re-run."""
    from vcm.zoo import entries

    families = {c.family for c in CASES.values()}
    configured = _configured_families()
    assert {"hyperprior", "roi_hyperprior", "lmsfc", "ta_msf", "jpeg", "hevc444"} <= configured  # it reads the configs
    assert configured <= families, f"codecs without a golden case: {sorted(configured - families)}"
    assert {f"zoo:{n}" for n, e in entries().items() if e.kind != "detector"} <= families
    missing = [n for n, c in CASES.items() if n not in MANIFEST["cases"] or not make.file_of(c).is_file()]
    assert not missing, f"no golden for {missing}: run `python -m tests.golden.make` and commit tests/golden/"


def test_goldens_start_with_their_recorded_format_version():
    from vcm.anchors.base import MAGIC as ANCHOR_MAGIC
    from vcm.codecs.container import MAGIC

    for name in [*CASES, *LEGACY]:
        case, rec = CASES[LEGACY.get(name, name)], _recorded(name)
        data = (make.GOLDEN / rec["file"]).read_bytes()
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
