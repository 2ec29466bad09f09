"""Golden bitstreams: files written once, committed, and decoded by every later version of vcm.

A ``.vcm`` file written today must decode to the same pixels after any upgrade of vcm, CompressAI or
torch, or users lose data. Each case below codes a fixed input with a fixed model (one small
fixed-seed model per codec family, every anchor, and every zoo codec of ``vcm/zoo/registry.json``)
and records in ``manifest.json``:

- ``file``: the committed bitstream; ``bytes_sha256`` its sha256 (re-encoding the same input with the
  same model must give these bytes);
- ``decoded_sha256``: sha256 of what decoding gives (uint8 pixels [3,H,W] of an image; float32
  levels p2..p5 (p6) of a feature codec, in level order): anchors must decode to exactly this;
- learned codecs: ``symbols_check`` (the container's CRC of the decoded symbols, indexes and means,
  which the decoder verifies: the symbols are exact on any CPU) and ``decoded_file``, the decoded
  output itself, which a decode on any CPU must match within :data:`PIXEL_TOLERANCE` /
  :data:`LEVEL_TOLERANCE` (the synthesis transforms are float arithmetic);
- ``legacy_of``: a file of an earlier format version kept to show it still decodes (built by that case).

``tests/test_golden.py`` checks all of it. Inputs: ``inputs/synthetic.png`` (a 64x96 crop of a synthetic
frame, committed), ``inputs/levels.npz`` (fixed-seed feature levels, committed; widened to 256 channels
for the zoo's feature codecs, see :func:`levels256_input`) and a 64x96 crop of a
real KITTI frame read from ``../shared/data`` (its pixel sha256 is checked; tests that need it
are ``needs_shared``). The small models' weights are committed under ``weights/`` so the goldens
do not depend on torch's initialisation, and so are their entropy tables (``<family>.tables.npz``),
as vcm stores them with every checkpoint and zoo file.

Run from the repository root::

    python -m tests.golden.make          # write the missing cases (new zoo entries, new families)
    python -m tests.golden.make --list   # show every case and whether its golden exists
    python -m tests.golden.make --force NAME [NAME ...]   # rewrite these (a deliberate format change)

Existing goldens are never rewritten without ``--force``: a golden regenerated after an accidental
change guards nothing. A deliberate change of the bitstream format bumps the format version
(``vcm.codecs.container.FORMAT_VERSION``, or ``HEADER_VERSION`` of ``vcm.anchors.base``) and keeps
reading or explicitly refusing the old files (see the container's module docstring).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

GOLDEN = Path(__file__).resolve().parent
ROOT = GOLDEN.parents[1]
MANIFEST = GOLDEN / "manifest.json"
WEIGHTS = GOLDEN / "weights"
INPUTS = GOLDEN / "inputs"
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

# The real input: rows 160..223, columns 560..655 of KITTI training frame 000000 (road, a car, a sign).
KITTI_FRAME = "kitti_tiny/training/image_2/000000.png"
KITTI_CROP = (160, 560, 64, 96)  # top, left, height, width
# Fixed ROI boxes (xyxy pixels of the 64x96 input) for roi_hyperprior with roi_source=boxes.
ROI_BOXES = [[8.0, 10.0, 40.0, 50.0], [52.0, 20.0, 90.0, 62.0]]


# ------------------------------------------------------------------------------------------- inputs
def synthetic_input() -> torch.Tensor:
    """uint8 [3,64,96]: the committed crop of a synthetic frame."""
    from PIL import Image

    with Image.open(INPUTS / "synthetic.png") as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).contiguous()


def kitti_input() -> torch.Tensor | None:
    """uint8 [3,64,96] cut from the real KITTI frame, or None when ../shared/data is absent."""
    from PIL import Image

    path = SHARED_DATA / KITTI_FRAME
    if not path.is_file():
        return None
    top, left, h, w = KITTI_CROP
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))[top:top + h, left:left + w].copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def levels_input() -> OrderedDict[str, torch.Tensor]:
    """Fixed feature levels p2..p5 [1,8,h,w] of a 64x96 image (strides 4..32), float32."""
    with np.load(INPUTS / "levels.npz") as z:
        return OrderedDict((k, torch.from_numpy(z[k].copy())) for k in ("p2", "p3", "p4", "p5"))


def levels256_input() -> OrderedDict[str, torch.Tensor]:
    """The committed levels widened to an FPN's 256 channels (for the zoo's feature codecs): channel c is
    channel c mod 8 of ``levels.npz`` times (0.25 + 0.75 (c // 8) / 31), in float32."""
    scale = (0.25 + 0.75 * torch.arange(32, dtype=torch.float32) / 31).repeat_interleave(8).view(1, 256, 1, 1)
    return OrderedDict((k, v.repeat(1, 32, 1, 1) * scale) for k, v in levels_input().items())


def _make_inputs() -> None:
    """Write the committed inputs (only when absent: they are part of the goldens)."""
    from PIL import Image

    INPUTS.mkdir(parents=True, exist_ok=True)
    if not (INPUTS / "synthetic.png").is_file():
        import tempfile

        from vcm.data.synthetic import generate

        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(generate(Path(tmp) / "tree", num=1, seed=0, width=480, height=160))
            with Image.open(tree / "training" / "image_2" / "000000.png") as im:
                arr = np.asarray(im.convert("RGB"))[60:124, 200:296].copy()
        Image.fromarray(arr).save(INPUTS / "synthetic.png", format="PNG", optimize=False)
    if not (INPUTS / "levels.npz").is_file():
        rng = np.random.default_rng(1)
        levels = {k: (4.0 * rng.standard_normal((1, 8, 16 // s, 24 // s))).astype(np.float32)
                  for k, s in (("p2", 1), ("p3", 2), ("p4", 4), ("p5", 8))}
        np.savez(INPUTS / "levels.npz", **levels)


def input_of(name: str):
    return {"synthetic": synthetic_input, "kitti": kitti_input, "levels": levels_input,
            "levels256": levels256_input}[name]()


# ------------------------------------------------------------------------------------------- models
def _small_model(family: str) -> torch.nn.Module:
    """The architecture of a family's small golden model (weights still to be set)."""
    from vcm.codecs.gain_hyperprior import GainHyperprior
    from vcm.codecs.image import (
        FactorizedImageCodec,
        HyperpriorImageCodec,
        MeanScaleImageCodec,
    )
    from vcm.codecs.lmsfc import LMSFC
    from vcm.codecs.roi_hyperprior import RoiHyperprior

    return {
        "gain_hyperprior": lambda: GainHyperprior(N=8, M=8, cond_channels=4),
        "factorized": lambda: FactorizedImageCodec(N=8, M=8),
        "hyperprior": lambda: HyperpriorImageCodec(N=8, M=8),
        "mean_scale": lambda: MeanScaleImageCodec(N=8, M=8),
        "roi_hyperprior": lambda: RoiHyperprior(N=8, M=8, cond_channels=4, roi_source="boxes"),
        "lmsfc": lambda: LMSFC(N=8, M=8, entropy_model="context", feature_channels=8),
        "ta_msf": lambda: LMSFC(N=8, M=8, entropy_model="context", attention_every_stage=True, feature_channels=8),
    }[family]()


def _seeded_model(family: str) -> torch.nn.Module:
    """The family's small model with fixed-seed weights (only the generator calls this)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _small_model(family)
        if family == "roi_hyperprior":
            # the ROI projections start at zero: give them weights, so the ROI map shapes the stream
            for name, p in model.named_parameters():
                if name.startswith("proj_"):
                    p.data.copy_(0.5 * torch.randn_like(p))
        if family in GAIN_IMAGE:
            # the gain conditioning starts at zero (the plain codec): give it weights, so the map shapes both transforms
            for name, p in model.named_parameters():
                if "trunk" in name or "_gain." in name:
                    p.data.copy_(0.3 * torch.randn_like(p))
        if family in LEARNED_IMAGE + GAIN_IMAGE:
            # at initialisation y is ~0.07: every symbol would be 0 and the stream a few bytes that no
            # change of a quantisation step could alter; scale the analyses' last layers up instead
            for name, gain in (("g_a", 50.0), ("h_a", 5.0), ("h_a_obj", 5.0)):
                if hasattr(model, name):
                    last = [m for m in getattr(model, name).modules() if isinstance(m, torch.nn.Conv2d)][-1]
                    last.weight.data.mul_(gain)
                    last.bias.data.mul_(gain)
    return model.eval()


# Entropy-coding tables: stored in weights/<family>.tables.pt, computed once from the weights, as
# vcm stores them with every checkpoint and zoo file (update() computes other tables on other CPUs).
_TABLES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def _weights_only(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state without entropy tables, floats rounded to float16 (as the zoo ships them; half the size)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items() if not k.endswith(_TABLES)}


def _load_weights(family: str) -> torch.nn.Module:
    model = _small_model(family).eval()
    state = torch.load(WEIGHTS / f"{family}.pt", map_location="cpu", weights_only=True)
    # nn.Module's own loader: CompressAI's wants the tables, which come next
    missing, unexpected = torch.nn.Module.load_state_dict(model, state, strict=False)
    if unexpected or any(not k.endswith(_TABLES) for k in missing):
        raise RuntimeError(f"weights/{family}.pt does not fit the {family} model: missing {missing}, unexpected {unexpected}")
    return model


def _write_tables(family: str) -> None:
    """Compute the family's tables once (only when absent: they are part of its goldens)."""
    path = WEIGHTS / f"{family}.tables.npz"
    if not path.is_file():
        model = _load_weights(family)
        model.update(force=True)
        # compressed: a 512-scale Gaussian table is 6.4 MB of int32, mostly the zeros that pad its rows
        np.savez_compressed(path, **{k: v.numpy() for k, v in model.state_dict().items() if k.endswith(_TABLES)})


def small_model(family: str) -> torch.nn.Module:
    """The family's small golden model: weights from ``weights/<family>.pt``, tables from ``<family>.tables.npz``."""
    from vcm.codecs.checkpoint import load_codec_state

    model = _load_weights(family)
    with np.load(WEIGHTS / f"{family}.tables.npz") as z:
        tables = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    load_codec_state(model, {**model.state_dict(), **tables})
    return model


# -------------------------------------------------------------------------------------------- coders
@dataclass
class Coder:
    """encode(input) -> bytes, decode(bytes) -> a tensor, an array or a dict of tensors."""

    encode: Callable
    decode: Callable


def _learned_image(model, name: str | None = None) -> Coder:
    from vcm.conditioning import codec_condition
    from vcm.evaluation.runners import LearnedImageRunner, to_float_batch

    runner = LearnedImageRunner(model, name=name)  # the stored tables, as every vcm entry point uses them

    def encode(image):
        targets = [{"boxes": torch.tensor(ROI_BOXES)}] if getattr(model, "needs_boxes", False) else None
        return runner.encode(image, cond=codec_condition(model, to_float_batch(image), targets))

    return Coder(encode, runner.decode)


def _learned_feature(model, name: str | None = None) -> Coder:
    from vcm.evaluation.runners import LearnedFeatureRunner

    runner = LearnedFeatureRunner(model, name=name)
    return Coder(lambda levels: runner.encode(levels, orig_hw=(64, 96)), runner.decode)


def _learned_image_roi(model, name: str | None = None, g_roi: float = 2.0, g_bg: float = 0.5) -> Coder:
    """ROI gain coding (vcm.codecs.roi_gain) with the fixed boxes ROI_BOXES."""
    from vcm.evaluation.runners import RoiGainRunner

    runner = RoiGainRunner([model], name or model.codec_name, [name or model.codec_name], roi_source="labels",
                           g_roi=g_roi, g_bg=g_bg)
    return Coder(lambda image: runner.encode(image, cond=torch.tensor(ROI_BOXES)), runner.decode)


def _anchor(target: str, **params) -> Callable[[], Coder]:
    def build() -> Coder:
        import importlib

        module, cls = target.rsplit(".", 1)
        anchor = getattr(importlib.import_module(module), cls)(**params)
        if anchor.kind == "image" and getattr(anchor, "roi_source", None) is not None:
            return Coder(lambda image: anchor.encode(image.permute(1, 2, 0).contiguous().numpy(),
                                                     boxes=torch.tensor(ROI_BOXES)), anchor.decode)
        if anchor.kind == "image":
            return Coder(lambda image: anchor.encode(image.permute(1, 2, 0).contiguous().numpy()), anchor.decode)
        return Coder(anchor.encode, anchor.decode)

    return build


def _zoo_roi(name: str) -> Callable[[], Coder]:
    def build() -> Coder:
        from vcm.codecs.checkpoint import load_codec_checkpoint

        model, meta = load_codec_checkpoint(f"zoo:{name}")
        return _learned_image_roi(model, meta.get("codec_name"))

    return build


def _zoo(name: str) -> Callable[[], Coder]:
    def build() -> Coder:
        from vcm.evaluation.runners import FeatureRunner, runner_from_checkpoint

        runner = runner_from_checkpoint(f"zoo:{name}")
        if isinstance(runner, FeatureRunner):
            return Coder(lambda levels: runner.encode(levels, orig_hw=(64, 96)), runner.decode)
        from vcm.cli.bitstream import CodecSession

        session = CodecSession(f"zoo:{name}")
        target = {"boxes": torch.tensor(ROI_BOXES)} if session.needs_boxes else None
        return Coder(lambda image: session.compress(image, target), session.decompress)

    return build


@dataclass
class Case:
    """One golden: ``name`` (file stem), what it codes (``input``) and how (``build``)."""

    name: str
    family: str
    input: str
    build: Callable[[], Coder]
    container: str  # "vcm" (vcm.codecs.container) or "anchor" (vcm.anchors.base header)
    needs: tuple[str, ...] = ()  # FFmpeg codecs (encoder "w:<name>", decoder "r:<name>") it needs


LEARNED_IMAGE = ("factorized", "hyperprior", "mean_scale", "roi_hyperprior")
LEARNED_FEATURE = ("lmsfc", "ta_msf")
GAIN_IMAGE = ("gain_hyperprior",)  # coded with an ROI gain map (its transforms are conditioned on it)
ANCHORS = {  # name -> (target, params, needs)
    "jpeg": ("vcm.anchors.pillow.JpegAnchor", {"quality": 50}, ()),
    "webp": ("vcm.anchors.pillow.WebpAnchor", {"quality": 50}, ()),
    "hevc": ("vcm.anchors.hevc.HevcAnchor", {"qp": 32}, ("w:libx265", "r:hevc")),
    "hevc444": ("vcm.anchors.hevc.HevcAnchor", {"qp": 32, "chroma": "444"}, ("w:libx265", "r:hevc")),
    "hevc444_roi": ("vcm.anchors.hevc_roi.HevcRoiAnchor", {"qp": 32}, ("w:libx265", "r:hevc")),
    "av1": ("vcm.anchors.av1.Av1Anchor", {"qp": 40, "preset": 8}, ("w:libsvtav1", "r:libdav1d")),
    "feature_hevc": ("vcm.anchors.feature.FeatureHevcAnchor", {"qp": 32}, ("w:libx265", "r:hevc")),
}
FAMILIES = LEARNED_IMAGE + GAIN_IMAGE + LEARNED_FEATURE + tuple(ANCHORS)


def cases() -> list[Case]:
    """Every golden case: small models and anchors on each input, then every zoo codec."""
    out: list[Case] = []
    for family in LEARNED_IMAGE:
        for inp in ("synthetic", "kitti"):
            out.append(Case(f"{family}-{inp}", family, inp, lambda f=family: _learned_image(small_model(f)), "vcm"))
    for family in LEARNED_FEATURE:
        out.append(Case(f"{family}-levels", family, "levels", lambda f=family: _learned_feature(small_model(f)), "vcm"))
    for inp in ("synthetic", "kitti"):  # ROI gain coding (format 2 with boxes and gains in the file)
        out.append(Case(f"roi_gain-{inp}", "roi_gain", inp, lambda: _learned_image_roi(small_model("hyperprior")), "vcm"))
        for family in GAIN_IMAGE:
            out.append(Case(f"{family}-{inp}", family, inp, lambda f=family: _learned_image_roi(small_model(f)), "vcm"))
    for name, (target, params, needs) in ANCHORS.items():
        inputs = ("levels",) if name.startswith("feature_") else ("synthetic", "kitti")
        for inp in inputs:
            out.append(Case(f"{name}-{inp}", name, inp, _anchor(target, **params), "anchor", needs))
    from vcm.zoo import entries

    for name, e in sorted(entries().items()):
        if e.kind == "image_codec":
            for inp in ("synthetic", "kitti"):
                out.append(Case(f"zoo-{name}-{inp}", f"zoo:{name}", inp, _zoo(name), "vcm"))
            out.append(Case(f"zoo-{name}-roi-kitti", f"zoo:{name}", "kitti", _zoo_roi(name), "vcm"))
        elif e.kind == "feature_codec":
            out.append(Case(f"zoo-{name}-levels256", f"zoo:{name}", "levels256", _zoo(name), "vcm"))
    return out


def missing_codecs(case: Case) -> list[str]:
    """The FFmpeg codecs ``case`` needs that PyAV lacks here."""
    from vcm.anchors.pyav_io import codec_available

    return [n for n in case.needs if not codec_available(n[2:], n[0])]


# -------------------------------------------------------------------------------------------- hashes
def decoded_sha256(decoded) -> str:
    """sha256 of a decoded image (uint8, as [3,H,W]) or of decoded levels (float32, in level order)."""
    h = hashlib.sha256()
    if isinstance(decoded, dict):
        for k, v in decoded.items():
            h.update(k.encode())
            h.update(np.ascontiguousarray(v.detach().cpu().numpy().astype(np.float32)).tobytes())
        return h.hexdigest()
    if isinstance(decoded, np.ndarray):  # anchors: [H,W,3]
        decoded = torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1)
    arr = decoded.detach().cpu().numpy()
    if arr.dtype != np.uint8:
        raise TypeError(f"decoded image must be uint8, got {arr.dtype}")
    h.update(str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def versions() -> dict[str, str]:
    """Versions of what the bitstreams depend on (recorded with the goldens, for the record)."""
    import av
    import compressai
    import PIL

    return {"torch": torch.__version__, "compressai": compressai.__version__, "av": av.__version__,
            "pillow": PIL.__version__, "numpy": np.__version__}


def read_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {"inputs": {}, "cases": {}}


def file_of(case: Case) -> Path:
    return GOLDEN / "files" / f"{case.name}.{'vcm' if case.container == 'vcm' else 'anchor'}"


# A learned codec's decoded output depends on float convolutions (g_s), which differ slightly from CPU
# to CPU: its golden records the decoded output itself, compared within these tolerances, and the
# symbols exactly (the container's symbols check, verified by the decoder).
PIXEL_TOLERANCE = 2  # uint8 levels, per pixel
LEVEL_TOLERANCE = 1e-3  # feature levels: |a - b| <= LEVEL_TOLERANCE * (1 + |b|)


def reference_of(name: str, decoded) -> Path:
    """Where a learned golden's decoded output is kept: a PNG for an image, an npz for levels."""
    return GOLDEN / "files" / f"{name}.decoded.{'npz' if isinstance(decoded, dict) else 'png'}"


def write_reference(path: Path, decoded) -> None:
    from PIL import Image

    if isinstance(decoded, dict):
        np.savez_compressed(path, **{k: v.detach().cpu().numpy().astype(np.float32) for k, v in decoded.items()})
    else:
        Image.fromarray(np.ascontiguousarray(decoded.permute(1, 2, 0).numpy())).save(path, format="PNG")


def read_reference(path: Path):
    from PIL import Image

    if path.suffix == ".npz":
        with np.load(path) as z:
            return OrderedDict((k, torch.from_numpy(z[k].copy())) for k in z.files)
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).contiguous()


def within_tolerance(decoded, reference) -> str | None:
    """None when ``decoded`` matches ``reference`` within the tolerances above, else what differs."""
    if isinstance(reference, dict):
        if list(decoded) != list(reference):
            return f"levels {list(decoded)} != {list(reference)}"
        for k, ref in reference.items():
            got = decoded[k].detach().cpu().float()
            if got.shape != ref.shape:
                return f"{k}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
            excess = ((got - ref).abs() - LEVEL_TOLERANCE * (1 + ref.abs())).max().item()
            if excess > 0:
                return f"{k}: off by more than {LEVEL_TOLERANCE} (1 + |ref|) (excess {excess:.3g})"
        return None
    if tuple(decoded.shape) != tuple(reference.shape):
        return f"shape {tuple(decoded.shape)} != {tuple(reference.shape)}"
    worst = (decoded.int() - reference.int()).abs().max().item()
    return None if worst <= PIXEL_TOLERANCE else f"a pixel is off by {worst} levels (tolerance {PIXEL_TOLERANCE})"


# ------------------------------------------------------------------------------------------ generator
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.golden.make", description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="list the cases and whether each golden exists")
    p.add_argument("--force", nargs="+", default=[], metavar="NAME", help="rewrite these goldens (deliberate changes only)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    all_cases = {c.name: c for c in cases()}
    unknown = sorted(set(a.force) - set(all_cases))
    if unknown:
        print(f"unknown case(s) {unknown}; valid: {sorted(all_cases)}", file=sys.stderr)
        return 2
    manifest = read_manifest()
    if a.list:
        for name, c in all_cases.items():
            print(f"{'ok     ' if name in manifest['cases'] and file_of(c).is_file() else 'missing'} {name}")
        return 0

    _make_inputs()
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    for family in LEARNED_IMAGE + GAIN_IMAGE + LEARNED_FEATURE:
        if not (WEIGHTS / f"{family}.pt").is_file():
            torch.save(_weights_only(_seeded_model(family)), WEIGHTS / f"{family}.pt")
        _write_tables(family)
    kitti = kitti_input()
    if kitti is not None:
        sha = decoded_sha256(kitti)
        recorded = manifest["inputs"].get("kitti", {}).get("sha256")
        if recorded and recorded != sha:
            print(f"the KITTI crop differs from the recorded one ({sha} != {recorded}): is ../shared/data the same?",
                  file=sys.stderr)
            return 2
        manifest["inputs"]["kitti"] = {"frame": KITTI_FRAME, "crop_top_left_height_width": list(KITTI_CROP), "sha256": sha}
    manifest["inputs"]["synthetic"] = {"file": "inputs/synthetic.png", "sha256": decoded_sha256(synthetic_input())}
    manifest["inputs"]["levels"] = {"file": "inputs/levels.npz", "sha256": decoded_sha256(levels_input())}

    from vcm.anchors.base import HEADER_VERSION
    from vcm.codecs.container import FORMAT_VERSION

    (GOLDEN / "files").mkdir(exist_ok=True)
    written = skipped = 0
    for name, case in all_cases.items():
        if name in manifest["cases"] and file_of(case).is_file() and name not in a.force:
            continue
        if case.input == "kitti" and kitti is None:
            print(f"skip {name}: ../shared/data is absent")
            skipped += 1
            continue
        lacking = missing_codecs(case)
        if lacking:
            print(f"skip {name}: PyAV lacks {lacking}")
            skipped += 1
            continue
        coder = case.build()
        data = coder.encode(input_of(case.input))
        output = coder.decode(data)
        file_of(case).write_bytes(data)
        manifest["cases"][name] = {
            "file": str(file_of(case).relative_to(GOLDEN)), "family": case.family, "input": case.input,
            "container": case.container,
            "format_version": FORMAT_VERSION if case.container == "vcm" else HEADER_VERSION,
            "bytes": len(data), "bytes_sha256": sha256_bytes(data), "decoded_sha256": decoded_sha256(output),
            "versions": versions(),
        }
        if case.container == "vcm":
            from vcm.codecs.container import unpack

            write_reference(reference_of(name, output), output)
            manifest["cases"][name]["decoded_file"] = str(reference_of(name, output).relative_to(GOLDEN))
            manifest["cases"][name]["symbols_check"] = unpack(data).check
        print(f"wrote {file_of(case).relative_to(ROOT)} ({len(data)} bytes)")
        written += 1
    manifest["cases"] = dict(sorted(manifest["cases"].items()))
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{written} golden(s) written, {skipped} skipped, {len(manifest['cases'])} in {MANIFEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
