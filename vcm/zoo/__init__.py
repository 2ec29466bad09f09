"""vcm's model zoo: trained codecs and detectors shipped in the repository, loadable by name.

Each entry of ``vcm/zoo/registry.json`` names one weights file in ``vcm/zoo/weights/`` with its
sha256, what it is (kind, architecture, quality, lambda), how it was trained (the Hydra
config, the git commit, steps and minutes) and the metrics measured on a test split. A file whose
hash differs from the registry's is refused, never loaded.

Anywhere vcm takes a checkpoint path it also takes ``zoo:<name>``:

- ``vcm-eval codec=zoo codec.name=hyperprior-kitti-q4`` (or ``codec=checkpoint codec.ckpt=zoo:<name>``),
- ``vcm-compress --model hyperprior-kitti-q4 frame.png frame.vcm``,
- ``vcm-train ... init_from=zoo:hyperprior-kitti-q4`` (fine-tune from a zoo codec),
- ``detector=kitti_mobilenet_v2`` (its ``checkpoint`` is ``zoo:kitti_mobilenet_v2``).

Codec files are stripped training checkpoints (``{"vcm": metadata, "state_dict": {"codec.*": ...}}``,
floating-point tensors stored in float16); detector files are :func:`vcm.detectors.save_detector`
files, likewise in float16. The metrics in the registry are measured with the shipped (float16
rounded) weights.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vcm.errors import ConfigError

__all__ = ["REGISTRY", "ZOO_PREFIX", "ZooEntry", "ZooError", "entries", "entry", "resolve", "sha256_file", "weights_path"]

ZOO_DIR = Path(__file__).resolve().parent
REGISTRY = ZOO_DIR / "registry.json"
WEIGHTS_DIR = ZOO_DIR / "weights"
ZOO_PREFIX = "zoo:"
KINDS = ("image_codec", "feature_codec", "detector")


class ZooError(ConfigError):
    """An unknown zoo name, or a weights file that is missing or differs from the registry."""


@dataclass
class ZooEntry:
    """One registry entry (see the module docstring).

    Attributes:
        name: what users type (``zoo:<name>``).
        kind: ``image_codec``, ``feature_codec`` or ``detector``.
        file: the weights file, relative to ``vcm/zoo/``.
        sha256: of the weights file.
        architecture: e.g. ``hyperprior`` (codec name) or ``mobilenet_v2_fpn`` (detector backbone).
        quality, lmbda: the rate point of a codec (None for a detector).
        training: ``config`` (the Hydra config of the run), ``commit``, ``steps``, ``minutes``, ``from``.
        metrics: measured on ``metrics["split"]`` of ``metrics["dataset"]``.
    """

    name: str
    kind: str
    file: str
    sha256: str
    architecture: str
    quality: int | None = None
    lmbda: float | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return ZOO_DIR / self.file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_registry() -> dict[str, ZooEntry]:
    path = REGISTRY
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"zoo registry {path} is not valid JSON: {e}") from None
    out: dict[str, ZooEntry] = {}
    for i, item in enumerate(raw.get("models", [])):
        try:
            e = ZooEntry(**item)
        except TypeError as err:
            raise ZooError(f"zoo registry {path}: entry {i} is malformed ({err})") from None
        if e.kind not in KINDS:
            raise ZooError(f"zoo registry {path}: entry {e.name!r} has kind {e.kind!r}; expected one of {KINDS}")
        if e.name in out:
            raise ZooError(f"zoo registry {path}: the name {e.name!r} appears twice")
        out[e.name] = e
    return out


def entries(kind: str | None = None) -> dict[str, ZooEntry]:
    """Registry entries by name (of one ``kind`` if given)."""
    found = _read_registry()
    return {n: e for n, e in found.items() if kind is None or e.kind == kind}


def entry(name: str) -> ZooEntry:
    """The entry called ``name``.

    Raises:
        ZooError: no such entry (the message lists the valid names).
    """
    found = entries()
    if name not in found:
        valid = ", ".join(sorted(found)) or "(the registry is empty)"
        raise ZooError(f"no zoo model called {name!r}; valid: {valid}")
    return found[name]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_path(name: str) -> Path:
    """The verified weights file of zoo model ``name``.

    Raises:
        ZooError: unknown name, missing file, or a file whose sha256 differs from the registry's.
    """
    e = entry(name)
    path = e.path
    if not path.is_file():
        raise ZooError(f"zoo model {name!r}: weights file {path} is missing (git checkout -- {path} restores it)")
    actual = sha256_file(path)
    if actual != e.sha256:
        raise ZooError(f"zoo model {name!r}: {path} has sha256 {actual[:16]}..., the registry says {e.sha256[:16]}... "
                       f"(modified or corrupt file; git checkout -- {path} restores it)")
    return path


def resolve(spec: str | os.PathLike) -> Path:
    """A checkpoint path, or ``zoo:<name>`` resolved to its verified weights file."""
    text = str(spec)
    if text.startswith(ZOO_PREFIX):
        return weights_path(text[len(ZOO_PREFIX):])
    return Path(text).expanduser()


def is_zoo_spec(spec: Any) -> bool:
    """Whether ``spec`` names a zoo model (``zoo:<name>``)."""
    return isinstance(spec, str) and spec.startswith(ZOO_PREFIX)
