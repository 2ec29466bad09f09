"""``vcm-zoo``: the zoo's weights files: fetch them into the user cache, list where each is found,
publish a trained model.

    vcm-zoo fetch hyperprior-kitti-q3 --from https://example.org/vcm-zoo   # or a folder; NAME may be "all"
    vcm-zoo list                                                           # every model, where its file is
    vcm-zoo add <run>/checkpoints/best.ckpt --name hyperprior-kitti-q4    # publish (vcm/zoo/weights + registry)
    vcm-zoo metrics hyperprior-kitti-q4 <vcm-eval record .json>           # attach its measured metrics

``fetch`` writes into the cache (``$VCM_ZOO_CACHE``, default ``~/.cache/vcm/zoo``; ``--to`` another
folder) and checks every file's sha256 against the registry before it takes its name. Exit codes:
0 done, 2 a user error (unknown name, unreachable source, a file that is not the registry's).
"""
from __future__ import annotations

import argparse
import sys

from vcm import zoo
from vcm.errors import ConfigError

PROG = "vcm-zoo"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].replace("``", ""))
    sub = p.add_subparsers(dest="command", required=True)
    a_fetch = sub.add_parser("fetch", help="fetch weights into the user cache, sha256-checked")
    a_fetch.add_argument("names", nargs="+", metavar="NAME", help="zoo names, or 'all'")
    a_fetch.add_argument("--from", dest="source", required=True, metavar="URL_OR_FOLDER",
                         help="http(s):// or file:// URL, or a folder, holding <name>.pt")
    a_fetch.add_argument("--to", dest="dest", metavar="FOLDER", help=f"the folder to fill (default: the cache, {zoo.cache_dir()})")
    a_fetch.add_argument("--force", action="store_true", help="fetch again even when a verified copy is there")
    sub.add_parser("list", help="every zoo model and where its weights file is found")
    a_add = sub.add_parser("add", help="add a checkpoint to the zoo (vcm/zoo/weights and the registry)")
    a_add.add_argument("ckpt")
    a_add.add_argument("--name", required=True)
    a_add.add_argument("--minutes", type=float)
    a_add.add_argument("--notes")
    a_add.add_argument("--git-commit", help="commit of the training code, when the checkpoint records none")
    a_met = sub.add_parser("metrics", help="attach a vcm-eval record's metrics to a zoo entry")
    a_met.add_argument("name")
    a_met.add_argument("record")
    return p


def _fetch(names: list[str], source: str, dest: str | None, force: bool) -> None:
    wanted = sorted(zoo.entries()) if names == ["all"] else names
    for name in wanted:
        path = zoo.fetch(name, source, dest=dest, force=force)
        print(f"{name}: {path} (sha256 verified)")


def _list() -> None:
    for name, e in sorted(zoo.entries().items()):
        found = zoo.find_weights(name)
        where = f"{found[1]} ({found[0]})" if found else "not found (vcm-zoo fetch)"
        print(f"{name:<22} {e.kind:<14} {where}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vcm-zoo``; returns the exit code."""
    a = _parser().parse_args(argv)
    try:
        if a.command == "fetch":
            _fetch(a.names, a.source, a.dest, a.force)
        elif a.command == "list":
            _list()
        else:
            from vcm.zoo import publish

            e = (publish.add(a.ckpt, a.name, minutes=a.minutes, notes=a.notes, git_commit=a.git_commit)
                 if a.command == "add" else publish.set_metrics(a.name, a.record))
            print(f"{e.name}: {e.kind} {e.architecture} {e.file} sha256 {e.sha256[:16]}...")
    except (ConfigError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
