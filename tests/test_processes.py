"""The commands as users run them: separate processes, exit codes, one-line errors; and ``evaluate()``
end to end with the HEVC anchors, the feature anchor with detection, and COCO data.

tests/test_cli.py covers vcm-train/vcm-eval configuration mistakes and tests/test_bad_inputs.py
damaged bitstreams and images; here: a whole session through every command, and the mistakes of
the other commands.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import SYNTH, TINY, TINY_DETECTOR, compose, run_cli, synthetic_cache
from PIL import Image

FRAMES = Path("synthetic") / "n8_s0_128x320" / "training"


def _ok(r, tool: str):
    assert r.returncode == 0, f"{tool} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.mark.slow
@pytest.mark.guard
@pytest.mark.timeout(900)
def test_a_session_through_every_command_exits_0(tmp_path):
    """Train, compress, decompress, evaluate (a checkpoint, an anchor with detections), score the
    detections with the KITTI rules, collect the results: each a process, each exit code 0."""
    cache = synthetic_cache(tmp_path)
    results = tmp_path / "results"
    common = [f"paths.cache_dir={cache}", f"paths.results_dir={results}", f"paths.log_dir={tmp_path / 'logs'}"]

    run = tmp_path / "train"
    _ok(run_cli("vcm-train", TINY + ["model=factorized", "trainer.max_steps=2", f"hydra.run.dir={run}"] + common,
                timeout=600), "vcm-train")
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    frame = cache / FRAMES / "image_2" / "000000.png"
    r = _ok(run_cli("vcm-compress", ["--ckpt", ckpt, frame, tmp_path / "f.vcm"]), "vcm-compress")
    size = (tmp_path / "f.vcm").stat().st_size
    assert f"{size} bytes, 320x128 (W x H)" in r.stdout
    _ok(run_cli("vcm-decompress", ["--ckpt", ckpt, tmp_path / "f.vcm", tmp_path / "f.png"]), "vcm-decompress")
    with Image.open(tmp_path / "f.png") as im:
        assert im.size == (320, 128) and im.mode == "RGB"

    _ok(run_cli("vcm-eval", ["codec=checkpoint", f"codec.ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'e1'}"]
                + SYNTH + common, timeout=600), "vcm-eval")
    r = _ok(run_cli("vcm-eval", ["codec=jpeg", "codec.quality=30", "detector=resnet18_fpn", "save_detections=true",
                                 "split=all", f"hydra.run.dir={tmp_path / 'e2'}"] + TINY_DETECTOR + SYNTH + common,
                    timeout=600), "vcm-eval")
    assert r.stdout.strip().splitlines()[-1].startswith("jpeg, mean of 8 images: bpp_real ")
    detections = tmp_path / "e2" / "detections"
    assert len(list(detections.glob("*.txt"))) == 8

    r = _ok(run_cli("vcm-kitti-eval", [cache / FRAMES / "label_2", detections, "--json"]), "vcm-kitti-eval")
    assert '"mean_ap_r40_moderate"' in r.stdout

    _ok(run_cli("vcm-rd", ["collect", results, "--out", tmp_path / "rd.csv"]), "vcm-rd")
    table = (tmp_path / "rd.csv").read_text()
    assert "factorized" in table and "jpeg" in table


# (command, arguments, what the error names); {tmp} is the test's folder
MISTAKES = {
    "compress_missing_input": ("vcm-compress", ["--ckpt", "{tmp}/missing.ckpt", "{tmp}/missing.png", "{tmp}/o.vcm"],
                               "missing.png"),
    "compress_not_an_image": ("vcm-compress", ["--ckpt", "{tmp}/missing.ckpt", "{tmp}/notes.png", "{tmp}/o.vcm"],
                              "notes.png"),
    "compress_no_codec_named": ("vcm-compress", ["{tmp}/notes.png", "{tmp}/o.vcm"], "--ckpt"),
    "decompress_missing_input": ("vcm-decompress", ["--ckpt", "{tmp}/missing.ckpt", "{tmp}/missing.vcm", "{tmp}/o.png"],
                                 "missing.vcm"),
    "rd_unknown_subcommand": ("vcm-rd", ["frobnicate"], "frobnicate"),
    "rd_missing_results": ("vcm-rd", ["collect", "{tmp}/nowhere", "--out", "{tmp}/rd.csv"], "nowhere"),
    "kitti_eval_missing_labels": ("vcm-kitti-eval", ["{tmp}/no_labels", "{tmp}/empty"], "no_labels"),
    "train_misspelled_key": ("vcm-train", ["trainer.max_stepz=3", "paths.log_dir={tmp}/logs"], "max_stepz"),
    "eval_wrong_type": ("vcm-eval", ["codec=jpeg", "codec.quality=abc", "paths.log_dir={tmp}/logs"], "abc"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_each_class_of_user_mistake_exits_nonzero_with_one_error_line(case, tmp_path):
    tool, args, named = MISTAKES[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.png").write_text("not an image")
    r = run_cli(tool, [a.format(tmp=tmp_path) for a in args], timeout=240)
    assert r.returncode == 2, f"{tool} {args} exited {r.returncode}: a user error exits 2"
    assert "Traceback" not in r.stderr and "HYDRA_FULL_ERROR" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and named in errors[0], r.stderr
    assert not (tmp_path / "o.vcm").exists() and not (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------ evaluate() beyond JPEG
def _evaluate(overrides, tmp_path):
    from vcm.cli.eval import evaluate

    cfg = compose(overrides, tmp_path, synthetic_cache(tmp_path), name="eval")
    return evaluate(cfg)


def _check(metrics: dict, keys) -> None:
    for k in keys:
        assert k in metrics and isinstance(metrics[k], float) and math.isfinite(metrics[k]), (k, metrics.get(k))


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["hevc", "hevc444"])
def test_evaluate_with_an_hevc_anchor_and_detection(codec, tmp_path):
    path, rec = _evaluate([f"codec={codec}", "codec.qp=37", "detector=resnet18_fpn", "max_images=2"]
                          + TINY_DETECTOR + SYNTH, tmp_path)
    m = rec["metrics"]
    _check(m, ("bpp_real", "psnr", "map_50", "kitti_ap_moderate"))
    assert 0 < m["bpp_real"] < 8 and 15 < m["psnr"] < 50 and 0 <= m["map_50"] <= 1
    assert rec["codec"] == codec and rec["params"]["qp"] == 37 and rec["num_images"] == 1 and Path(path).is_file()
    # the rate is the real file size: bits of each image's bitstream over its pixels
    (img,) = rec["per_image"]
    assert img["bpp_real"] == pytest.approx(img["bits"] / (img["height"] * img["width"]))


@pytest.mark.slow
def test_evaluate_feature_hevc_codes_the_detector_features(tmp_path):
    _, low = _evaluate(["codec=feature_hevc", "codec.qp=42", "detector=resnet18_fpn", "max_images=2"]
                       + TINY_DETECTOR + SYNTH, tmp_path / "low")
    _, high = _evaluate(["codec=feature_hevc", "codec.qp=22", "detector=resnet18_fpn", "max_images=2"]
                        + TINY_DETECTOR + SYNTH, tmp_path / "high")
    for rec in (low, high):
        _check(rec["metrics"], ("bpp_real", "map_50"))
        assert rec["codec"] == "feature_hevc" and rec["metrics"]["bpp_real"] > 0
    assert high["metrics"]["bpp_real"] > low["metrics"]["bpp_real"]  # a lower QP spends more bits


@pytest.mark.slow
def test_evaluate_on_coco_data(tmp_path, shared_data):
    _, rec = _evaluate(["data=coco", "codec=jpeg", "codec.quality=50", "detector=resnet18_fpn", "max_images=2"]
                       + TINY_DETECTOR, tmp_path)
    m = rec["metrics"]
    _check(m, ("bpp_real", "psnr", "map_50", "map"))
    assert rec["dataset"] == "coco" and rec["num_images"] == 2 and 0 <= m["map"] <= m["map_50"] <= 1
    assert not any(k.startswith("kitti_ap") for k in m)  # COCO images carry no KITTI difficulty


def test_synthetic_frames_of_the_session_are_what_the_tests_assume(tmp_path):
    cache = synthetic_cache(tmp_path)
    frames = sorted((cache / FRAMES / "image_2").glob("*.png"))
    assert len(frames) == 8
    with Image.open(frames[0]) as im:
        assert np.asarray(im).shape == (128, 320, 3)
