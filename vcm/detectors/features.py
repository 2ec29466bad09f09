"""The detector's multi-scale features, as passed between the detector, the codecs and the heads."""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: FPN levels in order; level ``p{k}`` has stride ``2**k`` on the detector-transformed, batch-padded image.
LEVEL_NAMES: tuple[str, ...] = ("p2", "p3", "p4", "p5", "p6")


@dataclass
class DetectorFeatures:
    """FPN features of a batch and the image sizes the detector's heads need to use them.

    Attributes:
        levels: OrderedDict ``p2..p6`` of [B, 256, h_k, w_k]; ``p{k}`` has stride ``2**k`` on the
            batch-padded input of size ``padded_size`` (a multiple of 32). ``p6`` may be left out: the
            heads rebuild it as ``max_pool2d(p5, 1, 2)`` exactly as the FPN does.
        image_sizes: per image, (H, W) after the detector's resize, before batch padding.
        original_sizes: per image, (H, W) of the input image; detections are returned in these
            coordinates and targets are given in them.
    """

    levels: OrderedDict[str, Tensor]
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]

    @property
    def batch_size(self) -> int:
        """Number of images."""
        return len(self.image_sizes)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(H, W) of the batch-padded network input, recovered from ``p2`` (stride 4)."""
        h, w = self.levels["p2"].shape[-2:]
        return 4 * int(h), 4 * int(w)

    def with_levels(self, levels: OrderedDict[str, Tensor] | dict[str, Tensor]) -> DetectorFeatures:
        """The same images with other (e.g. decoded) levels."""
        return dataclasses.replace(self, levels=OrderedDict(levels))

    def detach(self) -> DetectorFeatures:
        """A copy whose levels are cut from the autograd graph."""
        return self.with_levels(OrderedDict((k, v.detach()) for k, v in self.levels.items()))

    def to(self, device: torch.device | str) -> DetectorFeatures:
        """A copy with every level on ``device``."""
        return self.with_levels(OrderedDict((k, v.to(device)) for k, v in self.levels.items()))


def frame_scale_factors(detector, targets: list[dict] | None) -> list[float] | None:
    """Per image, the detector's resize factor of the frame each (cropped) image was cut from.

    Training crops must reach the detector at the scale their frames reach it in evaluation, not
    be resized as whole images (see ``FrozenDetector.features``). A crop's target records its
    frame's size in ``frame_size`` (:func:`vcm.data.transforms.crop_target`).

    Args:
        detector: a FrozenDetector (``resize_factor(h, w)``).
        targets: the images' target dicts, or None.

    Returns:
        One factor per image, or None when no target records a ``frame_size`` (whole frames: the
        detector's own transform applies).

    Raises:
        ValueError: only some targets record a ``frame_size``.
    """
    if not targets or not any("frame_size" in t for t in targets):
        return None
    if not all("frame_size" in t for t in targets):
        raise ValueError("a batch mixes crops (targets with 'frame_size') and whole frames")
    return [float(detector.resize_factor(*(int(v) for v in t["frame_size"]))) for t in targets]


def p6_from_p5(p5: Tensor) -> Tensor:
    """The FPN's P6 from its P5, as torchvision's ``LastLevelMaxPool`` computes it (every codec and
    anchor codes P2..P5 and rebuilds P6 this way).

    Args:
        p5: [B, C, h, w].

    Returns:
        [B, C, ceil(h / 2), ceil(w / 2)].
    """
    return F.max_pool2d(p5, kernel_size=1, stride=2, padding=0)
