"""Codec runners: one interface over learned codecs, classical anchors and "no codec".

A runner turns one image (or the detector features of one image) into the bytes of a complete
bitstream and back. The evaluator measures every runner the same way: rate from ``len(bytes)``,
time around ``encode`` and ``decode``, quality on what ``decode`` returns. Every runner is a
:class:`Runner`; what it codes is its class, what its encoder needs besides that is ``needs``:

* :class:`ImageRunner`: ``encode(image uint8 [3,H,W], cond=None) -> bytes``,
  ``decode(bytes) -> uint8 [3,H,W]``; ``cond`` is what ``needs`` asks for (detector features or a
  boxes map, see :func:`vcm.evaluation.pipeline.codec_condition`), None for ``Needs.NOTHING``.
* :class:`FeatureRunner`: ``encode(levels, orig_hw) -> bytes``, ``decode(bytes) -> levels`` where
  levels is an OrderedDict ``p2..p5`` (``p6`` is rebuilt by the decoder side); ``needs`` is
  ``Needs.DETECTOR``.
* :class:`NoCodec`: the uncompressed reference (rate of raw 8-bit RGB).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from vcm.codecs.base import (
    Needs,
    count_bits,
    ensure_tables,
    is_updated,
    pad_image,
    weights_hash,
)
from vcm.codecs.checkpoint import load_codec_checkpoint
from vcm.codecs.compressai_zoo import compressai_codec
from vcm.codecs.container import (
    decode_image,
    decompress_payload,
    encode_image,
    pack,
    unpack,
)
from vcm.codecs.lmsfc import padded_p2_size
from vcm.errors import BitstreamError
from vcm.utils.limits import check_picture_size

__all__ = [
    "AnchorFeatureRunner",
    "AnchorImageRunner",
    "FeatureRunner",
    "ImageRunner",
    "LearnedFeatureRunner",
    "LearnedImageRunner",
    "NoCodec",
    "Runner",
    "RunnerBase",
    "compressai_runner",
    "load_codec_checkpoint",
    "runner_from_checkpoint",
    "to_float_batch",
    "to_uint8",
    "zoo_runner",
]

log = logging.getLogger(__name__)


def to_float_batch(image: torch.Tensor) -> torch.Tensor:
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


@runtime_checkable
class Runner(Protocol):
    """What the per-image evaluation uses of every codec: anchors, learned codecs and none alike."""

    name: str
    params: dict[str, Any]
    needs: Needs
    meta: Any

    @property
    def device(self) -> torch.device: ...

    def encode(self, x, *args, **kwargs) -> bytes: ...

    def decode(self, data: bytes, *args): ...

    def estimated_bits(self, x, *args, **kwargs) -> float | None: ...


class RunnerBase:
    """Defaults of the :class:`Runner` members for codecs without a model: CPU, no metadata, no estimate."""

    needs: Needs = Needs.NOTHING
    #: the checkpoint's vcm metadata (learned codecs; empty for the others)
    meta: MappingProxyType = MappingProxyType({})
    name: str
    params: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def estimated_bits(self, x, cond=None) -> float | None:
        """The entropy model's estimate of the rate in bits (None: the codec has none)."""
        return None


class ImageRunner(RunnerBase):
    """Base of the runners that code images (anchors and learned codecs)."""


class FeatureRunner(RunnerBase):
    """Base of the runners that code the detector's P2..P5 (split inference)."""

    needs: Needs = Needs.DETECTOR


class NoCodec(RunnerBase):
    """The uncompressed reference: 24 bits per pixel (raw 8-bit RGB), the image itself."""

    name = "none"

    def __init__(self):
        self.params: dict[str, Any] = {}

    def encode(self, image: torch.Tensor, cond=None) -> bytes:
        return image.contiguous().numpy().tobytes() if isinstance(image, torch.Tensor) else bytes(image)

    def decode(self, data: bytes, shape) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).reshape(shape).copy())


class AnchorImageRunner(ImageRunner):
    """Wraps a classical image anchor (``vcm.anchors``) in the runner interface."""

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


class AnchorFeatureRunner(FeatureRunner):
    """Wraps a classical feature anchor (``feature_hevc``, ``feature_vtm``)."""

    def __init__(self, anchor):
        self.anchor = anchor
        self.name = anchor.name
        self.params = dict(anchor.params)

    def encode(self, levels, orig_hw=None) -> bytes:
        return self.anchor.encode(OrderedDict((k, v.detach().cpu()) for k, v in levels.items() if k != "p6"))

    def decode(self, data: bytes):
        return self.anchor.decode(data)


class LearnedCodec:
    """What the learned-codec runners share: name, rate-point params, weights hash, device, ``needs``.

    Args:
        model: the codec; its entropy tables are computed when it has none, unless ``update=False``
            (stored tables are used as they are: :func:`vcm.codecs.base.ensure_tables`).
        name: codec name recorded in bitstreams and results.
        params: e.g. ``{"quality": 3, "lmbda": 0.0067}``.
    """

    def __init__(self, model: nn.Module, name: str | None = None, params: dict | None = None, update: bool = True):
        self.model = model.eval()
        self.name = name or getattr(model, "codec_name", type(model).__name__)
        self.params = dict(params or {})
        if update:
            ensure_tables(model)
        self.weights_hash = weights_hash(model)
        self.meta: dict[str, Any] = {}

    @property
    def needs(self) -> Needs:
        return self.model.needs

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class LearnedImageRunner(LearnedCodec, ImageRunner):
    """A learned image codec (CompressAI contract) with vcm's bitstream container."""

    @torch.no_grad()
    def estimated_bits(self, image: torch.Tensor, cond=None) -> float:
        x = to_float_batch(image).to(self.device)
        x_pad, _ = pad_image(x, self.model.min_div)
        out = self.model(x_pad, cond=cond) if cond is not None else self.model(x_pad)
        return float(count_bits(out["likelihoods"]))

    @torch.no_grad()
    def encode(self, image: torch.Tensor, cond=None) -> bytes:
        return encode_image(self.model, to_float_batch(image).to(self.device), cond=cond, codec_name=self.name)

    @torch.no_grad()
    def decode(self, data: bytes) -> torch.Tensor:
        return to_uint8(decode_image(self.model, data))


class LearnedFeatureRunner(LearnedCodec, FeatureRunner):
    """A learned feature codec (L-MSFC / TA-MSF) with vcm's bitstream container."""

    @torch.no_grad()
    def estimated_bits(self, levels, cond=None) -> float:
        out = self.model(OrderedDict((k, levels[k]) for k in self.model.levels))
        return float(count_bits(out["likelihoods"]))

    @torch.no_grad()
    def encode(self, levels, orig_hw) -> bytes:
        enc = self.model.compress(OrderedDict((k, levels[k].to(self.device)) for k in self.model.levels))
        sizes = [int(v) for hw in enc["sizes"] for v in hw]
        return pack(self.name, self.weights_hash, tuple(orig_hw), enc["strings"], tuple(enc["shape"]), {"sizes": sizes},
                    check=enc.get("check"))

    @torch.no_grad()
    def decode(self, data: bytes):
        p = unpack(data, expected_codec=self.name, expected_hash=self.weights_hash)
        sizes = feature_level_sizes(p, len(self.model.levels))
        try:
            out = decompress_payload(self.model, p, sizes=sizes)
        except BitstreamError:
            raise
        except (ValueError, AssertionError, RuntimeError, IndexError, TypeError, KeyError, MemoryError, OverflowError) as e:
            raise BitstreamError(f"the {p.codec} decoder failed on this bitstream: {e}") from e
        return out["levels_hat"]


def feature_level_sizes(payload, n_levels: int) -> list[list[int]]:
    """The level sizes a feature codec's file declares, checked before anything is allocated.

    ``extra["sizes"]`` must hold ``n_levels`` positive (h, w) pairs, and the padded P2 the codec
    builds for them (every coarser level scaled up to P2's resolution) and the original image must
    stay within the picture-size limit (:mod:`vcm.utils.limits`; P2 has a sixteenth of the
    detector input's pixels).

    Raises:
        BitstreamError: a missing, malformed or too large entry.
    """

    check_picture_size(*payload.orig_hw, "feature bitstream (original image)")
    flat = payload.extra.get("sizes")
    if not isinstance(flat, tuple) or len(flat) != 2 * n_levels or not all(isinstance(v, int) for v in flat):
        raise BitstreamError(f"feature bitstream: extra 'sizes' must be {n_levels} (h, w) pairs, got {flat!r}")
    sizes = [list(flat[i:i + 2]) for i in range(0, len(flat), 2)]
    if any(v < 1 for v in flat) or any(v > 1 << 20 for v in flat):
        raise BitstreamError(f"feature bitstream: level sizes {sizes} hold an empty or absurd level")
    h2, w2 = padded_p2_size(sizes)
    check_picture_size(4 * h2, 4 * w2, "feature bitstream (the detector input its levels imply)")
    return sizes


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
    """The runner of the zoo codec ``name`` (``codec=zoo codec.name=<name>``). Its records form the
    curve ``<architecture>/zoo`` (e.g. ``hyperprior/zoo``, ``ta_msf/zoo``), apart from codecs trained in
    the same study (whatever variant the training run gave its own records)."""
    runner = runner_from_checkpoint(f"zoo:{name}", device=device)
    runner.params["variant"] = "zoo"
    return runner


def compressai_runner(arch: str, quality: int, metric: str = "mse", weights: str | None = None, device: str = "cpu"):
    """The runner of CompressAI's zoo model ``arch`` at ``quality`` (``codec=compressai``).

    The entropy tables stored with the weights are kept (as CompressAI's pretrained models keep
    them), so the bitstream holds exactly the strings of CompressAI's own ``compress``; weights
    saved before ``update()`` get CompressAI's default tables. See :mod:`vcm.codecs.compressai_zoo`
    for where the weights are found.
    """
    codec = compressai_codec(arch, quality, metric=metric, weights=weights).to(device)
    return LearnedImageRunner(codec, name=codec.codec_name, params={"quality": quality, "metric": metric},
                              update=not is_updated(codec))
