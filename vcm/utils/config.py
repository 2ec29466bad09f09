"""Hydra/OmegaConf helpers: where the configs and the project live, resolvers and config checks shared
by vcm-train and vcm-eval.

The config tree ships inside the package (``vcm/conf``), so an installed wheel composes the same
configs as a checkout. ``VCM_CONF_DIR`` points Hydra at another tree.
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vcm.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The checkout holding the package (``pyproject.toml`` beside ``vcm/``); None for an installed wheel.
CHECKOUT_ROOT: Path | None = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None
CONF_DIR = Path(os.environ.get("VCM_CONF_DIR", PACKAGE_DIR / "conf")).resolve()


def project_root() -> Path:
    """Where run output, results and caches go by default (``paths.root_dir``): the checkout, or for an
    installed package the current directory (read when the config is resolved, not at import)."""
    return CHECKOUT_ROOT if CHECKOUT_ROOT is not None else Path.cwd()


#: The project root as :func:`project_root` finds it at import (the checkout, or the current directory).
PROJECT_ROOT = project_root()


def _register() -> None:
    if not OmegaConf.has_resolver("vcm_root"):
        OmegaConf.register_new_resolver("vcm_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("vcm_conf"):
        OmegaConf.register_new_resolver("vcm_conf", lambda: str(CONF_DIR))


_register()


def check_config(cfg: DictConfig) -> None:
    """Range checks that Hydra's schema-less configs cannot express (clear errors naming the key)."""
    lmbda = cfg.get("lmbda")
    if lmbda is not None and float(lmbda) < 0:
        raise ConfigError(f"lmbda={lmbda}: expected a non-negative rate-distortion trade-off")
    loss = cfg.get("loss")
    if loss is not None and loss.get("alpha") is not None:
        a = float(loss.alpha)
        if not 0.0 <= a <= 1.0:
            raise ConfigError(f"loss.alpha={a}: expected a value in [0, 1] (1 = all quality to the ROIs)")


def to_plain(cfg) -> dict:
    """Resolved plain-dict copy of a config node (for records and checkpoints)."""
    if cfg is None:
        return None
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def lambda_table(name: str) -> dict[int, float]:
    """A rate-distortion lambda table by quality, ``vcm/conf/model_base/lambdas_<name>.yaml`` (``mse``,
    ``feature``): the one place each table is written.

    Returns:
        ``{quality: lambda}``, e.g. ``lambda_table("mse")[3] == 0.0067``.
    """
    path = CONF_DIR / "model_base" / f"lambdas_{name}.yaml"
    if not path.is_file():
        valid = sorted(p.stem.removeprefix("lambdas_") for p in path.parent.glob("lambdas_*.yaml"))
        raise ConfigError(f"no lambda table {name!r} ({path}); expected one of {valid}")
    table = OmegaConf.to_container(OmegaConf.load(path).lambdas)
    return {int(k.removeprefix("q")): float(v) for k, v in table.items()}
