"""Measure one codec on one image, and aggregate over a split.

Used both by the Lightning modules' validation/test and by ``vcm-eval``, so that a number logged
during training and a number in a results record are computed by the same code.

Definitions (see the README): ``bpp_real = 8 * len(bitstream) / (H * W)`` of the original image;
``bpp_estimated`` from the entropy model's likelihoods; PSNR on 8-bit RGB; ``roi_psnr`` over the
pixels inside the union of ground-truth boxes of the configured classes only; ``bg_psnr`` over the
remaining pixels outside DontCare regions; per-image values are averaged over images (CompressAI's
convention); detection metrics are computed over the whole split.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vcm.detectors.features import p6_from_p5
from vcm.evaluation.runners import _to_float_batch


def _dev(module) -> torch.device:
    return next(module.parameters()).device


def _sync(device) -> None:
    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.synchronize(device)


def region_masks(target: dict, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ROI mask (union of object boxes) and background mask (the rest minus DontCare), bool [H,W]."""
    from vcm.metrics.image import roi_mask_from_boxes

    roi = torch.as_tensor(roi_mask_from_boxes(target["boxes"], height, width))
    ignore = torch.as_tensor(roi_mask_from_boxes(target["ignore_boxes"], height, width))
    return roi, ~roi & ~ignore


def image_quality(original: torch.Tensor, decoded: torch.Tensor, target: dict | None) -> dict[str, float]:
    """PSNR, MS-SSIM, ROI-PSNR and background PSNR of a decoded uint8 [3,H,W] image."""
    from vcm.metrics.image import masked_psnr, ms_ssim, psnr

    out = {"psnr": float(psnr(original, decoded)), "ms_ssim": float(ms_ssim(original, decoded))}
    if target is not None:
        roi, bg = region_masks(target, original.shape[-2], original.shape[-1])
        out["roi_psnr"] = float(masked_psnr(original, decoded, roi))
        out["bg_psnr"] = float(masked_psnr(original, decoded, bg))
        out["roi_fraction"] = float(roi.float().mean())
    return out


def _levels_of(features) -> OrderedDict:
    return features.levels if hasattr(features, "levels") else features


@torch.no_grad()
def evaluate_image(runner, image: torch.Tensor, target: dict | None, detector=None, estimate: bool = True):
    """Code one image with ``runner`` and measure it.

    Args:
        runner: a runner from :mod:`vcm.evaluation.runners`.
        image: uint8 [3,H,W] RGB, the original.
        target: its vcm target dict (for ROI metrics and detection), or None.
        detector: a FrozenDetector for detection metrics and for feature codecs (required then).
        estimate: also compute ``bpp_estimated`` for learned codecs (one extra forward pass).

    Returns:
        (per-image metric dict, detections dict or None, decoded uint8 image or None)
    """
    image = image.cpu()
    _, h, w = image.shape
    m: dict[str, Any] = {"name": target.get("name") if target else None, "height": h, "width": w}
    preds = None
    decoded = None
    if runner.kind == "none":
        m.update(bpp_real=24.0, bits=24 * h * w, enc_s=0.0, dec_s=0.0)
        decoded = image
        if detector is not None:
            preds = detector.detect(detector.features([_to_float_batch(image)[0].to(_dev(detector))]))[0]
    elif runner.kind == "image":
        model = getattr(runner, "model", None)
        cond = codec_condition(model, _to_float_batch(image), [target] if target is not None else None, detector,
                               name=runner.name)
        dev = runner._device() if hasattr(runner, "_device") else torch.device("cpu")
        _sync(dev)
        t0 = time.perf_counter()
        data = runner.encode(image, cond=cond)
        _sync(dev)
        t1 = time.perf_counter()
        decoded = runner.decode(data)
        _sync(dev)
        t2 = time.perf_counter()
        if tuple(decoded.shape) != tuple(image.shape):
            raise RuntimeError(f"codec {runner.name} decoded a {tuple(decoded.shape)} image for a {tuple(image.shape)} input")
        m.update(bits=8 * len(data), bpp_real=8.0 * len(data) / (h * w), enc_s=t1 - t0, dec_s=t2 - t1)
        if estimate and hasattr(runner, "estimated_bits"):
            m["bpp_estimated"] = runner.estimated_bits(image, cond=cond) / (h * w)
        m.update(image_quality(image, decoded, target))
        if detector is not None:
            preds = detector.detect(detector.features([_to_float_batch(decoded)[0].to(_dev(detector))]))[0]
    elif runner.kind == "feature":
        if detector is None:
            raise ValueError(f"feature codec {runner.name} needs a detector (split inference)")
        feats = detector.features([_to_float_batch(image)[0].to(_dev(detector))])
        levels = OrderedDict((k, v) for k, v in feats.levels.items() if k != "p6")
        t0 = time.perf_counter()
        data = runner.encode(levels, orig_hw=(h, w))
        t1 = time.perf_counter()
        rec = runner.decode(data)
        t2 = time.perf_counter()
        rec = OrderedDict((k, v.to(_dev(detector))) for k, v in rec.items())
        if "p6" not in rec:
            rec["p6"] = p6_from_p5(rec["p5"])
        m.update(bits=8 * len(data), bpp_real=8.0 * len(data) / (h * w), enc_s=t1 - t0, dec_s=t2 - t1)
        if estimate and hasattr(runner, "estimated_bits"):
            m["bpp_estimated"] = runner.estimated_bits(levels) / (h * w)
        for k in ("p2", "p3", "p4", "p5", "p6"):
            m[f"mse_{k}"] = float(F.mse_loss(rec[k].float(), feats.levels[k].float()))
        from vcm.detectors import DetectorFeatures

        preds = detector.detect(DetectorFeatures(rec, feats.image_sizes, feats.original_sizes))[0]
    else:
        raise ValueError(f"unknown runner kind {runner.kind!r}")
    if preds is not None:
        preds = {k: v.detach().cpu() for k, v in preds.items()}
    return m, preds, decoded


def codec_condition(model, x: torch.Tensor, targets: list[dict] | None = None, detector=None, name: str | None = None):
    """What a conditioned image codec's encoder is given for the images ``x`` (None for other codecs).

    ``roi_hyperprior`` takes the frozen detector's features (:func:`detector_condition`) or, with
    ``roi_source=boxes``, the ROI map of the targets' ``boxes`` (:func:`vcm.codecs.roi_hyperprior.box_condition`).

    Args:
        model: the codec (anything without ``needs_features`` needs nothing).
        x: float [B,3,H,W] in [0,1], the unpadded images.
        targets: B target dicts with ``boxes`` (xyxy pixels of ``x``), for ``roi_source=boxes``.
        detector: FrozenDetector, for ``roi_source=detector``.
        name: the codec's name for error messages.
    """
    if model is None or not getattr(model, "needs_features", False):
        return None
    name = name or getattr(model, "codec_name", type(model).__name__)
    if getattr(model, "needs_boxes", False):
        if targets is None or len(targets) != x.shape[0] or any(t is None or "boxes" not in t for t in targets):
            raise ValueError(f"codec {name} (roi_source=boxes) is conditioned on the ROI boxes of each image; "
                             "give targets with 'boxes' (vcm-compress: --labels <KITTI label file>)")
        from vcm.codecs.roi_hyperprior import box_condition

        return box_condition([torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4) for t in targets],
                             x.shape[-2], x.shape[-1], device=x.device)
    if detector is None:
        raise ValueError(f"codec {name} is conditioned on detector features; configure a detector")
    from vcm.detectors.features import frame_scale_factors

    # training crops reach the detector at their frames' scale, as whole frames do in evaluation
    return detector_condition(detector, x.to(_dev(detector)), frame_scale_factors(detector, targets))


def detector_condition(detector, x: torch.Tensor, scale_factors: list[float] | None = None):
    """Detector features that condition an image codec (roi_hyperprior) on the encoder side.

    Args:
        detector: FrozenDetector.
        x: float [B,3,H,W] in [0,1], the unpadded images.
        scale_factors: per image, the detector's resize factor (crops: their frame's); None: the
            detector's own transform.

    Returns:
        The DetectorFeatures object itself: it carries the resized and original image sizes, so the
        codec aligns each level with its own image area, ignoring the detector's batch padding and
        the codec's own padding.
    """
    return detector.features(list(x), scale_factors=scale_factors)


class MetricAccumulator:
    """Collects per-image metrics and detections of a split and computes the record's metrics.

    Per-image metrics are averaged over images (non-finite values, e.g. the PSNR of a lossless
    image or the ROI-PSNR of a frame without objects, are left out of the mean and counted);
    ``bpp_real`` is also reported as total bits over total pixels (``bpp_real_pooled``).
    """

    def __init__(self, class_names: list[str] | None = None, detection: bool = True):
        self.class_names = list(class_names or [])
        self.detection = detection and bool(self.class_names)
        self.per_image: list[dict] = []
        self.preds: list[dict] = []
        self.targets: list[dict] = []

    def add(self, metrics: dict, preds: dict | None = None, target: dict | None = None) -> None:
        self.per_image.append(metrics)
        if self.detection and preds is not None and target is not None:
            self.preds.append(preds)
            self.targets.append({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in target.items()})

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        keys = [k for k in (self.per_image[0] if self.per_image else {}) if k not in ("name", "height", "width")]
        for k in keys:
            vals = np.array([float(p[k]) for p in self.per_image if p.get(k) is not None], dtype=np.float64)
            fin = vals[np.isfinite(vals)]
            out[k] = float(fin.mean()) if fin.size else float("nan")
        if self.per_image and "bits" in keys:
            out["bpp_real_pooled"] = float(sum(p["bits"] for p in self.per_image) / sum(p["height"] * p["width"] for p in self.per_image))
        out.pop("bits", None)
        if self.detection and self.preds:
            from vcm.metrics.coco import CocoMAP
            from vcm.metrics.kitti import KittiAP

            coco = CocoMAP(self.class_names)
            coco.update(self.preds, self.targets)
            out.update(coco.compute())
            kitti = KittiAP(self.class_names)
            kitti.update(self.preds, self.targets)
            out.update(kitti.compute())
        return out


def finite_or_none(d: dict) -> dict:
    """JSON-safe copy: non-finite floats become None."""
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        else:
            out[k] = v
    return out
