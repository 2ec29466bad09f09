"""Rate-distortion plots: one PNG per metric, one curve per codec (learned solid, anchors dashed)."""
from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from vcm.rd.table import UNCOMPRESSED_CODECS, curve_points, known_value
from vcm.utils.io import atomic_write_bytes

DEFAULT_METRICS: tuple[str, ...] = ("psnr", "roi_psnr", "map_50", "kitti_ap_car_moderate")

#: Classical codecs and references, drawn dashed. Learned codecs are everything else (a test checks
#: that every classical codec config of vcm/conf/codec is here).
DEFAULT_ANCHORS: frozenset[str] = frozenset(
    {"jpeg", "jpeg2000", "webp", "hevc", "hevc444", "hevc_roi", "hevc444_roi", "av1", "avif", "vtm", "vvc", "bpg", "feature_hevc",
     "feature_vtm", "none"}
)


_RATE_LABELS = {"bpp_real": "rate [bits per pixel, real bitstream]", "bpp_estimated": "rate [bits per pixel, estimated]"}


def metric_display(metric: str, values: Iterable[float] = ()) -> tuple[str, float]:
    """Axis label and the factor that converts stored values to the displayed unit.

    Detection metrics (``map*``, ``ap_*``, ``kitti_ap*``) are shown in percent. pycocotools and
    torchmetrics give them as fractions in [0, 1] while the KITTI devkit prints percent, so a
    column whose finite values all lie in [0, 1] is taken as a fraction and multiplied by 100.

    Args:
        metric: metric name, e.g. ``"psnr"`` or ``"map_50"``.
        values: the stored values (used for the fraction/percent decision).

    Returns:
        ``(label, scale)``.
    """
    vals = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    is_fraction = vals.size > 0 and float(vals.min()) >= 0.0 and float(vals.max()) <= 1.0
    pct = 100.0 if is_fraction else 1.0
    if metric in ("psnr", "roi_psnr", "bg_psnr") or metric.endswith("_psnr"):
        name = {"psnr": "PSNR", "roi_psnr": "ROI-PSNR", "bg_psnr": "background PSNR"}.get(metric, metric)
        return f"{name} [dB]", 1.0
    if metric == "ms_ssim":
        return "MS-SSIM", 1.0
    if metric == "map":
        return "mAP@[.5:.95] [%]", pct
    m = re.fullmatch(r"map_(\d+)", metric)
    if m:
        return f"mAP@0.{m.group(1)} [%]", pct
    m = re.fullmatch(r"kitti_ap(_r11)?_(\w+?)_(easy|moderate|hard)", metric)
    if m:
        kind = "AP|R11" if m.group(1) else "AP|R40"
        return f"KITTI {kind} {m.group(2).capitalize()} {m.group(3)} [%]", pct
    m = re.fullmatch(r"ap_(\w+)", metric)
    if m:
        return f"AP {m.group(1)} [%]", pct
    if metric in ("enc_s", "dec_s"):
        return f"{'encoding' if metric == 'enc_s' else 'decoding'} time [s/image]", 1.0
    return metric, 1.0


def bd_quality_heading(metric: str, values: Iterable[float] = ()) -> tuple[str, float]:
    """Column heading of a metric's BD-quality (``"BD-PSNR [dB]"``, ``"BD-mAP@0.50 [%-points]"``)
    and the factor that converts stored differences to the shown unit (see :func:`metric_display`)."""
    label, scale = metric_display(metric, values)
    name = label.split(" [")[0]
    unit = "dB" if "[dB]" in label else ("%-points" if scale == 100.0 or "[%]" in label else "")
    return f"BD-{name}" + (f" [{unit}]" if unit else ""), scale


def _title(df: pd.DataFrame, label: str) -> str:
    sets = sorted({
        f"{d}/{known_value(s) or '?'}, {known_value(n) or '?'} images"
        for d, s, n in zip(df["dataset"], df["split"], df["num_images"])
    })
    return f"{label.split(' [')[0]} vs rate ({'; '.join(sets)})"


def plot_rd(
    df: pd.DataFrame,
    out_dir: str | os.PathLike,
    metrics: Iterable[str] = DEFAULT_METRICS,
    dashed: set[str] | frozenset[str] | None = None,
    rate: str = "bpp_real",
    dpi: int = 120,
) -> list[Path]:
    """Write one RD plot per metric present in the table.

    Args:
        df: results table from :func:`vcm.rd.table.collect`.
        out_dir: folder for ``rd_<metric>.png`` (created if missing).
        metrics: metrics to plot; those absent from the table (or without a finite value) are
            skipped.
        dashed: codec names drawn dashed (classical codecs); default :data:`DEFAULT_ANCHORS`.
        rate: x-axis column.
        dpi: resolution of the PNGs.

    Returns:
        The written PNG paths, in the order of ``metrics``.

    Raises:
        ValueError: if ``rate`` is not a column of the table.
    """
    # Figure + Agg canvas directly: no pyplot global state, no dependency on the session backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dashed = DEFAULT_ANCHORS if dashed is None else frozenset(dashed)
    if rate not in df.columns:
        raise ValueError(f"rate column {rate!r} is not in the results table (columns: {list(df.columns)})")
    out_dir = Path(out_dir)
    written: list[Path] = []
    curves = sorted(set(df["curve"].astype(str)))
    for metric in metrics:
        if metric not in df.columns or not np.isfinite(pd.to_numeric(df[metric], errors="coerce")).any():
            continue
        label, scale = metric_display(metric, pd.to_numeric(df[metric], errors="coerce"))
        fig = Figure(figsize=(7.0, 5.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        markers = "osD^v<>phX*"
        for i, curve in enumerate(curves):
            codec = str(df.loc[df["curve"].astype(str) == curve, "codec"].iloc[0])
            if codec in UNCOMPRESSED_CODECS:
                vals = pd.to_numeric(df.loc[df["curve"].astype(str) == curve, metric], errors="coerce").dropna()
                if len(vals):
                    ax.axhline(float(vals.iloc[-1]) * scale, color="0.3", linestyle=":", linewidth=1.2,
                               label=f"{curve} (uncompressed)")
                continue
            pts = curve_points(df, curve, rate, metric)
            if pts.rate.size == 0:
                continue
            is_anchor = codec in dashed
            ax.plot(
                pts.rate, pts.quality * scale,
                linestyle="--" if is_anchor else "-",
                color=f"C{i % 10}",  # by curve index: a curve keeps its colour in every plot
                marker=markers[i % len(markers)], markersize=5, linewidth=1.6 if is_anchor else 2.0,
                label=curve,
            )
        ax.set_xlabel(_RATE_LABELS.get(rate, rate))
        ax.set_ylabel(label)
        ax.set_title(_title(df, label), fontsize=10)
        ax.grid(True, which="major", alpha=0.4)
        ax.set_xlim(left=0)
        ax.legend(fontsize=8, loc="best")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        written.append(atomic_write_bytes(out_dir / f"rd_{metric}.png", buf.getvalue()))
    return written
