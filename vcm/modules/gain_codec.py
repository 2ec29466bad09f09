"""Training the learned ROI codec on the gain map (:class:`vcm.codecs.gain_hyperprior.GainHyperprior`)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vcm.codecs.base import pad_image
from vcm.codecs.roi_gain import G_MAX, G_MIN, Y_STRIDE
from vcm.data.masks import box_union_mask
from vcm.errors import ConfigError
from vcm.modules.image_codec import ImageCodecModule

__all__ = ["GainCodecModule", "random_gain_maps"]


def _log_uniform(lo: float, hi: float, n: int, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def random_gain_maps(boxes: Sequence[Tensor], height: int, width: int, *, uniform_prob: float,
                     uniform_range: Sequence[float], g_bg_range: Sequence[float], roi_ratio_range: Sequence[float],
                     random_boxes: int, object_prob: float, dilations: Sequence[int],
                     generator: torch.Generator | None = None) -> Tensor:
    """Random gain maps for a batch of crops, float [B, 1, ceil(H/16), ceil(W/16)], by the cell rule of
    the files (:class:`vcm.codecs.roi_gain.RoiGain`: a cell is ROI when its 16 x 16 block overlaps a box).

    Per crop: with ``uniform_prob`` one gain everywhere (log-uniform in ``uniform_range``: the rate
    range); else ``g_bg`` log-uniform in ``g_bg_range`` and ``g_roi = g_bg * r``, ``r`` log-uniform in
    ``roi_ratio_range`` (clipped to the files' gain range), on the cells of the crop's object boxes
    (each kept with ``object_prob``) and of up to ``random_boxes`` random boxes, dilated by one of
    ``dilations`` cells. A crop whose ROI comes out empty gets a random box.
    """
    h, w = -(-height // Y_STRIDE), -(-width // Y_STRIDE)
    maps = []
    for b in boxes:
        if float(torch.rand(1, generator=generator)) < uniform_prob:
            g = float(_log_uniform(*uniform_range, 1, generator))
            maps.append(torch.full((1, h, w), g, dtype=torch.float64))
            continue
        b = torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)
        keep = torch.rand(b.shape[0], generator=generator) < object_prob
        chosen = [b[keep]]
        n_random = int(torch.randint(0, random_boxes + 1, (1,), generator=generator))
        for _ in range(n_random or (1 if not bool(keep.any()) else 0)):
            bw, bh = (float(v) for v in _log_uniform(16, max(17, width / 2), 2, generator))
            x1 = float(torch.rand(1, generator=generator)) * max(width - bw, 1)
            y1 = float(torch.rand(1, generator=generator)) * max(height - bh, 1)
            chosen.append(torch.tensor([[x1, y1, x1 + bw, y1 + bh]], dtype=torch.float64))
        pixels = box_union_mask(torch.cat(chosen), h * Y_STRIDE, w * Y_STRIDE)
        cells = F.max_pool2d(pixels[None, None].float(), Y_STRIDE)[0]
        d = int(dilations[int(torch.randint(0, len(dilations), (1,), generator=generator))])
        if d:
            cells = F.max_pool2d(cells[None], 2 * d + 1, stride=1, padding=d)[0]
        g_bg = float(_log_uniform(*g_bg_range, 1, generator))
        g_roi = min(max(g_bg * float(_log_uniform(*roi_ratio_range, 1, generator)), G_MIN), G_MAX)
        maps.append(torch.where(cells > 0, g_roi, g_bg).to(torch.float64))
    return torch.stack(maps).float()


class GainCodecModule(ImageCodecModule):
    """Trains a gain-map-conditioned codec with random gain maps per crop and the gain-weighted RD loss
    (:class:`vcm.losses.image.GainWeightedRateDistortionLoss`); validates with real bitstreams at G = 1.

    Args:
        gain_sampling: the settings of :func:`random_gain_maps` (``uniform_prob``, ``uniform_range``,
            ``g_bg_range``, ``roi_ratio_range``, ``random_boxes``, ``object_prob``, ``dilations``).
        **kwargs: as :class:`~vcm.modules.base.CodecModule`.
    """

    def __init__(self, *args, gain_sampling: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not getattr(self.codec, "analysis_takes_gain", False):
            raise ConfigError(f"model {type(self).__name__} trains a gain-conditioned codec "
                              f"(gain_hyperprior); got {type(self.codec).__name__}")
        from vcm.losses.image import GainWeightedRateDistortionLoss

        if not isinstance(self.loss_fn, GainWeightedRateDistortionLoss):
            raise ConfigError(f"a gain-conditioned codec trains with loss=gain_rd (GainWeightedRateDistortionLoss); "
                              f"got {type(self.loss_fn).__name__}")
        s = dict(gain_sampling or {})
        self.gain_sampling = {
            "uniform_prob": float(s.pop("uniform_prob", 0.3)),
            "uniform_range": tuple(s.pop("uniform_range", (0.35, 2.0))),
            "g_bg_range": tuple(s.pop("g_bg_range", (0.25, 1.5))),
            "roi_ratio_range": tuple(s.pop("roi_ratio_range", (1.0, 8.0))),
            "random_boxes": int(s.pop("random_boxes", 2)),
            "object_prob": float(s.pop("object_prob", 0.9)),
            "dilations": tuple(int(d) for d in s.pop("dilations", (0, 1))),
        }
        if s:
            raise ConfigError(f"model.gain_sampling: unknown keys {sorted(s)}")
        for key in ("uniform_range", "g_bg_range", "roi_ratio_range"):
            lo, hi = self.gain_sampling[key]
            if not 0 < lo <= hi:
                raise ConfigError(f"model.gain_sampling.{key}={[lo, hi]}: expected 0 < low <= high")

    def compute_loss(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        if not torch.is_tensor(images):
            images = torch.stack(list(images))
        x = (images.to(self.device).float() / 255.0).contiguous(memory_format=self.memory_format)
        _, _, h, w = x.shape
        x_pad, _pad = pad_image(x, self.codec.min_div)
        gain = random_gain_maps([t["boxes"] for t in targets], x_pad.shape[-2], x_pad.shape[-1],
                                **self.gain_sampling).to(self.device)
        out = dict(self.codec(x_pad, gain=gain))
        out["x_hat"] = out["x_hat"][..., :h, :w]
        weight = F.interpolate(gain.square(), scale_factor=Y_STRIDE, mode="nearest")[..., :h, :w]
        roi = F.interpolate((gain > gain.amin(dim=(2, 3), keepdim=True)).float(), scale_factor=Y_STRIDE,
                            mode="nearest")[..., :h, :w] > 0
        result = self.loss_fn(out, x, num_pixels=h * w, roi_mask=roi, weight_map=weight)
        result["gain_mean"] = gain.mean()
        return result
