"""Hydra/OmegaConf helpers: resolvers and config checks shared by vcm-train and vcm-eval."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vcm.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _register() -> None:
    if not OmegaConf.has_resolver("vcm_root"):
        OmegaConf.register_new_resolver("vcm_root", lambda: str(PROJECT_ROOT))


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

# The config tree lives beside the package (editable install); VCM_CONF_DIR points elsewhere.
import os as _os

CONF_DIR = Path(_os.environ.get("VCM_CONF_DIR", PROJECT_ROOT / "conf")).resolve()


def lambda_table(name: str) -> dict[int, float]:
    """A rate-distortion lambda table by quality, ``conf/model_base/lambdas_<name>.yaml`` (``mse``,
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
