"""Markdown and HTML report: BD-rate tables per metric, RD plots and the provenance of every point.

The report opens with one sentence on the learned curves against the BD anchors (BD-rate with its
bootstrap interval on the first metric that has one), then the test set, detector and BD method,
then the curves whose BD values are not computable, listed once (a 1-point curve is not a row in
every table). Each metric's BD tables hold the computable rows with their intervals; a KITTI AP
measured on fewer than :data:`FEW_FRAMES_FOR_AP` frames carries a caution.
"""
from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pandas as pd

from vcm.rd.bd import DEFAULT_METHOD, DEFAULT_MIN_POINTS, bd_table, describe_method
from vcm.rd.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, add_intervals
from vcm.rd.plot import (
    DEFAULT_ANCHORS,
    DEFAULT_METRICS,
    bd_quality_heading,
    metric_display,
    plot_rd,
)
from vcm.rd.table import (
    UNCOMPRESSED_CODECS,
    check_single_test_set,
    known_value,
    metric_columns,
    param_columns,
    resolve_curve,
    test_set_label,
)
from vcm.utils.io import atomic_write_text

_Table = tuple[list[str], list[list[str]], list[list[str | None]]]  # header, cells, link targets

#: KITTI AP from fewer frames than this rests on a handful of objects: the report says so.
FEW_FRAMES_FOR_AP = 20
DEFAULT_CI = 0.95
_NOT_COMPUTABLE = "not computable: "


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


def _interval(low: float, high: float, scale: float, digits: int) -> str:
    if math.isnan(low) or math.isnan(high):
        return ""
    return f"[{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def _bd_section(table: pd.DataFrame, heading: str, scale: float) -> tuple[_Table, list[tuple[str, int, str]]]:
    """The computable rows of a BD table as a report table, and the others as (curve, points, reason)."""
    with_ci = "bd_rate_low" in table.columns and "no_interval" not in table.attrs
    ci_label = f"{100 * table.attrs.get('ci', DEFAULT_CI):g} % CI"
    header = ["curve", "points", "BD-rate [%]", *([ci_label] if with_ci else []), heading,
              *([ci_label] if with_ci else []), "note"]
    rows, skipped = [], []
    for r in table.itertuples(index=False):
        if math.isnan(r.bd_rate_pct):
            skipped.append((r.curve, int(r.points), r.note.removeprefix(_NOT_COMPUTABLE)))
            continue
        bd_q = "" if math.isnan(r.bd_quality) else f"{r.bd_quality * scale:+.3f}"
        cells = [r.curve, str(r.points), f"{r.bd_rate_pct:+.2f}"]
        if with_ci:
            cells.append(_interval(r.bd_rate_low, r.bd_rate_high, 1.0, 2))
        cells.append(bd_q)
        if with_ci:
            cells.append(_interval(r.bd_quality_low, r.bd_quality_high, scale, 3))
        rows.append([*cells, r.note])
    return (header, rows, [[None] * len(header) for _ in rows]), skipped


def _not_computable_list(skipped: dict[tuple[str, str], list[str]], tables: int, comparable: int) -> list[str]:
    """One line per (curve, reason): the tables it concerns, unless that is every table (or every
    table whose anchor curve is computable: a table without one holds no other reason)."""
    lines = []
    for (curve, reason), where in skipped.items():
        where = list(dict.fromkeys(where))
        if len(where) == tables:
            scope = "every table"
        elif len(where) == comparable and not reason.startswith("anchor "):
            scope = "every table with a computable anchor"
        else:
            scope = ", ".join(where)
        lines.append(f"{curve}: {reason} ({scope})")
    return lines


def num_frames(df: pd.DataFrame) -> int | None:
    """The number of test frames of a single-test-set table (None when no row says)."""
    sizes = pd.to_numeric(df["num_images"], errors="coerce").dropna()
    return int(sizes.max()) if len(sizes) else None


def few_frames_caution(metric: str, frames: int | None) -> str | None:
    """The caution a KITTI AP on fewer than :data:`FEW_FRAMES_FOR_AP` frames carries, else None."""
    if not metric.startswith("kitti_ap") or frames is None or frames >= FEW_FRAMES_FOR_AP:
        return None
    return (f"Caution: KITTI AP on {frames} frame(s) (fewer than {FEW_FRAMES_FOR_AP}) rests on a handful of "
            "objects; differences of several points are within its noise, and it has no bootstrap interval "
            "(not a per-image mean).")


def _headline(tables: dict[tuple[str, str], pd.DataFrame], metrics: list[str], df: pd.DataFrame,
              dashed: frozenset[str], frames: int | None) -> str | None:
    """One sentence: each learned curve's BD-rate (with its interval) against each anchor, on the
    first metric whose tables have intervals (else the first metric with a computable value)."""
    learned = sorted({str(c) for c, k in zip(df["curve"], df["codec"])
                      if str(k) not in dashed and str(k) not in UNCOMPRESSED_CODECS})

    def parts(metric: str, need_ci: bool) -> list[str]:
        out = []
        for curve in learned:
            per_anchor = []
            for (m, anchor), table in tables.items():
                found = table[table["curve"] == curve]
                if m != metric or not len(found) or math.isnan(found["bd_rate_pct"].iloc[0]):
                    continue
                r = found.iloc[0]
                has_ci = "bd_rate_low" in found.columns and not math.isnan(r["bd_rate_low"])
                if need_ci and not has_ci:
                    continue
                ci = f" {_interval(r['bd_rate_low'], r['bd_rate_high'], 1.0, 1)}" if has_ci else ""
                per_anchor.append(f"{r['bd_rate_pct']:+.1f} %{ci} vs {anchor}")
            if per_anchor:
                out.append(f"{curve} {' and '.join(per_anchor)}")
        return out

    for need_ci in (True, False):
        for metric in metrics:
            found = parts(metric, need_ci)
            if found:
                label = metric_display(metric, pd.to_numeric(df[metric], errors="coerce"))[0].split(" [")[0]
                t = next(t for (m, _), t in tables.items() if m == metric)
                ci = (f", {100 * t.attrs['ci']:g} % bootstrap interval over the frames in brackets"
                      if need_ci and "ci" in t.attrs else "")
                over = f" over {frames} frames" if frames else ""
                return (f"BD-rate of the learned codecs on {label}{over} (negative = fewer bits{ci}): "
                        + "; ".join(found) + ".")
    return None


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


_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")


def _md_cell(text: str) -> str:
    # Pipes end a cell and newlines end a row. '<' before a letter would open an HTML tag and '&name;'
    # would be read as an entity: backslash escapes keep those literal without HTML entities in the
    # source, so the Markdown reads as it renders ('>= 3 points' and '< 75 %' stay as they are).
    escaped = (
        str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    )
    return _ENTITY.sub(r"\\&", _TAG_OPEN.sub(r"\\<", escaped))


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
    dashed: set[str] | frozenset[str] | None = None,
    rate: str = "bpp_real",
    min_points: int = DEFAULT_MIN_POINTS,
    monotonic: Literal["strict", "pareto"] = "strict",
    method: str = DEFAULT_METHOD,
    ci: float | None = DEFAULT_CI,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (plus the ``rd_<metric>.png`` plots) to ``out_dir``.

    Args:
        df: results table of one test set (see :func:`vcm.rd.table.select`).
        out_dir: output folder (created if missing); the pages link the plots and records
            relative to it.
        anchor: anchor curve (or codec with one curve) of the BD tables, or several: one BD table
            per anchor and metric (e.g. a classical anchor and a learned baseline).
        metrics: metrics to report; those absent from the table are skipped.
        dashed: codecs drawn dashed in the plots, the classical ones (default
            :data:`vcm.rd.plot.DEFAULT_ANCHORS`); the others are the learned codecs of the
            opening sentence.
        rate: rate column.
        min_points: fewest points per curve for BD values.
        monotonic: ``"strict"`` or ``"pareto"`` (see :func:`vcm.rd.bd.bd_rate`).
        method: BD interpolation, ``"pchip"``, ``"cubic"`` or ``"akima"``.
        ci: confidence level of the bootstrap intervals over the frames
            (:mod:`vcm.rd.bootstrap`), None for none.
        resamples: bootstrap resamples per BD value.
        seed: seed of the resampling.

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
    dashed = DEFAULT_ANCHORS if dashed is None else frozenset(dashed)
    frames = num_frames(df)

    plots = {p.stem[len("rd_"):]: p for p in plot_rd(df, out_dir, metrics=metrics, dashed=dashed, rate=rate)}
    tables = {(m, a): bd_table(df, a, m, rate=rate, min_points=min_points, monotonic=monotonic, method=method)
              for m in metrics for a in anchor_curves}
    if ci is not None:
        tables = {key: add_intervals(t, df, ci, resamples, seed) for key, t in tables.items()}
    sections, skipped, comparable = {}, {}, 0
    for (metric, anchor_curve), table in tables.items():
        heading, scale = bd_quality_heading(metric, pd.to_numeric(df[metric], errors="coerce"))
        sections[metric, anchor_curve], rows_out = _bd_section(table, heading, scale)
        anchor_failed = False
        for curve, _points, reason in rows_out:
            anchor_failed |= reason.startswith("anchor ")
            subject = anchor_curve if reason.startswith("anchor ") else curve
            skipped.setdefault((subject, reason), []).append(f"{metric} vs {anchor_curve}")
        comparable += not anchor_failed
    not_computable = _not_computable_list(skipped, len(tables), comparable)
    headline = _headline(tables, metrics, df, dashed, frames)

    detectors = sorted({f"{n} ({h})" for n, h in zip(df["detector_name"], df["detector_hash"]) if isinstance(h, str)})
    summary = [
        ("test set", test_set_label(df)),
        ("detector", ", ".join(detectors) or "(none)"),
        ("anchor" if len(anchor_curves) == 1 else "anchors", ", ".join(anchor_curves)),
        ("rate", rate),
        ("points", f"{len(df)} records, {df['curve'].nunique()} curves"),
        ("BD method", describe_method(method, min_points, monotonic)),
    ]
    if ci is not None:
        summary.append(("intervals", (f"{100 * ci:g} % percentile bootstrap over the frames ({resamples} resamples, "
                                     f"seed {seed}; the same resampled frames for both curves); none for a metric "
                                     "that is not a per-image mean (mAP, KITTI AP)")))

    md = ["# Rate-distortion report", ""]
    h = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Rate-distortion report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>Rate-distortion report</h1>",
    ]
    if headline:
        md += [_md_cell(headline), ""]
        h += [f"<p>{html.escape(headline)}</p>"]
    md += [f"- **{_md_cell(k)}**: {_md_cell(v)}" for k, v in summary] + [""]
    h += ["<ul>", *[f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in summary], "</ul>"]
    if not_computable:
        intro = "BD values not computable (left out of the tables below):"
        md += ["## Not computable", "", intro, "", *[f"- {_md_cell(line)}" for line in not_computable], ""]
        h += ["<h2>Not computable</h2>", f"<p>{html.escape(intro)}</p>", "<ul>",
              *[f"<li>{html.escape(line)}</li>" for line in not_computable], "</ul>"]
    for metric in metrics:
        label, _ = metric_display(metric, pd.to_numeric(df[metric], errors="coerce"))
        caution = few_frames_caution(metric, frames)
        for anchor_curve in anchor_curves:
            table = sections[metric, anchor_curve]
            heading = f"{label} (`{metric}`): BD vs {anchor_curve}"
            md += [f"## {_md_cell(heading)}", ""]
            h += [f"<h2>{html.escape(label)} (<code>{html.escape(metric)}</code>): BD vs {html.escape(anchor_curve)}</h2>"]
            if caution:
                md += [f"**{_md_cell(caution)}**", ""]
                h += [f"<p><b>{html.escape(caution)}</b></p>"]
            no_interval = tables[metric, anchor_curve].attrs.get("no_interval")
            if no_interval and not caution:  # the caution already says it for KITTI AP
                md += [_md_cell(no_interval.capitalize() + "."), ""]
                h += [f"<p>{html.escape(no_interval.capitalize())}.</p>"]
            if table[1]:
                md += [_md_table(table), ""]
                h += [_html_table(table)]
            else:
                empty = "No computable row (see Not computable)."
                md += [empty, ""]
                h += [f"<p>{html.escape(empty)}</p>"]
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
