"""Codec runners: one interface over learned codecs, classical anchors and "no codec".

A runner turns one image (or the detector features of one image) into the bytes of a complete
bitstream and back. The evaluator measures every runner the same way: rate from ``len(bytes)``,
time around ``encode`` and ``decode``, quality on what ``decode`` returns. Every runner is a
:class:`Runner`; what it codes is its class, what its encoder needs besides that is ``needs``:

* :class:`ImageRunner`: ``encode(image uint8 [3,H,W], cond=None) -> bytes``,
  ``decode(bytes) -> uint8 [3,H,W]``; ``cond`` is what ``needs`` asks for (detector features or a
  boxes map, the ROI boxes: :mod:`vcm.conditioning`), None for ``Needs.NOTHING``.
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
from vcm.codecs.rate_control import encode_to_size
from vcm.codecs.roi_gain import ROI_BOX_SOURCES, RoiGain
from vcm.errors import BitstreamError, ConfigError
from vcm.utils.checkpoint_meta import rate_point
from vcm.utils.limits import check_picture_size

__all__ = [
    "AnchorFeatureRunner",
    "AnchorImageRunner",
    "FeatureRunner",
    "ImageRunner",
    "LearnedFeatureRunner",
    "LearnedImageRunner",
    "NoCodec",
    "RoiGainRunner",
    "Runner",
    "RunnerBase",
    "compressai_runner",
    "load_codec_checkpoint",
    "runner_from_checkpoint",
    "to_float_batch",
    "to_uint8",
    "zoo_roi_runner",
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
        # an ROI anchor (hevc444_roi) is given the image's ROI boxes, as ROI gain coding is
        self.roi_source = getattr(anchor, "roi_source", None)
        self.score_threshold = getattr(anchor, "score_threshold", 0.5)
        if self.roi_source is not None:
            self.needs = Needs.ROI_BOXES

    def encode(self, image: torch.Tensor, cond=None) -> bytes:
        arr = image.permute(1, 2, 0).contiguous().numpy() if isinstance(image, torch.Tensor) else image
        if self.roi_source is not None:
            return self.anchor.encode(arr, boxes=torch.zeros(0, 4) if cond is None else cond)
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


class RoiGainRunner(LearnedImageRunner):
    """A hyperprior-family codec coding with an ROI gain map (:mod:`vcm.codecs.roi_gain`), optionally
    to a per-frame size (:mod:`vcm.codecs.rate_control`) with lower-rate models to step down to.

    The encoder is given the image's ROI boxes (``Needs.ROI_BOXES``: labels, the detector at the
    encoder, or none for a uniform gain); the decoder needs nothing but the file (it names the model
    of ``models`` that coded it by its weights hash).

    Args:
        models: updated codecs, the configured one first, then the lower-rate steps (rate control).
        name: the codec name written into the files and records (one curve for all the models).
        labels: what to call each model in messages (e.g. its zoo name).
        params: the rate point's parameters (recorded).
        roi_source: ``labels``, ``detector`` or ``none``.
        g_roi, g_bg, dilation: the gain map (with a target: g_roi and the first g_bg tried).
        score_threshold: detections kept as ROIs (``roi_source=detector``).
        target_bpp, target_bytes: a per-frame size to reach (at most one), or None.
        max_bytes: a hard cap on every frame, or None.
        g_bg_floor: the lowest background gain rate control may use.
    """

    needs = Needs.ROI_BOXES

    def __init__(self, models: list[nn.Module], name: str, labels: list[str], params: dict | None = None,
                 roi_source: str = "labels",
                 g_roi: float = 2.0, g_bg: float = 0.5, dilation: int = 1, score_threshold: float = 0.5,
                 target_bpp: float | None = None, target_bytes: int | None = None, max_bytes: int | None = None,
                 g_bg_floor: float = 0.3):
        super().__init__(models[0], name=name, params=params)
        if roi_source not in ROI_BOX_SOURCES:
            raise ConfigError(f"roi={roi_source!r}; expected one of {ROI_BOX_SOURCES}")
        if target_bpp is not None and target_bytes is not None:
            raise ConfigError("give target_bpp or target_bytes, not both")
        for m in models:
            ensure_tables(m.eval())
            if not hasattr(m, "analyse") or (getattr(type(m), "analyse", None) is None):
                raise ConfigError(f"{getattr(m, 'codec_name', type(m).__name__)} cannot code with a gain map")
        RoiGain.from_boxes([], 1, 1, g_roi, g_bg, dilation)  # checks the gains and the dilation
        self.models, self.labels = list(models), list(labels)
        self.hashes = {weights_hash(m): i for i, m in enumerate(self.models)}
        self.roi_source, self.score_threshold = roi_source, float(score_threshold)
        self.g_roi, self.g_bg, self.dilation, self.g_bg_floor = float(g_roi), float(g_bg), int(dilation), float(g_bg_floor)
        self.target_bpp, self.target_bytes, self.max_bytes = target_bpp, target_bytes, max_bytes
        self.encode_info: dict[str, Any] = {}

    @torch.no_grad()
    def encode(self, image: torch.Tensor, cond=None) -> bytes:
        x = to_float_batch(image).to(self.device)
        h, w = x.shape[-2:]
        boxes = torch.zeros(0, 4) if cond is None else torch.as_tensor(cond, dtype=torch.float32).reshape(-1, 4)
        target = self.target_bytes if self.target_bpp is None else int(self.target_bpp * h * w / 8)
        if target is None and self.max_bytes is None:
            data = encode_image(self.model, x, codec_name=self.name,
                                roi=RoiGain.from_boxes(boxes, h, w, self.g_roi, self.g_bg, self.dilation))
            self.encode_info = {"roi_boxes": int(boxes.shape[0])}
            return data
        r = encode_to_size(self.models, x, boxes, target or self.max_bytes, max_bytes=self.max_bytes, g_roi=self.g_roi,
                           g_bg_start=self.g_bg, g_bg_floor=self.g_bg_floor, dilation=self.dilation,
                           codec_names=[self.name] * len(self.models))
        self.encode_info = {"roi_boxes": int(boxes.shape[0]), "rc_passes": r.passes, "rc_on_target": bool(r.on_target),
                            "rc_model_index": r.model_index, "g_roi": r.roi.g_roi, "g_bg": r.roi.g_bg,
                            "target_bytes": int(target or self.max_bytes)}
        return r.data

    @torch.no_grad()
    def decode(self, data: bytes) -> torch.Tensor:
        p = unpack(data)
        index = self.hashes.get(p.weights_hash)
        if index is None:
            raise BitstreamError(f"this bitstream was made with weights {p.weights_hash}, none of {self.labels}")
        return to_uint8(decode_image(self.models[index], data))

    def estimated_bits(self, image, cond=None) -> float | None:
        return None  # the entropy model's estimate knows nothing of the gain map


def zoo_roi_runner(name: str, roi: str = "labels", g_roi: float = 2.0, g_bg: float = 0.5, dilation: int = 1,
                   score_threshold: float = 0.5, target_bpp: float | None = None, target_bytes: int | None = None,
                   max_bytes: int | None = None, ladder: list[str] | None = None, g_bg_floor: float = 0.3,
                   device: str = "cpu") -> RoiGainRunner:
    """``codec=zoo_roi``: zoo codec ``name`` with an ROI gain map; ``ladder``: lower-rate zoo codecs rate
    control may step down to (the decoder finds the one that coded a file by its weights hash).

    Its records form the curve ``<architecture>/zoo-roi-<roi>`` (``zoo-uniform`` for ``roi=none``).
    """
    base = zoo_runner(name, device=device)
    return _with_roi(base, [name, *(ladder or [])], [f"zoo:{n}" for n in ladder or []], "zoo-", device, roi=roi,
                     g_roi=g_roi, g_bg=g_bg, dilation=dilation, score_threshold=score_threshold, target_bpp=target_bpp,
                     target_bytes=target_bytes, max_bytes=max_bytes, g_bg_floor=g_bg_floor)


def checkpoint_roi_runner(ckpt: str, roi: str = "labels", g_roi: float = 2.0, g_bg: float = 0.5, dilation: int = 1,
                          score_threshold: float = 0.5, target_bpp: float | None = None, target_bytes: int | None = None,
                          max_bytes: int | None = None, ladder: list[str] | None = None, g_bg_floor: float = 0.3,
                          device: str = "cpu") -> RoiGainRunner:
    """``codec=checkpoint_roi``: a trained codec (a vcm-train checkpoint or ``zoo:<name>``) with an ROI
    gain map, as :func:`zoo_roi_runner`; its records form the curve ``<codec>/roi-<roi>`` (``uniform``
    for ``roi=none``)."""
    base = runner_from_checkpoint(ckpt, device=device)
    return _with_roi(base, [str(ckpt), *(ladder or [])], list(ladder or []), "", device, roi=roi, g_roi=g_roi,
                     g_bg=g_bg, dilation=dilation, score_threshold=score_threshold, target_bpp=target_bpp,
                     target_bytes=target_bytes, max_bytes=max_bytes, g_bg_floor=g_bg_floor)


def _with_roi(base, labels: list[str], ladder_specs: list[str], prefix: str, device: str, *, roi: str, g_roi: float,
              g_bg: float, dilation: int, score_threshold: float, target_bpp: float | None, target_bytes: int | None,
              max_bytes: int | None, g_bg_floor: float) -> RoiGainRunner:
    """``base``'s codec (and the ``ladder_specs`` below it) coding with an ROI gain map."""
    models = [base.model, *(load_codec_checkpoint(spec)[0].to(device) for spec in ladder_specs)]
    params = dict(base.params)
    params.update({"variant": f"{prefix}uniform" if roi == "none" else f"{prefix}roi-{roi}", "g_roi": float(g_roi),
                   "g_bg": float(g_bg)})
    if target_bpp is not None:
        params["target_bpp"] = float(target_bpp)
    if target_bytes is not None:
        params["target_bytes"] = int(target_bytes)
    runner = RoiGainRunner(models, base.name, labels, params, roi, g_roi, g_bg, dilation, score_threshold, target_bpp,
                           target_bytes, max_bytes, g_bg_floor)
    runner.meta = base.meta
    return runner


def runner_from_checkpoint(ckpt: str | Path, device: str = "cpu"):
    """A Learned{Image,Feature}Runner for a vcm checkpoint."""
    model, meta = load_codec_checkpoint(ckpt)
    model.to(device)
    params = rate_point(meta)
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
    from vcm.zoo import CODEC_KINDS, entry

    entry(name, kinds=CODEC_KINDS)  # a misspelled or non-codec name: the valid codecs and the closest
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
    return LearnedImageRunner(codec, name=codec.codec_name, params={"quality": quality, "metric": metric})
