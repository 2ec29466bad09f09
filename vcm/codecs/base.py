"""What every codec declares (:class:`Needs`, :class:`CodecContract`) and the helpers every codec
shares: padding to the model's multiple, weight identity, parameter split, rate.

Codecs subclass CompressAI's ``CompressionModel`` and only see inputs whose height and width are
multiples of ``model.min_div``; :func:`pad_image` and :func:`crop_image` let any frame size (KITTI is
375x1242) go through them and come back at its original size.
"""
from __future__ import annotations

import enum
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyModel, GaussianConditional
from compressai.models.base import get_scale_table
from torch import Tensor, nn

#: The entropy models' constant bounds (CompressAI's ``LowerBound`` buffers: the likelihood bound
#: 1e-9 and the Gaussian scale bound 0.11), not learned. A codec always takes them from its own
#: construction when it is warm-started (:func:`warm_start`): the zoo's first files
#: stored them in float16, which holds 1e-9 as 0, and a likelihood bound of 0 lets ``log(0)`` into
#: the training rate. (Loading a file for coding keeps its values: they are part of the weights'
#: fingerprint that bitstreams carry, and they do not enter the range coder.) New zoo files keep them in fp32.
ENTROPY_BOUND_SUFFIXES = ("likelihood_lower_bound.bound", "lower_bound_scale.bound")

log = logging.getLogger(__name__)

__all__ = [
    "CodecContract",
    "Needs",
    "build_indexes",
    "count_bits",
    "crop_image",
    "ensure_tables",
    "is_updated",
    "net_aux_parameters",
    "pad_image",
    "warm_start",
    "weights_hash",
]


class Needs(str, enum.Enum):
    """What a codec's encoder needs besides its input (training and evaluation give it that).

    * ``NOTHING``: the image alone (image codecs, anchors, CompressAI's zoo, the ablations).
    * ``DETECTOR``: the frozen detector: its features condition the encoder (roi_hyperprior) or
      are what is coded (L-MSFC, TA-MSF, the feature anchor); a checkpoint is valid only with the
      detector it was trained with (:mod:`vcm.detectors.identity`).
    * ``BOXES``: the image's ROI boxes as a map (roi_hyperprior with ``roi_source=boxes``).
    * ``ROI_BOXES``: the image's ROI boxes themselves, [K, 4] xyxy pixels, from its labels or from the
      detector run at the encoder (ROI gain coding, :mod:`vcm.codecs.roi_gain`); the decoder reads
      them from the file.

    What each value asks of training, evaluation and ``vcm-compress`` (the condition, the detector,
    the labels) is said once, in :mod:`vcm.conditioning`.
    """

    NOTHING = "nothing"
    DETECTOR = "detector"
    BOXES = "boxes"
    ROI_BOXES = "roi_boxes"


class _FromNeeds:
    """A flag derived from ``needs``, read on a codec or on its class (``HyperpriorImageCodec.needs_boxes``)."""

    def __init__(self, needs_test):
        self.needs_test = needs_test
        self.__doc__ = needs_test.__doc__

    def __get__(self, obj, cls) -> bool:
        return self.needs_test((cls if obj is None else obj).needs)


class CodecContract:
    """The declaration every vcm codec makes (a mixin before CompressAI's ``CompressionModel``).

    A codec sets ``needs`` (a class attribute, or a property when it depends on the codec's
    settings); ``needs_detector``, ``needs_boxes`` and ``needs_features`` follow from it, so no
    caller probes a codec for what it takes.
    """

    needs: Needs = Needs.NOTHING

    #: Whether the codec needs the frozen detector (its features condition the encoder or are the input).
    needs_detector = _FromNeeds(lambda needs: needs is Needs.DETECTOR)
    #: Whether the encoder is given the image's ROI boxes.
    needs_boxes = _FromNeeds(lambda needs: needs is Needs.BOXES)
    #: Whether the codec needs anything besides the image (detector features or a boxes map).
    needs_features = _FromNeeds(lambda needs: needs is not Needs.NOTHING)


def pad_image(x: Tensor, min_div: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Pad an image on the right and bottom to the next multiple of ``min_div`` (replicate padding).

    Replicate padding keeps the padded border smooth, so it costs few bits; the original pixels stay at
    the top-left, which keeps ROI boxes and detector coordinates valid without any offset.

    Args:
        x: images [B, C, H, W].
        min_div: the multiple the codec needs (``model.min_div``), >= 1.

    Returns:
        ``(x_pad, pad)`` with x_pad [B, C, H', W'] (H', W' multiples of ``min_div``) and
        ``pad = (left, right, top, bottom)`` in pixels, as taken by ``F.pad``; left and top are always 0.
    """
    if x.dim() != 4:
        raise ValueError(f"pad_image expects a [B, C, H, W] tensor, got shape {tuple(x.shape)}")
    if int(min_div) < 1:
        raise ValueError(f"min_div must be >= 1, got {min_div}")
    h, w = x.shape[-2:]
    pad_h = (-h) % min_div
    pad_w = (-w) % min_div
    pad = (0, int(pad_w), 0, int(pad_h))
    if pad_h == 0 and pad_w == 0:
        return x, pad
    return F.pad(x, pad, mode="replicate"), pad


def crop_image(x: Tensor, pad: Sequence[int]) -> Tensor:
    """Undo :func:`pad_image`.

    Args:
        x: padded images [B, C, H', W'].
        pad: ``(left, right, top, bottom)`` as returned by :func:`pad_image`.

    Returns:
        The cropped view [B, C, H' - top - bottom, W' - left - right].
    """
    if len(pad) != 4:
        raise ValueError(f"pad must be (left, right, top, bottom), got {tuple(pad)}")
    left, right, top, bottom = (int(p) for p in pad)
    h, w = x.shape[-2:]
    if left + right >= w or top + bottom >= h:
        raise ValueError(f"pad {tuple(pad)} removes the whole {h}x{w} image")
    return x[..., top : h - bottom, left : w - right]


def weights_hash(module: nn.Module, use_cache: bool = True) -> str:
    """Identity of a codec's weights: sha256 over its state dict, first 16 hex characters.

    Every entry of the state dict is hashed in sorted name order: name, dtype, shape and raw bytes (on
    CPU). The state dict of a CompressAI model also holds the entropy models' CDF tables
    (``_quantized_cdf``, ``_offset``, ``_cdf_length``, ``scale_table``), which are empty before
    ``update()``. Hash the model as it is when it codes, i.e. *after* ``update(force=True)``: the tables
    then belong to the identity, which is right, because an encoder and a decoder whose tables differ
    (stale ``update()``, different float rounding on another device) would not decode each other's
    bitstreams even with equal parameters.

    Hashing a 10M-parameter model takes about 0.1 s, which would dominate the coding time of a frame
    on a GPU, so the result is cached on the module and reused while no state tensor has been
    replaced (same storage) or modified in place (autograd's version counter). Writes through
    ``tensor.data`` bypass that counter; pass ``use_cache=False`` after such writes.

    Args:
        module: any module.
        use_cache: reuse the cached hash when the state is unchanged.

    Returns:
        16 lowercase hex characters.
    """
    state = module.state_dict(keep_vars=True)
    key = tuple(
        (name, v.data_ptr(), v._version, tuple(v.shape), str(v.dtype), str(v.device))
        if isinstance(v, Tensor)
        else (name, repr(v))
        for name, v in sorted(state.items())
    )
    cached = module.__dict__.get("_vcm_weights_hash")
    if use_cache and cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode("utf-8"))
        digest.update(b"\0")
        if isinstance(value, Tensor):
            # a copy: .numpy() on the module's own storage would make it non-resizable, and
            # CompressAI's load_state_dict resizes the (empty) CDF buffers in place
            t = value.detach().to("cpu", copy=True).contiguous()
            digest.update(f"{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
        else:  # extra state (rare): hash its repr so it still contributes
            digest.update(repr(value).encode("utf-8"))
        digest.update(b"\1")
    result = digest.hexdigest()[:16]
    module.__dict__["_vcm_weights_hash"] = (key, result)
    return result


def net_aux_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into the main ("net") and auxiliary ("aux") sets, as CompressAI does.

    The aux set holds the entropy bottlenecks' ``quantiles`` (trained by ``aux_loss()`` only); the net
    set holds everything else. Frozen parameters (``requires_grad=False``) are in neither.

    Args:
        model: a codec.

    Returns:
        ``(net_params, aux_params)``, each ordered by parameter name.

    Raises:
        ValueError: a parameter object appears in both sets (shared under two names), or a trainable
            parameter is in neither.
    """
    net: dict[int, tuple[str, nn.Parameter]] = {}
    aux: dict[int, tuple[str, nn.Parameter]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if not p.requires_grad:
            continue
        (aux if name.endswith(".quantiles") else net).setdefault(id(p), (name, p))
    both = net.keys() & aux.keys()
    if both:
        names = sorted(net[i][0] for i in both)
        raise ValueError(f"parameters are in both the net and the aux set: {names}")
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    missing = trainable.keys() - (net.keys() | aux.keys())
    if missing:
        raise ValueError(f"trainable parameters in neither set: {sorted(trainable[i] for i in missing)}")
    net_params = [p for _, p in sorted(net.values(), key=lambda t: t[0])]
    aux_params = [p for _, p in sorted(aux.values(), key=lambda t: t[0])]
    return net_params, aux_params


def count_bits(likelihoods: Mapping | Sequence | Tensor) -> Tensor:
    """Estimated rate in bits: the sum of ``-log2`` of every likelihood.

    Args:
        likelihoods: a tensor, or a (nested) dict / list of tensors, e.g. ``out["likelihoods"]`` of
            any codec (``{"y": ..., "z": ...}``).

    Returns:
        Scalar tensor (differentiable) with the total over the whole batch.
    """
    if isinstance(likelihoods, Tensor):
        return torch.log(likelihoods).sum() / -math.log(2.0)
    values = likelihoods.values() if isinstance(likelihoods, Mapping) else likelihoods
    total: Tensor | None = None
    for v in values:
        bits = count_bits(v)
        total = bits if total is None else total + bits
    if total is None:
        raise ValueError("count_bits got no likelihood tensor")
    return total


def is_updated(model: nn.Module) -> bool:
    """True when every entropy model of ``model`` has CDF tables (``update()`` was called)."""
    models = [m for m in model.modules() if isinstance(m, EntropyModel)]
    return all(m._offset.numel() > 0 and m._quantized_cdf.numel() > 0 for m in models)


def ensure_tables(model: nn.Module, source: str | None = None) -> bool:
    """Compute a codec's entropy tables once, when it has none (stored tables are never recomputed).

    Tables computed here depend on this CPU's float arithmetic, so a bitstream written with them
    decodes only where the same tables are computed: checkpoints written by vcm-train and zoo files
    store their tables, and loading them never comes here.

    Args:
        model: a codec.
        source: where the model came from (a checkpoint), named in the warning.

    Returns:
        True when the tables were computed now.
    """
    if is_updated(model):
        return False
    model.update(force=True)
    if source is not None:
        log.warning("%s stores no entropy tables: computed them on this machine; its bitstreams decode only where "
                    "the same tables are computed (re-save the checkpoint to store them)", source)
    return True


class FineScaleTable:
    """Mixin for CompressAI models with a ``GaussianConditional``: a 4x finer default scale table.

    CompressAI's coder rounds every predicted scale UP to the next entry of its scale table. The
    default 64 entries (about 13 % apart) cost ~4.6 % more bits than the entropy model predicts on a
    trained hyperprior (``make bench``: 256 entries ~1.1 %, 512 entries ~0.5 %); 512 entries over the
    same range (0.11 .. 256) cost a larger CDF table (6.4 MB instead of 0.8 MB for M=192) and ~50 %
    more entropy-coding time, which is small next to the transforms. The table is part of the
    weights hash, so bitstreams made with another table are refused, never mis-decoded.
    """

    scale_table_levels = 512

    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        if scale_table is None:
            scale_table = get_scale_table(levels=self.scale_table_levels)
        return super().update(scale_table=scale_table, force=force, update_quantiles=update_quantiles)


def build_indexes(gc: GaussianConditional, scales: Tensor) -> Tensor:
    """CompressAI's ``GaussianConditional.build_indexes`` by binary search (same indexes, ~10x faster
    with 512 tables): the index of a scale is the number of table entries, the last one excepted,
    below it (after the lower bound), as CompressAI's loop over the table counts it."""
    scales = gc.lower_bound_scale(scales)
    table = gc.scale_table[:-1].to(device=scales.device, dtype=scales.dtype)
    return torch.searchsorted(table, scales.contiguous(), side="left").to(torch.int32)


def warm_start(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, list[str]]:
    """Initialise ``model`` from another codec's weights where they fit (fine-tuning from a trained codec).

    Every parameter and non-entropy-table buffer of ``model`` takes the source tensor of the same
    name (after ``model.pretrained_key(name)`` maps a source name onto the model's, when the model
    defines it) if the shapes match; a tensor the source does not have takes the one named
    ``model.pretrained_alias(name)`` when the model defines it (a branch that starts as a copy of
    another, e.g. roi_hyperprior's object hyperprior as a copy of the scale hyperprior's). A
    convolution that takes extra input channels (e.g. detector features concatenated to the image
    path) gets the source weights on its first input channels
    and keeps its own initialisation on the others. The entropy models' CDF tables are skipped:
    ``update()`` rebuilds them from the loaded quantiles and scales.

    Args:
        model: the codec to initialise (modified in place).
        state: the source codec's ``state_dict`` (without a ``codec.`` prefix).

    Returns:
        ``{"loaded": [...], "partial": [...], "skipped": [...], "unused": [...]}`` by parameter
        name: loaded exactly, loaded on the leading input channels, kept as initialised, and
        source tensors that went nowhere.

    Raises:
        ValueError: no tensor of the source fits the model (another kind of codec).
    """
    mapper = getattr(model, "pretrained_key", None)
    source = {(mapper(k) if mapper else k): v for k, v in state.items()}
    # the range coder's tables (rebuilt by update()) and the entropy models' constant bounds stay the model's own
    tables = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table", *ENTROPY_BOUND_SUFFIXES)
    report: dict[str, list[str]] = {"loaded": [], "partial": [], "skipped": [], "unused": []}
    used = set()
    targets = dict(model.named_parameters())
    targets.update((n, b) for n, b in model.named_buffers() if not n.endswith(tables))
    with torch.no_grad():
        alias = getattr(model, "pretrained_alias", None)
        for name, t in targets.items():
            key = name if name in source or alias is None else (alias(name) or name)
            s = source.get(key)
            if s is None:
                report["skipped"].append(name)
                continue
            if tuple(s.shape) == tuple(t.shape):
                t.copy_(s.to(t.dtype))
                report["loaded"].append(name)
            elif s.dim() == 4 and t.dim() == 4 and s.shape[0] == t.shape[0] and s.shape[2:] == t.shape[2:] \
                    and s.shape[1] < t.shape[1]:
                t[:, : s.shape[1]].copy_(s.to(t.dtype))
                report["partial"].append(name)
            else:
                report["skipped"].append(name)
                continue
            used.add(key)
    report["unused"] = sorted(k for k in source if k not in used and not k.endswith(tables))
    if not report["loaded"] and not report["partial"]:
        raise ValueError(
            f"no weight of the source checkpoint fits {type(model).__name__} (source has e.g. "
            f"{sorted(source)[:3]}, the model e.g. {sorted(targets)[:3]})"
        )
    return report
