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

from vcm.conditioning import conditioning
from vcm.data.masks import region_masks
from vcm.detectors.features import DetectorFeatures, p6_from_p5
from vcm.evaluation.runners import FeatureRunner, ImageRunner, NoCodec, to_float_batch
from vcm.metrics.coco import CocoMAP
from vcm.metrics.image import masked_psnr, ms_ssim, psnr
from vcm.metrics.kitti import KittiAP


def _dev(module) -> torch.device:
    return next(module.parameters()).device


def _sync(device) -> None:
    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.synchronize(device)


def image_quality(original: torch.Tensor, decoded: torch.Tensor, target: dict | None) -> dict[str, float]:
    """PSNR, MS-SSIM, ROI-PSNR and background PSNR of a decoded uint8 [3,H,W] image."""
    out = {"psnr": float(psnr(original, decoded)), "ms_ssim": float(ms_ssim(original, decoded))}
    if target is not None:
        roi, bg = region_masks(target, original.shape[-2], original.shape[-1])
        out["roi_psnr"] = float(masked_psnr(original, decoded, roi))
        out["bg_psnr"] = float(masked_psnr(original, decoded, bg))
        out["roi_fraction"] = float(roi.float().mean())
    return out


@torch.no_grad()
def evaluate_image(runner, image: torch.Tensor, target: dict | None, detector=None, estimate: bool = True):
    """Code one image with ``runner`` and measure it.

    Args:
        runner: a runner from :mod:`vcm.evaluation.runners`.
        image: uint8 [3,H,W] RGB, the original.
        target: its vcm target dict (for ROI metrics and detection), or None.
        detector: a FrozenDetector for detection metrics, for feature codecs and for image codecs whose
            encoder runs one (required then; what an encoder is given: :mod:`vcm.conditioning`).
        estimate: also compute ``bpp_estimated`` for learned codecs (one extra forward pass).

    Returns:
        (per-image metric dict, detections dict or None, decoded uint8 image or None)
    """
    image = image.cpu()
    _, h, w = image.shape
    m: dict[str, Any] = {"name": target.get("name") if target else None, "height": h, "width": w}
    preds = None
    decoded = None
    if isinstance(runner, NoCodec):
        m.update(bpp_real=24.0, bits=24 * h * w, enc_s=0.0, dec_s=0.0)
        decoded = image
        if detector is not None:
            preds = detector.detect(detector.features([to_float_batch(image)[0].to(_dev(detector))]))[0]
    elif isinstance(runner, ImageRunner):
        kind = conditioning(runner)
        t_cond = time.perf_counter()
        cond = kind.condition(runner, to_float_batch(image), [target] if target is not None else None, detector,
                              name=runner.name)
        dev = runner.device
        _sync(dev)
        t0 = time.perf_counter()
        if kind.time_key is not None:
            m[kind.time_key] = t0 - t_cond
        data = runner.encode(image, cond=cond)
        _sync(dev)
        t1 = time.perf_counter()
        m.update(getattr(runner, "encode_info", None) or {})
        decoded = runner.decode(data)
        _sync(dev)
        t2 = time.perf_counter()
        if tuple(decoded.shape) != tuple(image.shape):
            raise RuntimeError(f"codec {runner.name} decoded a {tuple(decoded.shape)} image for a {tuple(image.shape)} input")
        m.update(bits=8 * len(data), bpp_real=8.0 * len(data) / (h * w), enc_s=t1 - t0, dec_s=t2 - t1)
        bits = runner.estimated_bits(image, cond=cond) if estimate else None
        if bits is not None:
            m["bpp_estimated"] = bits / (h * w)
        m.update(image_quality(image, decoded, target))
        if detector is not None:
            preds = detector.detect(detector.features([to_float_batch(decoded)[0].to(_dev(detector))]))[0]
    elif isinstance(runner, FeatureRunner):
        if detector is None:
            raise ValueError(f"feature codec {runner.name} needs a detector (split inference)")
        feats = detector.features([to_float_batch(image)[0].to(_dev(detector))])
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
        bits = runner.estimated_bits(levels) if estimate else None
        if bits is not None:
            m["bpp_estimated"] = bits / (h * w)
        for k in ("p2", "p3", "p4", "p5", "p6"):
            m[f"mse_{k}"] = float(F.mse_loss(rec[k].float(), feats.levels[k].float()))
        preds = detector.detect(DetectorFeatures(rec, feats.image_sizes, feats.original_sizes))[0]
    else:
        raise TypeError(f"{type(runner).__name__} is not a runner (ImageRunner, FeatureRunner or NoCodec)")
    if preds is not None:
        preds = {k: v.detach().cpu() for k, v in preds.items()}
    return m, preds, decoded


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
            coco = CocoMAP(self.class_names)
            coco.update(self.preds, self.targets)
            out.update(coco.compute())
            # KITTI's difficulties need known occlusion levels (0-2); COCO's targets mark them unknown (-1)
            if any(t.get("occlusion") is not None and bool((t["occlusion"] >= 0).any()) for t in self.targets):
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
