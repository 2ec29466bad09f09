"""Bjontegaard delta rate and delta quality between two rate-distortion curves.

BD-rate (VCEG-M33; piecewise cubic variant of the JCT-VC/JVET common test conditions,
JCTVC-L1100 / JVET-T2010 Excel sheets): the log-rate of each curve is interpolated as a function of
quality with a piecewise cubic Hermite interpolant (PCHIP, Fritsch-Carlson slopes, as
``scipy.interpolate.PchipInterpolator``), both interpolants are integrated exactly over the
overlapping quality interval ``[max(min q_a, min q_t), min(max q_a, max q_t)]``, and

    BD-rate = (exp(mean(ln R_test - ln R_anchor)) - 1) * 100  [%],

negative = the test curve needs fewer bits than the anchor for the same quality. The piecewise
polynomial is integrated analytically (no sampling), which reproduces the published JCTVC-E137
numbers to about 12 significant digits (see ``tests/test_rd_bd.py``). BD-quality (BD-PSNR for PSNR)
swaps the roles: quality as a function of log-rate, mean difference over the overlapping log-rate
interval, in the quality's unit. Both are invariant to the base of the logarithm.

Choices (each a parameter):

* ``min_points=3``. PCHIP is defined from 2 points, but 2 points make it a straight line in
  (quality, log-rate) and cannot show any curvature; the CTC use 4 points per curve. 3 is the
  fewest for which PCHIP's slope at an interior point is shaped by data on both sides, and lets
  short learned-codec sweeps (3 lambdas) be compared; raise it to 4 for CTC-style reports.
* Points are sorted by quality. The rate must strictly increase with quality (an RD curve) and
  qualities must be distinct (PCHIP needs a strictly increasing abscissa). Otherwise the result is
  :class:`NotComputable`; ``monotonic="pareto"`` instead keeps the Pareto front (drops every point
  for which another point has lower-or-equal rate and higher-or-equal quality), which is the
  usual remedy for noisy task metrics such as mAP on small test sets.
* Non-finite values, rate <= 0, fewer than ``min_points`` points or quality intervals that do not
  overlap give :class:`NotComputable` with the reason, never a number.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.interpolate import PchipInterpolator

DEFAULT_MIN_POINTS = 3


@dataclass(frozen=True)
class NotComputable:
    """Why a Bjontegaard delta could not be computed (returned instead of a number)."""

    reason: str

    def __str__(self) -> str:
        return f"not computable: {self.reason}"

    def __bool__(self) -> bool:  # so that `if result:` never mistakes it for a value
        return False


@dataclass(frozen=True)
class _Curve:
    rate: np.ndarray  # [N] > 0, sorted by quality
    quality: np.ndarray  # [N] strictly increasing


def _prepare(
    name: str, rate: Sequence[float], quality: Sequence[float], min_points: int, monotonic: str
) -> _Curve | NotComputable:
    r = np.asarray(rate, dtype=np.float64).reshape(-1)
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    if r.shape != q.shape:
        raise ValueError(f"{name}: {r.size} rates but {q.size} quality values; they must pair up")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        bad = [i for i in range(r.size) if not (math.isfinite(r[i]) and math.isfinite(q[i]))]
        return NotComputable(f"{name} curve has non-finite rate or quality at point(s) {bad}")
    if np.any(r <= 0):
        return NotComputable(f"{name} curve has rate <= 0 ({r[r <= 0].tolist()}); log-rate is undefined")
    order = np.lexsort((r, q))  # by quality, then rate
    r, q = r[order], q[order]
    if monotonic == "pareto":
        keep = _pareto_front(r, q)
        r, q = r[keep], q[keep]
    elif monotonic != "strict":
        raise ValueError(f"monotonic must be 'strict' or 'pareto', got {monotonic!r}")
    if r.size < min_points:
        extra = " on its Pareto front" if monotonic == "pareto" else ""
        return NotComputable(f"{name} curve has {r.size} point(s){extra}, at least {min_points} needed")
    if np.any(np.diff(q) <= 0):
        dup = sorted(set(q[1:][np.diff(q) <= 0].tolist()))
        return NotComputable(f"{name} curve has repeated quality value(s) {_rounded(dup)}")
    if np.any(np.diff(r) <= 0):
        return NotComputable(
            f"{name} curve is not monotonic (rate does not increase with quality: rates {_rounded(r)} "
            f"at qualities {_rounded(q)}); use --pareto (vcm-rd) or monotonic='pareto' to keep its Pareto front"
        )
    return _Curve(r, q)


def _rounded(values) -> list[float]:
    """Values to 4 significant digits, for messages."""
    return [float(f"{float(v):.4g}") for v in np.asarray(values).ravel()]


def _pareto_front(r: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Indices of points not dominated by another (lower-or-equal rate, higher-or-equal quality).

    Args:
        r: [N] rates sorted by quality (ties by rate).
        q: [N] qualities, ascending.

    Returns:
        Sorted integer indices into ``r``/``q``.
    """
    keep = []
    best_rate = math.inf
    # Walk from the highest quality down: a point survives if it is strictly cheaper than every
    # point of higher-or-equal quality.
    for i in range(r.size - 1, -1, -1):
        if r[i] < best_rate:
            if keep and q[keep[-1]] == q[i]:
                keep.pop()  # same quality, cheaper: replaces the dearer one
            keep.append(i)
            best_rate = r[i]
    return np.array(sorted(keep), dtype=np.int64)


def _mean_over(f: PchipInterpolator, lo: float, hi: float) -> float:
    return float(f.integrate(lo, hi)) / (hi - lo)


def bd_rate(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    min_points: int = DEFAULT_MIN_POINTS,
    monotonic: Literal["strict", "pareto"] = "strict",
) -> float | NotComputable:
    """Bjontegaard delta rate of the test curve against the anchor, in percent.

    Args:
        rate_anchor: [N] anchor rates (> 0, any unit, e.g. bpp).
        quality_anchor: [N] anchor qualities (PSNR in dB, mAP, ...), higher = better.
        rate_test: [M] test rates, same unit as the anchor's.
        quality_test: [M] test qualities.
        min_points: fewest points per curve (see the module docstring for the default of 3).
        monotonic: ``"strict"`` (non-monotonic curves are not computable) or ``"pareto"``.

    Returns:
        The BD-rate in percent (-50.0 = half the bits at equal quality), or :class:`NotComputable`.

    Raises:
        ValueError: if a curve's rate and quality arrays differ in length, or on a bad option.
    """
    if min_points < 2:
        raise ValueError(f"min_points must be >= 2 (PCHIP needs two points), got {min_points}")
    a = _prepare("anchor", rate_anchor, quality_anchor, min_points, monotonic)
    if isinstance(a, NotComputable):
        return a
    t = _prepare("test", rate_test, quality_test, min_points, monotonic)
    if isinstance(t, NotComputable):
        return t
    lo = max(a.quality[0], t.quality[0])
    hi = min(a.quality[-1], t.quality[-1])
    if not hi > lo:
        return NotComputable(
            f"quality ranges do not overlap (anchor [{a.quality[0]:.6g}, {a.quality[-1]:.6g}], "
            f"test [{t.quality[0]:.6g}, {t.quality[-1]:.6g}])"
        )
    fa = PchipInterpolator(a.quality, np.log(a.rate))
    ft = PchipInterpolator(t.quality, np.log(t.rate))
    diff = _mean_over(ft, lo, hi) - _mean_over(fa, lo, hi)
    return float(math.expm1(diff) * 100.0)


def bd_quality(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    min_points: int = DEFAULT_MIN_POINTS,
    monotonic: Literal["strict", "pareto"] = "strict",
) -> float | NotComputable:
    """Bjontegaard delta quality (BD-PSNR for PSNR) of the test curve against the anchor.

    Quality is interpolated with PCHIP as a function of log-rate and averaged over the overlapping
    log-rate interval.

    Args:
        rate_anchor: [N] anchor rates (> 0).
        quality_anchor: [N] anchor qualities.
        rate_test: [M] test rates.
        quality_test: [M] test qualities.
        min_points: fewest points per curve.
        monotonic: ``"strict"`` or ``"pareto"``, as for :func:`bd_rate`.

    Returns:
        Mean quality difference test - anchor in the quality's unit (positive = test better), or
        :class:`NotComputable`.
    """
    if min_points < 2:
        raise ValueError(f"min_points must be >= 2 (PCHIP needs two points), got {min_points}")
    a = _prepare("anchor", rate_anchor, quality_anchor, min_points, monotonic)
    if isinstance(a, NotComputable):
        return a
    t = _prepare("test", rate_test, quality_test, min_points, monotonic)
    if isinstance(t, NotComputable):
        return t
    la, lt = np.log(a.rate), np.log(t.rate)  # strictly increasing: checked by _prepare
    lo, hi = max(la[0], lt[0]), min(la[-1], lt[-1])
    if not hi > lo:
        return NotComputable(
            f"rate ranges do not overlap (anchor [{a.rate[0]:.6g}, {a.rate[-1]:.6g}], "
            f"test [{t.rate[0]:.6g}, {t.rate[-1]:.6g}])"
        )
    fa = PchipInterpolator(la, a.quality)
    ft = PchipInterpolator(lt, t.quality)
    return _mean_over(ft, lo, hi) - _mean_over(fa, lo, hi)


def bd_psnr(*args, **kwargs) -> float | NotComputable:
    """Alias of :func:`bd_quality` under its customary name (result in dB for PSNR)."""
    return bd_quality(*args, **kwargs)


def bd_table(
    df,
    anchor: str,
    metric: str,
    rate: str = "bpp_real",
    min_points: int = DEFAULT_MIN_POINTS,
    monotonic: Literal["strict", "pareto"] = "strict",
):
    """BD-rate and BD-quality of every curve of a results table against one anchor curve.

    Args:
        df: table from :func:`vcm.rd.table.collect` (one row per record, ``curve`` column).
        anchor: a curve label, or a codec name that has exactly one curve.
        metric: quality column, e.g. ``"psnr"`` or ``"map_50"``.
        rate: rate column.
        min_points: fewest points per curve.
        monotonic: ``"strict"`` or ``"pareto"`` (see :func:`bd_rate`).

    Returns:
        DataFrame with columns ``curve, codec, points, bd_rate_pct, bd_quality, note``; one row per
        curve other than the anchor and the uncompressed reference (codec ``none``). ``bd_rate_pct``/``bd_quality`` are NaN when not computable
        and ``note`` then reads ``"not computable: <reason>"``.

    Raises:
        ValueError: if the anchor, the metric or the rate column is not in the table, or the table
            mixes test sets.
    """
    import pandas as pd

    from vcm.rd.table import (
        UNCOMPRESSED_CODECS,
        check_single_test_set,
        curve_points,
        resolve_curve,
    )

    for col, what in ((metric, "metric"), (rate, "rate")):
        if col not in df.columns:
            from vcm.rd.table import metric_columns

            raise ValueError(
                f"{what} column {col!r} is not in the results table; available metrics: "
                f"{metric_columns(df)}"
            )
    check_single_test_set(df)
    anchor_curve = resolve_curve(df, anchor)
    a_pts = curve_points(df, anchor_curve, rate, metric)

    rows = []
    for curve in sorted(set(df["curve"])):
        if curve == anchor_curve:
            continue
        codec = str(df.loc[df["curve"] == curve, "codec"].iloc[0])
        if codec in UNCOMPRESSED_CODECS:
            continue
        pts = curve_points(df, curve, rate, metric)
        note_extra = []
        if a_pts.dropped:
            note_extra.append(f"{a_pts.dropped} anchor point(s) without {metric} ignored")
        if pts.dropped:
            note_extra.append(f"{pts.dropped} point(s) without {metric} ignored")
        r = bd_rate(a_pts.rate, a_pts.quality, pts.rate, pts.quality, min_points, monotonic)
        if isinstance(r, NotComputable):
            bd_r, bd_q, note = math.nan, math.nan, str(r)
        else:
            q = bd_quality(a_pts.rate, a_pts.quality, pts.rate, pts.quality, min_points, monotonic)
            bd_r = r
            bd_q = math.nan if isinstance(q, NotComputable) else q
            note = "" if not isinstance(q, NotComputable) else f"BD-{metric}: {q}"
        if note_extra:
            note = "; ".join([n for n in [note] if n] + note_extra)
        rows.append(
            {"curve": curve, "codec": codec, "points": len(pts.rate), "bd_rate_pct": bd_r, "bd_quality": bd_q, "note": note}
        )
    out = pd.DataFrame(rows, columns=["curve", "codec", "points", "bd_rate_pct", "bd_quality", "note"])
    out.attrs.update(anchor=anchor_curve, metric=metric, rate=rate, anchor_points=len(a_pts.rate))
    return out


def format_bd_value(value: float, note: str, digits: int = 2) -> str:
    """``"-12.34"`` for a number, else the note (``"not computable: ..."``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return note or "not computable"
    return f"{value:+.{digits}f}"
