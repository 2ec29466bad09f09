"""Log RD curves to Weights & Biases: the table of points and one line plot per metric.

Without an explicit run, a new one is started in the mode of ``WANDB_MODE``; when that is unset
and no ``WANDB_API_KEY`` is present it is ``offline`` (written under ``WANDB_DIR``, synced later
with ``wandb sync``), so this never prompts for a login and never touches the network offline.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from vcm.rd.plot import DEFAULT_METRICS, metric_display
from vcm.rd.table import curve_points


def wandb_mode() -> str:
    """``WANDB_MODE`` if set, else ``online`` with an API key and ``offline`` without one."""
    mode = os.environ.get("WANDB_MODE", "").strip()
    if mode:
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _table_frame(df: pd.DataFrame) -> pd.DataFrame:
    # wandb.Table wants uniform column types; NaN in object columns becomes "".
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out


def log_rd_curves(
    df: pd.DataFrame,
    run: Any | None = None,
    metrics: Iterable[str] = DEFAULT_METRICS,
    rate: str = "bpp_real",
    project: str = "vcm-rd",
    name: str | None = None,
    key_prefix: str = "rd",
) -> Path | None:
    """Log the results table and an RD line plot per metric.

    Args:
        df: results table from :func:`vcm.rd.table.collect`.
        run: an active ``wandb`` run; None starts (and finishes) a new run, see the module docstring.
        metrics: metrics to plot; absent ones are skipped.
        rate: x-axis column.
        project: project of a new run.
        name: name of a new run.
        key_prefix: logged keys are ``<prefix>/points`` and ``<prefix>/<metric>``.

    Returns:
        The run's local folder (holding ``run-<id>.wandb``, complete when this function started
        the run), or None when it has none (``WANDB_MODE=disabled``).

    Raises:
        ValueError: if the table is empty or lacks the rate column.
    """
    import wandb

    metrics = list(metrics)
    if df.empty:
        raise ValueError("the results table is empty: nothing to log")
    if rate not in df.columns:
        raise ValueError(f"rate column {rate!r} is not in the results table")

    own_run = run is None
    if own_run:
        run = wandb.init(
            project=project,
            name=name,
            mode=wandb_mode(),
            job_type="rd-curves",
            # explicit, so that a wandb service started earlier in the process (another folder) cannot decide it
            dir=os.environ.get("WANDB_DIR") or None,
            config={"rate": rate, "metrics": list(metrics)},
            settings=wandb.Settings(silent=True, console="off", save_code=False),
        )
    try:
        payload: dict[str, Any] = {f"{key_prefix}/points": wandb.Table(dataframe=_table_frame(df))}
        curves = sorted(set(df["curve"].astype(str)))
        for metric in metrics:
            if metric not in df.columns:
                continue
            label, scale = metric_display(metric, pd.to_numeric(df[metric], errors="coerce"))
            xs, ys, keys = [], [], []
            for curve in curves:
                pts = curve_points(df, curve, rate, metric)
                if pts.rate.size:
                    xs.append(pts.rate.tolist())
                    ys.append((pts.quality * scale).tolist())
                    keys.append(curve)
            if keys:
                payload[f"{key_prefix}/{metric}"] = wandb.plot.line_series(
                    xs=xs, ys=ys, keys=keys, title=f"{label} vs {rate}", xname=rate
                )
        run.log(payload)
        run_dir = getattr(run, "dir", None)
    finally:
        if own_run:
            run.finish()
            # finish() can return before the wandb service has flushed the offline run file;
            # shutting the service down (only when no other run uses it) makes the folder
            # complete on return, ready for `wandb sync`.
            if wandb.run is None:
                wandb.teardown()
    if not run_dir:
        return None
    folder = Path(run_dir).parent  # run.dir is <run folder>/files
    return folder if folder.is_dir() else None
