"""Bjontegaard delta rate and delta quality between two rate-distortion curves.

BD-rate (VCEG-M33): the log-rate of each curve is interpolated as a function of quality, both
interpolants are integrated exactly over the overlapping quality interval
``[max(min q_a, min q_t), min(max q_a, max q_t)]``, and

    BD-rate = (exp(mean(ln R_test - ln R_anchor)) - 1) * 100  [%],

negative = the test curve needs fewer bits than the anchor for the same quality. BD-quality
(BD-PSNR for PSNR, BD-mAP for mAP) swaps the roles: quality as a function of log-rate, mean
difference over the overlapping log-rate interval, in the quality's unit. Both are invariant to the
base of the logarithm.

Interpolation (``method``):

* ``"pchip"`` (default): piecewise cubic Hermite interpolation with Fritsch-Carlson slopes (as
  ``scipy.interpolate.PchipInterpolator``), the variant of the JCT-VC/JVET common test conditions
  (JCTVC-L1100 / JVET-T2010 Excel sheets). Its piecewise polynomial is integrated analytically,
  which reproduces the published JCTVC-E137 numbers to about 12 significant digits (see
  ``tests/test_rd_bd.py``).
* ``"cubic"``: the classic VCEG-M33 fit, one least-squares cubic polynomial per curve
  (``numpy.polyfit`` of degree 3), integrated exactly. It needs at least 4 points per curve and,
  unlike the piecewise methods, need not pass through the points.
* ``"akima"``: Akima's piecewise cubic (``scipy.interpolate.Akima1DInterpolator``), integrated
  exactly.

Choices (each a parameter):

* ``min_points=3``. PCHIP is defined from 2 points, but 2 points make it a straight line in
  (quality, log-rate) and cannot show any curvature; the CTC use 4 points per curve. 3 is the
  fewest for which PCHIP's slope at an interior point is shaped by data on both sides, and lets
  short learned-codec sweeps (3 lambdas) be compared; raise it to 4 for CTC-style reports. The
  cubic fit always needs 4.
* Points are sorted by quality. The rate must strictly increase with quality (an RD curve) and
  qualities must be distinct (the interpolants need a strictly increasing abscissa). Otherwise
  the result is :class:`NotComputable`; ``monotonic="pareto"`` instead keeps the Pareto front
  (drops every point for which another point has lower-or-equal rate and higher-or-equal
  quality), which is the usual remedy for noisy task metrics such as mAP on small test sets.
* Non-finite values, rate <= 0, fewer than ``min_points`` points or quality intervals that do not
  overlap give :class:`NotComputable` with the reason, never a number.
* When the two ranges overlap by less than :data:`LOW_OVERLAP` (75 %) of the shorter one, the
  value is computed but a :class:`LowOverlapWarning` says that it rests on a small part of the
  curves (``bd_table`` puts it in the row's note).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.interpolate import Akima1DInterpolator, PchipInterpolator

DEFAULT_MIN_POINTS = 3
#: Interpolation methods of :func:`bd_rate` / :func:`bd_quality`, the default first.
BD_METHODS: tuple[str, ...] = ("pchip", "cubic", "akima")
DEFAULT_METHOD = "pchip"
#: Below this overlap (as a fraction of the shorter range) a BD value says little.
LOW_OVERLAP = 0.75
_CUBIC_POINTS = 4

Method = Literal["pchip", "cubic", "akima"]


class LowOverlapWarning(UserWarning):
    """The two curves share less than :data:`LOW_OVERLAP` of the shorter one's range."""


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
    name: str, rate: Sequence[float], quality: Sequence[float], min_points: int, monotonic: str,
    suggest_min_points: bool = True,
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
        hint = ""
        if r.size >= 2 and suggest_min_points:
            shape = " (2 points: a straight line, no curvature)" if r.size == 2 else ""
            hint = f"; --min-points {r.size} (vcm-rd) or min_points={r.size} admits it{shape}"
        return NotComputable(f"{name} curve has {r.size} point(s){extra}, at least {min_points} needed{hint}")
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


class _CubicFit:
    """VCEG-M33's least-squares cubic polynomial ``y(x)``, with its exact integral."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self._antiderivative = np.polyint(np.polyfit(x, y, 3))

    def integrate(self, lo: float, hi: float) -> float:
        return float(np.polyval(self._antiderivative, hi) - np.polyval(self._antiderivative, lo))


def _interpolant(x: np.ndarray, y: np.ndarray, method: str):
    """``y(x)`` by ``method``, an object with ``integrate(lo, hi)``; ``x`` strictly increasing."""
    if method == "pchip":
        return PchipInterpolator(x, y)
    if method == "akima":
        return Akima1DInterpolator(x, y)
    return _CubicFit(x, y)


def _check_options(min_points: int, method: str) -> None:
    if min_points < 2:
        raise ValueError(f"min_points must be >= 2 (an interpolant needs two points), got {min_points}")
    if method not in BD_METHODS:
        raise ValueError(f"unknown BD interpolation method {method!r}; expected one of {list(BD_METHODS)}")


def percent_below(fraction: float, limit: float) -> str:
    """``fraction`` in percent with as many decimals as it takes to show that it is below ``limit``
    (0.7496 against 0.75: "74.96", never "75")."""
    for digits in range(4):
        text = f"{100 * fraction:.{digits}f}"
        if float(text) < 100 * limit:
            return text
    return f"{100 * fraction:.6g}"


def _overlap_fraction(a_lo: float, a_hi: float, t_lo: float, t_hi: float) -> float:
    """Length of the overlap of two intervals over the length of the shorter one."""
    return (min(a_hi, t_hi) - max(a_lo, t_lo)) / min(a_hi - a_lo, t_hi - t_lo)


def _bd_mean_difference(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    min_points: int,
    monotonic: str,
    method: str,
    over: Literal["quality", "rate"],
) -> float | NotComputable:
    """Mean of ``f_test - f_anchor`` over the overlap, ``f`` being log-rate of quality (``over=
    "quality"``, BD-rate) or quality of log-rate (``over="rate"``, BD-quality)."""
    _check_options(min_points, method)
    need = max(min_points, _CUBIC_POINTS) if method == "cubic" else min_points
    # a cubic fit needs 4 points whatever min_points says: no --min-points hint then
    a = _prepare("anchor", rate_anchor, quality_anchor, need, monotonic, suggest_min_points=method != "cubic")
    if isinstance(a, NotComputable):
        return a
    t = _prepare("test", rate_test, quality_test, need, monotonic, suggest_min_points=method != "cubic")
    if isinstance(t, NotComputable):
        return t
    if over == "quality":
        xa, ya, xt, yt = a.quality, np.log(a.rate), t.quality, np.log(t.rate)
        show_a, show_t = (a.quality[0], a.quality[-1]), (t.quality[0], t.quality[-1])
    else:  # log-rate is strictly increasing: checked by _prepare
        xa, ya, xt, yt = np.log(a.rate), a.quality, np.log(t.rate), t.quality
        show_a, show_t = (a.rate[0], a.rate[-1]), (t.rate[0], t.rate[-1])
    ranges = f"anchor [{show_a[0]:.6g}, {show_a[1]:.6g}], test [{show_t[0]:.6g}, {show_t[1]:.6g}]"
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if not hi > lo:
        return NotComputable(f"{over} ranges do not overlap ({ranges})")
    shared = _overlap_fraction(xa[0], xa[-1], xt[0], xt[-1])
    if shared < LOW_OVERLAP:
        warnings.warn(
            f"low overlap for {'BD-rate' if over == 'quality' else 'BD-quality'}: the {over} ranges share "
            f"{percent_below(shared, LOW_OVERLAP)} % of the shorter one (< {100 * LOW_OVERLAP:.0f} %; {ranges})",
            LowOverlapWarning,
            stacklevel=3,
        )
    fa, ft = _interpolant(xa, ya, method), _interpolant(xt, yt, method)
    return (float(ft.integrate(lo, hi)) - float(fa.integrate(lo, hi))) / (hi - lo)


def bd_rate(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    min_points: int = DEFAULT_MIN_POINTS,
    monotonic: Literal["strict", "pareto"] = "strict",
    method: Method = DEFAULT_METHOD,
) -> float | NotComputable:
    """Bjontegaard delta rate of the test curve against the anchor, in percent.

    Args:
        rate_anchor: [N] anchor rates (> 0, any unit, e.g. bpp).
        quality_anchor: [N] anchor qualities (PSNR in dB, mAP, ...), higher = better.
        rate_test: [M] test rates, same unit as the anchor's.
        quality_test: [M] test qualities.
        min_points: fewest points per curve (see the module docstring for the default of 3).
        monotonic: ``"strict"`` (non-monotonic curves are not computable) or ``"pareto"``.
        method: ``"pchip"``, ``"cubic"`` (VCEG-M33's polynomial fit) or ``"akima"``.

    Returns:
        The BD-rate in percent (-50.0 = half the bits at equal quality), or :class:`NotComputable`.
        A :class:`LowOverlapWarning` is issued when the quality ranges overlap little.

    Raises:
        ValueError: if a curve's rate and quality arrays differ in length, or on a bad option.
    """
    diff = _bd_mean_difference(rate_anchor, quality_anchor, rate_test, quality_test, min_points, monotonic,
                               method, over="quality")
    return diff if isinstance(diff, NotComputable) else float(math.expm1(diff) * 100.0)


def bd_quality(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    min_points: int = DEFAULT_MIN_POINTS,
    monotonic: Literal["strict", "pareto"] = "strict",
    method: Method = DEFAULT_METHOD,
) -> float | NotComputable:
    """Bjontegaard delta quality (BD-PSNR for PSNR) of the test curve against the anchor.

    Quality is interpolated as a function of log-rate and averaged over the overlapping log-rate
    interval.

    Args:
        rate_anchor: [N] anchor rates (> 0).
        quality_anchor: [N] anchor qualities.
        rate_test: [M] test rates.
        quality_test: [M] test qualities.
        min_points: fewest points per curve.
        monotonic: ``"strict"`` or ``"pareto"``, as for :func:`bd_rate`.
        method: ``"pchip"``, ``"cubic"`` or ``"akima"``, as for :func:`bd_rate`.

    Returns:
        Mean quality difference test - anchor in the quality's unit (positive = test better), or
        :class:`NotComputable`. A :class:`LowOverlapWarning` is issued when the log-rate ranges
        overlap little.
    """
    return _bd_mean_difference(rate_anchor, quality_anchor, rate_test, quality_test, min_points, monotonic,
                               method, over="rate")


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
    method: Method = DEFAULT_METHOD,
):
    """BD-rate and BD-quality of every curve of a results table against one anchor curve.

    Args:
        df: table from :func:`vcm.rd.table.collect` (one row per RD point, ``curve`` column),
            possibly with published curves added by :func:`vcm.rd.table.add_curves`.
        anchor: a curve label, or a codec name that has exactly one curve.
        metric: quality column, e.g. ``"psnr"`` or ``"map_50"``.
        rate: rate column.
        min_points: fewest points per curve.
        monotonic: ``"strict"`` or ``"pareto"`` (see :func:`bd_rate`).
        method: ``"pchip"``, ``"cubic"`` or ``"akima"`` (see :func:`bd_rate`).

    Returns:
        DataFrame with columns ``curve, codec, points, bd_rate_pct, bd_quality, note``; one row per
        curve other than the anchor and the uncompressed reference (codec ``none``).
        ``bd_rate_pct``/``bd_quality`` are NaN when not computable and ``note`` then reads
        ``"not computable: <reason>"``; a low overlap of the curves is also told in ``note``.
        Its ``attrs`` name the anchor, metric, rate and BD options, from which
        :func:`vcm.rd.bootstrap.add_intervals` adds bootstrap intervals.

    Raises:
        ValueError: if the anchor, the metric or the rate column is not in the table, the table
            mixes test sets, or on a bad option.
    """
    import pandas as pd

    from vcm.rd.table import (
        UNCOMPRESSED_CODECS,
        check_single_test_set,
        curve_points,
        metric_columns,
        resolve_curve,
    )

    _check_options(min_points, method)
    for col, what in ((metric, "metric"), (rate, "rate")):
        if col not in df.columns:
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
        notes = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LowOverlapWarning)
            args = (a_pts.rate, a_pts.quality, pts.rate, pts.quality, min_points, monotonic, method)
            r = bd_rate(*args)
            q = bd_quality(*args) if not isinstance(r, NotComputable) else r
        if isinstance(r, NotComputable):
            bd_r, bd_q = math.nan, math.nan
            notes.append(str(r))
        else:
            bd_r = r
            bd_q = math.nan if isinstance(q, NotComputable) else q
            if isinstance(q, NotComputable):
                notes.append(f"BD-{metric}: {q}")
        notes += [str(w.message) for w in caught if issubclass(w.category, LowOverlapWarning)]
        for w in caught:
            if not issubclass(w.category, LowOverlapWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if a_pts.dropped:
            notes.append(f"{a_pts.dropped} anchor point(s) without {metric} ignored")
        if pts.dropped:
            notes.append(f"{pts.dropped} point(s) without {metric} ignored")
        rows.append(
            {"curve": curve, "codec": codec, "points": len(pts.rate), "bd_rate_pct": bd_r, "bd_quality": bd_q,
             "note": "; ".join(notes)}
        )
    out = pd.DataFrame(rows, columns=["curve", "codec", "points", "bd_rate_pct", "bd_quality", "note"])
    out.attrs.update(anchor=anchor_curve, metric=metric, rate=rate, anchor_points=len(a_pts.rate), method=method,
                     min_points=min_points, monotonic=monotonic)
    return out


def describe_method(method: str, min_points: int, monotonic: str) -> str:
    """One line saying how the BD values were computed (for reports and command output)."""
    fit = {
        "pchip": "PCHIP of log-rate over quality",
        "cubic": "least-squares cubic fit of log-rate over quality (VCEG-M33)",
        "akima": "Akima spline of log-rate over quality",
    }[method]
    need = max(min_points, _CUBIC_POINTS) if method == "cubic" else min_points
    return (
        f"{fit}, exact integral on the overlap, >= {need} points per curve, {monotonic} monotonicity; "
        "negative BD-rate = fewer bits than the anchor"
    )


def format_bd_value(value: float, note: str, digits: int = 2) -> str:
    """``"-12.34"`` for a number, else the note (``"not computable: ..."``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return note or "not computable"
    return f"{value:+.{digits}f}"
