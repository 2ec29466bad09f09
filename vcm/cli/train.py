"""``vcm-train``: train any vcm model (image codec, feature codec, detector) from a Hydra config.

Reads top to bottom: data, model, callbacks/loggers, trainer, fit (or resume), final validation,
test with real bitstreams, results record. ``train(cfg)`` is a plain function (tests call it);
``main`` only wraps it with ``@hydra.main``.

Examples::

    vcm-train data=kitti_tiny model=hyperprior trainer.max_steps=20
    vcm-train -m model=hyperprior quality=1,3,5          # a lambda sweep
    vcm-train model=detector data=synthetic detector=resnet18_fpn
    vcm-train ... ckpt_path=last hydra.run.dir=<run dir>   # resume that run from its last.ckpt

Resuming (``ckpt_path=last`` with the run's ``hydra.run.dir``, or ``ckpt_path=<file>``) restores
weights, optimisers, LR scheduler, loop counters, the position in the epoch and the RNG states, so
the resumed run ends with the same weights and metrics as an uninterrupted one (CPU; see
``tests/test_reliability.py``). In a multirun a failing point is recorded (``FAILED.json``) and the
sweep goes on (:mod:`vcm.callbacks.sweep`).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vcm.cli.hydra_app import check_overrides, run_command
from vcm.conditioning import conditioning
from vcm.errors import ConfigError
from vcm.modules.build import build_model
from vcm.utils.checkpoint_meta import codec_metadata
from vcm.utils.config import CONF_DIR, check_config, to_plain
from vcm.utils.io import atomic_write_text

log = logging.getLogger("vcm.train")


def _check_checkpoint_file(path: Path, what: str) -> None:
    """Refuse a checkpoint that is not a complete torch archive (truncated copy, full disk)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{what}: {path} is truncated or corrupt (not a complete torch checkpoint archive). vcm writes "
            "checkpoints atomically, so this file was damaged afterwards; resume from another checkpoint "
            "(e.g. checkpoints/best-*.ckpt) or delete it to start from scratch"
        )


def _resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            _check_checkpoint_file(last, "ckpt_path=last")
            return str(last)
        log.info("ckpt_path=last: no %s yet, starting from scratch", last)
        return None
    p = Path(ckpt_path)
    if not p.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: file not found")
    _check_checkpoint_file(p, f"ckpt_path={ckpt_path}")
    return str(p)


def init_codec_from(model, path: str) -> dict[str, list[str]]:
    """``init_from=<codec checkpoint>``: start the codec from a trained codec's weights where they fit
    (see :func:`vcm.codecs.base.warm_start`); the optimiser, step count and scheduler start afresh."""
    from vcm.codecs.base import warm_start

    if getattr(model, "kind", None) == "detector":
        raise ConfigError("init_from applies to codecs; a detector starts from detector.checkpoint / detector.weights")
    if str(path).startswith("compressai:"):
        return _init_from_compressai(model, str(path))
    from vcm.zoo import is_zoo_spec, resolve

    p = resolve(path)
    if not p.is_file():
        raise ConfigError(f"init_from={path}: file not found; expected a codec checkpoint (.ckpt) written by vcm-train "
                          "or zoo:<name>")
    _check_checkpoint_file(p, f"init_from={path}")
    from vcm.evaluation.runners import load_codec_checkpoint

    try:
        source, _ = load_codec_checkpoint(p)
        report = warm_start(model.codec, source.state_dict())
    except ValueError as e:  # ConfigError is one too
        raise ConfigError(f"init_from={path}: {e}") from None
    log.info("init_from %s: %d tensors loaded, %d on their leading input channels, %d kept as initialised (%s), "
             "%d of the source unused", p, len(report["loaded"]), len(report["partial"]), len(report["skipped"]),
             ", ".join(report["skipped"][:6]) + (" ..." if len(report["skipped"]) > 6 else ""), len(report["unused"]))
    model.vcm_meta["init_from"] = str(path) if is_zoo_spec(path) else str(p.resolve())
    return report


def _init_from_compressai(model, spec: str) -> dict[str, list[str]]:
    """``init_from=compressai:<arch>/<quality>[/<metric>]`` or ``compressai:<file>``: warm-start the codec
    from CompressAI's weights (see :mod:`vcm.codecs.compressai_zoo`)."""
    from vcm.codecs.base import warm_start
    from vcm.codecs.compressai_zoo import init_state_dict

    try:
        report = warm_start(model.codec, init_state_dict(spec))
    except ValueError as e:  # ConfigError is one too
        raise ConfigError(f"init_from={spec}: {e}") from None
    log.info("init_from %s: %d tensors loaded, %d on their leading input channels, %d kept as initialised, "
             "%d of the source unused", spec, len(report["loaded"]), len(report["partial"]), len(report["skipped"]),
             len(report["unused"]))
    model.vcm_meta["init_from"] = spec
    return report


def _keep_csv_logs(loggers: list) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv; a resumed run keeps it under another name."""
    from lightning.pytorch.loggers import CSVLogger

    for lg in loggers:
        if isinstance(lg, CSVLogger):
            metrics = Path(lg.log_dir) / "metrics.csv"
            if metrics.is_file():
                n = 1
                while (kept := metrics.with_name(f"metrics.before-resume-{n}.csv")).exists():
                    n += 1
                os.replace(metrics, kept)
                log.info("resuming: the earlier metrics are kept in %s", kept)


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for lg in (cfg.get("logger") or {}).values():
        if lg is not None and "_target_" in lg:
            loggers.append(hydra.utils.instantiate(lg))
    return loggers


def build_callbacks(cfg: DictConfig, model) -> list:
    callbacks = []
    for name, cb in (cfg.get("callbacks") or {}).items():
        if cb is None or "_target_" not in cb:
            continue
        if name == "model_checkpoint" and cb.get("monitor") is None:
            cb = cb.copy()
            with open_dict(cb):
                cb.monitor, cb.mode = model.monitor
        callbacks.append(hydra.utils.instantiate(cb))
    return callbacks


def train(cfg: DictConfig, extra_callbacks: list | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, validate and test one configuration.

    Args:
        cfg: the composed ``train`` config.
        extra_callbacks: Lightning callbacks added to the configured ones (e.g. probes in tests).

    Returns:
        (metrics, objects): ``metrics`` holds the final ``val/*`` and ``test/*`` values (floats) and
        ``record_path``; ``objects`` the datamodule, model, trainer and callbacks.
    """
    check_config(cfg)
    lambdas = cfg.model.get("lambdas") if cfg.get("model") is not None else None
    if lambdas and cfg.get("loss") is not None and cfg.get("lmbda") is None:
        raise ConfigError(f"quality={cfg.get('quality')}: the model's lambda table (model.lambdas) has no entry for it; "
                          f"expected a quality of {', '.join(lambdas)}, or set lmbda=<value>")
    L.seed_everything(int(cfg.seed), workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = _resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)

    # Data: one DataModule for every model; the split used is saved with the run.
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()

    model = build_model(cfg, datamodule)
    kind = getattr(model, "kind", "image")
    if cfg.get("init_from") and not ckpt_path:
        init_codec_from(model, cfg.init_from)
    callbacks = build_callbacks(cfg, model) + list(extra_callbacks or [])
    if kind != "detector":
        if cfg.get("detector") is not None:
            from vcm.callbacks.frozen_detector import FrozenDetectorCallback

            callbacks.append(FrozenDetectorCallback(cfg.detector, config=to_plain(cfg.detector)))
        elif conditioning(model.codec).detector(model.codec) is not None:
            raise ConfigError(f"model={model.codec_name} needs a detector: add detector=resnet18_fpn (or another vcm/conf/detector entry)")
        model.vcm_meta.update(codec_metadata(
            kind=kind, codec_name=model.codec_name, codec=to_plain(cfg.model.codec), model=to_plain(cfg.model),
            rate_point={"quality": cfg.get("quality"), "lmbda": cfg.get("lmbda"), "alpha": model.params.get("alpha"),
                        "det_weight": model.params.get("det_weight")},
            variant=cfg.get("variant"), class_names=list(datamodule.class_names)))
    from vcm.rd.record import current_git_commit

    model.vcm_meta["git_commit"] = current_git_commit()
    # Written once data and model are built: a configuration error writes nothing into the run folder.
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    datamodule.save_split(output_dir / "split.json")
    from vcm.callbacks.checkpoint_io import AtomicCheckpointIO, RngStateCallback

    callbacks.append(RngStateCallback())
    loggers = build_loggers(cfg)
    if ckpt_path:
        _keep_csv_logs(loggers)
    # The DataModule shares data among processes itself (padded training shares, unpadded
    # evaluation shares, resumable order), so Lightning must not swap in its DistributedSampler.
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                 plugins=[AtomicCheckpointIO()], use_distributed_sampler=False)
    _check_launch(trainer)
    for lg in loggers:
        try:
            lg.log_hyperparams(to_plain(cfg))
        except Exception as e:  # noqa: BLE001 - a logger that cannot store the config must not stop training
            log.warning("logger %s could not store the config: %s", type(lg).__name__, e)

    t0 = time.time()
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    train_s = time.time() - t0

    metrics: dict[str, Any] = {"train_s": train_s}
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1})
    if cfg.get("validate_after_fit", True):
        trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1})
    record_path = None
    if cfg.get("test_after_fit", True):
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        if trainer.global_rank == 0 and "test" in model.last_eval:
            record_path = write_train_record(cfg, model, datamodule, kind)
            metrics["record_path"] = str(record_path)
    if trainer.global_rank == 0:
        best = getattr(trainer.checkpoint_callback, "best_model_path", None)
        if best:
            metrics["best_checkpoint"] = best
        log.info("run directory: %s", output_dir)
        if record_path:
            log.info("results record: %s", record_path)
    objects = {"datamodule": datamodule, "model": model, "trainer": trainer, "callbacks": callbacks}
    return metrics, objects


def _check_launch(trainer: L.Trainer) -> None:
    """Refuse multi-process training that Lightning would start by re-running the command line
    inside a Hydra multirun: each re-run would start the whole sweep again."""
    from lightning.pytorch.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher,
    )

    from vcm.callbacks.sweep import _multirun_job

    launcher = getattr(trainer.strategy, "launcher", None)
    if (isinstance(launcher, _SubprocessScriptLauncher) and not launcher.cluster_environment.creates_processes_externally
            and trainer.world_size > 1 and _multirun_job() is not None):
        raise ConfigError(
            f"strategy {type(trainer.strategy).__name__} with {trainer.world_size} processes starts its processes by "
            "re-running the command line, which cannot work inside a Hydra multirun (-m); run each point as its own "
            "vcm-train, or sweep with launcher=slurm (SLURM starts the processes)"
        )


def write_train_record(cfg: DictConfig, model, datamodule, kind: str) -> Path:
    """The test split's results record of a trained model (same schema as ``vcm-eval``)."""
    from vcm.evaluation.pipeline import finite_or_none
    from vcm.rd.record import make_record, write_record

    ev = model.last_eval["test"]
    if kind == "detector":
        codec, params = "none", {}
        detector = {"name": cfg.detector.get("backbone"), "weights_hash": None}
    else:
        codec, params = model.codec_name, dict(model.params)
        if cfg.get("variant"):
            params["variant"] = cfg.variant
        det = model.detector
        detector = {"name": getattr(det, "backbone_name", None), "weights_hash": det.weights_hash()} if det is not None else None
    rec = make_record(
        codec=codec, params=params, dataset=datamodule.name, split="test", num_images=len(ev["per_image"]),
        detector=detector, metrics=finite_or_none(ev["metrics"]), per_image=[finite_or_none(p) for p in ev["per_image"]],
        config=to_plain(cfg),
    )
    return write_record(rec, cfg.paths.results_dir)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    # One line for a user's mistake; in a multirun a failing point is recorded and the sweep goes on.
    metrics = run_command("vcm-train", lambda c: train(c)[0], cfg)
    opt = cfg.get("optimized_metric")
    return metrics.get(opt) if opt and metrics else None


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    check_overrides("vcm-train", "train")
    _hydra_main()


if __name__ == "__main__":
    main()
