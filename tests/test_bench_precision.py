"""The fast-training-settings benchmark (``python -m vcm.cli.bench --only precision``) and the parity
command (``python -m vcm.cli.bench parity``): ratios are the arithmetic of the stored raw times, every
goal is in the JSON and the Markdown; no assertion on machine-dependent speeds."""
from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path

import pytest

from vcm.bench.common import AT_LEAST, GOALS, QUICK
from vcm.bench.parity import RUNS, compare, render_markdown, run_name
from vcm.bench.report import SPEEDUP_CHECKS
from vcm.cli.bench import main


@pytest.fixture(scope="module")
def quick_precision(shared_data: Path, tmp_path_factory) -> tuple[dict, str]:
    if not (shared_data / "kitti_mini" / "training" / "image_2").is_dir():
        pytest.skip(f"kitti_mini not found under {shared_data}")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["--quick", "--only", "precision", "--out", str(out), "--data", str(shared_data)]) == 0
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def _median(values: list[float], n: int, where: str) -> float:
    assert len(values) == n, f"{where}: {len(values)} times, expected {n}"
    assert all(v > 0 for v in values), where
    return statistics.median(values)


def test_speedups_are_fast_over_fp32_medians(quick_precision):
    result, _ = quick_precision
    p = result["precision"]
    n = result["settings"]["prec_steps"]
    assert set(p["speedup"]) == {"hyperprior", "detector", "lmsfc"}
    for name, sp in p["speedup"].items():
        fast = _median(sp["raw"]["fast_step_s"], n, f"{name} fast")
        fp32 = _median(sp["raw"]["fp32_step_s"], n, f"{name} fp32")
        assert sp["ratio"] == pytest.approx(fast / fp32, rel=1e-12)
        cpu = statistics.median(sp["raw"]["fast_step_cpu_s"]) / statistics.median(sp["raw"]["fp32_step_cpu_s"])
        assert sp["cpu_ratio"] == pytest.approx(cpu, rel=1e-12)
        assert "bf16-mixed" in sp["fast_settings"]
    hp = p["speedup"]["hyperprior"]
    assert hp["goal"] == GOALS["precision"] == 0.50
    assert p["speedup"]["detector"]["goal"] is None and p["speedup"]["lmsfc"]["goal"] is None
    assert hp["batch"] == [QUICK.prec_batch, 3, QUICK.prec_crop, QUICK.prec_crop]
    assert (hp["model"]["N"], hp["model"]["M"]) == QUICK.prec_nm
    det = p["speedup"]["detector"]["batch"]  # full frames: stacked when they share a size, else a list
    assert (len(det) if isinstance(det[0], list) else det[0]) == QUICK.det_frames


def test_lightning_over_plain_and_loader_over_step(quick_precision):
    result, _ = quick_precision
    p = result["precision"]
    n = result["settings"]["prec_steps"]
    lp = p["lightning_vs_plain"]
    assert lp["ratio"] == pytest.approx(_median(lp["raw"]["lightning_step_s"], n, "lightning")
                                        / _median(lp["raw"]["plain_step_s"], n, "plain"), rel=1e-12)
    assert lp["goal"] == GOALS["precision_lightning"] == 1.05
    ld = p["loader"]
    batch_s = _median(ld["raw"]["loader_batch_s"], result["settings"]["loader_batches"], "loader")
    step_s = _median(ld["raw"]["train_step_s"], n, "train")
    assert ld["ratio"] == pytest.approx(step_s / batch_s, rel=1e-12)
    assert ld["loader_batches_per_s"] == pytest.approx(1 / batch_s) and ld["train_steps_per_s"] == pytest.approx(1 / step_s)
    assert ld["goal"] == GOALS["loader"] == 3.0 and "loader" in AT_LEAST
    assert ld["cache_images"] is True and ld["batches_per_epoch"] > 0
    assert p["goals"]["loader"] == {"value": 3.0, "at_least": True}


def test_summary_rows_and_markdown_hold_every_ratio_and_goal(quick_precision):
    result, md = quick_precision
    rows = {r["check"]: r for r in result["summary"]}
    p = result["precision"]
    assert [r["value"] for r in result["summary"]] == [
        p["speedup"]["hyperprior"]["ratio"], p["speedup"]["detector"]["ratio"], p["speedup"]["lmsfc"]["ratio"],
        p["lightning_vs_plain"]["ratio"], p["loader"]["ratio"]]
    assert rows[SPEEDUP_CHECKS["hyperprior"]]["goal"] == 0.50
    for r in result["summary"]:
        assert r["check"] in md
        if r["goal"] is None:
            assert r["result"] == "report"
        elif r["at_least"]:
            assert r["result"] == ("PASS" if r["value"] >= r["goal"] else "FAIL")
        else:
            assert r["result"] == ("PASS" if r["value"] <= r["goal"] else "FAIL")
        assert f"| {r['result']} |" in md
    assert "| <= 0.50 |" in md and "| <= 1.05 |" in md and "| >= 3.00 |" in md
    assert result["command"] in md and result["command"].startswith("python -m vcm.cli.bench --quick --only precision")


# ---------------------------------------------------------------------------------------------- parity
def test_parity_dry_run_prints_pairs_of_trainings_that_differ_only_in_precision(tmp_path, capsys):
    assert main(["parity", "--dry-run", "--out", str(tmp_path / "p")]) == 0
    steps = json.loads((tmp_path / "p" / "study.json").read_text())["steps"]
    names = ["fp32-seed0", "bf16-seed0", "fp32-seed1", "bf16-seed1"]
    assert [s["point"] for s in steps] == [*names, *(f"{n}-val" for n in names)]
    printed = capsys.readouterr().out
    assert all(s["status"] == "dry-run" and s["cmd"] in printed for s in steps)
    train = {s["point"]: shlex.split(s["cmd"]) for s in steps[:4]}
    for name, argv in train.items():
        precision, seed = name.split("-seed")
        assert argv[1:3] == ["-m", "vcm.cli.train"]
        for o in ("experiment=zoo_hyperprior", "quality=3", "trainer.max_steps=2000", "trainer.val_check_interval=2000",
                  "data=kitti_mini", f"seed={seed}", *RUNS[precision]):
            assert o in argv, (name, o)
    for seed in (0, 1):
        differ = set(train[f"fp32-seed{seed}"]) ^ set(train[f"bf16-seed{seed}"])
        assert {a for a in differ if not a.startswith("hydra.run.dir=")} == set(RUNS["fp32"]) | set(RUNS["bf16"])
    for s in steps[4:]:
        argv = shlex.split(s["cmd"])
        assert argv[1:3] == ["-m", "vcm.cli.eval"] and "split=val" in argv and "codec=checkpoint" in argv
        run = s["point"].removesuffix("-val")
        assert f"codec.ckpt={tmp_path / 'p' / 'runs' / run / 'checkpoints' / 'last.ckpt'}" in argv
    assert not (tmp_path / "p" / "parity.json").exists()


def test_parity_fp32_module_variants_train_at_the_first_seed(tmp_path, capsys):
    assert main(["parity", "--dry-run", "--seeds", "3", "--fp32-modules", "h_a,h_s", "--out", str(tmp_path / "p")]) == 0
    steps = json.loads((tmp_path / "p" / "study.json").read_text())["steps"]
    assert [s["point"] for s in steps][:3] == ["fp32-seed3", "bf16-seed3", "bf16-fp32_h_a.h_s-seed3"]
    argv = shlex.split(steps[2]["cmd"])
    assert "model.fp32_modules=[h_a,h_s]" in argv and "seed=3" in argv and set(RUNS["bf16"]) <= set(argv)
    with pytest.raises(SystemExit):
        main(["parity", "--dry-run", "--fp32-modules", "h_a;rm", "--out", str(tmp_path / "q")])


def test_parity_rejects_repeated_seeds(tmp_path):
    with pytest.raises(SystemExit):
        main(["parity", "--dry-run", "--seeds", "1", "1", "--out", str(tmp_path / "p")])


def test_parity_differences_and_markdown():
    values = {("fp32", 0): (30.00, 0.500), ("bf16", 0): (29.95, 0.515), ("fp32", 1): (30.10, 0.480), ("bf16", 1): (30.05, 0.4824)}
    runs = {run_name(p, seed): {"overrides": RUNS[p], "train_s": 60.0, "num_images": 10,
                                "metrics": {"psnr": psnr, "bpp_real": bpp, "bpp_estimated": bpp * 0.99}}
            for (p, seed), (psnr, bpp) in values.items()}
    diff, rows = compare(runs, [0])
    assert diff["per_seed"][0]["psnr_db"] == pytest.approx(-0.05) and diff["per_seed"][0]["bpp_relative"] == pytest.approx(0.03)
    assert [r["result"] for r in rows] == ["PASS", "FAIL"] and not diff["seed_to_seed"]
    diff, rows = compare(runs, [0, 1])
    assert diff["mean"]["bpp_relative"] == pytest.approx((0.03 + 0.005) / 2)
    assert diff["seed_to_seed"]["fp32 seed 1 vs 0"]["psnr_db"] == pytest.approx(0.10)
    assert diff["seed_to_seed"]["fp32 seed 1 vs 0"]["bpp_relative"] == pytest.approx(-0.04)
    assert [r["result"] for r in rows] == ["PASS", "FAIL", "PASS", "PASS", "PASS", "PASS", "report", "report", "report", "report"]
    env = {"cpu_model": "cpu", "cpu_count": 2, "torch": "2", "compressai": "1", "lightning": "2", "git_commit": "abc"}
    md = render_markdown({"command": "python -m vcm.cli.bench parity", "created": "2025-01-01T00:00:00", "environment": env,
                          "settings": {"base": ["experiment=zoo_hyperprior"], "steps": 2000, "dataset": "kitti_mini"},
                          "runs": runs, "summary": rows})
    assert "`python -m vcm.cli.bench parity`" in md and "| PASS |" in md and "| FAIL |" in md
    assert "-0.050 dB" in md and "+3.00 %" in md and "within ±0.1 dB" in md and "within ±2 %" in md
    assert "| real bpp, fp32 seed 1 / seed 0 - 1 | -4.00 % | - (noise floor) | report |" in md
    runs["bf16-fp32_h_s-seed0"] = {**runs["fp32-seed0"], "metrics": {"psnr": 30.02, "bpp_real": 0.505}}
    diff, rows = compare(runs, [0, 1], ["bf16-fp32_h_s"])
    assert diff["variants"]["bf16-fp32_h_s"]["bpp_relative"] == pytest.approx(0.01)
    assert rows[-1]["check"] == "real bpp, bf16-fp32_h_s / fp32 - 1 (seed 0)" and rows[-1]["result"] == "PASS"
