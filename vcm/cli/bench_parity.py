"""``python -m vcm.cli.bench parity`` (``make bench-parity``): bf16-mixed + channels-last vs fp32 training
of the same hyperprior from the same seeds, measured with real bitstreams (:mod:`vcm.bench.parity`).

    python -m vcm.cli.bench parity              # make bench-parity: seeds 0 and 1, 4 x 2,000 steps (about 50 min on 2 cores)
    python -m vcm.cli.bench parity --seeds 0    # one pair only
    python -m vcm.cli.bench parity --fp32-modules h_a,h_s g_a,g_s   # + bf16 runs with these parts in fp32 (seed 0)
    python -m vcm.cli.bench parity --dry-run    # print the commands only
    python -m vcm.cli.bench parity --steps 3 --dataset kitti_tiny --seeds 0 --out /tmp/parity   # a smoke run
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from vcm.bench.parity import (
    DATASETS,
    DEFAULT_OUT,
    format_goal,
    format_value,
    render_markdown,
    run_parity,
)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vcm.cli.bench parity", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--steps", type=int, default=2000, help="training steps of each run (default 2000)")
    p.add_argument("--dataset", default="kitti_mini", choices=DATASETS,
                   help="data config to train on (train split) and to measure on (val split) (default kitti_mini)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="one bf16 / fp32 pair per seed (default 0 1: the seed-to-seed difference is the noise floor)")
    p.add_argument("--fp32-modules", nargs="+", default=[], metavar="MODULES",
                   help="also train, at the first seed, bf16 runs with these codec submodules in fp32 "
                        "(model.fp32_modules), e.g. h_a,h_s g_a,g_s: which part a difference comes from")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"study folder (default {DEFAULT_OUT})")
    p.add_argument("--jobs", type=int, default=1, choices=(1, 2),
                   help="train the runs one after the other (1) or two at a time (2)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    if len(set(a.seeds)) != len(a.seeds):
        p.error(f"--seeds must differ, got {a.seeds}")
    for mods in a.fp32_modules:
        if not all(m.replace("_", "").replace(".", "").isalnum() for m in mods.split(",")):
            p.error(f"--fp32-modules {mods!r}: expected comma-separated submodule names, e.g. h_a,h_s")
    return a


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vcm.cli.bench parity``; returns the exit code."""
    from vcm.utils.io import atomic_write_json, atomic_write_text

    argv = sys.argv[2:] if argv is None else list(argv)
    a = _parse(argv)
    command = shlex.join(["python", "-m", "vcm.cli.bench", "parity", *argv])
    rc, result = run_parity(a, command)
    if result is None:
        return rc
    out = Path(a.out).resolve()
    atomic_write_json(out / "parity.json", result)
    atomic_write_text(out / "precision.md", render_markdown(result))
    print("\n=== bf16-mixed + channels-last vs fp32 training (parity) ===")
    for name, r in result["runs"].items():
        m = r["metrics"]
        print(f"  {name:<24} PSNR {m['psnr']:.3f} dB   bpp {m['bpp_real']:.4f}   ({r['num_images']} {a.dataset} val frames)")
    for r in result["summary"]:
        print(f"  {r['check']:<46} {format_value(r['value'], r['unit']):>10}   {format_goal(r['goal'], r['unit']):<15} {r['result']}")
    print(f"\nwrote {out / 'parity.json'} and {out / 'precision.md'}")
    return rc
