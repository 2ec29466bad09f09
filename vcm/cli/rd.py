"""``vcm-rd``: collect results records, compute BD-rates, plot RD curves, write reports.

Examples::

    vcm-rd collect results/ --out results/table.csv
    vcm-rd bd --anchor jpeg results/                       # on psnr, the default metric
    vcm-rd bd --anchor jpeg --metric psnr --ci 0.95 results/   # with a bootstrap interval over the frames
    vcm-rd bd --anchor vtm --metric map_50 --table results/table.csv
    vcm-rd plot results/ --out reports/rd
    vcm-rd report results/ --out reports/rd --anchor jpeg --metrics psnr map_50
    vcm-rd bd --anchor vtm --metric psnr results/ --curves vtm.json --method akima
    vcm-rd export results/ --out curves/           # every curve in CompressAI's results-JSON format
    vcm-rd wandb results/

Exit status: 0 on success, 2 on a user or input error (one line on stderr), 1 on an internal error.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from vcm.rd.bd import (
    BD_METHODS,
    DEFAULT_METHOD,
    DEFAULT_MIN_POINTS,
    bd_table,
    describe_method,
)
from vcm.rd.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, add_intervals
from vcm.rd.plot import DEFAULT_ANCHORS, DEFAULT_METRICS
from vcm.rd.report import DEFAULT_CI, few_frames_caution, num_frames
from vcm.rd.table import (
    add_curves,
    collect,
    curve_points,
    known_value,
    load_table,
    metric_columns,
    select,
    write_csv,
)
from vcm.utils.io import atomic_write_text

PROG = "vcm-rd"


#: exit status of a user or input error, as every vcm command
USER_ERROR = 2


class CliError(Exception):
    """A user-facing error: printed as ``vcm-rd: error: ...`` with exit code 2."""


class _DeprecatedAlias(argparse.Action):
    """An old option spelling: works as the new one, and says so once on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{PROG}: note: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_source(p: argparse.ArgumentParser, table: bool = False) -> None:
    p.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                   help="folders (searched recursively) or files of results records; default: results/ "
                        "(none with --curves alone)")
    if table:
        p.add_argument("--table", type=Path, help="read a CSV written by 'vcm-rd collect --out' instead of records")
    p.add_argument("--curves", nargs="+", type=Path, default=[], metavar="FILE",
                   help="published RD curves to add: CompressAI results JSON (.json) or CSV 'curve,bpp,<metric>' (.csv)")
    p.add_argument("--curve-dataset", metavar="NAME",
                   help="dataset of the --curves files that do not state one (a file stating another is refused)")
    p.add_argument("--dataset", help="keep only records of this dataset")
    p.add_argument("--split", help="keep only records of this split")
    p.add_argument("--num-images", type=int, help="keep only records over this many images")


def _add_bd_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", default="bpp_real", help="rate column (default: bpp_real)")
    p.add_argument("--min-points", type=int, default=DEFAULT_MIN_POINTS,
                   help=f"fewest RD points per curve (default: {DEFAULT_MIN_POINTS})")
    p.add_argument("--pareto", action="store_true",
                   help="use each curve's Pareto front instead of refusing non-monotonic curves")
    p.add_argument("--method", choices=BD_METHODS, default=DEFAULT_METHOD,
                   help="interpolation: pchip (default), cubic (VCEG-M33 polynomial fit, >= 4 points) or akima")


def _add_ci_options(p: argparse.ArgumentParser, default: float | None) -> None:
    shown = "none" if default is None else f"{default:g}; 0 for none"
    p.add_argument("--ci", type=float, default=default, metavar="LEVEL",
                   help="confidence level of a bootstrap interval of each BD value over the frames, resampling the "
                        f"records' per-image values, e.g. 0.95 (default: {shown})")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                   help=f"bootstrap resamples (default: {DEFAULT_RESAMPLES})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the resampling (default: {DEFAULT_SEED})")


def _add_dashed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dashed", nargs="+", default=sorted(DEFAULT_ANCHORS), metavar="CODEC",
                   help="codecs drawn dashed, the classical ones (default: the known classical codecs)")
    p.add_argument("--anchors", nargs="+", dest="dashed", action=_DeprecatedAlias, new="--dashed",
                   help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("collect", help="gather results records into one table")
    _add_source(p)
    p.add_argument("--out", type=Path, help="write the table to this CSV file")

    p = sub.add_parser("bd", help="BD-rate of every curve against an anchor")
    _add_source(p, table=True)
    p.add_argument("--anchor", required=True, help="anchor curve or codec, e.g. jpeg")
    p.add_argument("--metric", default="psnr", help="quality metric, e.g. psnr, map_50 (default: psnr)")
    _add_bd_options(p)
    _add_ci_options(p, default=None)
    p.add_argument("--out", type=Path, help="also write the BD table to this CSV file")

    p = sub.add_parser("plot", help="one RD plot per metric")
    _add_source(p, table=True)
    p.add_argument("--out", type=Path, required=True, help="output folder for rd_<metric>.png")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metrics to plot")
    _add_dashed(p)
    p.add_argument("--rate", default="bpp_real", help="rate column (default: bpp_real)")

    p = sub.add_parser("report", help="Markdown + HTML report with BD tables, plots and provenance")
    _add_source(p, table=True)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--anchor", required=True, nargs="+",
                   help="BD anchor curve(s) or codec(s): one BD table per anchor and metric")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metrics to report")
    _add_dashed(p)
    _add_bd_options(p)
    _add_ci_options(p, default=DEFAULT_CI)

    p = sub.add_parser("export", help="write curves in CompressAI's results-JSON format, one file per curve")
    _add_source(p, table=True)
    p.add_argument("--out", type=Path, required=True, help="output folder for <curve>.json")
    p.add_argument("--curve", nargs="+", dest="export_curves", metavar="CURVE",
                   help="curves (or codecs) to export; default: every curve but the uncompressed reference")
    p.add_argument("--rate", default="bpp_real", help="rate column written as 'bpp' (default: bpp_real)")

    p = sub.add_parser("wandb", help="log RD curves to a W&B run (offline unless configured)")
    _add_source(p, table=True)
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metrics to plot")
    p.add_argument("--project", default="vcm-rd", help="W&B project (default: vcm-rd)")
    p.add_argument("--name", help="W&B run name")
    p.add_argument("--rate", default="bpp_real", help="rate column (default: bpp_real)")
    return parser


def _load(args: argparse.Namespace) -> pd.DataFrame:
    table = getattr(args, "table", None)
    if table is not None:
        if args.dirs:
            raise CliError("give either record folders or --table, not both")
        try:
            df = load_table(table)
        except (FileNotFoundError, ValueError) as e:
            raise CliError(str(e)) from None
        source = str(table)
    elif args.curves and not args.dirs:
        df, source = collect([]), "(no record folder)"
    else:
        dirs = args.dirs or [Path("results")]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                df = collect(dirs)
        except FileNotFoundError as e:
            raise CliError(str(e)) from None
        for w in caught:
            print(f"{PROG}: warning: {w.message}", file=sys.stderr)
        source = ", ".join(str(d) for d in dirs)
    if df.empty and not args.curves:
        raise CliError(f"no results records found in {source}")
    if args.curves:
        from vcm.rd.published import read_curves

        curves = read_curves(args.curves, dataset=args.curve_dataset)
        df = add_curves(df, curves, rate=getattr(args, "rate", "bpp_real"))
    before = set(df["curve"].astype(str))
    df = select(df, args.dataset, args.split, args.num_images)
    if df.empty:
        raise CliError(f"no results records in {source} match the --dataset/--split/--num-images filter")
    if args.curves:
        dropped = sorted(before - set(df["curve"].astype(str)))
        if dropped:
            print(f"{PROG}: warning: left out by --dataset/--split/--num-images: {dropped}", file=sys.stderr)
    return df


def _summary(df: pd.DataFrame) -> str:
    lines = [f"{len(df)} record(s), {df['curve'].nunique()} curve(s):"]
    for curve, g in df.groupby("curve", sort=True):
        sets = ", ".join(sorted({f"{d}/{known_value(s) or '?'}/{known_value(n) or '?'}"
                                 for d, s, n in zip(g["dataset"], g["split"], g["num_images"])}))
        lines.append(f"  {curve}: {len(g)} point(s) [{sets}]")
    lines.append("metrics: " + (", ".join(metric_columns(df)) or "(none)"))
    return "\n".join(lines)


def _cmd_collect(args) -> int:
    df = _load(args)
    if args.out is not None:
        print(f"wrote {write_csv(df, args.out)}")
    print(_summary(df))
    return 0


def _value(value: float, scale: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value * scale:+.{digits}f}"


def _format_bd(table: pd.DataFrame, quality_heading: str, scale: float) -> str:
    with_ci = "bd_rate_low" in table.columns and "no_interval" not in table.attrs
    ci = f"{100 * table.attrs.get('ci', DEFAULT_CI):g} % CI"
    header = ("curve", "points", "BD-rate [%]", *([ci] if with_ci else []), quality_heading,
              *([ci] if with_ci else []), "note")
    rows = []
    for r in table.itertuples(index=False):
        row = [r.curve, str(r.points), _value(r.bd_rate_pct, 1.0, 2)]
        if with_ci:
            row.append("" if math.isnan(r.bd_rate_low) else f"[{r.bd_rate_low:+.2f}, {r.bd_rate_high:+.2f}]")
        row.append(_value(r.bd_quality, scale, 3))
        if with_ci:
            row.append("" if math.isnan(r.bd_quality_low)
                       else f"[{r.bd_quality_low * scale:+.3f}, {r.bd_quality_high * scale:+.3f}]")
        rows.append((*row, r.note))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*row) for row in rows]
    return "\n".join(line.rstrip() for line in out)


def _cmd_bd(args) -> int:
    from vcm.rd.plot import bd_quality_heading

    df = _load(args)
    monotonic = "pareto" if args.pareto else "strict"
    table = bd_table(df, args.anchor, args.metric, rate=args.rate, min_points=args.min_points,
                     monotonic=monotonic, method=args.method)
    if args.ci:
        table = add_intervals(table, df, args.ci, args.resamples, args.seed)
    heading, scale = bd_quality_heading(args.metric, pd.to_numeric(df[args.metric], errors="coerce"))
    print(f"BD vs {table.attrs['anchor']} ({table.attrs['anchor_points']} points) on {args.metric}, "
          f"rate {args.rate}; {describe_method(args.method, args.min_points, monotonic)}")
    if args.ci:
        print(table.attrs.get("no_interval") or f"intervals: {100 * args.ci:g} % percentile bootstrap over the "
              f"frames, {args.resamples} resamples, seed {args.seed}")
    caution = few_frames_caution(args.metric, num_frames(df))
    if caution:
        print(f"{PROG}: warning: {caution}", file=sys.stderr)
    print(_format_bd(table, heading, scale) if len(table) else "(no other curve to compare)")
    if args.out is not None:
        print(f"wrote {write_csv(table, args.out)}")
    return 0


def _cmd_plot(args) -> int:
    from vcm.rd.plot import plot_rd

    df = _load(args)
    paths = plot_rd(df, args.out, metrics=args.metrics, dashed=set(args.dashed), rate=args.rate)
    if not paths:
        raise CliError(f"none of the metrics {args.metrics} is in the results; available: {metric_columns(df)}")
    for p in paths:
        print(f"wrote {p}")
    return 0


def _cmd_report(args) -> int:
    from vcm.rd.report import write_report

    df = _load(args)
    md, html = write_report(df, args.out, args.anchor, metrics=args.metrics, dashed=set(args.dashed),
                            rate=args.rate, min_points=args.min_points,
                            monotonic="pareto" if args.pareto else "strict", method=args.method,
                            ci=args.ci or None, resamples=args.resamples, seed=args.seed)
    print(f"wrote {md}\nwrote {html}")
    return 0


def _cmd_export(args) -> int:
    from vcm.rd.published import RATE_KEY, to_compressai_json
    from vcm.rd.table import UNCOMPRESSED_CODECS, resolve_curve

    df = _load(args)
    if args.rate not in df.columns:
        raise CliError(f"rate column {args.rate!r} is not in the results (metrics: {metric_columns(df)})")
    if args.export_curves:
        curves = [resolve_curve(df, c) for c in args.export_curves]
    else:
        curves = sorted(c for c in set(df["curve"].astype(str))
                        if str(df.loc[df["curve"] == c, "codec"].iloc[0]) not in UNCOMPRESSED_CODECS)
    metrics = [m for m in metric_columns(df) if m != args.rate]
    for curve in curves:
        pts = curve_points(df, curve, args.rate, args.rate)  # every point with a rate
        rows = pts.rows
        values = {m: pd.to_numeric(rows[m], errors="coerce").to_numpy(dtype=float) for m in metrics}
        values = {m: v for m, v in values.items() if pd.notna(v).any()}
        first = rows.iloc[0]
        test_set = {"dataset": str(first["dataset"]), "split": known_value(first["split"]),
                    "num_images": None if known_value(first["num_images"]) is None else int(first["num_images"]),
                    "rate": args.rate}
        commits = sorted({c for c in rows.get("git_commit", pd.Series(dtype=object)).dropna()})
        if commits:
            test_set["git_commits"] = commits
        doc = to_compressai_json(curve, pts.rate, values, test_set,
                                 description=f"vcm curve {curve}; '{RATE_KEY}' is {args.rate}")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", curve).strip("_") or "curve"
        path = atomic_write_text(args.out / f"{name}.json", json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path} ({len(pts.rate)} point(s))")
    return 0


def _cmd_wandb(args) -> int:
    from vcm.rd.wandb_log import log_rd_curves, wandb_mode

    df = _load(args)
    folder = log_rd_curves(df, metrics=args.metrics, rate=args.rate, project=args.project, name=args.name)
    print(f"logged {len(df)} point(s) to a W&B run (mode {wandb_mode()})" + (f" in {folder}" if folder else ""))
    return 0


_COMMANDS = {"collect": _cmd_collect, "bd": _cmd_bd, "plot": _cmd_plot, "report": _cmd_report, "export": _cmd_export,
             "wandb": _cmd_wandb}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vcm-rd``; returns the exit code (0 = success, 2 = user or input error or bad
    usage, 1 = internal error)."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (CliError, ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
