"""The benchmark script: every section runs and its ratios are the arithmetic of its stored raw times."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from vcm.cli.bench import GOALS, main


def _positive_finite(value, where: str) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} is not a number"
    assert math.isfinite(value) and value > 0, f"{where}: {value!r} is not positive and finite"


def _times(values: list, where: str, n: int) -> list[float]:
    assert len(values) == n, f"{where}: {len(values)} times, expected {n}"
    for i, v in enumerate(values):
        _positive_finite(v, f"{where}[{i}]")
    return values


@pytest.fixture(scope="module")
def quick_result(shared_data: Path, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # the precision section has its own tests (test_bench_precision.py)
    assert main(["--quick", "--only", "codec,bpp,train,anchors", "--out", str(out), "--data", str(shared_data)]) == 0
    return json.loads(out.read_text()), out


@pytest.mark.slow
def test_quick_run_writes_every_section(quick_result):
    result, out = quick_result
    assert {"codec", "bpp", "train", "anchors", "summary", "environment", "settings"} <= set(result)
    env = result["environment"]
    assert isinstance(env["torch_threads"], int) and env["torch_threads"] >= 1
    assert isinstance(env["cpu_model"], str) and env["cpu_model"]
    assert isinstance(env["torch"], str) and env["torch"][0].isdigit()
    md = out.with_suffix(".md").read_text()
    assert result["command"] in md and "python -m vcm.cli.bench --quick" in result["command"]
    for row in result["summary"]:
        assert row["check"] in md
        assert row["result"] == ("PASS" if row["value"] <= row["goal"] else "FAIL")
        assert f"| {row['result']} |" in md
    # enc, dec, bpp mean, bpp pooled, bpp header, train
    assert [r["value"] for r in result["summary"]] == [
        result["codec"]["enc_ratio"], result["codec"]["dec_ratio"], result["bpp"]["mean_overhead"],
        result["bpp"]["pooled_overhead"], result["bpp"]["header_overhead_pooled"], result["train"]["ratio"],
    ]


@pytest.mark.slow
def test_codec_ratios_are_medians_of_raw_times(quick_result):
    result, _ = quick_result
    c = result["codec"]
    n = result["settings"]["repeats"]
    raw = {k: _times(v, k, n) for k, v in c["raw"].items()}
    assert set(raw) == {f"{p}_{s}_{c}" for p in ("vcm", "direct") for s in ("enc", "dec") for c in ("s", "cpu_s")}
    for part in ("enc", "dec"):
        expected = statistics.median(raw[f"vcm_{part}_s"]) / statistics.median(raw[f"direct_{part}_s"])
        assert c[f"{part}_ratio"] == pytest.approx(expected, rel=1e-12)
        expected_cpu = statistics.median(raw[f"vcm_{part}_cpu_s"]) / statistics.median(raw[f"direct_{part}_cpu_s"])
        assert c[f"{part}_cpu_ratio"] == pytest.approx(expected_cpu, rel=1e-12)
        _positive_finite(c[f"{part}_ratio"], f"{part}_ratio")
    assert c["goal"] == GOALS["codec"]
    # vcm's path codes exactly what CompressAI does: same strings, same decoded pixels
    assert c["same_strings"] is True and c["same_decoded_image"] is True
    assert c["bitstream_bytes"] > c["string_bytes"] > 0
    assert (c["frame"]["height"], c["frame"]["width"]) == tuple(result["settings"]["frame_crop"])


@pytest.mark.slow
def test_bpp_overheads_follow_from_per_image_bits(quick_result):
    result, _ = quick_result
    b = result["bpp"]
    rows = b["per_image"]
    assert len(rows) == b["num_images"] == result["settings"]["bpp_frames"]
    for r in rows:
        for k in ("bytes", "header_bytes", "bpp_real", "bpp_estimated"):
            _positive_finite(r[k], f"{r['name']}.{k}")
        assert r["bpp_real"] == pytest.approx(8 * r["bytes"] / (r["height"] * r["width"]), rel=1e-12)
        assert r["overhead"] == pytest.approx(r["bpp_real"] / r["bpp_estimated"] - 1, rel=1e-9, abs=1e-12)
        # hyperprior: y and z strings, together with the header, make up the whole file
        assert r["y_bits_real"] + r["z_bits_real"] + 8 * r["header_bytes"] == 8 * r["bytes"]
    assert b["mean_overhead"] == pytest.approx(statistics.fmean(r["overhead"] for r in rows), rel=1e-9, abs=1e-12)
    real = sum(8 * r["bytes"] for r in rows)
    est = sum(r["bpp_estimated"] * r["height"] * r["width"] for r in rows)
    assert b["pooled_overhead"] == pytest.approx(real / est - 1, rel=1e-9, abs=1e-12)
    assert b["header_overhead_pooled"] + b["coder_overhead_pooled"] == pytest.approx(b["pooled_overhead"], abs=1e-9)
    # the coder's part splits into the scale-table rounding and the range coder proper
    y_est = sum(r["y_bits_estimated"] for r in rows)
    y_tab = sum(r["y_bits_estimated_table_scales"] for r in rows)
    assert b["scale_table_overhead_pooled"] == pytest.approx((y_tab - y_est) / est, rel=1e-9, abs=1e-12)
    assert b["scale_table_overhead_pooled"] + b["range_coder_overhead_pooled"] == pytest.approx(b["coder_overhead_pooled"])
    assert b["scale_table_levels"] == 512  # vcm's default table (vcm.codecs.base.FineScaleTable)
    assert b["fine_table"]["levels"] == 64 and math.isfinite(b["fine_table"]["pooled_overhead"])
    assert b["training"]["steps"] == result["settings"]["train_steps"]
    _positive_finite(b["training"]["last20_mean"]["loss"], "training loss")


@pytest.mark.slow
def test_training_step_ratio_is_lightning_over_plain(quick_result):
    result, _ = quick_result
    t = result["train"]
    n = result["settings"]["step_steps"]
    light = _times(t["raw"]["lightning_step_s"], "lightning_step_s", n)
    plain = _times(t["raw"]["plain_step_s"], "plain_step_s", n)
    assert t["ratio"] == pytest.approx(statistics.median(light) / statistics.median(plain), rel=1e-12)
    light_cpu = _times(t["raw"]["lightning_step_cpu_s"], "lightning_step_cpu_s", n)
    plain_cpu = _times(t["raw"]["plain_step_cpu_s"], "plain_step_cpu_s", n)
    assert t["cpu_ratio"] == pytest.approx(statistics.median(light_cpu) / statistics.median(plain_cpu), rel=1e-12)
    _positive_finite(t["ratio"], "train ratio")
    assert t["batch"] == [result["settings"]["step_batch"], 3, result["settings"]["step_crop"], result["settings"]["step_crop"]]


@pytest.mark.slow
def test_anchor_throughput_table(quick_result):
    result, _ = quick_result
    a = result["anchors"]
    n = result["settings"]["repeats"]
    names = {r["codec"] for r in a["rows"]} | {s["codec"] for s in a["skipped"]}
    assert {"jpeg", "webp", "hevc (4:2:0)", "hevc (4:4:4)", "av1", "vtm", "hyperprior", "factorized"} <= names
    assert {"jpeg", "webp", "hyperprior", "factorized"} <= {r["codec"] for r in a["rows"]}
    for r in a["rows"]:
        _times(r["raw_enc_s"], f"{r['codec']}.raw_enc_s", n)
        _times(r["raw_dec_s"], f"{r['codec']}.raw_dec_s", n)
        assert r["enc_fps"] == pytest.approx(1 / statistics.median(r["raw_enc_s"]), rel=1e-12)
        assert r["dec_fps"] == pytest.approx(1 / statistics.median(r["raw_dec_s"]), rel=1e-12)
        _positive_finite(r["bpp"], f"{r['codec']}.bpp")
    # the learned hyperprior's row is the vcm path timed in check 1
    hp = next(r for r in a["rows"] if r["codec"] == "hyperprior")
    assert hp["raw_enc_s"] == result["codec"]["raw"]["vcm_enc_s"]


@pytest.mark.slow
def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["--quick", "--only", "codec", "--out", str(tmp_path / "b.json"), "--data", str(tmp_path)]) == 2
    assert "kitti_tiny not found" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.slow
def test_unknown_section_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["--only", "codec,nope", "--out", str(tmp_path / "b.json")])
