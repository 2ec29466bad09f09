"""The study scripts (``make demo``, ``make paper-mini``, ``make bench-roi``, ``make bench-features``)
in ``--dry-run`` mode: every command they would run composes with Hydra and its model, loss and
scheduler instantiate, so a bad override fails here and not 20 minutes into a benchmark."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import compose

FAKE_CKPT = "/nonexistent/detector.ckpt"  # never opened: configs only


def _dry_run(module: str, args: list[str], out: Path) -> list[dict]:
    import importlib

    main = importlib.import_module(f"vcm.cli.{module}").main
    assert main([*args, "--dry-run", "--out", str(out)]) == 0
    steps = json.loads((out / "study.json").read_text())["steps"]
    assert steps and all(s["status"] == "dry-run" for s in steps)
    return steps


def _argv(cmd: str) -> list[str]:
    """A study's printed command (``python -m vcm.cli.train ...``) as ``["vcm-train", *overrides]``."""
    argv = shlex.split(cmd)
    assert argv[1] == "-m", cmd
    return [{"vcm.cli.train": "vcm-train", "vcm.cli.eval": "vcm-eval"}[argv[2]], *argv[3:]]


def _check_command(cmd: str, tmp: Path) -> str:
    argv = _argv(cmd)
    tool = argv[0]
    # hydra.* and paths.* are set by the study for the run folder; compose() sets its own
    overrides = [a for a in argv[1:] if not a.startswith(("hydra.", "paths.", "run_name="))]
    cfg = compose(overrides, tmp, name="train" if tool == "vcm-train" else "eval")
    if tool == "vcm-eval":
        assert cfg.get("codec") is not None, cmd
        return tool
    from vcm.cli.train import build_model

    model = build_model(cfg, SimpleNamespace(class_names=["Car", "Pedestrian", "Cyclist"]))
    assert int(cfg.trainer.max_steps) > 0, cmd
    if model.kind == "detector":
        return tool
    if getattr(model, "scheduler_factory", None) is not None:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        model.scheduler_factory(opt)
    if getattr(model.codec, "needs_detector", False) or model.kind == "feature":
        assert cfg.get("detector") is not None and cfg.detector.backbone, cmd
    return tool


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("bench_roi", []),
        ("bench_roi", ["--detector-ckpt", FAKE_CKPT]),
        ("bench_roi", ["--pretrain-steps", "100", "--object-crop-prob", "0.5"]),
        ("bench_roi", ["--boxes-curve", "--qualities", "2"]),
        ("bench_features", ["--detector-ckpt", FAKE_CKPT, "--with-hyperprior"]),
        ("bench_features", []),
        ("bench_features", ["--detector-ckpt", FAKE_CKPT, "--pretrain-steps", "300", "--det-weight", "2"]),
        ("study", ["--preset", "demo"]),
        ("study", ["--preset", "mini"]),
    ],
    ids=["bench_roi", "bench_roi_ckpt", "bench_roi_pretrained", "bench_roi_boxes", "bench_features_ckpt", "bench_features", "bench_features_pretrained", "paper_demo", "paper_mini"],
)
def test_study_commands_compose(module, args, tmp_path):
    steps = _dry_run(module, args, tmp_path / "study")
    tools = [_check_command(s["cmd"], tmp_path / f"cfg{i}") for i, s in enumerate(steps)]
    assert "vcm-train" in tools and "vcm-eval" in tools


def test_bench_roi_budget_is_the_same_for_every_codec(tmp_path):
    steps = _dry_run("bench_roi", ["--steps", "60"], tmp_path / "study")
    trains = [s for s in steps if _argv(s["cmd"])[0] == "vcm-train"]
    assert len(trains) == 9  # hyperprior, roi_hyperprior, zero-features ablation at three qualities
    for s in trains:
        cfg = compose([a for a in _argv(s["cmd"])[1:] if not a.startswith(("hydra.", "paths."))], tmp_path / "c")
        assert cfg.trainer.max_steps == 60 and cfg.model.optimizer.lr == 1e-3
        assert (cfg.model.codec.N, cfg.model.codec.M) == (64, 96)
        assert list(cfg.data.crop_size) == [128, 128] and cfg.data.batch_size == 8
        assert list(cfg.model.scheduler.milestones) == [50] and cfg.model.scheduler_interval == "step"
        assert cfg.init_from is None


def test_bench_roi_boxes_curve_gives_the_encoder_the_roi_map_and_no_detector(tmp_path):
    steps = _dry_run("bench_roi", ["--steps", "60", "--boxes-curve"], tmp_path / "study")
    cfgs = {s["point"]: compose([a for a in _argv(s["cmd"])[1:] if not a.startswith(("hydra.", "paths."))],
                                tmp_path / "c") for s in steps if _argv(s["cmd"])[0] == "vcm-train"}
    assert len(cfgs) == 12
    boxes = {k: c for k, c in cfgs.items() if k.startswith("roi_boxes_")}
    assert sorted(boxes) == ["roi_boxes_q1", "roi_boxes_q4", "roi_boxes_q7"]
    for c in boxes.values():
        assert c.model.codec.roi_source == "boxes" and c.detector is None and c.variant == "roi_boxes"
        assert c.loss.alpha == cfgs["roi_hyperprior_q4"].loss.alpha and c.trainer.max_steps == 60
    assert all(c.model.codec.get("roi_source", "detector") == "detector" for k, c in cfgs.items() if k not in boxes)


def test_bench_roi_fine_tunes_every_point_from_one_base(tmp_path):
    steps = _dry_run("bench_roi", ["--steps", "60", "--pretrain-steps", "600"], tmp_path / "study")
    cfgs = {s["point"]: compose([a for a in _argv(s["cmd"])[1:] if not a.startswith(("hydra.", "paths."))],
                                tmp_path / "c") for s in steps if _argv(s["cmd"])[0] == "vcm-train"}
    base = cfgs.pop("base_hyperprior")
    assert base.trainer.max_steps == 600 and base.quality == 4 and base.init_from is None
    assert len(cfgs) == 9 and {c.init_from for c in cfgs.values()} == {str(tmp_path / "study" / "runs" / "base_hyperprior" /
                                                                          "checkpoints" / "last.ckpt")}
    assert {c.trainer.max_steps for c in cfgs.values()} == {60}


def test_bench_roi_prints_every_point_with_its_roi_to_background_gap(tmp_path, capsys):
    from vcm.cli.bench_roi import print_points
    from vcm.rd.record import make_record, write_record

    for codec, variant, q, bpp, roi, bg in (("hyperprior", "hyperprior", 4, 0.4, 17.0, 19.0),
                                            ("roi_hyperprior", "roi_boxes", 1, 0.2, 21.5, 18.0)):
        metrics = {"bpp_real": bpp, "psnr": 18.5, "roi_psnr": roi, "bg_psnr": bg}
        write_record(make_record(codec, {"quality": q, "variant": variant}, "kitti_tiny", "val", 9, None, metrics,
                                 [{"name": "000000"}], {}), tmp_path)
    print_points(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith(("hyperprior/", "roi_hyperprior/"))]
    assert rows == [["hyperprior/hyperprior", "4", "0.400", "18.50", "17.00", "19.00", "-2.00"],
                    ["roi_hyperprior/roi_boxes", "1", "0.200", "18.50", "21.50", "18.00", "+3.50"]]
