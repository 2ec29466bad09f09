"""Bootstrap intervals of BD values over the frames, and the report and vcm-rd output that carry them."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from vcm.cli.rd import main as rd
from vcm.rd.bd import bd_quality, bd_rate, bd_table, percent_below
from vcm.rd.bootstrap import (
    add_intervals,
    bd_over_resamples,
    bootstrap_interval,
    per_image_curve,
    resample_counts,
)
from vcm.rd.record import make_record, write_record
from vcm.rd.report import write_report
from vcm.rd.table import collect, curve_points

ANCHOR_RATES = (0.2, 0.5, 1.0, 2.0)


def _write_curve(folder: Path, codec: str, rates, frames: int, rate_scale: float, noise: float, seed: int,
                 extra_metrics: dict | None = None) -> None:
    """Records of one curve whose per-image values scatter around PSNR = 25 + 4 log2(bpp / rate_scale);
    each record's metrics are the means of its per-image values, as vcm-eval writes them."""
    rng = np.random.default_rng(seed)
    for i, r in enumerate(rates):
        per_image = []
        for f in range(frames):
            bpp = r * float(rng.uniform(0.7, 1.3))
            psnr = 25.0 + 4.0 * math.log2(bpp / rate_scale) + float(rng.normal(0.0, noise))
            per_image.append({"name": f"{f:06d}", "height": 8, "width": 8, "bpp_real": bpp, "psnr": psnr})
        metrics = {k: float(np.mean([p[k] for p in per_image])) for k in ("bpp_real", "psnr")}
        metrics.update(extra_metrics or {})
        write_record(make_record(codec, {"point": i}, "kitti", "test", frames, None, metrics, per_image, {},
                                 git_commit="c" * 40), folder)


def _results(folder: Path, frames: int, seed: int = 0, noise: float = 0.5) -> Path:
    _write_curve(folder, "jpeg", ANCHOR_RATES, frames, 1.0, noise, seed)
    _write_curve(folder, "learned", [r / 2 for r in ANCHOR_RATES], frames, 0.5, noise, seed + 1)
    return folder


def _curves(folder: Path, metric: str = "psnr"):
    df = collect(folder)
    return [per_image_curve(curve_points(df, c, "bpp_real", metric).rows, "bpp_real", metric)
            for c in ("jpeg", "learned")]


def test_full_frame_set_in_every_resample_gives_the_plain_bd(tmp_path):
    df = collect(_results(tmp_path / "r", frames=8))
    anchor, test = _curves(tmp_path / "r")
    a, t = curve_points(df, "jpeg", "bpp_real", "psnr"), curve_points(df, "learned", "bpp_real", "psnr")
    ones = np.ones((3, len(anchor.frames)), dtype=np.int64)
    rates = bd_over_resamples(anchor, test, ones, over="quality")
    qualities = bd_over_resamples(anchor, test, ones, over="rate")
    with pytest.warns(Warning):  # the half-rate curve overlaps the anchor's rates by 2/3 only
        expected_q = bd_quality(a.rate, a.quality, t.rate, t.quality)
    np.testing.assert_allclose(rates, bd_rate(a.rate, a.quality, t.rate, t.quality), rtol=1e-9)
    np.testing.assert_allclose(qualities, expected_q, rtol=1e-9)


def test_interval_contains_the_estimate_and_is_reproducible(tmp_path):
    anchor, test = _curves(_results(tmp_path / "r", frames=10))
    df = collect(tmp_path / "r")
    table = add_intervals(bd_table(df, "jpeg", "psnr"), df, 0.95, resamples=300, seed=7)
    row = table.iloc[0]
    assert row["bd_rate_low"] <= row["bd_rate_pct"] <= row["bd_rate_high"]
    assert row["bd_quality_low"] <= row["bd_quality"] <= row["bd_quality_high"]
    assert row["bd_rate_high"] - row["bd_rate_low"] > 0.1  # noise on 10 frames is visible
    again = bootstrap_interval(anchor, test, 0.95, resamples=300, seed=7)
    assert (again.low, again.high) == (row["bd_rate_low"], row["bd_rate_high"])
    other = bootstrap_interval(anchor, test, 0.95, resamples=300, seed=8)
    assert (other.low, other.high) != (again.low, again.high)
    wider = bootstrap_interval(anchor, test, 0.99, resamples=300, seed=7)
    assert wider.low <= again.low and wider.high >= again.high


def test_interval_narrows_with_more_frames(tmp_path):
    few = bootstrap_interval(*_curves(_results(tmp_path / "few", frames=6)), resamples=300)
    many = bootstrap_interval(*_curves(_results(tmp_path / "many", frames=96)), resamples=300)
    assert (many.high - many.low) < 0.6 * (few.high - few.low)
    assert many.frames == 96 and few.frames == 6


def test_resamples_draw_every_frame_count_and_pair_the_curves(tmp_path):
    counts = resample_counts(12, 50, seed=3)
    assert counts.shape == (50, 12) and (counts.sum(axis=1) == 12).all()
    assert (resample_counts(12, 50, seed=3) == counts).all()
    # the anchor misses frame 000011: its points average the drawn frames they have
    anchor, test = _curves(_results(tmp_path / "r", frames=12))
    short = type(anchor)(anchor.frames[:-1], anchor.rate[:, :-1], anchor.quality[:, :-1])
    values = bd_over_resamples(short, test, np.ones((1, 12), dtype=np.int64))
    assert np.isfinite(values).all()


def test_not_computable_resamples_are_counted(tmp_path):
    # two points 0.05 dB apart under 3 dB of per-frame noise: many resamples reverse their order
    folder = tmp_path / "r"
    _write_curve(folder, "jpeg", ANCHOR_RATES, 6, 1.0, 0.3, 0)
    _write_curve(folder, "learned", (0.1, 0.101, 0.5, 1.0), 6, 0.5, 3.0, 1)
    anchor, test = _curves(folder)
    result = bootstrap_interval(anchor, test, resamples=200)
    assert 0 < result.not_computable < 200
    df = collect(folder)
    table = add_intervals(bd_table(df, "jpeg", "psnr", monotonic="pareto"), df, 0.9, resamples=200)
    skipped = int(table["ci_not_computable"].iloc[0])
    assert skipped == 0 or f"{skipped} of 200 resamples not computable" in table["note"].iloc[0]


def test_dataset_level_metrics_get_no_interval_with_the_reason(tmp_path):
    folder = tmp_path / "r"
    _write_curve(folder, "jpeg", ANCHOR_RATES, 5, 1.0, 0.5, 0, {"map_50": 0.0})
    _write_curve(folder, "learned", ANCHOR_RATES, 5, 0.5, 0.5, 1, {"map_50": 0.0})
    df = collect(folder)
    df["map_50"] = df["psnr"] / 100.0  # a monotonic dataset-level metric absent from per_image
    table = add_intervals(bd_table(df, "jpeg", "map_50"), df, 0.95, resamples=20)
    assert math.isnan(table["bd_rate_low"].iloc[0]) and not math.isnan(table["bd_rate_pct"].iloc[0])
    assert table.attrs["no_interval"].startswith("no interval vs jpeg: ")  # said once, not in every row
    assert "no per-image map_50" in table.attrs["no_interval"] and "interval" not in table["note"].iloc[0]
    md = write_report(df, tmp_path / "rep", "jpeg", metrics=["psnr", "map_50"], resamples=20)[0].read_text()
    section = md[md.index("BD vs jpeg", md.index("map_50")):]
    assert "No interval vs jpeg: " in section and "| 95 % CI |" not in section.split("![")[0]


def test_bad_bootstrap_options_are_refused(tmp_path):
    anchor, test = _curves(_results(tmp_path / "r", frames=4))
    with pytest.raises(ValueError, match="confidence level"):
        bootstrap_interval(anchor, test, confidence=95)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval(anchor, test, resamples=0)


def test_overlap_note_never_rounds_up_to_its_limit():
    assert percent_below(0.7496, 0.75) == "74.96"
    assert percent_below(0.749, 0.75) == "74.9"
    assert percent_below(0.666, 0.75) == "67"


def test_vcm_rd_bd_ci_default_metric_and_min_points_hint(tmp_path, capsys):
    folder = _results(tmp_path / "r", frames=8)
    _write_curve(folder, "webp", (0.3, 0.9), 8, 0.8, 0.5, 5)  # a 2-point curve
    assert rd(["bd", "--anchor", "jpeg", "--ci", "0.9", "--resamples", "200", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "on psnr" in out and "90 % percentile bootstrap" in out  # psnr is the default metric
    assert re.search(r"^learned\s+4\s+-\d+\.\d\d\s+\[-\d+\.\d\d, -\d+\.\d\d\]\s+\+\d", out, re.MULTILINE), out
    assert "test curve has 2 point(s), at least 3 needed; --min-points 2 (vcm-rd)" in out
    assert rd(["bd", "--anchor", "jpeg", "--min-points", "2", str(folder)]) == 0
    assert re.search(r"^webp\s+2\s+[-+]\d", capsys.readouterr().out, re.MULTILINE)
    assert rd(["bd", "--anchor", "jpge", str(folder)]) == 2
    assert "no curve or codec named 'jpge' in the results (did you mean 'jpeg'?)" in capsys.readouterr().err


def test_report_opens_with_the_learned_codecs_bd_rate_and_cautions_kitti_ap(tmp_path, capsys):
    folder = tmp_path / "r"
    _write_curve(folder, "jpeg", ANCHOR_RATES, 6, 1.0, 0.5, 0)
    _write_curve(folder, "hevc444", [r * 0.8 for r in ANCHOR_RATES], 6, 0.8, 0.5, 2)
    _write_curve(folder, "learned", [r / 2 for r in ANCHOR_RATES], 6, 0.5, 0.5, 1)
    _write_curve(folder, "webp", (0.3,), 6, 0.8, 0.5, 5)
    df = collect(folder)
    df["kitti_ap_car_moderate"] = df["psnr"]  # stands in for a dataset-level AP
    md = write_report(df, tmp_path / "rep", ["jpeg", "hevc444"], metrics=["psnr", "kitti_ap_car_moderate"],
                      resamples=100)[0].read_text()
    first = md.split("\n\n")[1]
    assert re.fullmatch(r"BD-rate of the learned codecs on PSNR over 6 frames \(negative = fewer bits, 95 % "
                        r"bootstrap interval over the frames in brackets\): learned -\d+\.\d % \[-\d+\.\d, -\d+\.\d\] "
                        r"vs jpeg and -\d+\.\d % \[-\d+\.\d, -\d+\.\d\] vs hevc444\.", first), first
    assert md.count("webp: test curve has 1 point(s)") == 1  # listed once, for all four tables
    assert "(every table)" in md
    assert md.count("Caution: KITTI AP on 6 frame(s) (fewer than 20)") == 2  # one per anchor's table
    assert "| 95 % CI |" in md

    # report: --dashed; the old --anchors spelling works and says it is deprecated
    assert rd(["report", str(folder), "--out", str(tmp_path / "rep2"), "--anchor", "jpeg", "--metrics", "psnr",
               "--anchors", "jpeg", "--resamples", "50"]) == 0
    assert "--anchors is deprecated, use --dashed" in capsys.readouterr().err


def test_vcm_rd_bd_cautions_a_kitti_ap_on_few_frames(tmp_path, capsys):
    folder = tmp_path / "r"
    _write_curve(folder, "jpeg", ANCHOR_RATES, 5, 1.0, 0.5, 0, {"kitti_ap_car_moderate": 20.0})
    assert rd(["bd", "--anchor", "jpeg", "--metric", "kitti_ap_car_moderate", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "vcm-rd: warning: Caution: KITTI AP on 5 frame(s) (fewer than 20)" in err, err
    assert rd(["bd", "--anchor", "jpeg", str(folder)]) == 0  # psnr: no caution
    assert "Caution" not in capsys.readouterr().err


def test_not_computable_list_names_an_anchor_failure_once(tmp_path):
    folder = tmp_path / "r"
    _write_curve(folder, "jpeg", ANCHOR_RATES, 4, 1.0, 0.5, 0)
    _write_curve(folder, "learned", [r / 2 for r in ANCHOR_RATES], 4, 0.5, 0.5, 1)
    _write_curve(folder, "webp", (0.3,), 4, 0.8, 0.5, 5)
    df = collect(folder)
    # a dataset-level metric on which the anchor's rate falls where its quality rises
    jpeg_map = iter([0.3, 0.2, 0.4, 0.5])  # by rate (the table's order)
    df["map_50"] = [next(jpeg_map) if c == "jpeg" else 0.05 * (i + 1) for i, c in enumerate(df["curve"])]
    md = write_report(df, tmp_path / "rep", "jpeg", metrics=["psnr", "map_50"], resamples=20)[0].read_text()
    listing = md[md.index("## Not computable"):md.index("## PSNR")]
    assert listing.count("- jpeg: anchor curve is not monotonic") == 1
    assert "(map_50 vs jpeg)" in listing and "map_50 vs jpeg, map_50 vs jpeg" not in listing
    assert "- webp: test curve has 1 point(s), at least 3 needed (every table with a computable anchor)" in listing
