"""What ``vcm-train`` and ``vcm-eval`` share around ``@hydra.main``: a user's mistake (a missing or
wrong data root, a missing mandatory value such as ``codec.ckpt``, a corrupt input) ends in one line
on stderr and exit status 2, with no traceback unless ``HYDRA_FULL_ERROR=1``, and leaves no empty
run folder behind. In a multirun a failing point is recorded instead (:mod:`vcm.callbacks.sweep`).

A misspelled key (``codec.qualty=50``) or config option (``codec=jpg``) fails while Hydra composes
the config, before any of that runs, and Hydra would answer with its own lines and a suggestion to
add the key (``+codec.qualty=50``). :func:`check_overrides` composes the config once beforehand and
turns those two failures into one line that names the valid keys or options, with the closest ones.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from vcm.callbacks.sweep import run_job
from vcm.errors import VcmError
from vcm.utils.config import CONF_DIR
from vcm.utils.names import did_you_mean

#: exit status of a user or input error, as every vcm command
USER_ERROR = 2

#: Errors that describe the user's input, not a bug: shown as one line.
USER_ERRORS = (VcmError, MissingMandatoryValue, FileNotFoundError)


def user_message(error: BaseException) -> str:
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "a value"
        return f"{key} is required: add {key}=<value> to the command"
    return str(error)


def user_error(error: BaseException) -> BaseException | None:
    """The user error behind ``error`` (Hydra's instantiate wraps what a ``_target_`` raised), or None."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, USER_ERRORS):
            return error
        error, seen = error.__cause__, seen + 1
    return None


def remove_empty_run_dir(output_dir: str | Path) -> bool:
    """Delete a run folder that holds nothing but Hydra's ``.hydra/`` and the log; True if deleted."""
    folder = Path(output_dir)
    if not folder.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in folder.iterdir()):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def run_command(tool: str, fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``fn(cfg)`` as the Hydra job of ``tool``; see the module docstring."""
    try:
        return run_job(fn, cfg)
    except Exception as raised:
        e = user_error(raised)
        if e is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if HydraConfig.initialized():
            remove_empty_run_dir(HydraConfig.get().runtime.output_dir)
        print(f"{tool}: error: {user_message(e)}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR)


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _compose(config_name: str, overrides: Sequence[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def _unknown_key_message(config_name: str, key: str, overrides: Sequence[str]) -> str:
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    parent, _, leaf = key.rpartition(".")
    try:  # the same command without the misspelled key, to list what its parent holds
        cfg = _compose(config_name, [o for o in overrides if _override_key(o) != key])
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except (HydraException, OmegaConfBaseException):  # another mistake as well: name the key alone
        node = None
    where = parent or "the config"
    if not isinstance(node, DictConfig):
        return f"{key} is not a key of the {config_name} config"
    valid = sorted(str(k) for k in node if not str(k).startswith("_"))
    return f"{key} is not a key of {where}{did_you_mean(leaf, valid)}; the keys of {where}: {', '.join(valid)}"


def config_error_message(config_name: str, overrides: Sequence[str]) -> str | None:
    """One line for overrides that name a key or a config option that does not exist.

    Args:
        config_name: the primary config, ``"train"`` or ``"eval"``.
        overrides: the command's overrides, e.g. ``["codec=jpeg", "codec.qualty=50"]``.

    Returns:
        The message, or None when the overrides compose (or fail for another reason, which Hydra
        then reports itself).
    """
    from hydra.errors import (
        ConfigCompositionException,
        HydraException,
        MissingConfigException,
    )
    from omegaconf.errors import OmegaConfBaseException

    try:
        _compose(config_name, overrides)
    except MissingConfigException as e:
        found = re.search(r"Could not find '([^']+)/([^'/]+)'", str(e))
        if not found or not e.options:
            return None
        group, option = found.groups()
        options = [o for o in e.options if not o.startswith("_")]
        return (f"{group}={option}: no {group} config called {option!r}{did_you_mean(option, options)}; "
                f"options: {', '.join(options)}")
    except ConfigCompositionException as e:
        found = re.match(r"Could not override '([^']+)'", str(e))
        if not found or found.group(1).startswith("hydra."):
            return None
        return _unknown_key_message(config_name, found.group(1), overrides)
    except (HydraException, OmegaConfBaseException):  # reported by Hydra itself when it composes
        return None
    return None


def check_overrides(tool: str, config_name: str, argv: Sequence[str] | None = None) -> None:
    """Exit with one line (status 2) when the command line names a key or option that does not exist.

    Only plain runs are checked: with any option (``-m``, ``--help``, ``--cfg``, ``-cd``, ...) Hydra
    handles the command line itself.

    Args:
        tool: the command's name, for the message.
        config_name: its primary config.
        argv: the arguments (default ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or any(a.startswith("-") for a in argv) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    message = config_error_message(config_name, argv)
    if message is not None:
        print(f"{tool}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR)
