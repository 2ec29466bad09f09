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

import inspect
import os
from collections.abc import Callable
from functools import partial
from typing import Any

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
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vcm.detectors.checkpoints import load_detector_checkpoint
from vcm.detectors.weights import fetch_state_dict, read_backbone_file
from vcm.errors import ConfigError

__all__ = [
    "BACKBONE_NAMES",
    "build_faster_rcnn",
]

_WEIGHT_CHOICES = (None, "DEFAULT", "IMAGENET")
# FasterRCNN arguments that set the structure are fixed by the backbone name; size_divisible must stay
# 32 because the heads recover the padded input size from p2 (see DetectorFeatures.padded_size).
_FIXED_ARGS = {"self", "backbone", "num_classes", "min_size", "max_size", "kwargs", "rpn_anchor_generator",
               "rpn_head", "box_roi_pool", "box_head", "box_predictor"}
_FASTER_RCNN_KWARGS = frozenset(set(inspect.signature(FasterRCNN.__init__).parameters) - _FIXED_ARGS) | {"fixed_size"}


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
    model = build_torchvision_detector(backbone, num_classes, weights, checkpoint is not None, min_size, max_size,
                   trainable_backbone_layers, backbone_weights=backbone_weights, **kwargs)
    if checkpoint is not None:
        load_detector_checkpoint(model, checkpoint, backbone=backbone)
    return model


def build_torchvision_detector(backbone: str, num_classes: int, weights: str | None, have_checkpoint: bool, min_size: int,
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
            state = read_backbone_file(backbone_weights, backbone)
        else:
            state = fetch_state_dict(tv_weights, f"{backbone} {weights} ({kind})")
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
