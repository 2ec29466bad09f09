"""What ``vcm-train`` and ``vcm-eval`` share around ``@hydra.main``: a user's mistake (a missing or
wrong data root, a missing mandatory value such as ``codec.ckpt``, a corrupt input) ends in one line
on stderr and exit status 2, with no traceback unless ``HYDRA_FULL_ERROR=1``, and leaves no empty
run folder behind. In a multirun a failing point is recorded instead (:mod:`vcm.callbacks.sweep`)."""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from vcm.callbacks.sweep import run_job
from vcm.errors import VcmError

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
        sys.exit(2)
