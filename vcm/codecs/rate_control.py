"""Per-frame rate control for ROI gain coding: a frame that fits the link.

The encoder analyses the frame once per model (``model.analyse``: y, z coded, the exact scales) and
searches the gains on an **estimate** of the file's size: the header, side information and z strings
are known exactly, and the y string's length is the entropy model's own ``-log2`` likelihood of the
symbols at the candidate gain map (the Gaussian at ``sigma * G``, a vectorised sum, no range coding),
times a calibration factor. Only the chosen setting is range-coded (a *coding pass*); its real size
recalibrates the factor (the coder's tables are coarser than the continuous scales), and the search
repeats on the corrected estimate until the file is on target, at most ``max_passes`` codings per
model. The search, in this order:

1. ``g_bg`` (background gain), bisection in the log domain between ``g_bg_floor`` and ``g_bg_max``;
2. with ``g_bg`` at its floor and the frame still too large, ``g_roi`` downwards to ``g_roi_floor``;
3. still too large by the estimate: the next, lower-rate model of ``models`` (e.g. the lower zoo rate
   points), without coding the first.

A frame is on target when its size is within ``tolerance`` of ``target_bytes`` from below (or above,
unless ``max_bytes`` is a hard cap). With a hard cap the result never exceeds it: when even the
smallest setting of the last model is larger, :class:`RateControlError` is raised and nothing is
written.

A codec whose analysis depends on the gain map (``analysis_takes_gain``, the learned
:class:`~vcm.codecs.gain_hyperprior.GainHyperprior`) is estimated on its analysis at ``g_bg_start``
and re-analysed at every coded setting; the calibration absorbs the difference.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vcm.codecs.base import pad_image, weights_hash
from vcm.codecs.container import pack
from vcm.codecs.exact import LatentAnalysis, code_analysis
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
        passes: range codings of ``y`` (over all models), the coding passes of the search.
        on_target: within the tolerance of the target (and under the cap, if any).
        estimates: size estimates the search made (no coding; see the module's docstring).
    """

    data: bytes
    roi: RoiGain
    model_index: int
    passes: int
    on_target: bool
    estimates: int = 0


def estimated_y_bits(gc: nn.Module, a: LatentAnalysis, gain: Tensor) -> float:
    """The entropy model's bits for ``y`` of ``a`` at the gain map ``gain``: ``-log2`` of the Gaussian
    likelihood of ``round((y - mu) G)`` at scale ``sigma G`` (CompressAI's ``GaussianConditional``
    likelihood with its bounds), summed; no range coding."""
    centered = a.y.detach().to("cpu", torch.float64)
    if a.means is not None:
        centered = centered - a.means.to("cpu", torch.float64)
    symbols = torch.round(centered * gain)
    likelihood = gc._likelihood(symbols.float(), (a.scales * gain).float())
    if gc.use_likelihood_bound:
        likelihood = gc.likelihood_lower_bound(likelihood)
    return float(-torch.log2(likelihood).sum())


def _log_bisect(size: Callable[[float], float], lo: float, hi: float, aim: float, steps: int = 14) -> float:
    """The largest gain in [lo, hi] (float16) whose ``size`` is at most ``aim`` (``size`` grows with the
    gain); ``lo`` when none is."""
    a, b = math.log(lo), math.log(hi)
    if size(half(hi)) <= aim:
        return half(hi)
    for _ in range(steps):
        mid = half(math.exp((a + b) / 2))
        if mid in (half(math.exp(a)), half(math.exp(b))):
            break
        if size(mid) <= aim:
            a = math.log(mid)
        else:
            b = math.log(mid)
    return half(math.exp(a))


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
    max_passes: int = 4,
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
        g_roi: the ROI gain (lowered only when the background is at its floor).
        g_bg_start: the background gain a gain-conditioned codec is analysed at for the estimates
            (e.g. the previous frame's).
        g_bg_floor, g_bg_max: the background gain's range (below ~0.3 the background breaks up).
        g_roi_floor: how far the ROI gain may come down when the background is at its floor.
        dilation: ROI cells grown by this many cells.
        tolerance: relative distance to the target that counts as on target.
        max_passes: range codings per model.
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
    if max_passes < 1:
        raise ValueError(f"max_passes={max_passes}: expected at least one coding per model")
    limit = target_bytes if max_bytes is None else min(target_bytes, max_bytes)
    # aim inside the window: half the tolerance below the target (and below the cap)
    aim = min(target_bytes, limit) * (1 - tolerance / 2)
    h, w = image.shape[-2:]
    g_roi, g_roi_floor = half(g_roi), half(min(g_roi_floor, g_roi))
    passes = estimates = 0
    best: tuple[tuple, RateControlResult] | None = None  # (preference key, result) of the best coding so far
    ratio = 1.0  # real y bytes / estimated y bytes, carried from model to model

    def consider(r: RateControlResult) -> None:
        nonlocal best
        size = len(r.data)
        fits = max_bytes is None or size <= max_bytes
        r.on_target = fits and abs(size - target_bytes) <= tolerance * target_bytes
        # prefer: on target, then under the limit and largest, then smallest
        key = (0, -size) if r.on_target else ((1, -size) if size <= limit else (2, size))
        if best is None or key < best[0]:
            best = (key, r)

    for index, model in enumerate(models):
        name = (codec_names[index] if codec_names else None) or getattr(model, "codec_name", type(model).__name__)
        x_pad, _ = pad_image(image.to(next(model.parameters()).device), int(model.min_div))
        latent_hw = (x_pad.shape[-2] // Y_STRIDE, x_pad.shape[-1] // Y_STRIDE)
        takes_gain = bool(getattr(model, "analysis_takes_gain", False))
        digest = weights_hash(model)

        def roi_of(gr: float, gb: float) -> RoiGain:
            return RoiGain.from_boxes(boxes, h, w, gr, gb, dilation)

        if takes_gain:
            analysis = model.analyse(x_pad, cond, gain=roi_of(g_roi, min(max(g_bg_start, g_bg_floor), g_bg_max)).map(latent_hw))
        else:
            analysis = model.analyse(x_pad, cond)
        # every byte but y's: header, side information, z (the gains' encoding has a fixed length)
        fixed = len(pack(name, digest, (h, w), [[b""], *analysis.side_strings], analysis.shape,
                         extra=roi_of(g_roi, g_bg_floor).to_extra(), check=0))

        def estimate(gr: float, gb: float, model=model, analysis=analysis, latent_hw=latent_hw, fixed=fixed) -> float:
            nonlocal estimates
            estimates += 1
            return fixed + ratio * estimated_y_bits(model.gaussian_conditional, analysis, roi_of(gr, gb).map(latent_hw)) / 8

        def code(gr: float, gb: float, model=model, x_pad=x_pad, takes_gain=takes_gain, analysis=analysis,
                 latent_hw=latent_hw, digest=digest, name=name, index=index, fixed=fixed) -> RateControlResult:
            nonlocal passes, ratio
            passes += 1
            roi = roi_of(gr, gb)
            gain = roi.map(latent_hw)
            a = model.analyse(x_pad, cond, gain=gain) if takes_gain else analysis
            out = code_analysis(model.gaussian_conditional, a, gain)
            data = pack(name, digest, (h, w), out["strings"], out["shape"], extra=roi.to_extra(), check=out["check"])
            est_y = estimated_y_bits(model.gaussian_conditional, analysis, gain) / 8
            if est_y > 0:
                ratio = max(len(data) - fixed, 1) / est_y
            r = RateControlResult(data, roi, index, passes, False)
            consider(r)
            return r

        def choose(index=index, estimate=estimate) -> tuple[float, float] | None:
            """The gains the estimate puts at the aim; None when even the floors are too large and a
            lower-rate model is left."""
            if estimate(g_roi, g_bg_floor) > aim:
                if estimate(g_roi_floor, g_bg_floor) > aim and index < len(models) - 1:
                    return None
                return _log_bisect(lambda g: estimate(g, g_bg_floor), g_roi_floor, g_roi, aim), half(g_bg_floor)
            return g_roi, _log_bisect(lambda g: estimate(g_roi, g), g_bg_floor, g_bg_max, aim)

        tried: set[tuple[float, float]] = set()
        for _ in range(max_passes):
            gains = choose()
            if gains is None or gains in tried:
                break
            tried.add(gains)
            r = code(*gains)
            if r.on_target:
                return _finish(r, passes, estimates)
        if best is not None and len(best[1].data) <= limit:
            return _finish(best[1], passes, estimates)
    if best is None:  # every model was skipped by its estimate: the last one never is, so this cannot be
        raise RateControlError("rate control coded nothing")
    result = _finish(best[1], passes, estimates)
    if max_bytes is not None and len(result.data) > max_bytes:
        raise RateControlError(
            f"no setting fits {max_bytes} bytes: the smallest file found is {len(result.data)} bytes "
            f"(g_roi {result.roi.g_roi}, g_bg {result.roi.g_bg}, model {result.model_index}); "
            "add a lower-rate model or raise the cap")
    return result


def _finish(result: RateControlResult, passes: int, estimates: int) -> RateControlResult:
    result.passes = passes
    result.estimates = estimates
    return result
