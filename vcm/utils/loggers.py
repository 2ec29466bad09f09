"""Logger factories: wandb that never blocks on a prompt or the network without an account."""
from __future__ import annotations

import os
from pathlib import Path


def wandb_logger(save_dir: str, project: str = "vcm", name: str | None = None, group: str | None = None,
                 tags=None, mode: str | None = None, log_model: bool = False, **kwargs):
    """A Lightning ``WandbLogger``; offline (files under ``save_dir/wandb``, ``wandb sync`` later)
    unless an API key is configured or ``mode`` says otherwise."""
    from lightning.pytorch.loggers import WandbLogger

    if mode is None:
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    # Never ask for a login on stdin.
    os.environ.setdefault("WANDB_CONSOLE", "off")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=save_dir, project=project, name=name, group=group, tags=list(tags or []),
                       mode=mode, log_model=log_model, **kwargs)
