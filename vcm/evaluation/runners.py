"""Codec runners: one interface over learned codecs, classical anchors and "no codec".

A runner turns one image (or the detector features of one image) into the bytes of a complete
bitstream and back. The evaluator measures every runner the same way: rate from ``len(bytes)``,
time around ``encode`` and ``decode``, quality on what ``decode`` returns.

* ``kind == "image"``: ``encode(image uint8 [3,H,W], cond=None) -> bytes``,
  ``decode(bytes) -> uint8 [3,H,W]``.
* ``kind == "feature"``: ``encode(levels) -> bytes``, ``decode(bytes) -> levels`` where levels is an
  OrderedDict ``p2..p5`` (``p6`` is rebuilt by the decoder side).
* ``kind == "none"``: the uncompressed reference (rate of raw 8-bit RGB).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vcm.errors import ConfigError

log = logging.getLogger(__name__)


def _to_float_batch(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3,H,W] or float [3,H,W] -> float [1,3,H,W] in [0,1]."""
    x = image
    if x.dim() == 3:
        x = x[None]
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [1,3,H,W] or [3,H,W] in [0,1] -> uint8 [3,H,W] (round half up, clamp)."""
    if x.dim() == 4:
        x = x[0]
    return (x.detach().clamp(0, 1) * 255.0 + 0.5).floor().to(torch.uint8).cpu()


class NoCodec:
    """The uncompressed reference: 24 bits per pixel (raw 8-bit RGB), the image itself."""

    kind = "none"
    name = "none"

    def __init__(self):
        self.params: dict[str, Any] = {}

    def encode(self, image: torch.Tensor, cond=None) -> bytes:
        return image.contiguous().numpy().tobytes() if isinstance(image, torch.Tensor) else bytes(image)

    def decode(self, data: bytes, shape) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).reshape(shape).copy())


class AnchorImageRunner:
    """Wraps a classical image anchor (``vcm.anchors``) in the runner interface."""

    kind = "image"

    def __init__(self, anchor):
        self.anchor = anchor
        self.name = anchor.name
        self.params = dict(anchor.params)

    def encode(self, image: torch.Tensor, cond=None) -> bytes:
        arr = image.permute(1, 2, 0).contiguous().numpy() if isinstance(image, torch.Tensor) else image
        return self.anchor.encode(arr)

    def decode(self, data: bytes) -> torch.Tensor:
        arr = self.anchor.decode(data)
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


class AnchorFeatureRunner:
    """Wraps a classical feature anchor (``feature_hevc``, ``feature_vtm``)."""

    kind = "feature"

    def __init__(self, anchor):
        self.anchor = anchor
        self.name = anchor.name
        self.params = dict(anchor.params)

    def encode(self, levels, orig_hw=None) -> bytes:
        return self.anchor.encode(OrderedDict((k, v.detach().cpu()) for k, v in levels.items() if k != "p6"))

    def decode(self, data: bytes):
        return self.anchor.decode(data)


class _LearnedRunner:
    """Shared part of the learned-codec runners: name, rate-point params, weights hash, device."""

    kind = "image"

    def __init__(self, model: nn.Module, name: str | None = None, params: dict | None = None, update: bool = True):
        self.model = model.eval()
        self.name = name or getattr(model, "codec_name", type(model).__name__)
        self.params = dict(params or {})
        if update:
            model.update(force=True)
        from vcm.codecs.base import weights_hash

        self.weights_hash = weights_hash(model)

    def _device(self):
        return next(self.model.parameters()).device


class LearnedImageRunner(_LearnedRunner):
    """A learned image codec (CompressAI contract) with vcm's bitstream container.

    Args:
        model: the codec; ``update(force=True)`` is called once unless ``update=False``.
        name: codec name recorded in bitstreams and results.
        params: e.g. ``{"quality": 3, "lmbda": 0.0067}``.
    """

    kind = "image"

    @torch.no_grad()
    def estimated_bits(self, image: torch.Tensor, cond=None) -> float:
        from vcm.codecs.base import count_bits, pad_image

        x = _to_float_batch(image).to(self._device())
        x_pad, _ = pad_image(x, self.model.min_div)
        out = self.model(x_pad, cond=cond) if getattr(self.model, "needs_features", False) else self.model(x_pad)
        return float(count_bits(out["likelihoods"]))

    @torch.no_grad()
    def encode(self, image: torch.Tensor, cond=None) -> bytes:
        from vcm.codecs.container import encode_image

        x = _to_float_batch(image).to(self._device())
        return encode_image(self.model, x, cond=cond, codec_name=self.name)

    @torch.no_grad()
    def decode(self, data: bytes) -> torch.Tensor:
        from vcm.codecs.container import decode_image

        return to_uint8(decode_image(self.model, data))


class LearnedFeatureRunner(_LearnedRunner):
    """A learned feature codec (L-MSFC / TA-MSF) with vcm's bitstream container."""

    kind = "feature"

    @torch.no_grad()
    def estimated_bits(self, levels) -> float:
        from vcm.codecs.base import count_bits

        out = self.model(OrderedDict((k, levels[k]) for k in self.model.levels))
        return float(count_bits(out["likelihoods"]))

    @torch.no_grad()
    def encode(self, levels, orig_hw) -> bytes:
        from vcm.codecs.container import pack

        dev = self._device()
        enc = self.model.compress(OrderedDict((k, levels[k].to(dev)) for k in self.model.levels))
        sizes = [int(v) for hw in enc["sizes"] for v in hw]
        return pack(self.name, self.weights_hash, tuple(orig_hw), enc["strings"], tuple(enc["shape"]), {"sizes": sizes})

    @torch.no_grad()
    def decode(self, data: bytes):
        from vcm.codecs.container import unpack

        p = unpack(data, expected_codec=self.name, expected_hash=self.weights_hash)
        flat = list(p.extra["sizes"])
        sizes = [flat[i:i + 2] for i in range(0, len(flat), 2)]
        out = self.model.decompress(p.strings, p.shape, sizes)
        return out["levels_hat"]


#: State-dict entries of CompressAI's entropy models that ``update()`` computes from the weights.
CODER_TABLE_SUFFIXES = ("_quantized_cdf", "_offset", "_cdf_length")


def load_codec_checkpoint(ckpt: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a codec from a vcm training checkpoint (its config is stored inside).

    Args:
        ckpt: a ``.ckpt`` written by vcm-train, or ``zoo:<name>`` (a shipped codec, hash-checked).

    Returns:
        (codec module in eval mode, the stored vcm metadata: ``model`` config, ``quality``,
        ``lmbda``, ``codec_name``, ``detector`` config and weights hash).
    """
    import hydra
    from omegaconf import OmegaConf

    from vcm.zoo import resolve

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
    codec_cfg = OmegaConf.create(meta["codec"])
    model = hydra.utils.instantiate(codec_cfg)
    sd = {k[len("codec."):]: v for k, v in state["state_dict"].items() if k.startswith("codec.")}
    # Zoo files leave out the range coder's tables (update() rebuilds them from the weights): the
    # model's own, still empty, buffers stand in for them.
    own = model.state_dict()
    sd.update({k: v for k, v in own.items() if k not in sd and k.endswith(CODER_TABLE_SUFFIXES)})
    # Entropy-model CDF tables are sized by update(); let CompressAI resize its buffers first.
    try:
        model.load_state_dict(sd)
    except RuntimeError:
        from compressai.models.base import CompressionModel

        if isinstance(model, CompressionModel):
            CompressionModel.load_state_dict(model, sd)
        else:
            raise
    return model.eval(), meta


def runner_from_checkpoint(ckpt: str | Path, device: str = "cpu"):
    """A Learned{Image,Feature}Runner for a vcm checkpoint."""
    model, meta = load_codec_checkpoint(ckpt)
    model.to(device)
    params = {k: meta[k] for k in ("quality", "lmbda", "alpha", "det_weight") if meta.get(k) is not None}
    if meta.get("variant"):  # the same curve as the record vcm-train wrote for this checkpoint
        params["variant"] = meta["variant"]
    cls = LearnedFeatureRunner if meta.get("kind") == "feature" else LearnedImageRunner
    runner = cls(model, name=meta.get("codec_name"), params=params)
    runner.meta = meta
    return runner



def zoo_runner(name: str, device: str = "cpu"):
    """The runner of the zoo codec ``name`` (``codec=zoo codec.name=<name>``)."""
    return runner_from_checkpoint(f"zoo:{name}", device=device)


def compressai_runner(arch: str, quality: int, metric: str = "mse", weights: str | None = None, device: str = "cpu"):
    """The runner of CompressAI's zoo model ``arch`` at ``quality`` (``codec=compressai``).

    The entropy tables stored with the weights are kept (as CompressAI's pretrained models keep
    them), so the bitstream holds exactly the strings of CompressAI's own ``compress``; weights
    saved before ``update()`` get CompressAI's default tables. See :mod:`vcm.codecs.compressai_zoo`
    for where the weights are found.
    """
    from vcm.codecs.base import is_updated
    from vcm.codecs.compressai_zoo import compressai_codec

    codec = compressai_codec(arch, quality, metric=metric, weights=weights).to(device)
    return LearnedImageRunner(codec, name=codec.codec_name, params={"quality": quality, "metric": metric},
                              update=not is_updated(codec))
