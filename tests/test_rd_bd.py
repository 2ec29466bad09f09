"""BD-rate / BD-quality: published reference values, exact hand-made cases, not-computable cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vcm.rd.bd import NotComputable, bd_psnr, bd_quality, bd_rate, bd_table

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


def test_bd_rate_and_psnr_match_the_bjontegaard_package():
    bj = pytest.importorskip("bjontegaard", reason="optional cross-check against the FAU-LMS package")
    cases = [(*FAU_ANCHOR, *FAU_TEST)] + [c[:4] for c in JCTVC_E137]
    for ra, qa, rt, qt in cases:
        assert bd_rate(ra, qa, rt, qt) == pytest.approx(bj.bd_rate(ra, qa, rt, qt, method="pchip"), abs=1e-9)
        assert bd_psnr(ra, qa, rt, qt) == pytest.approx(bj.bd_psnr(ra, qa, rt, qt, method="pchip"), abs=1e-9)


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
