"""Atomic checkpoint writes: a run killed while saving never leaves a half-written checkpoint."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vcm.utils.io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """Serialise to memory, write a temporary file in the same folder, fsync, then ``os.replace``.

    Readers (resume, ``ckpt_path=last``) therefore only ever see complete checkpoints; a crash
    mid-write leaves at most a ``.tmp`` file that is never picked up.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    def remove_checkpoint(self, path) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
