"""vcm's model zoo: trained codecs and detectors, loadable by name.

Each entry of ``vcm/zoo/registry.json`` (shipped in the package) names one weights file with its
sha256, what it is (kind, architecture, rate point) and how it was trained (the Hydra config, the
git commit, steps and minutes) and the metrics measured on a test split. The weights are not in the
package; :func:`weights_path` looks for ``<name>.pt`` in this order:

1. ``$VCM_ZOO_DIR``, a folder holding the files;
2. ``vcm/zoo/weights/`` of a checkout (a clone works offline);
3. the user cache, :func:`cache_dir` (``$VCM_ZOO_CACHE``, default ``~/.cache/vcm/zoo``), filled by
   ``vcm-zoo fetch <name|all> --from <URL or folder>`` or, when ``$VCM_ZOO_URL`` is set, on first use.

The first file found is used, and only if its sha256 is the registry's: a modified, truncated or
other file is refused in one line, never loaded. A download goes to a temporary file in the cache
and takes its name only once its hash matches, so the cache never holds a partial file.

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
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vcm.errors import ConfigError

__all__ = ["REGISTRY", "ZOO_PREFIX", "ZooEntry", "ZooError", "cache_dir", "entries", "entry", "fetch", "find_weights",
           "resolve", "search_dirs", "sha256_file", "weights_path"]

ZOO_DIR = Path(__file__).resolve().parent
REGISTRY = ZOO_DIR / "registry.json"
WEIGHTS_DIR = ZOO_DIR / "weights"
ZOO_PREFIX = "zoo:"
KINDS = ("image_codec", "feature_codec", "detector")
#: Environment: a folder holding the weights files (searched first).
ZOO_DIR_ENV = "VCM_ZOO_DIR"
#: Environment: where weights are fetched from on first use (a URL or a folder).
ZOO_URL_ENV = "VCM_ZOO_URL"
#: Environment: the user cache of fetched weights (default ``~/.cache/vcm/zoo``).
ZOO_CACHE_ENV = "VCM_ZOO_CACHE"
_DOWNLOAD_TIMEOUT_S = 60


class ZooError(ConfigError):
    """An unknown zoo name, or a weights file that is missing or differs from the registry."""


@dataclass
class ZooEntry:
    """One registry entry (see the module docstring).

    Attributes:
        name: what users type (``zoo:<name>``).
        kind: ``image_codec``, ``feature_codec`` or ``detector``.
        file: the weights file in a checkout, relative to ``vcm/zoo/`` (``weights/<name>.pt``); elsewhere
            it is found by its file name (see :func:`find_weights`).
        sha256: of the weights file.
        architecture: e.g. ``hyperprior`` (codec name) or ``mobilenet_v2_fpn`` (detector backbone).
        quality: the codec's quality index, when its lambda is the one its model's table gives that
            quality (image codecs); None for a codec trained at a lambda of its own and for a detector.
        lmbda: the codec's rate-distortion lambda (None for a detector).
        training: how it was trained: ``steps``, ``minutes`` (wall clock), ``git_commit`` (of the
            training code), ``init_from`` (the start: ``zoo:<name>``, ``compressai:...``, a run
            ``run:<run>/checkpoints/<file>`` or None), ``run`` (the run's folder name), ``config`` (the
            run's resolved Hydra config), ``notes`` (free text, optional). Paths in them name no
            machine: relative to the repository (``vcm/conf/...``, ``../shared/data/kitti_mini``), to
            the runs' folder (``run:<run>/...``) or ``external:<file name>``.
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
        """Where a checkout keeps the file (``vcm/zoo/<file>``); :func:`find_weights` searches every place."""
        return ZOO_DIR / self.file

    @property
    def file_name(self) -> str:
        """The weights file's name (``<name>.pt``), as it is kept outside a checkout."""
        return Path(self.file).name

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


#: the kinds a codec is expected to be
CODEC_KINDS = ("image_codec", "feature_codec")


def entry(name: str, kinds: Sequence[str] | None = None) -> ZooEntry:
    """The entry called ``name`` (of one of ``kinds``, when given).

    Raises:
        ZooError: no such entry: the message lists the valid names of those kinds and the closest one.
    """
    from vcm.utils.names import did_you_mean

    found = entries()
    valid = sorted(n for n, e in found.items() if kinds is None or e.kind in kinds)
    if name not in valid:
        what = "model" if kinds is None else " or ".join(k.replace("_", " ") for k in kinds)
        other = f" ({name!r} is a {found[name].kind.replace('_', ' ')})" if name in found else ""
        raise ZooError(f"no zoo {what} called {name!r}{other}{did_you_mean(name, valid)}; "
                       f"valid: {', '.join(valid) or '(the registry is empty)'}")
    return found[name]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """The user cache of fetched weights: ``$VCM_ZOO_CACHE``, else ``$XDG_CACHE_HOME/vcm/zoo``
    (``~/.cache/vcm/zoo``)."""
    if os.environ.get(ZOO_CACHE_ENV):
        return Path(os.environ[ZOO_CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vcm" / "zoo"


def _in_git_checkout(zoo_dir: Path) -> bool:
    """Whether ``vcm/zoo`` is that of a git checkout (``.git`` beside ``vcm/``), not an installed package."""
    return (zoo_dir.resolve().parents[1] / ".git").exists()


def search_dirs() -> list[tuple[str, Path]]:
    """The places weights are looked for, in order, as ``(label, folder)``."""
    places = []
    if os.environ.get(ZOO_DIR_ENV):
        places.append((ZOO_DIR_ENV, Path(os.environ[ZOO_DIR_ENV]).expanduser()))
    places.append(("checkout", WEIGHTS_DIR))
    places.append(("cache", cache_dir()))
    return places


def _candidates(e: ZooEntry) -> list[tuple[str, Path]]:
    return [(label, e.path if label == "checkout" else folder / e.file_name) for label, folder in search_dirs()]


def find_weights(name: str) -> tuple[str, Path] | None:
    """The first place holding zoo model ``name``'s file, as ``(label, path)``, unverified; None if none does."""
    e = entry(name)
    return next(((label, p) for label, p in _candidates(e) if p.is_file()), None)


def _how_to_get(e: ZooEntry) -> str:
    """The advice of a missing or refused file, for the way vcm was installed."""
    advice = f"fetch it with `vcm-zoo fetch {e.name} --from <URL or folder>`, set {ZOO_URL_ENV}=<URL> to fetch on first use, " \
             f"or set {ZOO_DIR_ENV} to a folder holding {e.file_name}"
    if _in_git_checkout(ZOO_DIR):
        advice = f"`git checkout -- {e.path}` restores the checkout's copy; or {advice}"
    return advice


def weights_path(name: str) -> Path:
    """The verified weights file of zoo model ``name`` (fetched into the cache from ``$VCM_ZOO_URL`` when
    no place holds it and that variable is set).

    Raises:
        ZooError: unknown name, no file anywhere, a failed download, or a file whose sha256 differs from
            the registry's.
    """
    e = entry(name)
    found = find_weights(name)
    if found is None:
        source = os.environ.get(ZOO_URL_ENV)
        if source:
            print(f"vcm zoo: fetching {e.file_name} from {source} into {cache_dir()}", file=sys.stderr, flush=True)
            return fetch(name, source)
        looked = ", ".join(str(p) for _, p in _candidates(e))
        raise ZooError(f"zoo model {name!r}: weights file {e.file_name} is missing (looked in {looked}); {_how_to_get(e)}")
    label, path = found
    actual = sha256_file(path)
    if actual != e.sha256:
        fix = _how_to_get(e) if label == "checkout" else \
            f"delete it, then `vcm-zoo fetch {e.name} --from <URL or folder>` (or set {ZOO_URL_ENV})"
        raise ZooError(f"zoo model {name!r}: {path} has sha256 {actual[:16]}..., the registry says {e.sha256[:16]}... "
                       f"(modified, truncated or another file); {fix}")
    return path


def _open_source(source: str, file_name: str):
    """A readable binary stream of ``file_name`` under ``source`` (an http(s)/file URL or a folder)."""
    if "://" in source:
        url = source.rstrip("/") + "/" + urllib.request.pathname2url(file_name)
        try:
            return urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S), url
        except urllib.error.HTTPError as err:
            raise ZooError(f"cannot fetch {url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            raise ZooError(f"cannot fetch {url}: {getattr(err, 'reason', err)}") from None
    path = Path(source).expanduser() / file_name
    if not path.is_file():
        raise ZooError(f"cannot fetch {file_name}: {path} does not exist")
    return open(path, "rb"), str(path)


def fetch(name: str, source: str, dest: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Fetch zoo model ``name``'s weights from ``source`` into ``dest`` (default :func:`cache_dir`), verified.

    The bytes go to a temporary file beside the destination while their sha256 is computed; the file
    takes its name only when the hash is the registry's, so ``dest`` never holds a partial or wrong file.

    Args:
        name: a registry name.
        source: an ``http://``, ``https://`` or ``file://`` URL, or a folder, holding ``<name>.pt``.
        dest: the folder to fill.
        force: fetch even when ``dest`` already holds a verified copy.

    Returns:
        The verified file in ``dest``.

    Raises:
        ZooError: unknown name, unreachable source, or bytes whose sha256 differs from the registry's
            (nothing is written then).
    """
    e = entry(name)
    folder = Path(dest).expanduser() if dest is not None else cache_dir()
    target = folder / e.file_name
    if not force and target.is_file() and sha256_file(target) == e.sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    stream, where = _open_source(source, e.file_name)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{e.file_name}.", suffix=".part")
    try:
        with stream, os.fdopen(fd, "wb") as out:
            try:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            except (urllib.error.URLError, OSError) as err:
                raise ZooError(f"zoo model {name!r}: fetching {where} failed ({err}); nothing written") from None
        actual = digest.hexdigest()
        if actual != e.sha256:
            raise ZooError(f"zoo model {name!r}: {where} has sha256 {actual[:16]}..., the registry says {e.sha256[:16]}... "
                           "(a modified or other file); refused, nothing written")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; a fetched file is as any other the user writes
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def resolve(spec: str | os.PathLike) -> Path:
    """A checkpoint path, or ``zoo:<name>`` resolved to its verified weights file."""
    text = str(spec)
    if text.startswith(ZOO_PREFIX):
        return weights_path(text[len(ZOO_PREFIX):])
    return Path(text).expanduser()


def is_zoo_spec(spec: Any) -> bool:
    """Whether ``spec`` names a zoo model (``zoo:<name>``)."""
    return isinstance(spec, str) and spec.startswith(ZOO_PREFIX)
