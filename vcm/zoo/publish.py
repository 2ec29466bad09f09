"""Put a trained codec or detector into vcm's zoo, and attach the metrics measured with it.

The commands are ``vcm-zoo add`` and ``vcm-zoo metrics`` (:mod:`vcm.cli.zoo_store`). :func:`add` writes
``vcm/zoo/weights/<name>.pt`` (floating-point tensors in float16, the training metadata kept,
optimiser state dropped) and its registry entry (sha256, kind, architecture, rate point, the run's
Hydra config, git commit, steps, minutes), with provenance that names no machine
(:func:`machine_free_training`). :func:`set_metrics` copies a vcm-eval record's metrics (which must
have been measured with this very file: the record names the zoo model) into the entry. Both rewrite
the registry atomically; nothing is half-written.
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from vcm import zoo
from vcm.codecs.base import ENTROPY_BOUND_SUFFIXES
from vcm.errors import ConfigError
from vcm.utils.checkpoint_meta import DETECTOR_BUILD_KEYS, META_KEY
from vcm.utils.io import atomic_write_bytes, atomic_write_text
from vcm.zoo import ZooEntry, ZooError, _read_registry, sha256_file

# What a registry entry keeps of a vcm-eval record.
_RECORD_KEYS = ("dataset", "split", "num_images", "git_commit")


def _half(state: dict[str, torch.Tensor], keep_fp32: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Floating-point tensors in float16 (those ending with ``keep_fp32`` as they are), on the CPU."""
    return {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() and not k.endswith(keep_fp32)
                else v.detach().to("cpu")).contiguous()
            for k, v in state.items()}


#: entries a zoo file keeps in fp32: the Gaussian scale table and the entropy models' constant bounds
_FP32_SUFFIXES = ("scale_table", *ENTROPY_BOUND_SUFFIXES)


def with_entropy_tables(meta: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (a zoo file's ``codec.*`` weights, as shipped) with the entropy tables computed from it.

    The tables are computed once, here, from the weights exactly as the file ships them (float16),
    and stored in the file: every machine that loads it codes with these tables (``update()``
    computes other ones on other CPUs).
    """
    import hydra
    from omegaconf import OmegaConf

    from vcm.codecs.checkpoint import (
        CODER_TABLE_SUFFIXES,
        ENTROPY_TABLE_SUFFIXES,
        codec_state_dict,
        load_codec_state,
    )

    model = hydra.utils.instantiate(OmegaConf.create(meta["codec"]))
    weights = {k: v for k, v in state.items() if not k.endswith(CODER_TABLE_SUFFIXES)}
    load_codec_state(model, codec_state_dict(weights))
    model.update(force=True)
    tables = {f"codec.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
              if k.endswith(ENTROPY_TABLE_SUFFIXES)}
    for key, table in tables.items():
        if key in weights and not torch.equal(weights[key], table):
            raise ZooError(f"{key}: the stored scale table differs from the one update() builds here; not overwritten")
    return {**weights, **tables}


def store_tables(name: str) -> ZooEntry:
    """Re-publish zoo codec ``name`` with its entropy tables in the file (weights unchanged).

    Zoo files written before the tables were stored leave them out; this writes the file again with
    them, and the registry's sha256 with a note.
    """
    found = _read_registry()
    if name not in found or found[name].kind == "detector":
        raise ZooError(f"no zoo codec called {name!r}")
    e = found[name]
    path = zoo.weights_path(name)
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["state_dict"] = with_entropy_tables(state[META_KEY], state["state_dict"])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    e.sha256 = sha256_file(path)
    note = "entropy tables stored in the file (weights unchanged), so every machine codes with the same tables"
    notes = e.training.get("notes")
    if not notes or note not in notes:
        e.training["notes"] = f"{notes}; {note}" if notes else note
    found[name] = e
    _write_registry(found)
    return e


def _run_config(ckpt: Path) -> dict[str, Any]:
    """The Hydra config vcm-train saved next to the checkpoint's run (``<run>/config.yaml``)."""
    config = ckpt.resolve().parent.parent / "config.yaml"
    return yaml.safe_load(config.read_text()) if config.is_file() else {}


def _under(path: str, folder: str | None) -> bool:
    return bool(folder) and (path == folder or path.startswith(folder.rstrip("/") + "/"))


def machine_free_path(value: str, root: str | None, shared: str | None, runs: str | None) -> str:
    """An absolute path of the training machine, as the registry keeps it.

    Args:
        value: any string; only an absolute path is rewritten.
        root: the repository the run used (``paths.root_dir``).
        shared: its shared-data folder (``paths.shared_dir``).
        runs: the folder holding the run folders (the run's ``paths.output_dir``'s parent).

    Returns:
        Relative to the repository (``vcm/conf/...``, ``../shared/data/kitti_mini``), ``run:<run>/...``
        for a path in a run folder, ``external:<file name>`` for any other path; ``value`` itself
        when it is no absolute path.
    """
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = os.path.normpath(value)
    root, shared, runs = (os.path.normpath(f) if f else None for f in (root, shared, runs))
    if _under(path, root) or _under(path, shared):
        return PurePosixPath(os.path.relpath(path, root)).as_posix()
    if _under(path, runs):
        return "run:" + PurePosixPath(os.path.relpath(path, runs)).as_posix()
    return "external:" + os.path.basename(path)


def _map_strings(value: Any, fn) -> Any:
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return fn(value) if isinstance(value, str) else value


def run_name(training: dict[str, Any]) -> str | None:
    """The name of the run folder a registry entry's ``training`` comes from (``run``, else the folder
    of its config's ``paths.output_dir``)."""
    if training.get("run"):
        return str(training["run"])
    out = ((training.get("config") or {}).get("paths") or {}).get("output_dir")
    return os.path.basename(os.path.normpath(out)) if isinstance(out, str) and out.startswith("/") else None


def machine_free_training(training: dict[str, Any], published_runs: dict[str, str]) -> dict[str, Any]:
    """``training`` of a registry entry with every machine path rewritten (:func:`machine_free_path`),
    ``run`` set, and an ``init_from`` that is a published run's checkpoint named ``zoo:<name>``.

    Args:
        training: the entry's ``training`` (paths as the run recorded them, or already rewritten).
        published_runs: ``{run folder name: zoo name}`` of the entries already published.
    """
    paths = (training.get("config") or {}).get("paths") or {}
    out = paths.get("output_dir")
    runs = os.path.dirname(os.path.normpath(out)) if isinstance(out, str) and out.startswith("/") else None
    run = run_name(training)
    clean = _map_strings(training, lambda s: machine_free_path(s, paths.get("root_dir"), paths.get("shared_dir"), runs))

    def zoo_start(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("run:"):
            start_run = PurePosixPath(value[len("run:"):]).parts[0]
            if start_run in published_runs and start_run != run:
                return f"{zoo.ZOO_PREFIX}{published_runs[start_run]}"
        return value

    clean["init_from"] = zoo_start(clean.get("init_from"))
    if isinstance(clean.get("config"), dict) and "init_from" in clean["config"]:
        clean["config"]["init_from"] = zoo_start(clean["config"]["init_from"])
    if run:
        clean["run"] = run
    return clean


def codec_quality(quality: int | None, lmbda: float | None, lambdas: dict[str, float] | None) -> int | None:
    """The quality index a codec entry records: ``quality`` when the model's lambda table gives that
    quality the codec's lambda, None for a codec trained at a lambda of its own."""
    if quality is None or lmbda is None:
        return quality
    table_lmbda = (lambdas or {}).get(f"q{quality}")
    return quality if table_lmbda is not None and math.isclose(float(table_lmbda), float(lmbda)) else None


def _write_registry(found: dict[str, ZooEntry]) -> None:
    models = [found[n].to_dict() for n in sorted(found)]
    atomic_write_text(zoo.REGISTRY, json.dumps({"format": "vcm.zoo", "version": 1, "models": models}, indent=1) + "\n")


def add(ckpt: str | Path, name: str, minutes: float | None = None, notes: str | None = None,
        git_commit: str | None = None) -> ZooEntry:
    """Add (or replace) zoo model ``name`` from a vcm-train checkpoint.

    Args:
        ckpt: a codec or detector checkpoint written by vcm-train.
        name: the zoo name (letters, digits, ``-``, ``_`` and ``.``, not first).
        minutes: wall-clock training minutes (recorded).
        notes: free text recorded with the training details (e.g. the base run it fine-tunes).
        git_commit: the commit of the code that trained it, when the checkpoint does not record one.

    Returns:
        The new entry (metrics empty until :func:`set_metrics`).
    """
    ckpt = Path(ckpt)
    if not name or name[0] == "." or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"zoo name {name!r}: expected letters, digits, '-', '_' and '.' (not first) only")
    if not ckpt.is_file():
        raise ConfigError(f"checkpoint not found: {ckpt}")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    meta = dict(state.get(META_KEY) or {})
    kind = meta.get("kind")
    buffer = io.BytesIO()
    if kind == "detector":
        from vcm.detectors import load_detector_state

        weights, config = load_detector_state(ckpt)
        config.update({k: v for k, v in (meta.get("detector") or {}).items() if k in DETECTOR_BUILD_KEYS})
        config["class_names"] = list(meta.get("class_names") or [])
        # Frozen BatchNorm: the detector is rebuilt with the pretrained-backbone variant.
        config["weights"] = (meta.get("detector") or {}).get("weights")
        torch.save({"format": "vcm.detector", "version": 1, "config": config, "state_dict": _half(weights)}, buffer)
        architecture, quality, lmbda, entry_kind = str(config.get("backbone")), None, None, "detector"
    elif kind in ("image", "feature"):
        from vcm.codecs.checkpoint import CODER_TABLE_SUFFIXES

        codec_state = {k: v for k, v in state["state_dict"].items()
                       if k.startswith("codec.") and not k.endswith(CODER_TABLE_SUFFIXES)}
        meta["zoo_name"] = name
        if git_commit:
            meta["git_commit"] = git_commit
        torch.save({META_KEY: meta, "state_dict": with_entropy_tables(meta, _half(codec_state, keep_fp32=_FP32_SUFFIXES))},
                   buffer)
        lmbda = meta.get("lmbda")
        architecture = str(meta.get("codec_name"))
        quality = codec_quality(meta.get("quality"), lmbda, (meta.get("model") or {}).get("lambdas"))
        entry_kind = f"{kind}_codec"
    else:
        raise ConfigError(f"{ckpt} is not a vcm codec or detector checkpoint (its 'vcm' metadata has kind={kind!r})")
    path = zoo.WEIGHTS_DIR / f"{name}.pt"
    atomic_write_bytes(path, buffer.getvalue())
    training = {"steps": int(state.get("global_step", 0)), "minutes": minutes,
                "git_commit": git_commit or meta.get("git_commit"),
                "init_from": meta.get("init_from"), "run": ckpt.resolve().parent.parent.name, "config": _run_config(ckpt)}
    if notes:
        training["notes"] = notes
    found = _read_registry()
    training = machine_free_training(training, {run_name(e.training): n for n, e in found.items() if run_name(e.training)})
    found[name] = ZooEntry(name=name, kind=entry_kind, file=str(path.relative_to(zoo.ZOO_DIR)), sha256=sha256_file(path),
                           architecture=architecture, quality=quality, lmbda=lmbda, training=training)
    _write_registry(found)
    return found[name]


def set_metrics(name: str, record_path: str | Path) -> ZooEntry:
    """Copy the metrics of a vcm-eval record (measured with zoo model ``name``) into its entry."""
    found = _read_registry()
    if name not in found:
        raise ZooError(f"no zoo model called {name!r}; valid: {', '.join(sorted(found))}")
    record = json.loads(Path(record_path).read_text())
    config = record.get("config") or {}
    used = {str((config.get("codec") or {}).get("name")), str((config.get("codec") or {}).get("ckpt")),
            str((config.get("detector") or {}).get("checkpoint"))}
    if name not in used and f"zoo:{name}" not in used:
        raise ConfigError(f"{record_path} was not measured with zoo model {name!r} (its config uses {sorted(used)})")
    e = found[name]
    e.metrics = {**{k: record.get(k) for k in _RECORD_KEYS}, **{k: v for k, v in record["metrics"].items()}}
    _write_registry(found)
    return e
