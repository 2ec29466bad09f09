"""The study scripts (``make demo``, ``make paper-mini``, ``make bench-features``)
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
        ("bench_features", []),
        ("bench_features", ["--detector-ckpt", FAKE_CKPT, "--lmbdas", "2", "8", "--det-weight", "2", "--no-anchors"]),
        ("study", ["--preset", "demo"]),
        ("study", ["--preset", "mini"]),
    ],
    ids=["bench_features", "bench_features_ckpt", "paper_demo", "paper_mini"],
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
