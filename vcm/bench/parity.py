"""Parity of the fast training settings: the same hyperprior trained in bf16-mixed + channels-last and in
fp32 from the same seeds, all coded with real bitstreams on the validation frames.

The command is ``python -m vcm.cli.bench parity`` (:mod:`vcm.cli.bench_parity`, ``make bench-parity``).

Each pair is ``vcm-train experiment=zoo_hyperprior quality=3 seed=<s>`` twice, so both runs see the
same batches of 128-px crops of the kitti_mini training frames in the same order; only
``trainer.precision`` and ``model.channels_last`` differ. Each run is its own process, run through the
study runner (:class:`vcm.studies.Study`: every command printed before it runs, a log per step,
a finished step kept when the command is run again). Each final checkpoint is then measured by
``vcm-eval codec=checkpoint codec.ckpt=... split=val`` (real bitstreams, fp32 coding whatever the training
precision). Goals, per seed: PSNR of the bf16 run within 0.1 dB of the fp32 run's, real bpp within 2 %.
With two or more seeds the same differences between seeds of one precision are reported too: two fp32
runs that differ only in their seed show how far training noise alone moves a 2,000-step point.
``--fp32-modules`` adds, at the first seed, bf16 runs with some transforms in fp32
(``model.fp32_modules``, :func:`vcm.codecs.precision.run_in_fp32`): where a difference comes from.
Writes ``<out>/parity.json`` (atomically) and ``<out>/precision.md`` (Markdown for
``docs/results/precision.md``, naming the command). A missed goal is printed and recorded; the exit
code is non-zero only when a step failed.
"""
from __future__ import annotations

import argparse
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


def base_overrides(steps: int, dataset: str) -> list[str]:
    """The ``vcm-train`` overrides every run shares (each adds its seed and precision)."""
    return ["experiment=zoo_hyperprior", "quality=3", f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}", f"data={dataset}",
            # the run validates at its last step already
            "validate_after_fit=false"]


def run_name(precision: str, seed: int) -> str:
    """The study point of one training run, e.g. ``bf16-seed0``."""
    return f"{precision}-seed{seed}"


def fp32_module_runs(modules: list[str]) -> dict[str, list[str]]:
    """The bf16 variants with some submodules in fp32, e.g. ``"h_a,h_s"`` -> ``bf16-fp32_h_a.h_s``."""
    return {f"bf16-fp32_{mods.replace(',', '.')}": [*RUNS["bf16"], f"model.fp32_modules=[{mods}]"] for mods in modules}


def _train_seconds(study, point: str) -> float | None:
    for step in reversed(study.steps):
        if step.get("point") == point:
            return step.get("seconds", step.get("trained_seconds"))
    return None


def _difference(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """``a`` against ``b``: PSNR difference in dB, relative real-bpp difference."""
    return {"psnr_db": a["psnr"] - b["psnr"], "bpp_relative": a["bpp_real"] / b["bpp_real"] - 1}


def _rows(a: str, b: str, context: str, d: dict[str, float], goals: bool = True) -> list[dict[str, Any]]:
    """The PSNR and bpp rows of ``a`` against ``b`` (``d`` from :func:`_difference`), with the goals or
    as a reported figure."""
    out = []
    for check, key, unit in ((f"PSNR, {a} - {b}{context}", "psnr_db", "dB"),
                             (f"real bpp, {a} / {b} - 1{context}", "bpp_relative", "%")):
        goal = GOALS[key] if goals else None
        result = "report" if goal is None else ("PASS" if abs(d[key]) <= goal else "FAIL")
        out.append({"check": check, "value": d[key], "goal": goal, "unit": unit, "result": result})
    return out


def compare(runs: dict[str, dict[str, Any]], seeds: list[int], variants: list[str] = ()
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """bf16 against fp32 at each seed (the goals), their mean over seeds, with several seeds each
    precision's seed-to-seed difference (later seeds against the first: the noise floor, no goal), and
    each bf16 variant of ``variants`` (run at the first seed) against fp32 at that seed."""
    metrics = {name: r["metrics"] for name, r in runs.items()}
    first = seeds[0]
    diff: dict[str, Any] = {"per_seed": {}, "seed_to_seed": {}}
    rows = []
    for seed in seeds:
        d = diff["per_seed"][seed] = _difference(metrics[run_name("bf16", seed)], metrics[run_name("fp32", seed)])
        rows += _rows("bf16", "fp32", f" (seed {seed})", d)
    if len(seeds) > 1:
        mean = {k: sum(d[k] for d in diff["per_seed"].values()) / len(seeds) for k in ("psnr_db", "bpp_relative")}
        diff["mean"] = mean
        rows += _rows("bf16", "fp32", f" (mean of {len(seeds)} seeds)", mean)
        for precision in RUNS:
            for seed in seeds[1:]:
                d = _difference(metrics[run_name(precision, seed)], metrics[run_name(precision, first)])
                diff["seed_to_seed"][f"{precision} seed {seed} vs {first}"] = d
                rows += _rows(f"{precision} seed {seed}", f"seed {first}", "", d, goals=False)
    for variant in variants:
        d = _difference(metrics[run_name(variant, first)], metrics[run_name("fp32", first)])
        diff.setdefault("variants", {})[variant] = d
        rows += _rows(variant, "fp32", f" (seed {first})", d)
    return diff, rows


def format_value(value: float, unit: str) -> str:
    """A difference as printed in the summary: ``+0.05 dB`` or ``+1.20 %`` (``unit`` ``%``: a fraction)."""
    return f"{100 * value:+.2f} %" if unit == "%" else f"{value:+.3f} dB"


def format_goal(goal: float | None, unit: str) -> str:
    """A goal as printed in the summary (None: the row is the noise floor, no goal)."""
    if goal is None:
        return "- (noise floor)"
    return f"within ±{100 * goal:.0f} %" if unit == "%" else f"within ±{goal:g} dB"


def render_markdown(result: dict) -> str:
    """The Markdown of a parity result (for docs/results/precision.md)."""
    env, st = result["environment"], result["settings"]
    lines = [
        "### Parity: bf16-mixed + channels-last against fp32 training",
        "",
        (f"Measured with `{result['command']}` ({result['created'][:10]}; {env['cpu_model']}, {env['cpu_count']} cores, "
         f"torch {env['torch']}, CompressAI {env['compressai']}, Lightning {env['lightning']}, git {env['git_commit']}). "
         f"Every run: `vcm-train {' '.join(st['base'])} seed=<seed>` ({st['steps']} steps of 8 random 128-px crops of "
         f"the {st['dataset']} training frames; the two runs of one seed see the same batches in the same order), "
         "each then coded with real bitstreams by `vcm-eval codec=checkpoint codec.ckpt=<run>/checkpoints/last.ckpt "
         f"data={st['dataset']} split=val` (fp32 coding for all)."),
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
        lines.append(f"| {r['check']} | {format_value(r['value'], r['unit'])} | {format_goal(r['goal'], r['unit'])} | {r['result']} |")
    lines += ["", ("Training time is the wall-clock time of the whole `vcm-train` process (start-up and the validation "
                   "at the last step included) on a machine shared with other jobs: it shows the order of the speed-up; "
                   "the training-step benchmark (`python -m vcm.cli.bench --only precision`) measures it."), ""]
    return "\n".join(lines)


def run_parity(a: argparse.Namespace, command: str) -> tuple[int, dict[str, Any] | None]:
    """Train every run, evaluate each, compare; returns (exit code, result or None)."""
    from concurrent.futures import ThreadPoolExecutor

    from vcm.bench.common import _environment
    from vcm.studies import Study, read_json

    study = Study("bench-parity", a.out, dry_run=a.dry_run)
    base = base_overrides(a.steps, a.dataset)
    variants = fp32_module_runs(a.fp32_modules)
    plan = [(precision, seed, overrides) for seed in a.seeds for precision, overrides in RUNS.items()]
    plan += [(name, a.seeds[0], overrides) for name, overrides in variants.items()]
    todo = {run_name(precision, seed): [*base, f"seed={seed}", *overrides] for precision, seed, overrides in plan}
    # --jobs 2: two runs at once, each its own process (one core each with OMP_NUM_THREADS=1)
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        ckpts = dict(zip(todo, pool.map(lambda item: study.train(*item), todo.items())))
    runs: dict[str, dict[str, Any]] = {}
    for precision, seed, overrides in plan:
        name = run_name(precision, seed)
        runs[name] = {"precision": precision, "seed": seed, "overrides": overrides,
                      "checkpoint": str(ckpts[name]) if ckpts[name] else None, "train_s": _train_seconds(study, name)}
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
    diff, rows = compare(runs, a.seeds, list(variants))
    result = {
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"base": base, "steps": a.steps, "dataset": a.dataset, "seeds": a.seeds,
                     "fp32_modules": a.fp32_modules},
        "environment": _environment(),
        "runs": runs,
        "differences": diff,
        "goals": GOALS,
        "summary": rows,
    }
    return rc, result
