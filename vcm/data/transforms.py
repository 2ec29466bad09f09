"""Joint image + target transforms (crops, flips, colour jitter) that keep boxes consistent."""
from __future__ import annotations

import math

import torch

from vcm.errors import ConfigError

_BOX_KEYS = (("boxes", ("labels", "truncation", "occlusion")), ("ignore_boxes", ()), ("neighbour_boxes", ("neighbour_labels",)))


def crop_target(target: dict, top: int, left: int, height: int, width: int, min_visible: float = 0.0) -> dict:
    """Crop every box set of ``target`` to the window; boxes that leave it are dropped.

    Args:
        target: a vcm target dict.
        top, left, height, width: the crop window in pixels.
        min_visible: drop an object whose clipped area is at most this fraction of its area
            (0 keeps any object with a positive visible area).

    Returns:
        A new target dict in the crop's coordinates (``orig_size`` becomes the crop size; the
        original frame's size is kept as ``frame_size``).
    """
    out = dict(target)
    for key, companions in _BOX_KEYS:
        boxes = target[key]
        if boxes.numel() == 0:
            continue
        shifted = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
        clipped = shifted.clone()
        clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
        clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
        area = (shifted[:, 2] - shifted[:, 0]).clamp(min=0) * (shifted[:, 3] - shifted[:, 1]).clamp(min=0)
        carea = (clipped[:, 2] - clipped[:, 0]).clamp(min=0) * (clipped[:, 3] - clipped[:, 1]).clamp(min=0)
        keep = (carea > 0) & (carea > min_visible * area)
        out[key] = clipped[keep]
        for c in companions:
            out[c] = target[c][keep]
    out.setdefault("frame_size", target["orig_size"].clone())
    out["orig_size"] = torch.tensor([height, width], dtype=torch.int64)
    out["crop_offset"] = torch.tensor([top, left], dtype=torch.int64)
    return out


class RandomCrop:
    """Random crop of a fixed size (boxes clipped, boxes that leave the crop dropped).

    Args:
        size: (height, width) of the crop.
        pad_if_needed: when the image is smaller than the crop, pad it (replicate) instead of raising.
        object_prob: probability that the crop is placed around an object: a box of ``target["boxes"]``
            is drawn at random and the window is drawn among those that contain its centre (frames
            without boxes get a plain random crop). With small crops of wide frames most plain crops
            hold no object, which starves an ROI-weighted loss of ROI pixels.
    """

    def __init__(self, size, pad_if_needed: bool = False, object_prob: float = 0.0):
        if isinstance(size, int):
            size = (size, size)
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) <= 0:
            raise ConfigError(f"data.crop_size={list(size)}: expected positive (height, width)")
        if not 0.0 <= float(object_prob) <= 1.0:
            raise ConfigError(f"data.object_crop_prob={object_prob}: expected a probability in [0, 1]")
        self.pad_if_needed = pad_if_needed
        self.object_prob = float(object_prob)

    @staticmethod
    def _around(centre: float, crop: int, extent: int) -> int:
        """A random window start in [0, extent - crop] whose window contains ``centre``."""
        lo = max(0, math.floor(centre) - crop + 1)
        hi = min(extent - crop, math.floor(centre))
        if hi < lo:  # centre outside the image (cannot happen for clipped boxes): any window
            lo, hi = 0, extent - crop
        return int(torch.randint(lo, hi + 1, (1,)).item())

    def __call__(self, image: torch.Tensor, target: dict):
        _, h, w = image.shape
        ch, cw = self.size
        if ch > h or cw > w:
            if not self.pad_if_needed:
                raise ConfigError(
                    f"data.crop_size={list(self.size)} is larger than image {target.get('name', '?')} of size {h}x{w}; "
                    "expected a crop no larger than the smallest image (KITTI frames are ~370x1224 at least)"
                )
            ph, pw = max(ch - h, 0), max(cw - w, 0)
            image = torch.nn.functional.pad(image[None].float(), (0, pw, 0, ph), mode="replicate")[0].to(image.dtype)
            h, w = image.shape[1:]
        boxes = target.get("boxes")
        if self.object_prob > 0 and boxes is not None and len(boxes) and torch.rand(()).item() < self.object_prob:
            x1, y1, x2, y2 = (float(v) for v in boxes[int(torch.randint(0, len(boxes), (1,)).item())])
            top = self._around((y1 + y2) / 2, ch, h)
            left = self._around((x1 + x2) / 2, cw, w)
        else:
            top = int(torch.randint(0, h - ch + 1, (1,)).item())
            left = int(torch.randint(0, w - cw + 1, (1,)).item())
        return image[:, top:top + ch, left:left + cw].contiguous(), crop_target(target, top, left, ch, cw)


class RandomHorizontalFlip:
    """Flip image and every box set horizontally with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image: torch.Tensor, target: dict):
        if torch.rand(()) >= self.p:
            return image, target
        w = image.shape[-1]
        out = dict(target)
        for key, _ in _BOX_KEYS:
            b = target[key]
            if b.numel():
                out[key] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
        return image.flip(-1), out


class ColorJitter:
    """Brightness/contrast/saturation jitter on uint8 images (torchvision's implementation)."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.0):
        from torchvision.transforms import ColorJitter as _CJ

        self.cj = _CJ(brightness, contrast, saturation, hue)

    def __call__(self, image: torch.Tensor, target: dict):
        return self.cj(image), target


class Compose:
    def __init__(self, transforms):
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target
