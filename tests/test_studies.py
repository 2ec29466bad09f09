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
    from vcm.modules.build import build_model

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
        ("bench_roi", ["--detector-ckpt", FAKE_CKPT, "--alpha-sweep", "0.6", "--no-boxes-curve"]),
        ("bench_features", []),
        ("bench_features", ["--detector-ckpt", FAKE_CKPT, "--lmbdas", "2", "8", "--det-weight", "2", "--no-anchors"]),
        ("study", ["--preset", "demo"]),
        ("study", ["--preset", "mini"]),
    ],
    ids=["bench_roi", "bench_roi_ckpt_sweep", "bench_features", "bench_features_ckpt", "paper_demo", "paper_mini"],
)
def test_study_commands_compose(module, args, tmp_path):
    steps = _dry_run(module, args, tmp_path / "study")
    tools = [_check_command(s["cmd"], tmp_path / f"cfg{i}") for i, s in enumerate(steps)]
    assert "vcm-train" in tools and "vcm-eval" in tools


def _configs(steps: list[dict], tool: str, tmp: Path) -> dict:
    """The composed config of every ``tool`` step of a dry run, by point."""
    return {s["point"]: compose([a for a in _argv(s["cmd"])[1:] if not a.startswith(("hydra.", "paths.", "run_name="))],
                                tmp, name="train" if tool == "vcm-train" else "eval")
            for s in steps if _argv(s["cmd"])[0] == tool}


def test_bench_roi_runs_on_real_frames_from_the_zoo_with_the_same_budget(tmp_path):
    steps = _dry_run("bench_roi", ["--steps", "60"], tmp_path / "study")
    trains = _configs(steps, "vcm-train", tmp_path / "c")
    # hyperprior, roi_hyperprior, zero-features ablation and the boxes bound at three qualities
    assert sorted(trains) == sorted(f"{c}_q{q}" for c in ("hyperprior", "roi_hyperprior", "roi_zero_features", "roi_boxes")
                                    for q in (1, 3, 5))
    for point, cfg in trains.items():
        q = int(point.rsplit("_q", 1)[1])
        assert cfg.init_from == f"zoo:hyperprior-kitti-q{q}" and cfg.quality == q, point
        assert cfg.data.name == "kitti_mini" and list(cfg.data.crop_size) == [128, 128] and cfg.data.object_crop_prob == 0.5
        assert cfg.trainer.max_steps == 60 and cfg.trainer.precision == "bf16-mixed" and cfg.model.optimizer.lr == 3e-4
        if cfg.model.codec.get("N") is not None:  # the ROI codecs: the zoo's widths, every hyperprior tensor warm-started
            assert (cfg.model.codec.N, cfg.model.codec.M) == (128, 192), point
    roi = trains["roi_hyperprior_q3"]
    assert roi.model.codec._target_.endswith("RoiHyperprior") and roi.loss.alpha == 0.9
    # the detector at its test-time size: crops reach it at their frames' scale, as in evaluation
    assert roi.detector.checkpoint == "zoo:kitti_mobilenet_v2" and (roi.detector.min_size, roi.detector.max_size) == (375, 1242)
    assert roi.model.codec.scale_activation == "relu"  # starts from the zoo hyperprior's scales
    plain = trains["hyperprior_q3"]
    assert plain.loss._target_.endswith(".RateDistortionLoss") and plain.model.codec._target_.endswith("image.hyperprior")
    assert trains["roi_zero_features_q3"].model.codec.zero_features and trains["roi_boxes_q3"].model.codec.roi_source == "boxes"
    for point, cfg in _configs(steps, "vcm-eval", tmp_path / "e").items():
        assert cfg.split == "test" and cfg.data.name == "kitti_mini", point
        assert cfg.detector.checkpoint == "zoo:kitti_mobilenet_v2" and cfg.detector.min_size == 375, point


def test_bench_roi_alpha_sweep_at_one_rate_point_on_validation_frames(tmp_path):
    steps = _dry_run("bench_roi", ["--only", "roi_hyperprior", "--qualities", "1", "--alpha-sweep", "0.5", "0.95"],
                     tmp_path / "study")
    sweep_steps = json.loads((tmp_path / "study" / "alpha-sweep" / "study.json").read_text())["steps"]
    trains = _configs(sweep_steps, "vcm-train", tmp_path / "c")
    assert sorted(c.loss.alpha for c in trains.values()) == [0.5, 0.9, 0.95]
    assert {c.quality for c in trains.values()} == {3} and {c.init_from for c in trains.values()} == {"zoo:hyperprior-kitti-q3"}
    assert {c.variant for c in trains.values()} == {"alpha0.5", "alpha0.9", "alpha0.95"}
    assert {c.split for c in _configs(sweep_steps, "vcm-eval", tmp_path / "e").values()} == {"val"}
    assert len(_configs(steps, "vcm-train", tmp_path / "m")) == 1


def test_roi_alpha_sweep_config_composes_as_a_multirun(tmp_path):
    # vcm-train -m experiment=roi_kitti quality=3 loss.alpha=0.5,0.75,0.9,0.95: every job's config
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate

    (sweep,) = OverridesParser.create().parse_overrides(["loss.alpha=0.5,0.75,0.9,0.95"])
    assert sweep.is_sweep_override()
    for alpha in sweep.sweep_string_iterator():
        cfg = compose(["experiment=roi_kitti", "quality=3", f"loss.alpha={alpha}"], tmp_path)
        loss = instantiate(cfg.loss)
        assert loss.alpha == float(alpha) and loss.lmbda == cfg.model.lambdas.q3 and cfg.init_from == "zoo:hyperprior-kitti-q3"


def test_bench_roi_refuses_a_rate_point_without_a_zoo_model(tmp_path, capsys):
    from vcm.cli.bench_roi import main

    with pytest.raises(SystemExit) as e:
        main(["--qualities", "7", "--dry-run", "--out", str(tmp_path)])
    assert e.value.code == 2 and "no zoo model hyperprior-kitti-q7" in capsys.readouterr().err


def test_bench_features_fine_tunes_both_codecs_from_one_base_with_the_same_steps(tmp_path):
    steps = _dry_run("bench_features", ["--base-steps", "300", "--steps", "50"], tmp_path / "study")
    trains = _configs(steps, "vcm-train", tmp_path / "c")
    base = trains.pop("base_lmsfc")
    assert base.trainer.max_steps == 300 and base.lmbda == 64 and base.init_from is None
    assert base.data.name == "kitti_mini" and base.detector.checkpoint == "zoo:kitti_mobilenet_v2"
    assert (base.detector.min_size, base.detector.max_size) == (375, 1242) and list(base.data.crop_size) == [256, 256]
    assert sorted(trains) == sorted(f"{c}_lmbda{lm}" for c in ("lmsfc", "ta_msf") for lm in ("0.05", "0.15", "0.5", "1.5"))
    ckpt = str(tmp_path / "study" / "runs" / "base_lmsfc" / "checkpoints" / "last.ckpt")
    for point, cfg in trains.items():
        assert cfg.init_from == ckpt and cfg.trainer.max_steps == 50 and cfg.lmbda == float(point.rsplit("lmbda", 1)[1])
        assert cfg.model.optimizer.lr == base.model.optimizer.lr and cfg.trainer.precision == "bf16-mixed"
        assert (cfg.model.codec.N, cfg.model.codec.M, cfg.model.codec.light) == (64, 64, True)
        assert cfg.model.det_weight == (1.0 if point.startswith("ta_msf") else 0.0), point
    assert trains["ta_msf_lmbda0.5"].model.det_weight_lmbda == 1.0  # w = lambda
    evals = _configs(steps, "vcm-eval", tmp_path / "e")
    codecs = {c.codec._target_.rsplit(".", 1)[1] for c in evals.values() if c.get("codec") is not None}
    assert {"FeatureHevcAnchor"} <= codecs and "none" in evals and "zoo_namehyperprior-kitti-q4" in evals
    assert {c.split for c in evals.values()} == {"test"}


def test_bench_features_task_loss_ablation_is_lmsfc_with_ta_msf_loss(tmp_path):
    steps = _dry_run("bench_features", ["--task-loss-ablation", "--lmbdas", "0.5", "--no-anchors"], tmp_path / "study")
    trains = _configs(steps, "vcm-train", tmp_path / "c")
    ablation, lmsfc, ta_msf = trains["lmsfc_task_lmbda0.5"], trains["lmsfc_lmbda0.5"], trains["ta_msf_lmbda0.5"]
    assert ablation.model.codec._target_ == lmsfc.model.codec._target_ != ta_msf.model.codec._target_
    assert ablation.model.det_weight == ta_msf.model.det_weight == 1.0 and ablation.variant == "lmsfc_light_task"
    assert ablation.trainer.max_steps == lmsfc.trainer.max_steps and ablation.init_from == lmsfc.init_from


def test_bench_roi_prints_every_point_with_its_roi_to_background_gap(tmp_path, capsys):
    from vcm.cli.bench_roi import print_points
    from vcm.rd.record import make_record, write_record

    for codec, variant, q, bpp, roi, bg in (("hyperprior", "hyperprior", 4, 0.4, 17.0, 19.0),
                                            ("roi_hyperprior", "roi_boxes", 1, 0.2, 21.5, 18.0)):
        metrics = {"bpp_real": bpp, "psnr": 18.5, "roi_psnr": roi, "bg_psnr": bg, "map_50": 0.5, "kitti_ap_car_moderate": 0.25}
        write_record(make_record(codec, {"quality": q, "variant": variant}, "kitti_mini", "test", 10, None, metrics,
                                 [{"name": "000000"}], {}), tmp_path)
    print_points(tmp_path, "kitti_mini test frames")
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith(("hyperprior/", "roi_hyperprior/"))]
    assert rows == [["hyperprior/hyperprior", "4", "-", "0.400", "18.50", "17.00", "19.00", "-2.00", "0.500", "25.00%"],
                    ["roi_hyperprior/roi_boxes", "1", "-", "0.200", "18.50", "21.50", "18.00", "+3.50", "0.500", "25.00%"]]


def test_bench_features_training_summary_reads_the_task_loss_share(tmp_path, capsys):
    from vcm.cli.bench_features import print_training_summary
    from vcm.studies import Study

    st = Study("t", tmp_path, dry_run=True)
    log = st.run_dir("ta_msf_lmbda16") / "csv"
    log.mkdir(parents=True)
    cols = ["train/bpp_loss_epoch", "train/det_loss_epoch", "train/det_weight_epoch", "train/loss_epoch",
            *(f"train/mse_p{i}_epoch" for i in range(2, 7)), "val/bpp_real"]
    (log / "metrics.csv").write_text(",".join(["step", *cols]) + "\n" + "10,0.1,0.5,16,40,1,1,1,1,1,\n"
                                     + "20,,,,,,,,,,0.007\n")
    print_training_summary(st, ["ta_msf_lmbda16", "missing_point"])
    row = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("ta_msf_lmbda16")]
    assert row == [["ta_msf_lmbda16", "0.1000", "1.000", "1.000", "1.000", "1.000", "1.000", "0.500", "16.0", "20.0%", "0.0070"]]
