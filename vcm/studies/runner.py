"""Orchestration of RD studies: train points, evaluate them and the anchors, report.

Every step is a ``vcm-train`` / ``vcm-eval`` / ``vcm-rd`` command run in its own process (printed
before it runs, so any point can be reproduced by hand). Each point writes its results record as soon as it
finishes; a failing point is recorded and the study goes on, and the study exits non-zero at the
end naming every failed point ("fail loudly for what is configured but broken").
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from vcm.errors import ConfigError
from vcm.utils.config import CONF_DIR
from vcm.utils.io import atomic_write_json
from vcm.utils.progress import time_left

# Each step runs this interpreter on the entry point's module (the same code whether or not the
# console scripts were reinstalled); printed commands name the console script's module.
TRAIN = [sys.executable, "-m", "vcm.cli.train"]
EVAL = [sys.executable, "-m", "vcm.cli.eval"]
RD = [sys.executable, "-m", "vcm.cli.rd"]


STUDY_DIR = CONF_DIR / "study"


def study_names() -> list[str]:
    """The study presets, ``vcm/conf/study/<name>.yaml``."""
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(name: str, key: str | None = None, **values) -> dict:
    """A study preset (``vcm/conf/study/<name>.yaml``) as a plain dict, with ``values`` set at its root
    before its ``${...}`` interpolations are resolved; with ``key``, only that entry (resolved).

    Raises:
        ConfigError: no such preset (the message lists them).
    """
    path = STUDY_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no study preset {name!r} ({path}); expected one of {study_names()}")
    cfg = OmegaConf.load(path)
    for k, v in values.items():
        cfg[k] = v
    return OmegaConf.to_container(cfg if key is None else cfg[key], resolve=True)


def overrides(items) -> list[str]:
    """A preset's override list with the lists inside it (``${...}`` of a list) spliced in."""
    out: list[str] = []
    for item in items or []:
        out.extend(overrides(item) if isinstance(item, list) else [str(item)])
    return out


def point_name(name: str, rate_point: list[str]) -> str:
    """``hyperprior`` + ``["quality=3"]`` -> ``hyperprior_quality3``."""
    return f"{name}_{'_'.join(o.replace('=', '') for o in rate_point)}"


@dataclass
class Study:
    """A named study writing everything under ``out``.

    Layout: ``out/runs/<point>/`` (Hydra run dirs, checkpoints), ``out/results/*.json`` (records),
    ``out/report/`` (CSV, plots, BD tables), ``out/study.json`` (steps, timings, failures).
    """

    name: str
    out: Path
    dry_run: bool = False
    steps: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    # steps the study will run by kind ("train", "eval"): each finished step then says how far the
    # study is and about how long it has left (vcm.utils.progress.time_left)
    planned: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.out = Path(self.out).resolve()
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        (self.out / "results").mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()

    @property
    def results(self) -> Path:
        return self.out / "results"

    def run_dir(self, point: str) -> Path:
        return self.out / "runs" / point

    def _save(self) -> None:
        atomic_write_json(self.out / "study.json", {"name": self.name, "steps": self.steps, "failures": self.failures,
                                                    "elapsed_s": time.time() - self.t0})

    def run(self, point: str, argv: list[str], timeout: float | None = None) -> bool:
        """Run one command; returns success. Output goes to ``runs/<point>.log``."""
        log = self.out / "runs" / f"{point}.log"
        cmd = " ".join(shlex.quote(a) for a in argv)
        print(f"\n[{self.name}] {point}: {cmd}", flush=True)
        if self.dry_run:
            self.steps.append({"point": point, "cmd": cmd, "status": "dry-run"})
            return True
        t = time.time()
        with open(log, "w") as f:
            try:
                rc = subprocess.run(argv, check=False, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = -9
        dt = time.time() - t
        ok = rc == 0
        kind = {tuple(TRAIN): "train", tuple(EVAL): "eval"}.get(tuple(argv[:3]), "other")
        self.steps.append({"point": point, "cmd": cmd, "status": "ok" if ok else f"failed (exit {rc})", "seconds": round(dt, 1),
                           "log": str(log), "kind": kind})
        progress = f"; {left}" if (left := time_left(self.planned, self.steps)) else ""
        if not ok:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            self.failures.append({"point": point, "exit": rc, "log": str(log), "tail": tail})
            print(f"[{self.name}] {point} FAILED (exit {rc}) after {dt:.0f}s{progress}; last lines of {log}:", flush=True)
            for line in tail:
                print("    " + line, flush=True)
        else:
            print(f"[{self.name}] {point} done in {dt:.0f}s{progress}", flush=True)
        self._save()
        return ok

    def train(self, point: str, overrides: list[str], timeout: float | None = None) -> Path | None:
        """``vcm-train`` one point (no test pass: points are evaluated by :meth:`evaluate`)."""
        run = self.run_dir(point)
        ckpt = run / "checkpoints" / "last.ckpt"
        done = run / "TRAINED"
        if done.is_file() and ckpt.is_file() and not self.dry_run:
            print(f"[{self.name}] {point}: trained already ({ckpt}), kept", flush=True)
            step = {"point": point, "status": "kept (trained)", "kind": "train"}
            marker = done.read_text().split()  # "ok <seconds the training took>" (older markers: "ok")
            if len(marker) == 2 and marker[1].replace(".", "", 1).isdigit():
                step["trained_seconds"] = float(marker[1])
            self.steps.append(step)
            return ckpt
        ok = self.run(point, [*TRAIN, *overrides, f"hydra.run.dir={run}",
                              f"paths.results_dir={self.out / 'train-records'}", "test_after_fit=false"], timeout)
        if ok and ckpt.is_file():
            done.write_text(f"ok {self.steps[-1]['seconds']}\n")
        return ckpt if ok and (ckpt.is_file() or self.dry_run) else None

    def best_checkpoint(self, point: str) -> Path | None:
        best = sorted((self.run_dir(point) / "checkpoints").glob("best-*.ckpt"))
        return best[-1] if best else None

    def done(self, point: str) -> bool:
        """True when ``point``'s results record exists (a re-run of a study continues after it)."""
        return (self.results / f"{point}.json").is_file()

    def evaluate(self, point: str, overrides: list[str], timeout: float | None = None) -> bool:
        if self.done(point) and not self.dry_run:
            print(f"[{self.name}] {point}: record exists, skipped", flush=True)
            self.steps.append({"point": point, "status": "kept (record exists)", "kind": "eval"})
            return True
        return self.run(point, [*EVAL, *overrides, f"hydra.run.dir={self.run_dir(point)}",
                                f"paths.results_dir={self.results}", f"run_name={point}"], timeout)

    def report(self, anchors: str | list[str], metrics: list[str], bd: list[tuple[str, str]],
               bd_options: dict[str, list[str]] | None = None) -> None:
        """Collect records into a CSV, write plots, BD tables and the Markdown/HTML report.

        Args:
            anchors: anchor codec(s) of the report's BD tables.
            metrics: metrics plotted and tabulated in the report.
            bd: ``(anchor, metric)`` pairs also printed and written as ``bd_<metric>_vs_<anchor>.csv``.
            bd_options: extra ``vcm-rd bd`` options per metric (e.g. ``{"map_50": ["--pareto"]}``).
        """
        anchors = [anchors] if isinstance(anchors, str) else list(anchors)
        rep = self.out / "report"
        if self.dry_run:
            return
        steps = [("collect", ["collect", str(self.results), "--out", str(rep / "rd.csv")]),
                 ("report", ["report", str(self.results), "--out", str(rep), "--anchor", *anchors, "--metrics", *metrics])]
        # a curve name may hold a "/" (hyperprior/zoo): not in a file name
        steps += [(f"bd_{m}_vs_{a}", ["bd", "--anchor", a, "--metric", m, str(self.results),
                                      "--out", str(rep / f"bd_{m}_vs_{a.replace('/', '-')}.csv"),
                                      *(bd_options or {}).get(m, [])])
                  for a, m in bd]
        for name, argv in steps:
            if name.startswith("bd_"):
                m, a = name[3:].split("_vs_")
                print(f"\nBD-rate vs {a} on {m}:", flush=True)
            rc = self._rd(argv)
            if rc:
                self.failures.append({"point": f"vcm-rd {name}", "exit": rc, "log": "-", "tail": []})

    @staticmethod
    def _rd(argv: list[str]) -> int:
        """``vcm-rd <argv>`` in its own process, its output on this one's; returns its exit code."""
        sys.stdout.flush()
        return subprocess.run([*RD, *argv], check=False).returncode

    def finish(self) -> int:
        self._save()
        mins = (time.time() - self.t0) / 60
        print(f"\n[{self.name}] finished in {mins:.1f} min; outputs under {self.out}")
        if (self.out / "report").exists():
            print(f"[{self.name}] report: {self.out / 'report' / 'report.md'} (and report.html, rd_*.png, rd.csv)")
        if self.failures:
            print(f"[{self.name}] {len(self.failures)} point(s) FAILED:")
            for f in self.failures:
                print(f"    {f['point']} (exit {f['exit']}): see {f['log']}")
            return 1
        return 0


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
