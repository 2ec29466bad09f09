"""Parity of the fast training settings: the same hyperprior trained in bf16-mixed + channels-last and in
fp32, both coded with real bitstreams on the validation frames.

    python -m vcm.cli.bench parity              # make bench-parity: 2 x 2,000 steps (about 45 min in all on 2 cores)
    python -m vcm.cli.bench parity --dry-run    # print the commands only
    python -m vcm.cli.bench parity --steps 3 --dataset kitti_tiny --out /tmp/parity   # a smoke run

Both runs are ``vcm-train experiment=zoo_hyperprior quality=3`` from the same seed, so they see the same
batches of 128-px crops of the kitti_mini training frames in the same order; only
``trainer.precision`` and ``model.channels_last`` differ. Each run is its own process, run through the
study runner (:class:`vcm.cli.study_runner.Study`: every command printed before it runs, a log per step,
a finished step kept when the command is run again). Each final checkpoint is then measured by
``vcm-eval codec=checkpoint codec.ckpt=... split=val`` (real bitstreams, fp32 coding whatever the training
precision). Goals: PSNR of the bf16 run within 0.1 dB of the fp32 run's, real bpp within 2 %.
Writes ``<out>/parity.json`` (atomically) and ``<out>/precision.md`` (Markdown for
``docs/results/precision.md``, naming the command). A missed goal is printed and recorded; the exit
code is non-zero only when a step failed.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("outputs") / "bench-parity"
DATASETS = ("kitti_mini", "kitti_tiny")
# The two runs, in the order they are trained; everything else is shared.
RUNS = {
    "fp32": ["trainer.precision=32-true", "model.channels_last=false"],
    "bf16": ["trainer.precision=bf16-mixed", "model.channels_last=true"],
}
GOALS = {"psnr_db": 0.1, "bpp_relative": 0.02}  # |bf16 - fp32| in dB; |bf16 / fp32 - 1|


def base_overrides(steps: int, dataset: str, seed: int) -> list[str]:
    """The ``vcm-train`` overrides both runs share."""
    return ["experiment=zoo_hyperprior", "quality=3", f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}", f"data={dataset}", f"seed={seed}",
            # the run validates at its last step already
            "validate_after_fit=false"]


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vcm.cli.bench parity", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="training steps of each run (default 2000)")
    p.add_argument("--dataset", default="kitti_mini", choices=DATASETS,
                   help="data config to train on (train split) and to measure on (val split) (default kitti_mini)")
    p.add_argument("--seed", type=int, default=0, help="seed of both runs (default 0)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"study folder (default {DEFAULT_OUT})")
    p.add_argument("--jobs", type=int, default=1, choices=(1, 2),
                   help="train the two runs one after the other (1) or at the same time (2)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    return a


def _train_seconds(study, point: str) -> float | None:
    done = [s for s in study.steps if s.get("point") == point and "seconds" in s]
    return done[-1]["seconds"] if done else None


def compare(runs: dict[str, dict[str, Any]]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Differences of the bf16 run against the fp32 run and one row per goal (PASS / FAIL)."""
    fast, ref = runs["bf16"]["metrics"], runs["fp32"]["metrics"]
    diff = {"psnr_db": fast["psnr"] - ref["psnr"], "bpp_relative": fast["bpp_real"] / ref["bpp_real"] - 1}
    rows = [
        {"check": "PSNR, bf16 - fp32", "value": diff["psnr_db"], "goal": GOALS["psnr_db"], "unit": "dB"},
        {"check": "real bpp, bf16 / fp32 - 1", "value": diff["bpp_relative"], "goal": GOALS["bpp_relative"], "unit": "%"},
    ]
    for r in rows:
        r["result"] = "PASS" if abs(r["value"]) <= r["goal"] else "FAIL"
    return diff, rows


def _fmt(value: float, unit: str) -> str:
    return f"{100 * value:+.2f} %" if unit == "%" else f"{value:+.3f} dB"


def _goal(goal: float, unit: str) -> str:
    return f"within ±{100 * goal:.0f} %" if unit == "%" else f"within ±{goal:g} dB"


def render_markdown(result: dict) -> str:
    """The Markdown of a parity result (for docs/results/precision.md)."""
    env, st = result["environment"], result["settings"]
    lines = [
        "### Parity: bf16-mixed + channels-last against fp32 training",
        "",
        (f"Measured with `{result['command']}` ({result['created'][:10]}; {env['cpu_model']}, {env['cpu_count']} cores, "
         f"torch {env['torch']}, CompressAI {env['compressai']}, Lightning {env['lightning']}, git {env['git_commit']}). "
         f"Both runs: `vcm-train {' '.join(st['base'])}` ({st['steps']} steps of 8 random 128-px crops of the "
         f"{st['dataset']} training frames, the same batches in the same order), each then coded with real bitstreams "
         f"by `vcm-eval codec=checkpoint codec.ckpt=<run>/checkpoints/last.ckpt data={st['dataset']} split=val` "
         "(fp32 coding for both)."),
        "",
        "| run | settings | training time | frames | PSNR (dB) | bpp (real) | bpp (estimated) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["runs"].items():
        m = r["metrics"]
        t = f"{r['train_s'] / 60:.1f} min" if r.get("train_s") is not None else "-"
        est = f"{m['bpp_estimated']:.4f}" if m.get("bpp_estimated") is not None else "-"
        lines.append(f"| {name} | `{' '.join(r['overrides'])}` | {t} | {r['num_images']} | {m['psnr']:.3f} | "
                     f"{m['bpp_real']:.4f} | {est} |")
    lines += ["", "| check | measured | goal | result |", "|---|---:|---:|:---:|"]
    for r in result["summary"]:
        lines.append(f"| {r['check']} | {_fmt(r['value'], r['unit'])} | {_goal(r['goal'], r['unit'])} | {r['result']} |")
    lines += ["", ("Training time is the wall-clock time of the whole `vcm-train` process (start-up and the validation "
                   "at the last step included) on a machine shared with other jobs: it shows the order of the speed-up; "
                   "the training-step benchmark (`python -m vcm.cli.bench --only precision`) measures it."), ""]
    return "\n".join(lines)


def run_parity(a: argparse.Namespace, command: str) -> tuple[int, dict[str, Any] | None]:
    """Train both runs, evaluate both, compare; returns (exit code, result or None)."""
    from vcm.bench.common import _environment
    from vcm.cli.study_runner import Study, read_json

    study = Study("bench-parity", a.out, dry_run=a.dry_run)
    base = base_overrides(a.steps, a.dataset, a.seed)
    runs: dict[str, dict[str, Any]] = {}
    # --jobs 2: both runs at once, each its own process (one core each with OMP_NUM_THREADS=1)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        ckpts = dict(zip(RUNS, pool.map(lambda item: study.train(item[0], base + item[1]), RUNS.items())))
    for name, overrides in RUNS.items():
        runs[name] = {"overrides": overrides, "checkpoint": str(ckpts[name]) if ckpts[name] else None,
                      "train_s": _train_seconds(study, name)}
    for name, r in runs.items():
        if r["checkpoint"] is not None:
            study.evaluate(f"{name}-val", ["codec=checkpoint", f"codec.ckpt={r['checkpoint']}", f"data={a.dataset}", "split=val"])
    rc = study.finish()
    if a.dry_run:
        return rc, None
    for name, r in runs.items():
        path = study.results / f"{name}-val.json"
        if not path.is_file():
            print(f"bench parity: no results record for {name} ({path}); nothing compared", file=sys.stderr)
            return 1, None
        rec = read_json(path)
        r.update(record=str(path), num_images=rec["num_images"],
                 metrics={k: rec["metrics"].get(k) for k in ("psnr", "bpp_real", "bpp_estimated", "ms_ssim")})
    diff, rows = compare(runs)
    result = {
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"base": base, "steps": a.steps, "dataset": a.dataset, "seed": a.seed},
        "environment": _environment(),
        "runs": runs,
        "differences": diff,
        "goals": GOALS,
        "summary": rows,
    }
    return rc, result


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
        print(f"  {name:<5} PSNR {m['psnr']:.3f} dB   bpp {m['bpp_real']:.4f}   ({r['num_images']} {a.dataset} val frames)")
    for r in result["summary"]:
        print(f"  {r['check']:<28} {_fmt(r['value'], r['unit']):>10}   {_goal(r['goal'], r['unit']):<14} {r['result']}")
    print(f"\nwrote {out / 'parity.json'} and {out / 'precision.md'}")
    return rc
