"""Every config of every group composes, with the keys the code relies on."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf, open_dict

import vcm.utils.config  # noqa: F401  (registers resolvers)

CONF = Path(__file__).resolve().parents[1] / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/vcm-compose"
    return cfg


def _check_targets(node) -> None:
    """Every _target_ names an importable class or function."""
    if OmegaConf.is_dict(node):
        tgt = node.get("_target_")
        if tgt:
            try:
                get_class(tgt)
            except (ImportError, ValueError):  # a function, not a class
                get_method(tgt)
        for k in node:
            if k != "hydra":
                _check_targets(node._get_node(k))
    elif OmegaConf.is_list(node):
        for item in node:
            _check_targets(item)


TRAIN_GROUPS = ["data", "model", "loss", "detector", "trainer", "logger", "callbacks", "launcher", "experiment"]


@pytest.mark.parametrize("group,option", [(g, o) for g in TRAIN_GROUPS for o in _options(g)])
def test_train_group_option_composes(group, option):
    cfg = _compose("train", [f"{group}={option}"])
    resolved = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg if k != "hydra"}
    assert resolved["model"]["_target_"].startswith("vcm.modules.")
    _check_targets(cfg)


@pytest.mark.parametrize("option", _options("codec"))
def test_eval_codec_option_composes(option):
    cfg = _compose("eval", [f"codec={option}"])
    assert cfg.codec._target_
    _check_targets(cfg.codec)


@pytest.mark.parametrize("option", _options("sweep"))
def test_eval_sweep_option_composes(option):
    cfg = _compose("eval", [f"sweep={option}"])
    assert cfg.hydra.sweeper.params and cfg.codec._target_.startswith("vcm.anchors.")


@pytest.mark.parametrize("option", [o for o in _options("experiment") if o.startswith("sweep_")])
def test_experiment_sweeps_list_rate_points(option):
    cfg = _compose("train", [f"experiment={option}"])
    assert "quality" in cfg.hydra.sweeper.params and cfg.model._target_.startswith("vcm.modules.")


@pytest.mark.parametrize("option", _options("experiment"))
def test_every_experiment_names_a_training_module(option):
    cfg = _compose("train", [f"experiment={option}"])
    assert cfg.model._target_.startswith("vcm.modules.")


@pytest.mark.parametrize("model,lmbda", [("hyperprior", 0.0067), ("factorized", 0.0067), ("lmsfc", 0.125), ("ta_msf", 0.125)])
def test_quality_selects_lambda_and_lambda_can_be_set(model, lmbda):
    cfg = _compose("train", [f"model={model}", "quality=3"])
    assert cfg.lmbda == pytest.approx(lmbda) and cfg.loss.lmbda == pytest.approx(lmbda)
    cfg = _compose("train", [f"model={model}", "lmbda=0.042"])
    assert cfg.loss.lmbda == pytest.approx(0.042)


def test_models_choose_their_loss_and_detector_but_the_command_line_wins():
    cfg = _compose("train", ["model=roi_hyperprior"])
    assert cfg.loss._target_.endswith("RoiRateDistortionLoss") and cfg.detector.backbone == "resnet18_fpn"
    cfg = _compose("train", ["model=roi_hyperprior", "loss=rd", "detector=mobilenet_v3_fpn"])
    assert cfg.loss._target_.endswith(".RateDistortionLoss") and cfg.detector.backbone == "mobilenet_v3_fpn"


def test_launchers_compose():
    assert "Joblib" in _compose("train", ["launcher=joblib"]).hydra.launcher._target_
    cfg = _compose("train", ["launcher=slurm", "trainer=ddp"])
    assert "Slurm" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.tasks_per_node == 2
