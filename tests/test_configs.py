"""Every config of every group is built, not only composed: models, losses, data modules,
detectors, codecs, trainers, loggers, callbacks, schedulers, and every sweep point of every
experiment and anchor sweep. The tests iterate over the files, so a new config is covered
without a new test."""
from __future__ import annotations

import itertools
from pathlib import Path

import hydra
import pytest
import torch
from helpers import (
    CONF,
    SYNTH,
    TINY_CODEC,
    TINY_TRAIN,
    compose,
    config_options,
    experiments,
    synthetic_cache,
)
from hydra.errors import InstantiationException
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf, open_dict

from vcm.errors import ConfigError

# vcm/conf/<group>/ folders that are config groups users choose from (model_base is internal).
# vcm/conf/study holds study presets read by the study runner, not a Hydra group: tests/test_studies.py runs them
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("model_base", "hydra", "study"))
# tiny codec widths for every model config (keys a model does not have are added harmlessly: none is read)
TINY_WIDTHS = ["model.codec.N=8", "model.codec.M=8"]


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


def test_every_group_is_covered_by_a_build_test():
    """A new config group must get a build test here."""
    assert set(GROUPS) == {"callbacks", "codec", "data", "detector", "experiment", "launcher", "logger", "loss", "model",
                           "paths", "scheduler", "trainer"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return synthetic_cache(tmp_path_factory.mktemp("configs"))


def _datamodule(cfg):
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    return dm


def _build_training(cfg):
    """Data module, model (with its loss) and a check of what was built."""
    from vcm.modules.build import build_model

    dm = _datamodule(cfg)
    model = build_model(cfg, dm)
    assert sum(p.numel() for p in model.parameters()) > 0
    if getattr(model, "kind", "image") != "detector":
        assert model.loss_fn is not None and model.codec is not None
        assert model.codec.N == 8 and model.codec.M == 8  # the tiny widths reached the codec
        opts = model.configure_optimizers()
        assert len(opts) == 2  # net and aux optimizers
    return dm, model


# ------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("option", config_options("model"))
def test_model_option_is_built(option, tmp_path, cache):
    overrides = [f"model={option}"] + SYNTH + TINY_TRAIN + (TINY_CODEC[:1] + TINY_WIDTHS if option != "detector" else [])
    if option == "detector":
        overrides += ["detector=resnet18_fpn"]
    cfg = compose(overrides, tmp_path, cache)
    _check_targets(cfg)
    dm, model = _build_training(cfg)
    assert type(model).__module__.startswith("vcm.modules.")
    assert list(dm.class_names) == list(cfg.data.classes)


@pytest.mark.parametrize("option", config_options("loss"))
def test_loss_option_is_built(option, tmp_path):
    model = "lmsfc" if option == "feature_rd" else "roi_hyperprior" if option == "roi_rd" else "hyperprior"
    cfg = compose([f"model={model}", f"loss={option}", "quality=2"], tmp_path)
    loss = hydra.utils.instantiate(cfg.loss)
    assert isinstance(loss, torch.nn.Module) and loss.lmbda == pytest.approx(cfg.lmbda)


@pytest.mark.parametrize("option", config_options("scheduler"))
def test_scheduler_option_is_built(option, tmp_path, cache):
    from vcm.modules.build import build_model

    cfg = compose(["model=hyperprior"] + SYNTH + TINY_TRAIN + TINY_CODEC[:1] + TINY_WIDTHS + ["trainer.max_steps=100"],
                  tmp_path, cache)
    with open_dict(cfg):
        cfg.model.scheduler = OmegaConf.load(CONF / "scheduler" / f"{option}.yaml")
    model = build_model(cfg, _datamodule(cfg))
    opt, _ = model.configure_optimizers()
    lr0 = opt.param_groups[0]["lr"]
    sch = model._scheduler
    assert sch is not None and sch.optimizer is opt
    if isinstance(sch, torch.optim.lr_scheduler.ReduceLROnPlateau):
        for _ in range(cfg.model.scheduler.patience + 2):
            sch.step(1.0)
    else:
        for _ in range(100):
            opt.step()
            sch.step()
    assert opt.param_groups[0]["lr"] < lr0  # it does lower the learning rate


# ------------------------------------------------------------------------------------------------- data
def _data_overrides(option: str, tmp_path: Path) -> list[str]:
    if option == "images":
        from PIL import Image

        folder = tmp_path / "frames"
        folder.mkdir()
        for i in range(2):
            Image.new("RGB", (96, 64), (40 * i, 80, 120)).save(folder / f"{i:06d}.png")
        return [f"data.root={folder}"]
    if option == "synthetic":
        return SYNTH[1:]
    if option == "kitti":
        return ["data.root=${paths.shared_dir}/data/kitti_tiny"]
    return []


def _require_real_data(request) -> None:
    request.getfixturevalue("shared_data")  # skips without ../shared (these options carry needs_shared)


def _data_params():
    out = []
    for o in config_options("data"):
        real = o not in ("images", "synthetic")
        out.append(pytest.param(o, marks=[pytest.mark.needs_shared] if real else [], id=o))
    return out


@pytest.mark.parametrize("option", _data_params())
def test_data_option_is_built(option, tmp_path, cache, request):
    if option not in ("images", "synthetic"):
        _require_real_data(request)
    cfg = compose([f"data={option}", "data.crop_size=[64,64]"] + _data_overrides(option, tmp_path), tmp_path, cache)
    dm = _datamodule(cfg)
    sizes = {s: len(dm.datasets[s]) for s in ("train", "val", "test")}
    assert dm.class_names and sizes["test"] > 0, sizes
    images, targets = next(iter(dm.test_dataloader()))
    assert images[0].dim() == 3 and images[0].shape[0] == 3 and "boxes" in targets[0]


# --------------------------------------------------------------------------------------------- detector
@pytest.mark.parametrize("option", config_options("detector"))
def test_detector_option_is_built(option, tmp_path):
    from vcm.callbacks.frozen_detector import build_detector
    from vcm.zoo import entries

    cfg = compose(["model=hyperprior", f"detector={option}"], tmp_path)
    if cfg.detector is None:
        assert option == "none"
        return
    ckpt = cfg.detector.get("checkpoint")
    if ckpt and str(ckpt).startswith("zoo:") and str(ckpt)[4:] not in entries():
        with pytest.raises((ConfigError, InstantiationException), match=str(ckpt)[4:]):
            build_detector(cfg.detector)
        pytest.skip(f"{ckpt} is not shipped yet (refused with a clear error)")
    det = build_detector(cfg.detector)
    assert not any(p.requires_grad for p in det.parameters())
    with torch.no_grad():
        feats = det.features([torch.rand(3, 64, 96)])
    assert list(feats.levels) == ["p2", "p3", "p4", "p5", "p6"]


# -------------------------------------------------------------------------------------- eval codec, sweeps
# codec options that name a file or weights the user gives: built with one, or refused clearly without
NEEDS_ARGUMENT = {"checkpoint": ("codec.ckpt=/nonexistent/last.ckpt", "checkpoint not found"),
                  "checkpoint_roi": ("codec.ckpt=/nonexistent/last.ckpt", "checkpoint not found"),
                  "zoo": ("codec.name=no-such-model", "no zoo image codec or feature codec called 'no-such-model'"),
                  "zoo_roi": ("codec.name=no-such-model", "no zoo image codec or feature codec called 'no-such-model'")}


def _build_codec(cfg):
    from vcm.cli.eval import build_runner
    from vcm.evaluation.runners import FeatureRunner, ImageRunner, NoCodec

    runner = build_runner(cfg.codec)
    assert isinstance(runner, (ImageRunner, FeatureRunner, NoCodec))
    return runner


@pytest.mark.parametrize("option", config_options("codec"))
def test_codec_option_is_built(option, tmp_path):
    from vcm.errors import CodecUnavailableError

    if option in NEEDS_ARGUMENT:
        arg, message = NEEDS_ARGUMENT[option]
        cfg = compose([f"codec={option}", arg], tmp_path, name="eval")
        with pytest.raises((ConfigError, InstantiationException), match=message):
            _build_codec(cfg)
        return
    cfg = compose([f"codec={option}"], tmp_path, name="eval")
    _check_targets(cfg.codec)
    try:
        runner = _build_codec(cfg)
    except (CodecUnavailableError, ConfigError, InstantiationException) as e:  # weights or binaries not here
        cause = e.__cause__ if isinstance(e, InstantiationException) else e
        assert isinstance(cause, (CodecUnavailableError, ConfigError)) and "\n" not in str(cause).strip()
        pytest.skip(f"codec={option} is not available here: {cause}")
    from vcm.evaluation.runners import ImageRunner

    if isinstance(runner, ImageRunner) and option not in ("vtm",):
        image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
        data = runner.encode(image)
        assert runner.decode(data).shape == image.shape


def _sweep_points(cfg) -> list[list[str]]:
    params = cfg.hydra.sweeper.params
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*values)]


def _sweep_params(options: list[str], name: str):
    out = []
    for option in options:
        cfg = compose([f"experiment={option}"], name=name, hydra=True)
        if not cfg.hydra.sweeper.params:
            continue
        for point in _sweep_points(cfg):
            out.append(pytest.param(option, point, id=f"{option}-{'-'.join(point)}"))
    return out


def test_every_experiment_configures_one_command():
    assert sorted(experiments("train") + experiments("eval")) == config_options("experiment")
    assert "sweep_hevc" in experiments("eval") and "sweep_hyperprior" in experiments("train")


@pytest.mark.parametrize("option,point", _sweep_params(experiments("eval"), "eval"))
def test_every_anchor_sweep_point_is_built(option, point, tmp_path):
    cfg = compose([f"experiment={option}"] + point, tmp_path, name="eval")
    assert cfg.codec._target_.startswith("vcm.anchors.")
    anchor = hydra.utils.instantiate(cfg.codec)
    key, value = point[0].split("=")
    assert str(anchor.params[key.split(".")[-1]]) == value  # the swept parameter reached the anchor


@pytest.mark.parametrize("option", experiments("train"))
def test_every_experiment_has_a_training_module(option):
    cfg = compose([f"experiment={option}"], hydra=True)
    assert cfg.model._target_.startswith("vcm.modules.")
    _check_targets(cfg)


def _experiment_points():
    """Every sweep point of every experiment (one point, the file as it is, for those without a sweep)."""
    out = []
    for option in experiments("train"):
        cfg = compose([f"experiment={option}"], hydra=True)
        points = _sweep_points(cfg) if cfg.hydra.sweeper.params else [[]]
        for point in points:
            out.append(pytest.param(option, point, id=f"{option}-{'-'.join(point) or 'as-is'}"))
    return out


@pytest.mark.parametrize("option,point", _experiment_points())
def test_every_experiment_sweep_point_is_built(option, point, tmp_path, cache):
    is_detector = compose([f"experiment={option}"]).model._target_.endswith("DetectorModule")
    cfg = compose([f"experiment={option}"] + point + SYNTH + TINY_TRAIN + ([] if is_detector else TINY_WIDTHS),
                  tmp_path, cache)
    _, model = _build_training(cfg)
    quality = dict(p.split("=") for p in point).get("quality")
    if quality is not None:
        assert cfg.lmbda == pytest.approx(cfg.model.lambdas[f"q{quality}"])
        assert model.loss_fn.lmbda == pytest.approx(cfg.lmbda)


# ------------------------------------------------------------------------------ trainer, logger, callbacks
@pytest.mark.parametrize("option", config_options("trainer"))
def test_trainer_option_is_built(option, tmp_path):
    import lightning as L

    cfg = compose([f"trainer={option}"], tmp_path)
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        pytest.skip(f"trainer={option} needs a GPU")
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[], logger=False, use_distributed_sampler=False)
    assert isinstance(trainer, L.Trainer)


@pytest.mark.parametrize("option", config_options("logger"))
def test_logger_option_is_built(option, tmp_path, monkeypatch):
    from vcm.cli.train import build_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose([f"logger={option}"], tmp_path)
    loggers = build_loggers(cfg)
    assert (option == "none") == (not loggers)
    for lg in loggers:
        lg.log_metrics({"x": 1.0}, step=0)
        if hasattr(lg, "experiment") and hasattr(lg.experiment, "finish"):
            lg.experiment.finish()


@pytest.mark.parametrize("option", config_options("callbacks"))
def test_callbacks_option_is_built(option, tmp_path, cache):
    from vcm.cli.train import build_callbacks, build_model

    cfg = compose(["model=hyperprior", f"callbacks={option}"] + SYNTH + TINY_TRAIN + TINY_CODEC[:1] + TINY_WIDTHS,
                  tmp_path, cache)
    model = build_model(cfg, _datamodule(cfg))
    callbacks = build_callbacks(cfg, model)
    assert (option == "none") == (not callbacks)
    for cb in callbacks:
        if hasattr(cb, "monitor") and cb.monitor is not None:
            assert cb.monitor == model.monitor[0]


# ------------------------------------------------------------------------------ launcher, paths (hydra-level)
@pytest.mark.parametrize("option", config_options("launcher"))
def test_launcher_option_names_an_importable_launcher(option):
    cfg = compose([f"launcher={option}"], hydra=True)
    get_class(cfg.hydra.launcher._target_)


def test_paths_resolve_under_the_project():
    cfg = compose(["paths=default"], hydra=True)
    root = Path(cfg.paths.root_dir)
    assert (root / "vcm" / "conf").is_dir() and Path(cfg.paths.shared_dir) == root / ".." / "shared"


# ------------------------------------------------------------------------------------ config semantics
@pytest.mark.parametrize("model,lmbda", [("hyperprior", 0.0067), ("factorized", 0.0067), ("lmsfc", 0.125), ("ta_msf", 0.125)])
def test_quality_selects_lambda_and_lambda_can_be_set(model, lmbda):
    cfg = compose([f"model={model}", "quality=3"])
    assert cfg.lmbda == pytest.approx(lmbda) and cfg.loss.lmbda == pytest.approx(lmbda)
    cfg = compose([f"model={model}", "lmbda=0.042"])
    assert cfg.loss.lmbda == pytest.approx(0.042)


def test_models_choose_their_loss_and_detector_but_the_command_line_wins():
    cfg = compose(["model=roi_hyperprior"])
    assert cfg.loss._target_.endswith("RoiRateDistortionLoss") and cfg.detector.backbone == "resnet18_fpn"
    cfg = compose(["model=roi_hyperprior", "loss=rd", "detector=mobilenet_v3_fpn"])
    assert cfg.loss._target_.endswith(".RateDistortionLoss") and cfg.detector.backbone == "mobilenet_v3_fpn"


def test_launchers_compose():
    assert "Joblib" in compose(["launcher=joblib"], hydra=True).hydra.launcher._target_
    cfg = compose(["launcher=slurm", "trainer=ddp"], hydra=True)
    assert "Slurm" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.tasks_per_node == 2
