"""Put a trained codec or detector into vcm's zoo, and attach the metrics measured with it.

    python -m vcm.zoo.publish add <run>/checkpoints/best.ckpt --name hyperprior-kitti-q4
    python -m vcm.zoo.publish metrics hyperprior-kitti-q4 <vcm-eval record .json>

``add`` writes ``vcm/zoo/weights/<name>.pt`` (floating-point tensors in float16, the training
metadata kept, optimiser state dropped) and its registry entry (sha256, kind, architecture, rate
point, the run's Hydra config, git commit, steps, minutes). ``metrics`` copies a vcm-eval record's
metrics (which must have been measured with this very file: the record names the zoo model) into
the entry. Both rewrite the registry atomically; nothing is half-written.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from vcm import zoo
from vcm.errors import ConfigError
from vcm.utils.io import atomic_write_bytes, atomic_write_text
from vcm.zoo import ZooEntry, ZooError, _read_registry, sha256_file

# What a registry entry keeps of a vcm-eval record.
_RECORD_KEYS = ("dataset", "split", "num_images", "git_commit")


def _half(state: dict[str, torch.Tensor], keep_fp32: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Floating-point tensors in float16 (those ending with ``keep_fp32`` as they are), on the CPU."""
    return {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() and not k.endswith(keep_fp32)
                else v.detach().to("cpu")).contiguous()
            for k, v in state.items()}


def _run_config(ckpt: Path) -> dict[str, Any]:
    """The Hydra config vcm-train saved next to the checkpoint's run (``<run>/config.yaml``)."""
    config = ckpt.resolve().parent.parent / "config.yaml"
    return yaml.safe_load(config.read_text()) if config.is_file() else {}


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
    meta = dict(state.get("vcm") or {})
    kind = meta.get("kind")
    buffer = io.BytesIO()
    if kind == "detector":
        from vcm.detectors import load_detector_state

        weights, config = load_detector_state(ckpt)
        config.update({k: v for k, v in (meta.get("detector") or {}).items() if k in ("backbone", "min_size", "max_size")})
        config["class_names"] = list(meta.get("class_names") or [])
        # Frozen BatchNorm: the detector is rebuilt with the pretrained-backbone variant.
        config["weights"] = (meta.get("detector") or {}).get("weights")
        torch.save({"format": "vcm.detector", "version": 1, "config": config, "state_dict": _half(weights)}, buffer)
        architecture, quality, lmbda, entry_kind = str(config.get("backbone")), None, None, "detector"
    elif kind in ("image", "feature"):
        from vcm.codecs.base import ENTROPY_BOUND_SUFFIXES
        from vcm.codecs.checkpoint import CODER_TABLE_SUFFIXES

        # The range coder's tables are left out: update() rebuilds them from the weights at load.
        codec_state = {k: v for k, v in state["state_dict"].items()
                       if k.startswith("codec.") and not k.endswith(CODER_TABLE_SUFFIXES)}
        meta["zoo_name"] = name
        if git_commit:
            meta["git_commit"] = git_commit
        torch.save({"vcm": meta, "state_dict": _half(codec_state, keep_fp32=("scale_table", *ENTROPY_BOUND_SUFFIXES))}, buffer)
        architecture, quality, lmbda = str(meta.get("codec_name")), meta.get("quality"), meta.get("lmbda")
        entry_kind = f"{kind}_codec"
    else:
        raise ConfigError(f"{ckpt} is not a vcm codec or detector checkpoint (its 'vcm' metadata has kind={kind!r})")
    path = zoo.WEIGHTS_DIR / f"{name}.pt"
    atomic_write_bytes(path, buffer.getvalue())
    training = {"steps": int(state.get("global_step", 0)), "minutes": minutes,
                "git_commit": git_commit or meta.get("git_commit"),
                "init_from": meta.get("init_from"), "config": _run_config(ckpt)}
    if notes:
        training["notes"] = notes
    found = _read_registry()
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vcm.zoo.publish", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a_add = sub.add_parser("add", help="add a checkpoint to the zoo")
    a_add.add_argument("ckpt")
    a_add.add_argument("--name", required=True)
    a_add.add_argument("--minutes", type=float)
    a_add.add_argument("--notes")
    a_add.add_argument("--git-commit", help="commit of the training code, when the checkpoint records none")
    a_met = sub.add_parser("metrics", help="attach a vcm-eval record's metrics to a zoo entry")
    a_met.add_argument("name")
    a_met.add_argument("record")
    a = p.parse_args(argv)
    try:
        if a.command == "add":
            e = add(a.ckpt, a.name, minutes=a.minutes, notes=a.notes, git_commit=a.git_commit)
        else:
            e = set_metrics(a.name, a.record)
    except (ConfigError, OSError) as err:
        print(f"vcm zoo: error: {err}", file=sys.stderr)
        return 2
    print(f"{e.name}: {e.kind} {e.architecture} {e.file} sha256 {e.sha256[:16]}...")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
