"""``make bench-roi`` and ``make bench-teleop``: their plans, the pure pieces, and a one-frame run."""
from __future__ import annotations

import json
import math

import pytest
import torch


def _size_of(qp: int, scale: float = 60000.0) -> bytes:
    """A stand-in encoder: the file halves every 6 QP, as x265's does roughly."""
    return b"x" * int(scale * 2 ** (-(qp - 12) / 6))


def _brute_force(budget: int, lo: int = 12, hi: int = 51) -> int:
    fitting = [qp for qp in range(lo, hi + 1) if len(_size_of(qp)) <= budget]
    return min(fitting) if fitting else hi


@pytest.mark.parametrize("budget", [60000, 12500, 6250, 3000, 900, 400, 10])
@pytest.mark.parametrize("start", [None, 12, 30, 51])
def test_lowest_fitting_qp_finds_the_lowest_qp_that_fits(budget, start):
    from vcm.cli.bench_teleop import lowest_fitting_qp

    calls = []

    def size_of(qp):
        calls.append(qp)
        return _size_of(qp)

    qp, data, tries = lowest_fitting_qp(size_of, budget, start=start)
    assert qp == _brute_force(budget) and data == _size_of(qp) and tries == len(set(calls)) == len(calls)
    assert tries <= 12  # a short search, not a scan of the 40 QPs
    if len(_size_of(51)) > budget:  # nothing fits: the highest QP, over the budget (the bench flags it)
        assert qp == 51 and len(data) > budget


def test_lowest_fitting_qp_refuses_an_empty_range():
    from vcm.cli.bench_teleop import lowest_fitting_qp

    with pytest.raises(ValueError, match="empty QP range"):
        lowest_fitting_qp(_size_of, 100, lo=40, hi=30)


def test_bench_roi_points_cover_every_curve_once():
    from vcm.cli.bench_roi import points
    from vcm.studies import load_study

    o = load_study("bench_roi", "options")
    pts = points(o)
    runs = [p["run"] for p in pts]
    assert len(runs) == len(set(runs))
    kinds = {p["kind"] for p in pts}
    assert kinds == {"zoo", "zoo-uniform", "zoo-roi-labels", "zoo-roi-detector", "hevc444", "hevc444_roi-labels",
                     "hevc444_roi-detector", "learned-uniform", "learned-roi-labels", "learned-roi-detector"}
    assert sum(p["kind"] == "learned-roi-detector" for p in pts) == len(o["learned_gains"])
    assert sum(p["kind"] == "learned-uniform" for p in pts) == len(o["learned_uniform"])
    assert not any(p["kind"].startswith("learned") for p in points({**o, "learned": None}))
    n_gain = len(o["gain_models"])
    assert sum(p["kind"] == "zoo-roi-labels" for p in pts) == n_gain * len(o["g_roi"]) * len(o["g_bg"])
    assert sum(p["kind"] == "zoo-uniform" for p in pts) == n_gain * len(o["uniform_g_bg"])
    assert sum(p["kind"] == "hevc444_roi-detector" for p in pts) == len(o["qps"])
    assert [p["kind"] for p in points(o, ["hevc444"])] == ["hevc444"] * len(o["qps"])


def test_bench_roi_point_overrides_compose_as_vcm_eval_configs():
    import hydra

    from vcm.bench.roi_common import compose_eval
    from vcm.cli.bench_roi import points
    from vcm.studies import load_study

    o = load_study("bench_roi", "options")
    seen = set()
    for p in points(o):
        if p["kind"] in seen:
            continue
        seen.add(p["kind"])
        cfg = compose_eval(["data=kitti_mini", "detector=kitti_mobilenet_v2", *p["codec"]])
        if p["kind"].startswith("hevc"):
            anchor = hydra.utils.instantiate(cfg.codec)
            assert anchor.qp in o["qps"]
            assert getattr(anchor, "roi_source", None) == (p["kind"].split("-")[1] if "roi" in p["kind"] else None)
        elif p["kind"].startswith("learned"):
            assert cfg.codec.ckpt == o["learned"] and cfg.codec.roi == ("none" if p["kind"] == "learned-uniform"
                                                                        else p["kind"].split("-")[-1])
        else:
            assert cfg.codec.name.startswith("hyperprior-kitti-q")


def test_bench_roi_gives_roi_codecs_the_boxes_of_their_source():
    from vcm.cli.bench_roi import roi_cond

    target = {"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]])}
    det = torch.tensor([[5.0, 5.0, 9.0, 9.0], [0.0, 0.0, 4.0, 4.0]])
    assert roi_cond(None, target, det) is None
    assert torch.equal(roi_cond("labels", target, det), target["boxes"])
    assert roi_cond("detector", target, det) is det
    assert roi_cond("none", target, det).shape == (0, 4)


def test_bench_roi_goals_say_met_or_missed_with_the_interval():
    from vcm.cli.bench_roi import goals

    summary = [
        {"anchor": "hyperprior/zoo-uniform", "test": "hyperprior/zoo-roi-labels", "metric": "roi_psnr",
         "bd_rate": -50.0, "low": -55.0, "high": -40.0, "bd_quality": 1.0, "q_low": 0.8, "q_high": 1.2, "note": ""},
        {"anchor": "hyperprior/zoo-uniform", "test": "hyperprior/zoo-roi-detector", "metric": "roi_psnr",
         "bd_rate": -20.0, "low": -30.0, "high": -10.0, "bd_quality": 0.5, "q_low": 0.3, "q_high": 0.7, "note": ""},
        {"anchor": "hyperprior/zoo", "test": "hyperprior/zoo-roi-detector", "metric": "map_50",
         "bd_rate": math.nan, "low": math.nan, "high": math.nan, "bd_quality": 0.01, "q_low": math.nan,
         "q_high": math.nan, "note": ""},
    ]
    rc = {"0.25": {"frames": 20, "within_5pct": 1.0, "mean_passes": 3.0, "cap_exceeded": 0, "models": {}},
          "0.15": {"frames": 20, "within_5pct": 0.9, "mean_passes": 6.0, "cap_exceeded": 0, "models": {}},
          "time_s": {}}
    text = goals(summary, rc)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    assert "met (interval crosses the goal)" in rows["ROI-PSNR BD-rate, GT boxes vs plain + uniform-gain front <= -45 %"]
    assert rows["ROI-PSNR BD-rate, detector boxes vs plain + uniform-gain front <= -25 %"].endswith("| missed |")
    assert "[-30.0, -10.0] %" in rows["ROI-PSNR BD-rate, detector boxes vs plain + uniform-gain front <= -25 %"]
    assert rows["mAP@0.5 at equal bpp, hyperprior/zoo-roi-detector vs plain >= 0"].endswith("| met |")
    assert rows["rate control 0.15 bpp: >= 95 % of frames within 5 %"].endswith("| missed |")
    assert rows["rate control mean passes <= 5"].endswith("| missed |")
    assert rows["hard cap never exceeded"].endswith("| met |")


def test_bench_dry_runs_print_their_plan(capsys, tmp_path):
    from vcm.cli import bench_roi, bench_teleop

    assert bench_roi.main(["--dry-run", "--out", str(tmp_path)]) == 0
    assert "vcm-eval codec=zoo_roi codec.name=hyperprior-kitti-q5 codec.roi=detector" in capsys.readouterr().out
    assert bench_teleop.main(["--dry-run", "--frames", "2", "--out", str(tmp_path)]) == 0
    assert "links [12500, 6250] bytes/frame" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.timeout(600)
def test_bench_teleop_streams_one_frame_under_the_cap(tmp_path):
    from vcm.cli.bench_teleop import main

    assert main(["--frames", "1", "--links", "6250", "--codecs", "zoo_roi", "x265", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    zoo = summary["links"]["6250"]["zoo_roi"]
    assert summary["frames"] == 1 and zoo["max_bytes"] <= 6250 and zoo["frames_over_cap"] == 0
    assert (tmp_path / "stream.png").is_file() and (tmp_path / "frames.csv").is_file()


def test_rate_control_summary_tells_refused_frames_from_frames_over_the_cap():
    import pandas as pd

    from vcm.cli.bench_roi import rc_summary

    t = {"detector_s": 1.0, "analysis_s": 1.0, "search_s": 0.5, "coding_s": 0.1, "rc_total_s": 1.6, "dec_s": 1.5}
    df = pd.DataFrame([
        {"target_bpp": 0.25, "target_bytes": 1000, "bytes": 990, "within_5pct": True, "passes": 3, "model": "q3", **t},
        {"target_bpp": 0.25, "target_bytes": 1000, "bytes": 900, "within_5pct": False, "passes": 5, "model": "q1", **t},
        {"target_bpp": 0.1, "target_bytes": 400, "bytes": None, "within_5pct": False, "refused": True},
        {"target_bpp": 0.1, "target_bytes": 400, "bytes": 390, "within_5pct": True, "passes": 4, "model": "q1", **t},
    ])
    s = rc_summary(df)
    assert s["0.25"] == {"frames": 2, "within_5pct": 0.5, "mean_passes": 4.0, "cap_exceeded": 0, "refused": 0,
                         "models": {"q3": 1, "q1": 1}}
    assert s["0.1"]["refused"] == 1 and s["0.1"]["within_5pct"] == 0.5 and s["0.1"]["mean_passes"] == 4.0
    assert s["time_s"]["rc_total_s"] == pytest.approx(1.6)
