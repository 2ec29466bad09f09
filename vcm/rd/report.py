"""Markdown and HTML report: BD-rate tables per metric, RD plots and the provenance of every point."""
from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pandas as pd

from vcm.rd.bd import DEFAULT_METHOD, DEFAULT_MIN_POINTS, bd_table, describe_method
from vcm.rd.plot import DEFAULT_METRICS, bd_quality_heading, metric_display, plot_rd
from vcm.rd.table import (
    check_single_test_set,
    known_value,
    metric_columns,
    param_columns,
    resolve_curve,
    test_set_label,
)
from vcm.utils.io import atomic_write_text

_Table = tuple[list[str], list[list[str]], list[list[str | None]]]  # header, cells, link targets


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _rel(target: str | os.PathLike | None, out_dir: Path) -> str | None:
    if target is None or (isinstance(target, float) and math.isnan(target)):
        return None
    try:
        return Path(os.path.relpath(Path(target).resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return Path(target).as_posix()


def _bd_section(
    df: pd.DataFrame, anchor: str, metric: str, rate: str, min_points: int, monotonic: str, method: str
) -> _Table:
    heading, scale = bd_quality_heading(metric, pd.to_numeric(df[metric], errors="coerce"))
    table = bd_table(df, anchor, metric, rate=rate, min_points=min_points, monotonic=monotonic, method=method)
    header = ["curve", "points", "BD-rate [%]", heading, "note"]
    rows = []
    for r in table.itertuples(index=False):
        bd_r = "" if math.isnan(r.bd_rate_pct) else f"{r.bd_rate_pct:+.2f}"
        bd_q = "" if math.isnan(r.bd_quality) else f"{r.bd_quality * scale:+.3f}"
        rows.append([r.curve, str(r.points), bd_r, bd_q, r.note])
    return header, rows, [[None] * len(header) for _ in rows]


def _scaled(value, scale: float):
    return value * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _provenance(df: pd.DataFrame, out_dir: Path, rate: str, metrics: list[str]) -> _Table:
    params = param_columns(df)
    shown_metrics = [m for m in [rate, *metrics] if m in df.columns]
    # one unit per metric: the column says what the plots' axes say ("mAP@0.5 [%]") and holds that unit
    display = {m: metric_display(m, pd.to_numeric(df[m], errors="coerce")) for m in shown_metrics}
    header = ["curve", "params", *[display[m][0] for m in shown_metrics], "git commit", "detector hash", "dataset",
              "split", "images", "record"]
    rows, links = [], []
    order = df.sort_values(["curve", rate] if rate in df.columns else ["curve"], kind="stable")
    for _, r in order.iterrows():
        p = ", ".join(
            f"{c[len('param.'):]}={_fmt(r[c])}" for c in params if not (isinstance(r[c], float) and math.isnan(r[c]))
        )
        commit = r.get("git_commit")
        commit = commit[:12] if isinstance(commit, str) else "(none)"
        det = r.get("detector_hash")
        det = det if isinstance(det, str) else "(none)"
        rec = r.get("record_path")
        rec_rel = _rel(rec, out_dir) if isinstance(rec, str) else None
        rows.append([
            str(r["curve"]), p, *[_fmt(_scaled(r[m], display[m][1])) for m in shown_metrics], commit, det,
            str(r["dataset"]), known_value(r["split"]) or "?", known_value(r["num_images"]) or "?", rec_rel or "",
        ])
        links.append([None] * (len(header) - 1) + [rec_rel])
    return header, rows, links


def _md_cell(text: str) -> str:
    # Pipes end a cell, newlines end a row, and '<' would be read as HTML by most renderers.
    return (
        str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
        .replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    )


def _md_table(table: _Table) -> str:
    header, rows, links = table
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row, link in zip(rows, links):
        cells = []
        for text, target in zip(row, link):
            cell = _md_cell(text)
            cells.append(f"[{cell}](<{quote(target)}>)" if target else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _html_table(table: _Table) -> str:
    header, rows, links = table
    e = html.escape
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for row, link in zip(rows, links):
        cells = []
        for text, target in zip(row, link):
            cell = e(str(text))
            cells.append(f'<td><a href="{e(quote(target))}">{cell}</a></td>' if target else f"<td>{cell}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #ddd; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def write_report(
    df: pd.DataFrame,
    out_dir: str | os.PathLike,
    anchor: str | Sequence[str],
    metrics: Iterable[str] = DEFAULT_METRICS,
    anchors: set[str] | None = None,
    rate: str = "bpp_real",
    min_points: int = DEFAULT_MIN_POINTS,
    monotonic: Literal["strict", "pareto"] = "strict",
    method: str = DEFAULT_METHOD,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (plus the ``rd_<metric>.png`` plots) to ``out_dir``.

    Args:
        df: results table of one test set (see :func:`vcm.rd.table.select`).
        out_dir: output folder (created if missing); the pages link the plots and records
            relative to it.
        anchor: anchor curve (or codec with one curve) of the BD tables, or several: one BD table
            per anchor and metric (e.g. a classical anchor and a learned baseline).
        metrics: metrics to report; those absent from the table are skipped.
        anchors: codecs drawn dashed in the plots (default :data:`vcm.rd.plot.DEFAULT_ANCHORS`).
        rate: rate column.
        min_points: fewest points per curve for BD values.
        monotonic: ``"strict"`` or ``"pareto"`` (see :func:`vcm.rd.bd.bd_rate`).
        method: BD interpolation, ``"pchip"``, ``"cubic"`` or ``"akima"``.

    Returns:
        ``(markdown_path, html_path)``.

    Raises:
        ValueError: if the table is empty or mixes test sets, the anchor is unknown, the rate
            column is missing, or none of ``metrics`` is in the table.
    """
    out_dir = Path(out_dir)
    check_single_test_set(df)
    anchor_curves = [resolve_curve(df, a) for a in ([anchor] if isinstance(anchor, str) else anchor)]
    if not anchor_curves:
        raise ValueError("at least one anchor is needed for the BD tables")
    if rate not in df.columns:
        raise ValueError(f"rate column {rate!r} is not in the results table")
    metrics = [m for m in metrics if m in df.columns and pd.to_numeric(df[m], errors="coerce").notna().any()]
    if not metrics:
        raise ValueError(f"none of the requested metrics is in the results table; available: {metric_columns(df)}")

    plots = {p.stem[len("rd_"):]: p for p in plot_rd(df, out_dir, metrics=metrics, anchors=anchors, rate=rate)}
    detectors = sorted({f"{n} ({h})" for n, h in zip(df["detector_name"], df["detector_hash"]) if isinstance(h, str)})
    summary = [
        ("test set", test_set_label(df)),
        ("detector", ", ".join(detectors) or "(none)"),
        ("anchor" if len(anchor_curves) == 1 else "anchors", ", ".join(anchor_curves)),
        ("rate", rate),
        ("points", f"{len(df)} records, {df['curve'].nunique()} curves"),
        ("BD method", describe_method(method, min_points, monotonic)),
    ]

    md = ["# Rate-distortion report", ""]
    md += [f"- **{_md_cell(k)}**: {_md_cell(v)}" for k, v in summary] + [""]
    h = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Rate-distortion report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>Rate-distortion report</h1>", "<ul>",
        *[f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in summary], "</ul>",
    ]
    for metric in metrics:
        label, _ = metric_display(metric, pd.to_numeric(df[metric], errors="coerce"))
        for anchor_curve in anchor_curves:
            table = _bd_section(df, anchor_curve, metric, rate, min_points, monotonic, method)
            heading = f"{label} (`{metric}`): BD vs {anchor_curve}"
            md += [f"## {_md_cell(heading)}", "", _md_table(table), ""]
            h += [f"<h2>{html.escape(label)} (<code>{html.escape(metric)}</code>): BD vs {html.escape(anchor_curve)}</h2>",
                  _html_table(table)]
        if metric in plots:
            rel = _rel(plots[metric], out_dir)
            md += [f"![RD curves: {_md_cell(label)}](<{quote(rel)}>)", ""]
            h += [f'<p><img src="{html.escape(quote(rel))}" alt="RD curves: {html.escape(label)}"></p>']

    prov = _provenance(df, out_dir, rate, metrics)
    md += ["## Provenance of every point", "", _md_table(prov), ""]
    h += ["<h2>Provenance of every point</h2>", _html_table(prov), "</body></html>"]

    md_path = atomic_write_text(out_dir / "report.md", "\n".join(md))
    html_path = atomic_write_text(out_dir / "report.html", "\n".join(h) + "\n")
    return md_path, html_path
