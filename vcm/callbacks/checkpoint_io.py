"""Checkpoints a run can resume from: atomic writes, and the RNG states an exact resume needs."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
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


def _rng_states() -> dict[str, Any]:
    """The global RNG states as tensors and plain numbers (loadable with ``weights_only=True``)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class RngStateCallback(Callback):
    """Stores the global RNG states in every checkpoint and restores them when training resumes.

    The codec's quantisation noise comes from torch's global RNG; Lightning does not save it, so a
    resumed run would otherwise draw other noise than the uninterrupted run from the checkpointed
    step on. Restored in ``on_train_start``, after everything that runs between loading the
    checkpoint and the first training batch (model construction, loaders).
    """

    def __init__(self):
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending is not None:
            _set_rng_states(self._pending)
            self._pending = None
