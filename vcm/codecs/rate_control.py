"""Per-frame rate control for ROI gain coding: a frame that fits the link.

The encoder analyses the frame once per model (``model.analyse``: y, z coded, the exact scales) and
then codes only ``y`` at candidate gains, measuring the size of the whole file each time (header,
side information and strings: what the link carries). The search, in this order:

1. ``g_bg`` (background gain), secant steps in the log domain between ``g_bg_floor`` and
   ``g_bg_max``, starting from ``g_bg_start`` (e.g. the previous frame's);
2. with ``g_bg`` at its floor and the frame still too large, ``g_roi`` downwards to ``g_roi_floor``;
3. still too large: the next, lower-rate model of ``models`` (e.g. the lower zoo rate points).

A frame is on target when its size is within ``tolerance`` of ``target_bytes`` from below (or above,
unless ``max_bytes`` is a hard cap). With a hard cap the result never exceeds it: when even the
smallest setting of the last model is larger, :class:`RateControlError` is raised and nothing is
written.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vcm.codecs.base import pad_image, weights_hash
from vcm.codecs.container import pack
from vcm.codecs.exact import code_analysis
from vcm.codecs.roi_gain import Y_STRIDE, RoiGain, half
from vcm.errors import VcmError

__all__ = ["RateControlError", "RateControlResult", "encode_to_size"]


class RateControlError(VcmError, ValueError):
    """No setting of any model fits the hard cap."""


@dataclass
class RateControlResult:
    """The chosen coding of a frame.

    Attributes:
        data: the complete file.
        roi: the gains and boxes it was coded with.
        model_index: which of ``models`` coded it.
        passes: y codings tried (over all models), the coding passes of the search.
        on_target: within the tolerance of the target (and under the cap, if any).
    """

    data: bytes
    roi: RoiGain
    model_index: int
    passes: int
    on_target: bool


@torch.no_grad()
def encode_to_size(
    models: Sequence[nn.Module],
    image: Tensor,
    boxes: Tensor,
    target_bytes: int,
    *,
    max_bytes: int | None = None,
    g_roi: float = 2.0,
    g_bg_start: float = 0.5,
    g_bg_floor: float = 0.3,
    g_bg_max: float = 2.0,
    g_roi_floor: float = 1.0,
    dilation: int = 1,
    tolerance: float = 0.05,
    max_passes: int = 8,
    cond: object = None,
    codec_names: Sequence[str] | None = None,
) -> RateControlResult:
    """Code ``image`` with the gains (and model) that bring the file closest to ``target_bytes``.

    Args:
        models: updated hyperprior-family codecs, highest rate first.
        image: float [1, 3, H, W] in [0, 1].
        boxes: [K, 4] xyxy ROI boxes of the image (K may be 0).
        target_bytes: the wanted file size.
        max_bytes: a hard cap (never exceeded), or None.
        g_roi, g_bg_start: the ROI gain and the first background gain tried.
        g_bg_floor, g_bg_max: the background gain's range (below ~0.3 the background breaks up).
        g_roi_floor: how far the ROI gain may come down when the background is at its floor.
        dilation: ROI cells grown by this many cells.
        tolerance: relative distance to the target that counts as on target.
        max_passes: y codings per search (background, then ROI) and model.
        cond: what the codecs' encoders are conditioned on (roi_hyperprior), or None.
        codec_names: the names written into the files (default: each model's ``codec_name``).

    Raises:
        RateControlError: ``max_bytes`` cannot be met.
        ValueError: bad settings.
    """
    if target_bytes < 1 or (max_bytes is not None and max_bytes < 1):
        raise ValueError(f"target_bytes={target_bytes}, max_bytes={max_bytes}: expected positive sizes")
    if not models:
        raise ValueError("rate control needs at least one model")
    if not 0 < g_bg_floor <= g_bg_max:
        raise ValueError(f"g_bg range [{g_bg_floor}, {g_bg_max}] is empty")
    limit = target_bytes if max_bytes is None else min(target_bytes, max_bytes)
    h, w = image.shape[-2:]
    passes = 0
    best: tuple[float, RateControlResult] | None = None  # (distance, result) of the best candidate so far

    for index, model in enumerate(models):
        name = (codec_names[index] if codec_names else None) or getattr(model, "codec_name", type(model).__name__)
        x_pad, _ = pad_image(image.to(next(model.parameters()).device), int(model.min_div))
        analysis = model.analyse(x_pad, cond)
        latent_hw = (x_pad.shape[-2] // Y_STRIDE, x_pad.shape[-1] // Y_STRIDE)
        digest = weights_hash(model)

        def size_of(gr: float, gb: float, model=model, analysis=analysis, latent_hw=latent_hw, digest=digest,
                    name=name, index=index) -> RateControlResult:
            nonlocal passes
            passes += 1
            roi = RoiGain.from_boxes(boxes, h, w, gr, gb, dilation)
            out = code_analysis(model.gaussian_conditional, analysis, roi.map(latent_hw))
            data = pack(name, digest, (h, w), out["strings"], out["shape"], extra=roi.to_extra(), check=out["check"])
            return RateControlResult(data, roi, index, passes, False)

        def consider(r: RateControlResult) -> None:
            nonlocal best
            size = len(r.data)
            fits = max_bytes is None or size <= max_bytes
            r.on_target = fits and abs(size - target_bytes) <= tolerance * target_bytes
            # prefer: on target, then under the limit and largest, then smallest
            key = (0, -size) if r.on_target else ((1, -size) if size <= limit else (2, size))
            if best is None or key < best[0]:
                best = (key, r)

        def run(gr: float, gb: float) -> RateControlResult:
            r = size_of(half(gr), half(gb))
            consider(r)
            return r

        def search(r0: RateControlResult, g0: float, lo: float, hi: float, vary_roi: bool) -> RateControlResult:
            """Secant steps in log(gain) from a first coding: g_bg (g_roi fixed), or g_roi (g_bg at its floor)."""
            slope = 0.7  # d log(bytes) / d log(g_bg) on the zoo models; the secant replaces it after one step
            for _ in range(max_passes - 1):
                s0 = len(r0.data)
                if r0.on_target or (s0 > limit and g0 <= lo) or (s0 < target_bytes * (1 - tolerance) and g0 >= hi):
                    break
                step = (math.log(target_bytes * (1 - tolerance / 2)) - math.log(s0)) / max(slope, 0.05)
                g1 = float(min(max(g0 * math.exp(step), lo), hi))
                if half(g1) == half(g0):
                    break
                r1 = run(g1, g_bg_floor) if vary_roi else run(g_roi, g1)
                s1 = len(r1.data)
                if s1 != s0:
                    fitted = (math.log(s1) - math.log(s0)) / (math.log(half(g1)) - math.log(half(g0)))
                    slope = fitted if fitted > 0.05 else slope
                g0, r0 = g1, r1
            return r0

        start = min(max(g_bg_start, g_bg_floor), g_bg_max)
        first = run(g_roi, start)
        if first.on_target:
            return _finish(first, passes)
        # sizes fall more slowly than the gains (~0.65-0.7 in log-log); when even a slope of 0.9 down to the
        # floors leaves the frame too large, the next, lower-rate model is tried at once
        reachable = len(first.data) * (g_bg_floor / start) ** 0.9 * min(g_roi_floor / g_roi, 1.0) ** 0.3
        if reachable > limit and index < len(models) - 1:
            continue
        last = search(first, start, g_bg_floor, g_bg_max, vary_roi=False)
        if best[1].on_target:
            return _finish(best[1], passes)
        if len(last.data) > limit and g_roi > g_roi_floor:
            at_floor = last if half(last.roi.g_bg) == half(g_bg_floor) else run(g_roi, g_bg_floor)
            search(at_floor, g_roi, g_roi_floor, g_roi, vary_roi=True)
            if best[1].on_target:
                return _finish(best[1], passes)
        if len(best[1].data) <= limit:
            return _finish(best[1], passes)
    result = _finish(best[1], passes)
    if max_bytes is not None and len(result.data) > max_bytes:
        raise RateControlError(
            f"no setting fits {max_bytes} bytes: the smallest file found is {len(result.data)} bytes "
            f"(g_roi {result.roi.g_roi}, g_bg {result.roi.g_bg}, model {result.model_index}); "
            "add a lower-rate model or raise the cap")
    return result



def _finish(result: RateControlResult, passes: int) -> RateControlResult:
    result.passes = passes
    return result
