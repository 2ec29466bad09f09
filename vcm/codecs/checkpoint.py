"""A codec from a vcm training checkpoint, and CompressAI's ``load_state_dict`` workaround: written
once here for ``vcm-eval``, ``vcm-compress``, the zoo and the Lightning modules' resume."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import hydra
import torch
from compressai.models.base import CompressionModel
from omegaconf import OmegaConf
from torch import Tensor, nn

from vcm.codecs.base import ensure_tables
from vcm.errors import ConfigError
from vcm.zoo import resolve

__all__ = ["CODER_TABLE_SUFFIXES", "ENTROPY_TABLE_SUFFIXES", "codec_state_dict", "load_codec_checkpoint", "load_codec_state"]


#: State-dict entries of CompressAI's entropy models that ``update()`` computes from the weights: the
#: range coder's tables. They are stored with the weights (checkpoints, zoo files) and used as stored,
#: because ``update()`` gives other tables on other CPUs (float CDFs through vectorised math).
CODER_TABLE_SUFFIXES = ("_quantized_cdf", "_offset", "_cdf_length")
#: every entropy-table entry of a codec's state dict: the coder's tables and the Gaussian scale table
ENTROPY_TABLE_SUFFIXES = (*CODER_TABLE_SUFFIXES, "scale_table")


def codec_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The codec's entries of a LightningModule's ``state_dict`` (keys ``codec.*``, prefix removed)."""
    return {k[len("codec."):]: v for k, v in state_dict.items() if k.startswith("codec.")}


def load_codec_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a codec's state dict, entropy-model CDF tables included.

    The CDF tables are buffers that stay empty until ``update()``; a CompressAI model's
    ``load_state_dict`` resizes them first (CompressAI's own, or a codec's override such as
    roi_hyperprior's, whose second entropy bottleneck CompressAI's key remapping cannot handle).
    When a codec's override still meets a size mismatch, CompressAI's loader is used directly.
    Stored tables are loaded as they are; a state without them (an old checkpoint or zoo file)
    leaves them empty, and :func:`~vcm.codecs.base.ensure_tables` computes them once.
    """
    # An old state without the range coder's tables: the model's own, still empty, buffers stand in.
    own = model.state_dict()
    state = {**{k: v for k, v in own.items() if k.endswith(CODER_TABLE_SUFFIXES) and k not in state}, **state}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        if not isinstance(model, CompressionModel):
            raise
        CompressionModel.load_state_dict(model, state)


def load_codec_checkpoint(ckpt: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a codec from a vcm training checkpoint (its config is stored inside).

    Args:
        ckpt: a ``.ckpt`` written by vcm-train, or ``zoo:<name>`` (a shipped codec, hash-checked).

    Returns:
        (codec module in eval mode, the stored vcm metadata: ``model`` config, ``quality``,
        ``lmbda``, ``codec_name``, ``detector`` config and weights hash).
    """
    path = resolve(ckpt)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}; expected a .ckpt written by vcm-train or zoo:<name>")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ConfigError(f"cannot read checkpoint {path}: {e}") from None
    meta = state.get("vcm") if isinstance(state, dict) else None
    if not meta or "codec" not in meta:
        raise ConfigError(f"{path} is not a vcm codec checkpoint (no 'vcm' metadata with a codec config)")
    model = hydra.utils.instantiate(OmegaConf.create(meta["codec"]))
    load_codec_state(model, codec_state_dict(state["state_dict"]))
    ensure_tables(model, source=str(ckpt))
    return model.eval(), meta
