"""BD-rate / BD-quality: published reference values, exact hand-made cases, not-computable cases."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.interpolate import Akima1DInterpolator

from vcm.rd.bd import (
    LowOverlapWarning,
    NotComputable,
    bd_psnr,
    bd_quality,
    bd_rate,
    bd_table,
)

# Published reference values. Rate-PSNR points from JCTVC-E137 (JCT-VC, 5th meeting, Geneva 2011),
# with the BD-rates of the JCT-VC PCHIP Excel sheet as stated in Netflix/vmaf
# python/test/calculate_bd_rate_test.py (class CalculateBdRateJCTVCTest, expected values given
# there as fractions: -0.00465215420752807 and -0.018779823450567612) and reused in the Android CTS
# (hostsidetests/mediapc/videoencodingquality/bdrate/.../BdRateCalculatorTests.java).
JCTVC_E137 = [
    (
        [108048.8736, 61279.976, 33905.6656, 18883.6928],
        [43.6471, 40.3953, 37.247, 34.2911],
        [108061.2784, 61299.9936, 33928.7472, 18910.912],
        [43.6768, 40.4232, 37.2761, 34.3147],
        -0.465215420752807,
    ),
    (
        [40433.8848, 7622.7456, 2394.488, 1017.6184],
        [37.5761, 35.3756, 33.8977, 32.0603],
        [40370.12, 7587.0024, 2390.0944, 1017.0984],
        [37.5982, 35.4025, 33.9194, 32.0822],
        -1.8779823450567612,
    ),
]

# Test data of the FAU-LMS `bjontegaard` package README / example_usage.py (libx265 presets).
FAU_ANCHOR = ([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851])
FAU_TEST = ([9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987])


@pytest.mark.parametrize("ra, qa, rt, qt, expected", JCTVC_E137)
def test_bd_rate_reproduces_published_jctvc_e137_values(ra, qa, rt, qt, expected):
    got = bd_rate(ra, qa, rt, qt, min_points=4)
    # The exact PCHIP integral agrees with the published Excel numbers to ~1e-12 %.
    assert got == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("ra, qa, rt, qt, expected", JCTVC_E137)
def test_bd_rate_does_not_depend_on_point_order(ra, qa, rt, qt, expected):
    perm = [2, 0, 3, 1]
    got = bd_rate(np.take(ra, perm), np.take(qa, perm), rt[::-1], qt[::-1])
    assert got == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic", "akima"])
def test_bd_rate_and_psnr_match_the_bjontegaard_package(method):
    import bjontegaard as bj  # a dev dependency: the cross-check must run, not skip
    cases = [(*FAU_ANCHOR, *FAU_TEST)] + [c[:4] for c in JCTVC_E137]
    for ra, qa, rt, qt in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # both sides warn about low overlap in their own words
            ours_r, ours_q = bd_rate(ra, qa, rt, qt, method=method), bd_psnr(ra, qa, rt, qt, method=method)
            theirs_r = bj.bd_rate(ra, qa, rt, qt, method=method)
            theirs_q = bj.bd_psnr(ra, qa, rt, qt, method=method)
        assert ours_r == pytest.approx(theirs_r, abs=1e-9)
        assert ours_q == pytest.approx(theirs_q, abs=1e-9)


def _direct_bd(rate_a, q_a, rate_t, q_t, fit):
    """BD-rate and BD-quality by numerical quadrature of interpolants built by ``fit(x, y)``."""
    def mean(f, knots, lo, hi):  # quadrature split at the knots, where a spline's 2nd derivative jumps
        inner = [k for k in knots if lo < k < hi]
        return quad(f, lo, hi, points=inner or None, epsabs=1e-13, epsrel=1e-13, limit=200)[0] / (hi - lo)

    la, lt = np.log(rate_a), np.log(rate_t)
    lo, hi = max(min(q_a), min(q_t)), min(max(q_a), max(q_t))
    fa, ft = fit(np.asarray(q_a), la), fit(np.asarray(q_t), lt)
    diff = mean(ft, q_t, lo, hi) - mean(fa, q_a, lo, hi)
    rlo, rhi = max(la.min(), lt.min()), min(la.max(), lt.max())
    ga, gt = fit(la, np.asarray(q_a)), fit(lt, np.asarray(q_t))
    dq = mean(gt, lt, rlo, rhi) - mean(ga, la, rlo, rhi)
    return (np.exp(diff) - 1) * 100, dq


def _least_squares_cubic(x, y):
    # The VCEG-M33 fit, solved independently of np.polyfit: least squares on the Vandermonde matrix.
    coef = np.linalg.lstsq(np.vander(x, 4), y, rcond=None)[0]
    return lambda v: np.polyval(coef, v)


def _akima(x, y):
    order = np.argsort(x)
    return Akima1DInterpolator(x[order], y[order])


CURVES = [(*FAU_ANCHOR, *FAU_TEST)] + [c[:4] for c in JCTVC_E137] + [
    ([0.1, 0.2, 0.4, 0.8, 1.6], [28.0, 31.0, 33.5, 36.0, 38.0],
     [0.09, 0.17, 0.3, 0.65, 1.2, 2.0], [27.5, 30.9, 33.1, 35.8, 37.6, 39.0]),
]


@pytest.mark.parametrize("method, fit", [("cubic", _least_squares_cubic), ("akima", _akima)])
@pytest.mark.parametrize("ra, qa, rt, qt", CURVES)
def test_cubic_and_akima_match_direct_numpy_scipy_computations(method, fit, ra, qa, rt, qt):
    ra, qa, rt, qt = (np.asarray(v, dtype=float) for v in (ra, qa, rt, qt))
    expected_rate, expected_quality = _direct_bd(ra, qa, rt, qt, fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowOverlapWarning)
        assert bd_rate(ra, qa, rt, qt, method=method) == pytest.approx(expected_rate, abs=1e-8)
        assert bd_quality(ra, qa, rt, qt, method=method) == pytest.approx(expected_quality, abs=1e-8)


def test_cubic_fit_reproduces_a_cubic_and_needs_four_points():
    # log-rate exactly cubic in quality: the fit is exact, so a rate scaled by 0.8 is -20 %.
    q = np.array([30.0, 32.0, 34.0, 36.0, 38.0])
    r = np.exp(0.002 * (q - 30) ** 3 - 0.01 * (q - 30) ** 2 + 0.3 * (q - 30) - 2.0)
    assert bd_rate(r, q, r * 0.8, q, method="cubic") == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(r, q, r * 0.8, q, method="akima") == pytest.approx(-20.0, abs=1e-9)
    three = bd_rate(r[:3], q[:3], r[:3] * 0.8, q[:3], method="cubic")
    assert isinstance(three, NotComputable) and "3 point(s), at least 4 needed" in three.reason
    with pytest.raises(ValueError, match="unknown BD interpolation method 'spline'.*pchip"):
        bd_rate(r, q, r, q, method="spline")


def test_low_overlap_warns_and_goes_into_the_note():
    q = np.array([28.0, 30.0, 32.0, 34.0, 36.0])
    r = 0.1 * 2.0 ** ((q - 28.0) / 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowOverlapWarning)
        bd_rate(r, q, r[1:] * 0.9, q[1:])  # [30, 36] dB inside the anchor's [28, 36]: 100 %, no warning
    # [34, 40] dB against [28, 36]: 2 of the shorter 6 dB = 33 % -> a warning, the value still computed
    with pytest.warns(LowOverlapWarning, match=r"low overlap for BD-rate: the quality ranges share 33 %"):
        value = bd_rate(r, q, [0.3, 0.5, 0.9, 1.5], [34.0, 36.0, 38.0, 40.0])
    assert math.isfinite(value)
    rows = [{"curve": "a", "codec": "a", "bpp_real": x, "psnr": y} for x, y in zip(r, q)]
    rows += [{"curve": "b", "codec": "b", "bpp_real": x, "psnr": y}
             for x, y in zip([0.3, 0.5, 0.9, 1.5], [34.0, 36.0, 38.0, 40.0])]
    t = bd_table(_table(rows), "a", "psnr").set_index("curve")
    assert math.isfinite(t.loc["b", "bd_rate_pct"]) and "low overlap for BD-rate" in t.loc["b", "note"]


RATES = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
PSNR = np.array([28.0, 31.0, 33.5, 36.0, 38.0])


@pytest.mark.parametrize("factor, expected", [(1.0, 0.0), (0.5, -50.0), (2.0, 100.0), (0.9, -10.0)])
def test_bd_rate_of_a_scaled_curve_is_the_scale(factor, expected):
    assert bd_rate(RATES, PSNR, RATES * factor, PSNR) == pytest.approx(expected, abs=1e-9)


def test_bd_quality_of_a_shifted_curve_is_the_shift():
    assert bd_quality(RATES, PSNR, RATES, PSNR + 0.7) == pytest.approx(0.7, abs=1e-12)
    assert bd_quality(RATES, PSNR, RATES, PSNR) == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_sign_and_partial_overlap():
    # log-rate linear in quality: PCHIP reproduces a line exactly, whichever points it sees, so a
    # test curve covering only the upper part of the anchor's range is exactly 20 % cheaper.
    q = np.array([28.0, 30.0, 32.0, 34.0, 36.0])
    r = 0.1 * 2.0 ** ((q - 28.0) / 2.0)
    assert bd_rate(r, q, r[2:] * 0.8, q[2:]) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(r[2:] * 0.8, q[2:], r, q) == pytest.approx(25.0, abs=1e-9)


def test_not_computable_cases():
    no_overlap = bd_rate(RATES, PSNR, RATES, PSNR + 20.0)
    assert isinstance(no_overlap, NotComputable) and "do not overlap" in no_overlap.reason
    assert str(no_overlap).startswith("not computable: ")
    assert not no_overlap

    too_few = bd_rate(RATES[:2], PSNR[:2], RATES, PSNR)
    assert isinstance(too_few, NotComputable) and "2 point(s), at least 3" in too_few.reason
    # ... but two points are allowed when asked for.
    assert bd_rate(RATES[:2], PSNR[:2], RATES[:2] * 0.5, PSNR[:2], min_points=2) == pytest.approx(-50.0)

    nan = bd_rate([0.1, np.nan, 0.4], [28, 31, 33], RATES, PSNR)
    assert isinstance(nan, NotComputable) and "non-finite" in nan.reason
    zero = bd_rate(RATES, PSNR, [0.0, 0.2, 0.4], [28, 31, 33])
    assert isinstance(zero, NotComputable) and "rate <= 0" in zero.reason
    dup = bd_rate(RATES, PSNR, [0.1, 0.2, 0.4], [28, 31, 31])
    assert isinstance(dup, NotComputable) and "repeated quality" in dup.reason
    nonmono = bd_rate(RATES, PSNR, [0.1, 0.4, 0.3, 0.8], [28, 31, 33, 36])
    assert isinstance(nonmono, NotComputable) and "not monotonic" in nonmono.reason
    assert isinstance(bd_quality(RATES, PSNR, RATES * 100, PSNR), NotComputable)  # rate ranges disjoint


def test_pareto_front_drops_dominated_points():
    # (0.3, 30.0) is dominated by (0.2, 31.0): same curve after dropping it.
    rt = [0.1, 0.3, 0.2, 0.4, 0.8]
    qt = [28.0, 30.0, 31.0, 33.5, 36.0]
    assert isinstance(bd_rate(RATES, PSNR, rt, qt), NotComputable)
    got = bd_rate(RATES, PSNR, rt, qt, monotonic="pareto")
    ref = bd_rate(RATES, PSNR, [0.1, 0.2, 0.4, 0.8], [28.0, 31.0, 33.5, 36.0])
    assert got == pytest.approx(ref, abs=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="must pair up"):
        bd_rate([1, 2, 3], [1, 2], RATES, PSNR)
    with pytest.raises(ValueError, match="min_points"):
        bd_rate(RATES, PSNR, RATES, PSNR, min_points=1)
    with pytest.raises(ValueError, match="monotonic"):
        bd_rate(RATES, PSNR, RATES, PSNR, monotonic="sometimes")


def _table(rows):
    df = pd.DataFrame(rows)
    df["dataset"], df["split"], df["num_images"] = "kitti", "val", 8
    df["params_json"] = [f'{{"i":{i}}}' for i in range(len(df))]
    df["created"] = "2024-01-01T00:00:00+00:00"
    return df


def test_bd_table_against_anchor():
    rows = []
    for curve, factor in (("jpeg", 1.0), ("ours", 0.5), ("big", 2.0)):
        rows += [{"curve": curve, "codec": curve, "bpp_real": r * factor, "psnr": q} for r, q in zip(RATES, PSNR)]
    rows += [{"curve": "far", "codec": "far", "bpp_real": r, "psnr": q + 50} for r, q in zip(RATES, PSNR)]
    rows += [{"curve": "short", "codec": "short", "bpp_real": 0.3, "psnr": 32.0}]
    df = _table(rows)
    df["params_json"] = [f'{{"i":{i}}}' for i in range(len(df))]
    t = bd_table(df, "jpeg", "psnr").set_index("curve")
    assert set(t.index) == {"ours", "big", "far", "short"}
    assert t.loc["ours", "bd_rate_pct"] == pytest.approx(-50.0)
    assert t.loc["big", "bd_rate_pct"] == pytest.approx(100.0)
    assert t.loc["ours", "note"] == ""
    assert math.isnan(t.loc["far", "bd_rate_pct"]) and t.loc["far", "note"].startswith("not computable: quality ranges")
    assert t.loc["short", "note"].startswith("not computable: test curve has 1 point")

    with pytest.raises(ValueError, match="no curve or codec named 'vtm'"):
        bd_table(df, "vtm", "psnr")
    with pytest.raises(ValueError, match="metric column 'map_50'"):
        bd_table(df, "jpeg", "map_50")


def test_bd_table_refuses_mixed_test_sets():
    df = _table([{"curve": "a", "codec": "a", "bpp_real": r, "psnr": q} for r, q in zip(RATES, PSNR)])
    df.loc[0, "num_images"] = 24
    with pytest.raises(ValueError, match="mix test sets"):
        bd_table(df, "a", "psnr")
