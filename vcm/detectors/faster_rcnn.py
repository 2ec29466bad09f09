"""torchvision Faster R-CNN as a frozen detector: P2..P6 features, detections, differentiable losses.

Data flow (one box per stage; ``features`` and ``detect``/``losses`` may run on different machines,
with a feature codec in between)::

    images (original H x W, [0,1])
      -> transform (resize to min_size/max_size, normalise, pad batch to a multiple of 32)
      -> backbone + FPN ------------------------------------------------> p2 p3 p4 p5 p6
                                                                           |
      detect:  RPN (eval proposals) -> RoI heads -> postprocess -> boxes in ORIGINAL coordinates
      losses:  RPN loss + Fast R-CNN loss against targets given in ORIGINAL coordinates

Backbones (all with a 256-channel FPN, levels at strides 4, 8, 16, 32, 64 and the anchor sizes
32, 64, 128, 256, 512 x aspect ratios 0.5, 1, 2):

- ``resnet50_fpn_v2``: torchvision's ``fasterrcnn_resnet50_fpn_v2`` (BatchNorm in the backbone,
  FPN, 2-conv RPN head and 4-conv box head). ``weights="DEFAULT"``: torchvision's COCO detector,
  box predictor replaced for our classes; ``"IMAGENET"``: ImageNet backbone only.
- ``resnet18_fpn``: ResNet-18 + FPN on C2..C5 (``resnet_fpn_backbone`` style), torchvision's
  default (v1) RPN and box heads. ``"DEFAULT"``/``"IMAGENET"``: ImageNet backbone.
- ``mobilenet_v3_fpn``: MobileNetV3-Large + FPN on the outputs of blocks 2, 4, 7 and 16 of
  ``features`` (strides 4, 8, 16, 32), v1 heads. ``"DEFAULT"``/``"IMAGENET"``: ImageNet backbone.

With a pretrained backbone the light backbones use frozen BatchNorm (torchvision's rule: detection
batches are too small to re-estimate the statistics); from random init they use BatchNorm.

Pretrained weights are downloaded once by torchvision from download.pytorch.org into the torch hub
cache (``$TORCH_HOME/hub/checkpoints``). Without network access the download fails within seconds
with :class:`WeightsUnavailableError`, which says which file to put where.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import socket
import threading
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import (
    MobileNet_V2_Weights,
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet50_Weights,
    mobilenet_v2,
    mobilenet_v3_large,
    resnet18,
    resnet50,
)
from torchvision.models._api import WeightsEnum
from torchvision.models.detection import FasterRCNN, FasterRCNN_ResNet50_FPN_V2_Weights
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    BackboneWithFPN,
    _mobilenet_extractor,
    _resnet_fpn_extractor,
)
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.rpn import RPNHead, concat_box_prediction_layers
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vcm.detectors.features import LEVEL_NAMES, DetectorFeatures
from vcm.errors import ConfigError
from vcm.utils.io import atomic_write_bytes

__all__ = [
    "BACKBONE_NAMES",
    "FrozenDetector",
    "WeightsUnavailableError",
    "build_faster_rcnn",
    "load_detector_state",
    "save_detector",
]

#: Seconds a single network operation (name lookup, connect, read) may take while fetching weights.
DOWNLOAD_TIMEOUT_S = 10.0

_TV_LEVELS = ("0", "1", "2", "3", "pool")  # torchvision's FPN keys for p2..p6
_PREDICTOR_KEY = "roi_heads.box_predictor.cls_score.weight"
_CKPT_FORMAT = "vcm.detector"
_WEIGHT_CHOICES = (None, "DEFAULT", "IMAGENET")
# FasterRCNN arguments that set the structure are fixed by the backbone name; size_divisible must stay
# 32 because the heads recover the padded input size from p2 (see DetectorFeatures.padded_size).
_FIXED_ARGS = {"self", "backbone", "num_classes", "min_size", "max_size", "kwargs", "rpn_anchor_generator",
               "rpn_head", "box_roi_pool", "box_head", "box_predictor"}
_FASTER_RCNN_KWARGS = frozenset(set(inspect.signature(FasterRCNN.__init__).parameters) - _FIXED_ARGS) | {"fixed_size"}


class WeightsUnavailableError(ConfigError, RuntimeError):
    """Pretrained weights are neither in the torch hub cache nor downloadable (e.g. no network)."""


# ----------------------------------------------------------------------------------------- building
def _anchor_generator() -> AnchorGenerator:
    """One anchor size per FPN level p2..p6, three aspect ratios (torchvision's default)."""
    sizes = ((32,), (64,), (128,), (256,), (512,))
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def _build_resnet50_fpn_v2(num_classes: int, pretrained: bool, backbone_state: dict | None,
                           trainable_layers: int, **kwargs: Any) -> FasterRCNN:
    # Same modules, in the same order, as torchvision's fasterrcnn_resnet50_fpn_v2 (so the same seed
    # gives the same random weights); built here so weights can be fetched with a timeout first and
    # so trainable_backbone_layers is honoured for an ImageNet backbone.
    del pretrained  # v2 keeps trainable BatchNorm in the backbone whatever the initialisation
    body = resnet50(weights=None)
    if backbone_state is not None:
        body.load_state_dict(backbone_state)
    backbone = _resnet_fpn_extractor(body, trainable_layers, norm_layer=nn.BatchNorm2d)
    anchors = _anchor_generator()
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0], conv_depth=2)
    box_head = FastRCNNConvFCHead((backbone.out_channels, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d)
    return FasterRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors, rpn_head=rpn_head,
                      box_head=box_head, **kwargs)


def _build_resnet18_fpn(num_classes: int, pretrained: bool, backbone_state: dict | None,
                        trainable_layers: int, **kwargs: Any) -> FasterRCNN:
    body = resnet18(weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
    if backbone_state is not None:
        body.load_state_dict(backbone_state)
    backbone = _resnet_fpn_extractor(body, trainable_layers, returned_layers=[1, 2, 3, 4],
                                     extra_blocks=LastLevelMaxPool())
    return FasterRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=_anchor_generator(), **kwargs)


def _build_mobilenet_v3_fpn(num_classes: int, pretrained: bool, backbone_state: dict | None,
                            trainable_layers: int, **kwargs: Any) -> FasterRCNN:
    # MobileNetV3 is trained with eps=1e-3 (torchvision's detection builder freezes it with 1e-5).
    norm = partial(FrozenBatchNorm2d, eps=1e-3) if pretrained else partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
    body = mobilenet_v3_large(weights=None, norm_layer=norm)
    if backbone_state is not None:
        body.load_state_dict(backbone_state)
    # Stage indices of mobilenet_v3_large.features are [0, 2, 4, 7, 13, 16] (stem, then the first block
    # of each new stride, then the last 1x1 conv): picking 1, 2, 3, 5 gives strides 4, 8, 16, 32 with
    # 24, 40, 80 and 960 channels, so the FPN yields p2..p5 and the max-pool p6.
    backbone = _mobilenet_extractor(body, True, trainable_layers, returned_layers=[1, 2, 3, 5],
                                    extra_blocks=LastLevelMaxPool())
    return FasterRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=_anchor_generator(), **kwargs)


#: MobileNetV2 ``features`` blocks whose outputs feed the FPN: the last block of each stride
#: (4, 8, 16, 32) and their channels (24, 32, 96, 1280).
MOBILENET_V2_FPN_BLOCKS = (3, 6, 13, 18)
MOBILENET_V2_FPN_IN_CHANNELS = (24, 32, 96, 1280)
# Stage boundaries of MobileNetV2 ``features`` (stem + stride-2 stage, then strides 4, 8, 16, 32):
# trainable_backbone_layers=k leaves the last k stages trainable.
_MOBILENET_V2_STAGES = ((0, 1), (2, 3), (4, 5, 6), tuple(range(7, 14)), tuple(range(14, 19)))


def _kitti_anchor_generator() -> AnchorGenerator:
    """Two sizes per level (p2..p6: 16/24 ... 256/384 px) and aspect ratios h/w 0.5, 1, 2.

    KITTI objects at the native 375-px height are small (the moderate class starts at 25 px high)
    and wide (cars, h/w ~0.5) or tall (pedestrians, h/w ~2.5); the default 32-px smallest anchor
    misses most distant cars.
    """
    sizes = ((16, 24), (32, 48), (64, 96), (128, 192), (256, 384))
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def _build_mobilenet_v2_fpn(num_classes: int, pretrained: bool, backbone_state: dict | None,
                            trainable_layers: int, **kwargs: Any) -> FasterRCNN:
    # Frozen BatchNorm with ImageNet statistics (detection batches are too small to re-estimate them).
    body = mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d).features
    if backbone_state is not None:
        _load_mobilenet_v2_features(body, backbone_state)
    frozen = [i for stage in _MOBILENET_V2_STAGES[: len(_MOBILENET_V2_STAGES) - trainable_layers] for i in stage]
    for i in frozen:
        for p in body[i].parameters():
            p.requires_grad_(False)
    backbone = BackboneWithFPN(body, {str(b): str(k) for k, b in enumerate(MOBILENET_V2_FPN_BLOCKS)},
                               list(MOBILENET_V2_FPN_IN_CHANNELS), 256, extra_blocks=LastLevelMaxPool())
    anchors = _kitti_anchor_generator()
    rpn_head = RPNHead(256, anchors.num_anchors_per_location()[0])
    # A 256-wide box head (torchvision's is 1024): few training images, and a small shipped file.
    box_head = TwoMLPHead(256 * 7 * 7, 256)
    return FasterRCNN(backbone, rpn_anchor_generator=anchors, rpn_head=rpn_head, box_head=box_head,
                      box_predictor=FastRCNNPredictor(256, num_classes), **kwargs)


def _load_mobilenet_v2_features(features: nn.Module, state: dict[str, Tensor]) -> None:
    """Load an ImageNet MobileNetV2 state dict (torchvision layout, classifier optional) into ``features``."""
    sub = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not sub:
        raise ConfigError(f"MobileNetV2 backbone weights hold no 'features.*' keys (found e.g. {sorted(state)[:3]})")
    own = features.state_dict()
    for key in own:  # frozen BatchNorm has no num_batches_tracked
        if key.endswith("num_batches_tracked") and key not in sub:
            sub[key] = own[key]
    sub = {k: v for k, v in sub.items() if k in own}
    result = features.load_state_dict(sub, strict=False)
    if result.missing_keys:
        raise ConfigError(f"MobileNetV2 backbone weights lack {result.missing_keys[:5]} ({len(result.missing_keys)} keys)")


# name -> (builder, number of backbone stages trainable_backbone_layers may unfreeze,
#          {weights choice: (what the file holds, torchvision weights)})
_BACKBONES: dict[str, tuple[Callable[..., FasterRCNN], int, dict[str, tuple[str, WeightsEnum]]]] = {
    "resnet50_fpn_v2": (_build_resnet50_fpn_v2, 5, {
        "DEFAULT": ("detector", FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT),
        "IMAGENET": ("backbone", ResNet50_Weights.DEFAULT),
    }),
    "resnet18_fpn": (_build_resnet18_fpn, 5, {
        "DEFAULT": ("backbone", ResNet18_Weights.DEFAULT),
        "IMAGENET": ("backbone", ResNet18_Weights.DEFAULT),
    }),
    "mobilenet_v2_fpn": (_build_mobilenet_v2_fpn, 5, {
        "DEFAULT": ("backbone", MobileNet_V2_Weights.IMAGENET1K_V1),
        "IMAGENET": ("backbone", MobileNet_V2_Weights.IMAGENET1K_V1),
    }),
    "mobilenet_v3_fpn": (_build_mobilenet_v3_fpn, 6, {
        "DEFAULT": ("backbone", MobileNet_V3_Large_Weights.DEFAULT),
        "IMAGENET": ("backbone", MobileNet_V3_Large_Weights.DEFAULT),
    }),
}
BACKBONE_NAMES: tuple[str, ...] = tuple(_BACKBONES)


def build_faster_rcnn(
    backbone: str = "resnet50_fpn_v2",
    num_classes: int = 4,
    weights: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    trainable_backbone_layers: int | None = 3,
    backbone_weights: str | os.PathLike | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Build a torchvision Faster R-CNN with a 5-level FPN (p2..p6).

    Args:
        backbone: one of ``BACKBONE_NAMES`` (see the module docstring).
        num_classes: number of classes INCLUDING background, i.e. ``len(class_names) + 1``.
        weights: ``None`` (random init, nothing downloaded), ``"DEFAULT"`` (COCO detector for
            ``resnet50_fpn_v2``, ImageNet backbone otherwise) or ``"IMAGENET"`` (ImageNet backbone).
            With a ``checkpoint`` it only selects the matching architecture variant (frozen
            BatchNorm) and nothing is downloaded.
        checkpoint: detector checkpoint to load (see :func:`load_detector_state`).
        min_size: shorter image side after the detector's resize.
        max_size: upper bound of the longer side after the resize.
        trainable_backbone_layers: backbone stages left trainable with pretrained weights (0..5,
            0..6 for MobileNetV3); from random init every stage is trainable.
        backbone_weights: a local file holding the ImageNet backbone's state dict in torchvision's
            layout (what ``weights="IMAGENET"`` would download); implies ``weights="IMAGENET"``.
        **kwargs: further ``FasterRCNN`` arguments (``box_score_thresh``, ``rpn_post_nms_top_n_test``,
            ``box_batch_size_per_image``, ``image_mean``...). Structural ones are fixed by ``backbone``.

    Returns:
        The model, in train mode as torchvision returns it.

    Raises:
        ConfigError: unknown backbone, weights choice or keyword; checkpoint of another detector.
        WeightsUnavailableError: pretrained weights requested, not cached and not downloadable.
        FileNotFoundError: ``checkpoint`` does not exist.
    """
    model = _build(backbone, num_classes, weights, checkpoint is not None, min_size, max_size,
                   trainable_backbone_layers, backbone_weights=backbone_weights, **kwargs)
    if checkpoint is not None:
        _load_checkpoint(model, checkpoint, backbone=backbone)
    return model


def _build(backbone: str, num_classes: int, weights: str | None, have_checkpoint: bool, min_size: int,
           max_size: int, trainable_backbone_layers: int | None, backbone_weights: str | os.PathLike | None = None,
           **kwargs: Any) -> FasterRCNN:
    if backbone not in _BACKBONES:
        raise ConfigError(f"unknown detector backbone {backbone!r}; valid: {', '.join(BACKBONE_NAMES)}")
    builder, max_trainable, choices = _BACKBONES[backbone]
    if isinstance(weights, str) and weights.lower() in ("none", "null", ""):
        weights = None
    if weights not in _WEIGHT_CHOICES:
        raise ConfigError(f"detector weights={weights!r}; valid: None (random init), 'DEFAULT', 'IMAGENET'")
    if backbone_weights is not None:
        if weights == "DEFAULT" and choices["DEFAULT"][0] == "detector":
            raise ConfigError(f"detector.backbone_weights is an ImageNet backbone file; weights=DEFAULT of {backbone} is a whole detector")
        weights = "IMAGENET"

    if int(num_classes) < 2:
        raise ConfigError(f"num_classes={num_classes}: expected >= 2 (background + at least one class)")
    unknown = sorted(set(kwargs) - _FASTER_RCNN_KWARGS)
    if unknown:
        raise ConfigError(f"unknown detector option(s) {unknown}; valid: {sorted(_FASTER_RCNN_KWARGS)}")
    pretrained = weights is not None
    if pretrained:
        tbl = 3 if trainable_backbone_layers is None else int(trainable_backbone_layers)
        if not 0 <= tbl <= max_trainable:
            raise ConfigError(f"trainable_backbone_layers={tbl} for {backbone}: expected 0..{max_trainable}")
    else:  # freezing randomly initialised layers would make them useless
        tbl = max_trainable

    kind, tv_weights = choices[weights] if pretrained else ("", None)
    state = None
    if pretrained and not have_checkpoint:  # fetch before building: an offline failure costs nothing
        if backbone_weights is not None:
            state = _read_backbone_file(backbone_weights, backbone)
        else:
            state = _fetch_state_dict(tv_weights, f"{backbone} {weights} ({kind})")
    model = builder(int(num_classes), pretrained, state if kind == "backbone" else None, tbl,
                    min_size=min_size, max_size=max_size, **kwargs)
    if kind == "detector" and state is not None:
        _load_coco_detector(model, state, tv_weights)
    return model


def _load_coco_detector(model: FasterRCNN, state: dict[str, Tensor], tv_weights: WeightsEnum) -> None:
    """Load a COCO detector's weights except its box predictor.

    The builder made a fresh predictor for our classes (torchvision's fine-tuning recipe replaces the
    91-class COCO predictor the same way); everything else must match exactly.
    """
    state = {k: v for k, v in state.items() if not k.startswith("roi_heads.box_predictor.")}
    result = model.load_state_dict(state, strict=False)
    expected_missing = {k for k in model.state_dict() if k.startswith("roi_heads.box_predictor.")}
    if set(result.missing_keys) != expected_missing or result.unexpected_keys:
        raise ConfigError(
            f"torchvision weights {tv_weights.url} do not fit the detector: missing "
            f"{sorted(set(result.missing_keys) - expected_missing)[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


# ------------------------------------------------------------------------------- pretrained weights
def _read_backbone_file(path: str | os.PathLike, backbone: str) -> dict[str, Tensor]:
    """An ImageNet backbone state dict from a local file (``detector.backbone_weights``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"detector.backbone_weights={path}: no such file (expected the {backbone} ImageNet backbone's state dict "
            f"in torchvision's layout; or set weights=IMAGENET to use torchvision's download)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailableError(f"detector.backbone_weights={path} cannot be read as a state dict: {type(e).__name__}: {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"detector.backbone_weights={path} holds {type(state).__name__}, expected a state dict of tensors")
    return dict(state)


def _weights_file(tv_weights: WeightsEnum) -> Path:
    """Where torchvision caches ``tv_weights`` (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(tv_weights.url).path)


def _fetch_state_dict(tv_weights: WeightsEnum, what: str) -> dict[str, Tensor]:
    """The state dict of ``tv_weights`` from the hub cache, downloading it (bounded time) if absent."""
    path = _weights_file(tv_weights)
    if not path.is_file():
        try:
            _download(tv_weights.url, path)
        except Exception as e:  # whatever failed (DNS, proxy, timeout, HTTP, hash), the fix is the same
            raise WeightsUnavailableError(
                f"could not get the pretrained {what} weights: {type(e).__name__}: {e}. "
                f"Pretrained weights are downloaded once from {tv_weights.url} into the torch hub cache "
                f"(TORCH_HOME, now {torch.hub.get_dir()}). On a machine without network access, fetch the "
                f"file elsewhere and place it at {path} (e.g. `curl -L -o {path.name} {tv_weights.url}`), "
                f"or set TORCH_HOME to a folder whose hub/checkpoints/ holds it; or use weights=null "
                f"(random init) or a detector checkpoint."
            ) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailableError(
            f"pretrained {what} weights file {path} cannot be read ({type(e).__name__}: {e}); delete it to "
            f"download it again from {tv_weights.url}, or replace it with a good copy"
        ) from e


def _download(url: str, dst: Path) -> None:
    """Download ``url`` to ``dst`` atomically; no single network operation waits for more than
    ``DOWNLOAD_TIMEOUT_S`` seconds, so an offline machine fails quickly instead of hanging."""
    _resolve_within(url, DOWNLOAD_TIMEOUT_S)
    dst.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(dst.name)
    previous = socket.getdefaulttimeout()
    # urllib (used by torch.hub) has no timeout of its own; the default socket timeout bounds every
    # connect and read (not the whole transfer, so a slow but live download still completes).
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=match.group(1) if match else None, progress=False)
    finally:
        socket.setdefaulttimeout(previous)


def _resolve_within(url: str, timeout: float) -> None:
    """Resolve the host urllib will connect to (the proxy if one is set) within ``timeout`` seconds.

    Name lookups ignore socket timeouts and can block for minutes with a dead resolver, so the lookup
    runs in a daemon thread that is abandoned if it does not answer in time.
    """
    host = urlparse(url).hostname or ""
    proxy = urllib.request.getproxies().get(urlparse(url).scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        host = urlparse(proxy if "://" in proxy else f"http://{proxy}").hostname or host
    outcome: dict[str, BaseException] = {}

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            outcome["error"] = e

    thread = threading.Thread(target=lookup, name=f"resolve-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer resolving {host} within {timeout:.0f} s")
    if "error" in outcome:
        raise outcome["error"]


# -------------------------------------------------------------------------------------- checkpoints
def save_detector(path: str | os.PathLike, model: nn.Module, config: Mapping[str, Any] | None = None) -> Path:
    """Save a detector's weights and build config, atomically, for :func:`load_detector_state`.

    Args:
        path: destination file (e.g. ``detector.pt``).
        model: the torchvision ``FasterRCNN`` or a :class:`FrozenDetector`.
        config: JSON-serialisable build settings (``backbone``, ``class_names``, ``min_size``...).
            ``num_classes`` is taken from the model; a FrozenDetector adds its backbone and class names.

    Returns:
        The written path.
    """
    config = dict(config or {})
    if isinstance(model, FrozenDetector):
        config.setdefault("backbone", model.backbone_name)
        config.setdefault("class_names", list(model.class_names))
        model = model.model
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    if _PREDICTOR_KEY not in state:
        raise ValueError(f"save_detector expects a torchvision FasterRCNN or FrozenDetector, got {type(model).__name__}")
    config["num_classes"] = int(state[_PREDICTOR_KEY].shape[0])
    try:  # plain types only, so that loading never needs to unpickle arbitrary objects
        config = json.loads(json.dumps(config))
    except TypeError as e:
        raise TypeError(f"save_detector: config must hold plain JSON types (convert OmegaConf first): {e}") from e
    buffer = io.BytesIO()
    torch.save({"format": _CKPT_FORMAT, "version": 1, "config": config, "state_dict": state}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_detector_state(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a detector checkpoint and return the torchvision ``FasterRCNN`` state dict and its config.

    Accepted files: one written by :func:`save_detector`; a Lightning ``.ckpt`` of vcm's detector
    training (keys ``detector.*``; class names and build settings are read from its ``vcm`` or
    ``hyper_parameters`` entry when present); a bare state dict. Prefixes ``detector.``, ``model.``
    (a saved FrozenDetector), ``module.`` and ``_orig_mod.`` are removed.

    Returns:
        ``(state_dict, config)``; ``config["num_classes"]`` (background included) always comes from the
        weights, other keys (``backbone``, ``class_names``, ``min_size``, ``max_size``) when recorded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: the file holds no Faster R-CNN weights.
    """
    from vcm.zoo import resolve

    path = resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector checkpoint not found: {path}")
    obj = _torch_load(path)
    config: dict[str, Any] = {}
    if isinstance(obj, Mapping) and obj.get("format") == _CKPT_FORMAT:
        state, config = obj["state_dict"], dict(obj.get("config") or {})
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
        for meta in (obj.get("hyper_parameters"), obj.get("vcm")):  # later entries win
            config.update(_settings_from_meta(meta))
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj
    else:
        keys = list(obj)[:8] if isinstance(obj, Mapping) else []
        raise ConfigError(
            f"{path} is not a detector checkpoint: expected a Lightning checkpoint with 'state_dict', a file "
            f"written by vcm.detectors.save_detector or a state dict; found {type(obj).__name__} {keys}"
        )
    state = _strip_prefixes({k: v for k, v in state.items() if isinstance(v, Tensor)})
    if _PREDICTOR_KEY not in state:
        raise ConfigError(
            f"{path} holds no Faster R-CNN weights: expected keys such as '{_PREDICTOR_KEY}' (optionally "
            f"prefixed 'detector.'), found e.g. {sorted(state)[:5]}"
        )
    config["num_classes"] = int(state[_PREDICTOR_KEY].shape[0])
    return state, config


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # noqa: BLE001
        # Lightning checkpoints may pickle hyper-parameters (e.g. OmegaConf containers) that the safe
        # loader refuses; such files come from our own training runs, so fall back to a full load.
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ConfigError(f"cannot read detector checkpoint {path}: {e} (safe load: {safe_error})") from e


def _settings_from_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, Mapping):
        return {}
    out: dict[str, Any] = {}
    if meta.get("class_names") is not None:
        out["class_names"] = [str(c) for c in meta["class_names"]]
    det = meta.get("detector")
    if isinstance(det, Mapping):
        out.update({k: det[k] for k in ("backbone", "min_size", "max_size", "weights") if k in det})
    return out


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if any(k.startswith("detector.") for k in state):  # a LightningModule may hold more than the detector
        state = {k[len("detector."):]: v for k, v in state.items() if k.startswith("detector.")}
    changed = True
    while changed and state:
        changed = False
        for prefix in ("model.", "module.", "_orig_mod."):
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _load_checkpoint(model: FasterRCNN, path: str | os.PathLike, backbone: str,
                     class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Load a checkpoint into ``model`` after checking it is the same detector; returns its config."""
    state, config = load_detector_state(path)
    recorded = config.get("backbone")
    if recorded is not None and recorded != backbone:
        raise ConfigError(f"detector checkpoint {path} is a {recorded} detector, but backbone={backbone!r} was configured")
    ours = model.roi_heads.box_predictor.cls_score.out_features
    theirs = config["num_classes"]
    if theirs != ours:
        names = f" {config['class_names']}" if "class_names" in config else ""
        raise ConfigError(
            f"detector checkpoint {path} has {theirs - 1} classes{names} (+ background), but {ours - 1} "
            f"classes{' ' + str(list(class_names)) if class_names is not None else ''} are configured"
        )
    if class_names is not None and "class_names" in config and list(config["class_names"]) != list(class_names):
        raise ConfigError(
            f"detector checkpoint {path} was trained for classes {config['class_names']} (label i+1 = name i), "
            f"but {list(class_names)} are configured; labels would be mixed up"
        )
    # BatchNorm vs frozen BatchNorm checkpoints differ only in num_batches_tracked, which inference
    # never reads: frozen BN drops it on load, and a BN model keeps its own value when it is absent.
    own = model.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ConfigError(f"detector checkpoint {path} does not fit a {backbone} detector: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"detector checkpoint {path} does not fit a {backbone} detector: missing {result.missing_keys[:5]} "
            f"({len(result.missing_keys)} in all), unexpected {result.unexpected_keys[:5]} "
            f"({len(result.unexpected_keys)} in all)"
        )
    return config


# ------------------------------------------------------------------------------------ the wrapper
class FrozenDetector(nn.Module):
    """A trained Faster R-CNN that never changes: features, detections and losses for codecs.

    The detector is always in eval mode and none of its parameters requires gradient; no method
    changes a parameter, a BatchNorm statistic or a module's mode. Gradients flow through
    ``features`` (into the images) and through ``detect``/``losses`` (into the features), so a codec
    can be trained with detection losses; the caller decides with ``torch.no_grad()`` when not.

    Args:
        model: a torchvision ``FasterRCNN`` with a 5-level FPN (from :func:`build_faster_rcnn`).
        class_names: object classes; label ``i + 1`` is ``class_names[i]``.
        backbone_name: the backbone's name in ``BACKBONE_NAMES`` (recorded with results).
    """

    def __init__(self, model: FasterRCNN, class_names: Sequence[str], backbone_name: str) -> None:
        super().__init__()
        num_classes = model.roi_heads.box_predictor.cls_score.out_features
        if num_classes != len(class_names) + 1:
            raise ConfigError(f"detector predicts {num_classes - 1} classes but {len(class_names)} class names were given: {list(class_names)}")
        self.model = model
        self.class_names = [str(c) for c in class_names]
        self.backbone_name = str(backbone_name)
        for p in self.model.parameters():
            p.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_config(
        cls,
        class_names: Sequence[str],
        backbone: str = "resnet50_fpn_v2",
        weights: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        init_seed: int | None = 0,
        **kwargs: Any,
    ) -> FrozenDetector:
        """Build (and load) the detector described by a config; see :func:`build_faster_rcnn`.

        ``init_seed`` makes random initial weights reproducible (the global RNG is left alone), so
        a codec trained against a randomly initialised detector can be evaluated later against the
        very same detector (its weights hash matches).

        Args:
            class_names: object classes; their count fixes the predictor size, and a checkpoint that
                recorded other names (or another count) is refused.
            backbone, weights, min_size, max_size, **kwargs: as in :func:`build_faster_rcnn`.
            checkpoint: trained detector weights (normally required for meaningful detections).
        """
        class_names = [str(c) for c in class_names]
        with torch.random.fork_rng(devices=[]):
            if init_seed is not None:
                torch.manual_seed(int(init_seed))
            model = _build(backbone, len(class_names) + 1, weights, checkpoint is not None, min_size, max_size,
                           kwargs.pop("trainable_backbone_layers", None), **kwargs)
        if checkpoint is not None:
            _load_checkpoint(model, checkpoint, backbone=backbone, class_names=class_names)
        return cls(model, class_names, backbone)

    def train(self, mode: bool = True) -> FrozenDetector:
        """Stay in eval mode whatever ``mode`` is.

        Lightning calls ``train()`` on the whole LightningModule (so on every child) when a training
        epoch starts and again after each validation loop. In train mode the detector would update
        its BatchNorm statistics with codec outputs, sample a random resize and use training-time
        proposal counts; the frozen detector must behave identically at every step.
        """
        return super().train(False)

    # ---------------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """Device of the detector's weights; inputs are moved there."""
        return next(self.model.parameters()).device

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names) + 1

    # ------------------------------------------------------------------------------------ features
    def features(self, images: Sequence[Tensor] | Tensor, scale_factors: Sequence[float] | None = None) -> DetectorFeatures:
        """Run the detector's transform, backbone and FPN.

        Args:
            images: list of [3, H_i, W_i] or a [B, 3, H, W] tensor, float in [0, 1] (uint8 is
                divided by 255); any device.
            scale_factors: per image, the resize factor to use instead of the transform's own (which
                brings every image to ``min_size``/``max_size``). For a crop, the factor of the frame
                it was cut from (:meth:`resize_factor`), so the crop reaches the backbone at the scale
                its frame does in evaluation (the transform would enlarge a 256x256 crop to 375x375).

        Returns:
            DetectorFeatures with levels p2..p6 of [B, 256, Hp / 2**k, Wp / 2**k], where (Hp, Wp)
            is the largest resized image padded up to a multiple of 32.
        """
        imgs = self._prepare_images(images)
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in imgs]
        if scale_factors is None:
            image_list, _ = self.model.transform(imgs)
        else:
            image_list = self._transform_at(imgs, scale_factors)
        out = self.model.backbone(image_list.tensors)
        if tuple(out) != _TV_LEVELS:
            raise RuntimeError(f"{self.backbone_name} FPN returned levels {list(out)}, expected {list(_TV_LEVELS)}")
        levels = OrderedDict((name, out[key]) for name, key in zip(LEVEL_NAMES, _TV_LEVELS))
        image_sizes = [(int(h), int(w)) for h, w in image_list.image_sizes]
        return DetectorFeatures(levels, image_sizes, original_sizes)

    def resize_factor(self, height: int, width: int) -> float:
        """The factor by which the detector's transform resizes a ``height x width`` image in eval mode."""
        t = self.model.transform
        if t.fixed_size is not None:
            raise ValueError(f"detector resizes to a fixed size {t.fixed_size}: no single resize factor")
        return min(t.min_size[-1] / min(height, width), t.max_size / max(height, width))

    def _transform_at(self, imgs: list[Tensor], scale_factors: Sequence[float]) -> ImageList:
        """The transform's normalisation, resize (by the given factors, as torchvision resizes) and batching."""
        if len(scale_factors) != len(imgs):
            raise ValueError(f"got {len(scale_factors)} scale factors for {len(imgs)} images")
        t = self.model.transform
        out = []
        for im, s in zip(imgs, scale_factors):
            if not s > 0:
                raise ValueError(f"scale factors must be positive, got {list(scale_factors)}")
            im = F.interpolate(t.normalize(im)[None], scale_factor=float(s), mode="bilinear",
                               recompute_scale_factor=True, align_corners=False)[0]
            out.append(im)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in out]
        return ImageList(t.batch_images(out, size_divisible=t.size_divisible), sizes)

    def _prepare_images(self, images: Sequence[Tensor] | Tensor) -> list[Tensor]:
        if isinstance(images, Tensor):
            if images.dim() != 4:
                raise ValueError(f"images tensor must be [B,3,H,W], got shape {tuple(images.shape)}")
            images = list(images.unbind(0))
        if len(images) == 0:
            raise ValueError("features() needs at least one image")
        device = self.device
        dtype = next(self.model.parameters()).dtype
        out = []
        for i, im in enumerate(images):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
                shape = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
                raise ValueError(f"image {i}: expected a [3,H,W] RGB tensor, got {shape}")
            if im.dtype == torch.uint8:
                im = im.to(device=device, dtype=dtype) / 255.0
            elif im.is_floating_point():
                im = im.to(device=device, dtype=dtype)
            else:
                raise ValueError(f"image {i}: expected float in [0,1] or uint8, got {im.dtype}")
            out.append(im)
        return out

    # -------------------------------------------------------------------------------------- heads
    def _heads_input(self, features: DetectorFeatures) -> tuple[OrderedDict, ImageList]:
        """torchvision-keyed levels on the detector's device, and an ImageList carrying the sizes.

        The RPN's anchor generator only reads the padded input size from ``ImageList.tensors``, so a
        zero-stride expanded view stands in for the (absent) image batch.
        """
        levels = features.levels
        missing = [k for k in LEVEL_NAMES[:4] if k not in levels]
        if missing:
            raise ValueError(f"features lack levels {missing}; expected {list(LEVEL_NAMES)} (p6 optional)")
        levels = OrderedDict((k, levels[k]) for k in LEVEL_NAMES if k in levels)
        if "p6" not in levels:  # what LastLevelMaxPool computes from the FPN's p5
            levels["p6"] = F.max_pool2d(levels["p5"], kernel_size=1, stride=2, padding=0)
        batch = features.batch_size
        if len(features.original_sizes) != batch:
            raise ValueError(f"features have {batch} image_sizes but {len(features.original_sizes)} original_sizes")
        hp, wp = features.padded_size
        device = self.device
        cast = not torch.is_autocast_enabled(device.type)
        dtype = next(self.model.parameters()).dtype
        out = OrderedDict()
        for i, (name, key) in enumerate(zip(LEVEL_NAMES, _TV_LEVELS)):
            x = levels[name]
            stride = 2 ** (i + 2)
            expected = (-(-hp // stride), -(-wp // stride))
            if x.dim() != 4 or x.shape[0] != batch or tuple(x.shape[-2:]) != expected:
                raise ValueError(
                    f"feature level {name} has shape {tuple(x.shape)}; expected [{batch}, C, {expected[0]}, {expected[1]}] "
                    f"(stride {stride} of the {hp}x{wp} padded input implied by p2)"
                )
            x = x.to(device=device, dtype=dtype) if cast else x.to(device=device)
            out[key] = x
        stand_in = out["0"].new_zeros(()).expand(batch, 3, hp, wp)
        return out, ImageList(stand_in, [tuple(s) for s in features.image_sizes])

    def detect(self, features: DetectorFeatures) -> list[dict[str, Tensor]]:
        """Detections from (possibly decoded) features, exactly as torchvision's eval forward does.

        Args:
            features: from :meth:`features` (or with levels replaced by a codec's reconstruction).

        Returns:
            Per image a dict with ``boxes`` [N, 4] xyxy in ORIGINAL image coordinates, ``scores`` [N]
            and ``labels`` [N] int64 in 1..C.
        """
        levels, image_list = self._heads_input(features)
        proposals, _ = self.model.rpn(image_list, levels)
        detections, _ = self.model.roi_heads(levels, proposals, image_list.image_sizes)
        return self.model.transform.postprocess(detections, image_list.image_sizes, list(features.original_sizes))

    def losses(self, features: DetectorFeatures, targets: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        """torchvision's four Faster R-CNN training losses, differentiable with respect to the features.

        Computed as torchvision computes them in training mode (training proposal counts, the same
        anchor and RoI sampling, which draws from torch's global RNG), but by calling the RPN's and
        RoI heads' steps directly instead of switching any module to train mode: BatchNorm layers
        (in the v2 FPN and box head) keep using their running statistics and no flag ever changes,
        not even for the duration of the call.

        Args:
            features: from :meth:`features` (or a codec's reconstruction of them).
            targets: per image a dict with ``boxes`` [K, 4] xyxy in ORIGINAL image coordinates and
                ``labels`` [K] in 1..C; K may be 0. Other keys are ignored.

        Returns:
            ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg`` (scalars).
        """
        levels, image_list = self._heads_input(features)
        targets = self._prepare_targets(features, targets)
        rpn, roi_heads = self.model.rpn, self.model.roi_heads
        image_sizes = image_list.image_sizes

        # Region proposal network (RegionProposalNetwork.forward, training branch).
        maps = list(levels.values())
        objectness, pred_bbox_deltas = rpn.head(maps)
        anchors = rpn.anchor_generator(image_list, maps)
        num_anchors_per_level = [int(o[0].shape[0] * o[0].shape[1] * o[0].shape[2]) for o in objectness]
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        # Faster R-CNN does not backpropagate through the proposals' coordinates.
        proposals = rpn.box_coder.decode(pred_bbox_deltas.detach(), anchors).view(len(anchors), -1, 4)
        proposals = _filter_proposals(rpn, proposals, objectness, image_sizes, num_anchors_per_level,
                                      rpn._pre_nms_top_n["training"], rpn._post_nms_top_n["training"])
        labels, matched_gt_boxes = rpn.assign_targets_to_anchors(anchors, targets)
        regression_targets = rpn.box_coder.encode(matched_gt_boxes, anchors)
        loss_objectness, loss_rpn_box_reg = rpn.compute_loss(objectness, pred_bbox_deltas, labels, regression_targets)

        # Box head (RoIHeads.forward, training branch).
        proposals, _, labels, regression_targets = roi_heads.select_training_samples(proposals, targets)
        box_features = roi_heads.box_head(roi_heads.box_roi_pool(levels, proposals, image_sizes))
        class_logits, box_regression = roi_heads.box_predictor(box_features)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        return {
            "loss_classifier": loss_classifier,
            "loss_box_reg": loss_box_reg,
            "loss_objectness": loss_objectness,
            "loss_rpn_box_reg": loss_rpn_box_reg,
        }

    def _prepare_targets(self, features: DetectorFeatures, targets: Sequence[Mapping[str, Any]]) -> list[dict[str, Tensor]]:
        """Boxes and labels checked, on the detector's device, scaled to the resized images."""
        if len(targets) != features.batch_size:
            raise ValueError(f"got {len(targets)} targets for {features.batch_size} images")
        device = self.device
        out = []
        for i, (t, original, resized) in enumerate(zip(targets, features.original_sizes, features.image_sizes)):
            where = f"target {i}" + (f" (image {t['name']})" if "name" in t else "")
            if "boxes" not in t or "labels" not in t:
                raise ValueError(f"{where}: needs 'boxes' and 'labels', has {sorted(t)}")
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device)
            labels = torch.as_tensor(t["labels"], device=device)
            if boxes.numel() == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ValueError(f"{where}: boxes must be [K,4] xyxy, got shape {tuple(boxes.shape)}")
            if labels.is_floating_point() or labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
                raise ValueError(f"{where}: labels must be [K={boxes.shape[0]}] integers, got {labels.dtype} {tuple(labels.shape)}")
            labels = labels.to(torch.int64)
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"{where}: labels must be in 1..{self.num_classes - 1} ({self.class_names}), got {labels.tolist()}")
            bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
            if bool(bad.any()):
                raise ValueError(f"{where}: boxes need positive width and height, got {boxes[bad][:3].tolist()}")
            out.append({"boxes": resize_boxes(boxes, list(original), list(resized)), "labels": labels})
        return out

    # ------------------------------------------------------------------------------ identification
    def weights_hash(self) -> str:
        """sha256 over the detector's state dict (sorted names, dtype, shape, raw bytes), 16 hex chars.

        Same scheme as ``vcm.codecs.base.weights_hash``, over the torchvision model's keys, so a
        detector has the same hash as the checkpoint it was loaded from. Hashes ~170 MB for the
        ResNet-50 detector (a fraction of a second); call it once per run.
        """
        digest = hashlib.sha256()
        state = self.model.state_dict()
        for name in sorted(state):
            t = state[name].detach().to("cpu").contiguous()
            digest.update(name.encode("utf-8"))
            digest.update(b"\0")
            digest.update(f"{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            digest.update(b"\1")
        return digest.hexdigest()[:16]

    def state_fingerprint(self) -> dict[str, Tensor]:
        """Copies of every parameter and buffer (BatchNorm statistics, ``num_batches_tracked``)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict(keep_vars=True).items()}

    def extra_repr(self) -> str:
        return f"backbone={self.backbone_name}, class_names={self.class_names}"


def _filter_proposals(rpn: nn.Module, proposals: Tensor, objectness: Tensor, image_sizes: list[tuple[int, int]],
                      num_anchors_per_level: list[int], pre_nms_top_n: int, post_nms_top_n: int) -> list[Tensor]:
    """``RegionProposalNetwork.filter_proposals`` with explicit top-n counts.

    torchvision picks the counts from ``rpn.training``, which the frozen detector never sets; the
    steps and thresholds are the same (``rpn.min_size``, ``rpn.score_thresh``, ``rpn.nms_thresh``).

    Args:
        proposals: [B, A, 4] decoded anchors. objectness: [B*A, 1] logits.

    Returns:
        Per image the kept proposals [N_i, 4].
    """
    num_images, device = proposals.shape[0], proposals.device
    objectness = objectness.detach().reshape(num_images, -1)
    levels = torch.cat([torch.full((n,), idx, dtype=torch.int64, device=device)
                        for idx, n in enumerate(num_anchors_per_level)]).reshape(1, -1).expand_as(objectness)
    top_n_idx, offset = [], 0
    for ob in objectness.split(num_anchors_per_level, 1):
        _, idx = ob.topk(min(pre_nms_top_n, ob.shape[1]), dim=1)
        top_n_idx.append(idx + offset)
        offset += ob.shape[1]
    top_n_idx = torch.cat(top_n_idx, dim=1)
    batch_idx = torch.arange(num_images, device=device)[:, None]
    scores_all = torch.sigmoid(objectness[batch_idx, top_n_idx])
    levels, proposals = levels[batch_idx, top_n_idx], proposals[batch_idx, top_n_idx]
    kept = []
    for boxes, scores, lvl, size in zip(proposals, scores_all, levels, image_sizes):
        boxes = box_ops.clip_boxes_to_image(boxes, size)
        keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = torch.where(scores >= rpn.score_thresh)[0]
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = box_ops.batched_nms(boxes, scores, lvl, rpn.nms_thresh)[:post_nms_top_n]
        kept.append(boxes[keep])
    return kept
