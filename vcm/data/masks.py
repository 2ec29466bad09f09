"""Boxes -> pixel and cell masks: the one pixel rule used by the metrics, the losses, training,
the evaluation and the ROI conditioning of the codecs.

Pixel rule: pixel (row r, column c) covers the unit square [c, c+1) x [r, r+1) of the xyxy pixel
coordinates (torchvision's convention); it belongs to a box's mask when that square overlaps the
box with positive area: columns ``floor(x1) .. ceil(x2) - 1`` and rows ``floor(y1) .. ceil(y2) - 1``,
clamped to the image. So an edge at x = 10.0 includes column 9 but not column 10, an edge at 10.2
includes column 10, and a box with ``x2 <= x1`` or ``y2 <= y1`` covers nothing.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["box_union_mask", "boxes_to_mask", "cell_coverage", "region_masks", "target_masks"]


def box_union_mask(boxes: Tensor | np.ndarray, height: int, width: int) -> Tensor:
    """Union of boxes as a pixel mask (the module's pixel rule).

    Args:
        boxes: ``[N, 4]`` xyxy pixels (N may be 0).
        height, width: image size.

    Returns:
        bool ``[height, width]`` on the CPU.
    """
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4).cpu()
    mask = torch.zeros(int(height), int(width), dtype=torch.bool)
    for x1, y1, x2, y2 in b.tolist():
        if not (x2 > x1 and y2 > y1):
            continue
        c0, c1 = max(math.floor(x1), 0), min(math.ceil(x2), int(width))
        r0, r1 = max(math.floor(y1), 0), min(math.ceil(y2), int(height))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def boxes_to_mask(boxes_list: Sequence[Tensor], H: int, W: int, device: torch.device | str | None = None) -> Tensor:
    """Per-image union of boxes as a batch mask.

    A box ``[0, 0, w, h]`` per image gives the mask of the original pixels of a padded batch
    (``valid_mask`` of the losses).

    Args:
        boxes_list: B tensors [K_i, 4] (xyxy, pixels; K_i may be 0).
        H, W: mask size.
        device: device of the mask; defaults to that of the first box tensor, else CPU.

    Returns:
        bool [B, 1, H, W].
    """
    if device is None:
        device = next((b.device for b in boxes_list if isinstance(b, Tensor)), torch.device("cpu"))
    masks = []
    for i, boxes in enumerate(boxes_list):
        boxes = torch.as_tensor(boxes, dtype=torch.float64)
        if boxes.numel() and (boxes.dim() != 2 or boxes.shape[1] != 4):
            raise ValueError(f"boxes_list[{i}] must be [K, 4] xyxy, got shape {tuple(boxes.shape)}")
        masks.append(box_union_mask(boxes, H, W))
    if not masks:
        return torch.zeros(0, 1, int(H), int(W), dtype=torch.bool, device=device)
    return torch.stack(masks)[:, None].to(device)


def target_masks(targets: Sequence[Mapping], key: str, height: int, width: int, device=None) -> Tensor:
    """bool [B, 1, H, W]: the union of each target's ``target[key]`` boxes (``boxes``, ``ignore_boxes``)."""
    return boxes_to_mask([torch.as_tensor(t[key]) for t in targets], height, width, device=device or "cpu")


def region_masks(target: Mapping, height: int, width: int) -> tuple[Tensor, Tensor]:
    """ROI mask (union of the object boxes) and background mask (the rest minus DontCare), bool [H, W]."""
    roi = box_union_mask(target["boxes"], height, width)
    ignore = box_union_mask(target["ignore_boxes"], height, width)
    return roi, ~roi & ~ignore


def cell_coverage(mask: Tensor, strides: Mapping[str, int]) -> dict[str, Tensor]:
    """The share of each ``s x s`` cell covered by ``mask``, per level.

    Args:
        mask: [B, 1, H, W] (bool or float).
        strides: level name -> stride s, e.g. ``{"p3": 8, "p4": 16, "p5": 32}``.

    Returns:
        level name -> float [B, 1, ceil(H / s), ceil(W / s)] in [0, 1] (cells past the image's
        bottom/right edge count the missing pixels as uncovered).
    """
    m = mask.float()
    height, width = m.shape[-2:]
    return {k: F.avg_pool2d(F.pad(m, (0, -width % s, 0, -height % s)), kernel_size=s, stride=s)
            for k, s in strides.items()}
