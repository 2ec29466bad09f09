"""Sweeps that survive a failing point: a failure record per failed job and a summary at the end.

In a Hydra multirun (``vcm-train -m ...``, ``vcm-eval -m ...``) one bad point (a negative lambda, a
diverging run, a missing file) must not cost the other points. :func:`run_job` runs one job: in a
multirun it catches the job's exception, writes ``FAILED.json`` into that job's output folder
(the point's overrides, the error and its traceback), logs which point failed and returns, so the
launcher goes on with the next point. :class:`SweepFailureCallback` (a Hydra callback, configured
in ``vcm/conf/hydra/default.yaml``) then lists every failed point at the end of the sweep, writes
``failures.json`` into the sweep folder and makes the command exit with status 1. Outside
a multirun, errors propagate unchanged.
"""
from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from vcm.utils.io import atomic_write_json

log = logging.getLogger("vcm.sweep")

FAILURE_FILE = "FAILED.json"
SUMMARY_FILE = "failures.json"


def _multirun_job() -> dict[str, Any] | None:
    """The current job's number, overrides and output folder in a multirun; None otherwise."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        return {"num": int(hc.job.num), "overrides": list(hc.overrides.task), "output_dir": hc.runtime.output_dir}
    except Exception:  # noqa: BLE001 - no Hydra context means no multirun
        return None


def run_job(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``fn(cfg)``; in a multirun, record a failure instead of raising it (see the module docstring)."""
    job = _multirun_job()
    if job is None:
        return fn(cfg)
    # A record of an earlier attempt at this point (same sweep folder) is stale once it runs again.
    (Path(job["output_dir"]) / FAILURE_FILE).unlink(missing_ok=True)
    try:
        return fn(cfg)
    except Exception as e:  # noqa: BLE001 - every failure of a point is recorded, whatever its type
        point = " ".join(job["overrides"]) or "(no overrides)"
        record = {
            "job_num": job["num"],
            "overrides": job["overrides"],
            "error_type": type(e).__name__,
            "error": str(e),
            "traceback": traceback.format_exc(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        path = Path(job["output_dir"]) / FAILURE_FILE
        try:
            atomic_write_json(path, record)
        except OSError as write_error:  # the record is a convenience; the log line below is what counts
            log.error("could not write %s: %s", path, write_error)
        msg = f"sweep point #{job['num']} ({point}) FAILED: {type(e).__name__}: {e}"
        log.error("%s (details: %s); continuing with the other points", msg, path)
        print(msg, file=sys.stderr, flush=True)
        return None


def collect_failures(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The ``FAILED.json`` records under a sweep folder, by job number."""
    import json

    out = []
    for p in sorted(Path(sweep_dir).glob(f"**/{FAILURE_FILE}")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            rec = {"job_num": None, "overrides": [], "error_type": "unreadable", "error": str(p)}
        rec["path"] = str(p)
        out.append(rec)
    return sorted(out, key=lambda r: (r.get("job_num") is None, r.get("job_num") or 0))


class SweepFailureCallback(HydraCallback):
    """At the end of a multirun: list the failed points, write ``failures.json``, exit non-zero."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        failures = collect_failures(sweep_dir)
        if not failures:
            return
        atomic_write_json(sweep_dir / SUMMARY_FILE, {"failed": failures})
        lines = [f"  #{f.get('job_num')} {' '.join(f.get('overrides') or [])}: {f.get('error_type')}: {f.get('error')}"
                 for f in failures]
        msg = (f"{len(failures)} sweep point(s) failed (the others' results are complete):\n" + "\n".join(lines)
               + f"\nsummary: {sweep_dir / SUMMARY_FILE}")
        log.error(msg)
        # Hydra turns exceptions of callbacks into warnings; SystemExit is how the sweep's exit
        # status says that points failed (the message goes to stderr).
        raise SystemExit(msg)
