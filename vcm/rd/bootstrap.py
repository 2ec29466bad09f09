"""Bootstrap confidence intervals of Bjontegaard deltas over the test frames.

A BD-rate measured on 5 or 10 frames carries the sampling noise of those frames. Each results
record keeps its per-image values (``per_image``), and a point's metric is the mean of them, so the
frames can be resampled with replacement and every point's mean recomputed; the BD value of each
resample comes from the same :func:`vcm.rd.bd.bd_rate` / :func:`vcm.rd.bd.bd_quality` computation
as the point estimate. The interval is the percentile interval of the computable resamples.

* Frames are identified by their ``name`` in ``per_image`` (the position when a record has no
  names). One resample draws frames from the union of both curves' frames, and every point of
  both curves averages the drawn frames it has, so two curves measured on the same frames see the
  same resampled frames (paired bootstrap).
* Only metrics that are per-image means can be resampled: the record's value must equal the mean
  of its finite per-image values. Dataset-level detection metrics (mAP, KITTI AP) are not, and get
  no interval (the reason says so).
* A resample can be not computable (a curve that is no longer monotonic, a point without any
  drawn frame): it is left out of the percentiles and counted.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from vcm.rd.bd import (
    DEFAULT_METHOD,
    LowOverlapWarning,
    NotComputable,
    bd_quality,
    bd_rate,
)
from vcm.rd.record import RecordError, read_record

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
#: a point's metric and the mean of its per-image values agree to this relative tolerance
_MEAN_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PerImageCurve:
    """The per-image values of one curve's RD points.

    Attributes:
        frames: frame identifiers, the columns of ``rate`` and ``quality``.
        rate: [P, F] rate of point p on frame f; NaN where the point has no finite value for it.
        quality: [P, F] quality, likewise.
    """

    frames: tuple[str, ...]
    rate: np.ndarray
    quality: np.ndarray


@dataclass(frozen=True)
class BootstrapInterval:
    """A percentile bootstrap interval of one BD value.

    Attributes:
        low: lower end (NaN when no resample was computable).
        high: upper end (NaN likewise).
        confidence: the interval's nominal coverage, e.g. 0.95.
        resamples: number of resamples drawn.
        not_computable: how many of them gave no BD value.
        frames: number of distinct frames resampled.
    """

    low: float
    high: float
    confidence: float
    resamples: int
    not_computable: int
    frames: int


def _frame_ids(per_image: Sequence[dict]) -> list[str]:
    names = [item.get("name") for item in per_image]
    if all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names):
        return names
    return [f"#{i}" for i in range(len(per_image))]


def _per_image_column(per_image: Sequence[dict], key: str) -> np.ndarray:
    """[F] the values of ``key``, NaN where an image has none (or a value that is not a number)."""
    values = [item.get(key) for item in per_image]
    return np.array([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
                     for v in values], dtype=np.float64)


def _mean_matches(values: np.ndarray, recorded: float) -> bool:
    finite = values[np.isfinite(values)]
    if not finite.size or not math.isfinite(recorded):
        return False
    return abs(float(finite.mean()) - recorded) <= _MEAN_TOLERANCE * max(1.0, abs(recorded))


def per_image_curve(
    rows: pd.DataFrame, rate: str, metric: str, cache: dict[str, dict] | None = None
) -> PerImageCurve | NotComputable:
    """The per-image values behind the RD points of one curve.

    Args:
        rows: the curve's points, as :attr:`vcm.rd.table.CurvePoints.rows` (one row per point, in
            the order of the point arrays), with their ``record_path``.
        rate: rate column, e.g. ``"bpp_real"``.
        metric: quality column, e.g. ``"psnr"``.
        cache: records already read, by path (filled here), so that a record shared by several
            tables is read once.

    Returns:
        The values, or :class:`vcm.rd.bd.NotComputable` saying why a point has none (a published
        curve, a record that is gone, a metric that is not a mean of per-image values).
    """
    cache = {} if cache is None else cache
    columns: list[tuple[list[str], np.ndarray, np.ndarray]] = []
    for _, row in rows.iterrows():
        path = row.get("record_path")
        published = '"published"' in str(row.get("params_json") or "")
        if published or not isinstance(path, (str, os.PathLike)):
            return NotComputable("a point without a results record (a published curve) has no per-image values")
        key = str(path)
        if key not in cache:
            try:
                cache[key] = read_record(path)
            except (RecordError, OSError) as e:
                return NotComputable(f"per-image values unreadable: {e}")
        per_image = cache[key]["per_image"]
        r = _per_image_column(per_image, rate)
        q = _per_image_column(per_image, metric)
        name = Path(key).name
        for values, column in ((r, rate), (q, metric)):
            if not np.isfinite(values).any():
                return NotComputable(f"{name} has no per-image {column} values")
            if not _mean_matches(values, float(row[column])):
                return NotComputable(f"{column} is not the mean of its per-image values ({name})")
        columns.append((_frame_ids(per_image), r, q))
    frames = sorted({f for ids, _, _ in columns for f in ids})
    where = {f: i for i, f in enumerate(frames)}
    rate_m = np.full((len(columns), len(frames)), np.nan)
    quality_m = np.full((len(columns), len(frames)), np.nan)
    for p, (ids, r, q) in enumerate(columns):
        cols = [where[f] for f in ids]
        rate_m[p, cols] = r
        quality_m[p, cols] = q
    return PerImageCurve(tuple(frames), rate_m, quality_m)


def resample_counts(num_frames: int, resamples: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """How often each frame is drawn in each resample.

    Args:
        num_frames: F, frames to draw from.
        resamples: B, number of resamples.
        seed: seed of the generator (the same seed gives the same resamples).

    Returns:
        [B, F] integer counts; each row sums to F.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_frames, size=(resamples, num_frames))
    counts = np.zeros((resamples, num_frames), dtype=np.int64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return counts


def _aligned(curve: PerImageCurve, frames: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    where = {f: i for i, f in enumerate(frames)}
    cols = [where[f] for f in curve.frames]
    rate = np.full((curve.rate.shape[0], len(frames)), np.nan)
    quality = np.full_like(rate, np.nan)
    rate[:, cols], quality[:, cols] = curve.rate, curve.quality
    return rate, quality


def _weighted_means(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[B, P] mean of each point's finite values over each resample (NaN when it drew none)."""
    finite = np.isfinite(values)
    total = counts @ np.where(finite, values, 0.0).T
    weight = counts @ finite.T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan)


def bd_over_resamples(
    anchor: PerImageCurve,
    test: PerImageCurve,
    counts: np.ndarray,
    over: Literal["quality", "rate"] = "quality",
    min_points: int = 3,
    monotonic: Literal["strict", "pareto"] = "strict",
    method: str = DEFAULT_METHOD,
) -> np.ndarray:
    """The BD value of each resample.

    Args:
        anchor: per-image values of the anchor curve.
        test: per-image values of the test curve.
        counts: [B, F] draws of each frame of the union of both curves' frames (sorted), as from
            :func:`resample_counts`; a row of ones is the full frame set.
        over: ``"quality"`` for the BD-rate (in percent), ``"rate"`` for the BD-quality.
        min_points, monotonic, method: as for :func:`vcm.rd.bd.bd_rate`.

    Returns:
        [B] BD values, NaN where a resample is not computable.
    """
    frames = sorted(set(anchor.frames) | set(test.frames))
    if counts.shape[1] != len(frames):
        raise ValueError(f"counts has {counts.shape[1]} frame columns, the curves have {len(frames)} frames")
    counts = counts.astype(np.float64)
    a_rate, a_quality = (_weighted_means(counts, v) for v in _aligned(anchor, frames))
    t_rate, t_quality = (_weighted_means(counts, v) for v in _aligned(test, frames))
    bd = bd_rate if over == "quality" else bd_quality
    out = np.full(counts.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowOverlapWarning)
        for b in range(counts.shape[0]):
            value = bd(a_rate[b], a_quality[b], t_rate[b], t_quality[b], min_points, monotonic, method)
            if not isinstance(value, NotComputable):
                out[b] = value
    return out


def bootstrap_interval(
    anchor: PerImageCurve,
    test: PerImageCurve,
    confidence: float = 0.95,
    over: Literal["quality", "rate"] = "quality",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    min_points: int = 3,
    monotonic: Literal["strict", "pareto"] = "strict",
    method: str = DEFAULT_METHOD,
) -> BootstrapInterval:
    """Percentile bootstrap interval of the BD-rate (``over="quality"``) or BD-quality (``"rate"``).

    Args:
        anchor: per-image values of the anchor curve (:func:`per_image_curve`).
        test: per-image values of the test curve.
        confidence: nominal coverage in (0, 1), e.g. 0.95.
        over: which BD value, as for :func:`bd_over_resamples`.
        resamples: number of resamples (>= 1).
        seed: seed of the resampling.
        min_points, monotonic, method: as for :func:`vcm.rd.bd.bd_rate`.

    Returns:
        The interval, with the number of resamples that were not computable.

    Raises:
        ValueError: on a confidence outside (0, 1) or fewer than one resample.
    """
    check_bootstrap_options(confidence, resamples)
    frames = sorted(set(anchor.frames) | set(test.frames))
    counts = resample_counts(len(frames), resamples, seed)
    values = bd_over_resamples(anchor, test, counts, over, min_points, monotonic, method)
    ok = values[np.isfinite(values)]
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = (np.percentile(ok, [tail, 100.0 - tail]).tolist() if ok.size else (math.nan, math.nan))
    return BootstrapInterval(float(low), float(high), confidence, resamples, int(values.size - ok.size), len(frames))


def check_bootstrap_options(confidence: float, resamples: int) -> None:
    """Refuse a confidence outside (0, 1) or fewer than one resample (ValueError)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"the confidence level must lie in (0, 1), e.g. 0.95; got {confidence}")
    if resamples < 1:
        raise ValueError(f"the number of bootstrap resamples must be >= 1, got {resamples}")


INTERVAL_COLUMNS = ("bd_rate_low", "bd_rate_high", "bd_quality_low", "bd_quality_high", "ci_not_computable")


def add_intervals(
    table: pd.DataFrame,
    df: pd.DataFrame,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """A BD table with the bootstrap interval of each computable row.

    Args:
        table: from :func:`vcm.rd.bd.bd_table` (its ``attrs`` name the anchor, metric, rate and
            BD options).
        df: the results table it was computed from (its ``record_path`` leads to the per-image
            values).
        confidence: nominal coverage, e.g. 0.95.
        resamples: number of resamples per row.
        seed: seed of the resampling; every row uses the same resamples of the frames.

    Returns:
        A copy with the columns of :data:`INTERVAL_COLUMNS` (NaN where there is no interval,
        ``ci_not_computable`` = resamples of the BD-rate that gave no value) and the reason for a
        missing interval, or the count of not computable resamples, added to ``note``. When the
        anchor has no per-image values (a metric that is not a per-image mean), no row has an
        interval and ``attrs["no_interval"]`` says why, once.
    """
    from vcm.rd.table import curve_points

    check_bootstrap_options(confidence, resamples)
    a = table.attrs
    options = {"min_points": a.get("min_points", 3), "monotonic": a.get("monotonic", "strict"),
               "method": a.get("method", DEFAULT_METHOD)}
    out = table.copy()
    for col in INTERVAL_COLUMNS:
        out[col] = np.nan
    cache: dict[str, dict] = {}
    anchor = per_image_curve(curve_points(df, a["anchor"], a["rate"], a["metric"]).rows, a["rate"], a["metric"], cache)
    out.attrs.update(table.attrs, ci=confidence, resamples=resamples, seed=seed)
    if isinstance(anchor, NotComputable):  # no row can have one: said once, not in every note
        out.attrs["no_interval"] = f"no interval vs {a['anchor']}: {anchor.reason}"
        return out
    for i, row in out.iterrows():
        if math.isnan(row["bd_rate_pct"]):
            continue
        notes = [row["note"]] if row["note"] else []
        test = per_image_curve(curve_points(df, row["curve"], a["rate"], a["metric"]).rows, a["rate"], a["metric"],
                               cache)
        if isinstance(test, NotComputable):
            notes.append(f"no interval: {test.reason}")
        else:
            rate_ci = bootstrap_interval(anchor, test, confidence, "quality", resamples, seed, **options)
            out.loc[i, ["bd_rate_low", "bd_rate_high", "ci_not_computable"]] = [
                rate_ci.low, rate_ci.high, rate_ci.not_computable]
            if not math.isnan(row["bd_quality"]):
                q_ci = bootstrap_interval(anchor, test, confidence, "rate", resamples, seed, **options)
                out.loc[i, ["bd_quality_low", "bd_quality_high"]] = [q_ci.low, q_ci.high]
            if rate_ci.not_computable:
                notes.append(f"{rate_ci.not_computable} of {resamples} resamples not computable")
        out.loc[i, "note"] = "; ".join(notes)
    return out
