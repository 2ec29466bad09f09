"""ROI coding by a gain map on the quantiser, for every hyperprior-family codec, without training.

The latent is scaled per cell before rounding and coded at scales scaled alike::

    symbols = round((y - mu) * G),   coded with the Gaussian conditional at scales sigma * G,
    y_hat   = symbols / G + mu

with ``G = g_roi`` on the latent cells (16 x 16 pixels) that overlap an ROI box (dilated by
``dilation`` cells) and ``G = g_bg`` elsewhere: a gain above 1 quantises finer (objects sharp), below
1 coarser (background cheap). With ``G = 1`` the strings are the codec's plain ones. The boxes and
the gains travel in the container as side information (``extra`` entries ``roi`` and ``gain``: 1-2
bytes per coordinate, the gains as float16 bit patterns) and count in the rate like every byte; the
decoder rebuilds the same map from them, so it needs nothing else.

The map's arithmetic is exact (integer cell rule, float16-representable gains, IEEE products and
quotients in float64: :mod:`vcm.codecs.exact`), so encoder and decoder agree on every CPU, and the
symbols check covers the map.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vcm.data.masks import box_union_mask
from vcm.errors import BitstreamError

__all__ = ["G_MAX", "G_MIN", "MAX_BOXES", "ROI_BOX_SOURCES", "Y_STRIDE", "RoiGain", "gain_map", "half"]

#: the gains a file may carry (a gain of 0 would divide by zero; beyond 16 no codec gains anything)
G_MIN, G_MAX = 1.0 / 64, 16.0
#: at most this many boxes travel with a frame
MAX_BOXES = 1024
#: pixels per latent cell of every hyperprior-family codec (y at stride 16)
Y_STRIDE = 16
#: where an encoder takes the ROI boxes from: the frame's labels, the detector run at the encoder, or
#: none (a uniform gain); see vcm.conditioning.roi_boxes
ROI_BOX_SOURCES = ("labels", "detector", "none")


def half(value: float) -> float:
    """``value`` rounded to float16, what a file carries (and so what both sides use)."""
    return float(np.float16(value))


def _half_bits(value: float) -> int:
    return int(np.array(value, dtype=np.float16).view(np.uint16))


def _from_half_bits(bits: int) -> float:
    return float(np.array(bits, dtype=np.uint16).view(np.float16))


@dataclass(frozen=True)
class RoiGain:
    """A gain map's definition: integer ROI boxes of the original image and two gains.

    Attributes:
        boxes: ``(x1, y1, x2, y2)`` integer pixels, ``0 <= x1 < x2 <= W``, ``0 <= y1 < y2 <= H``.
        g_roi: gain on ROI cells (float16-representable).
        g_bg: gain elsewhere (float16-representable).
        dilation: ROI cells grown by this many cells in every direction.
    """

    boxes: tuple[tuple[int, int, int, int], ...]
    g_roi: float
    g_bg: float
    dilation: int = 1

    @classmethod
    def from_boxes(cls, boxes: Tensor | np.ndarray | Sequence, height: int, width: int, g_roi: float, g_bg: float,
                   dilation: int = 1) -> RoiGain:
        """From float xyxy boxes (any N): rounded outwards to whole pixels, clipped to the image; empty
        boxes dropped; gains rounded to float16.

        Raises:
            ValueError: a gain outside [G_MIN, G_MAX], a negative dilation, or more than MAX_BOXES boxes.
        """
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float64) if not isinstance(boxes, Tensor) else boxes,
                            dtype=torch.float64).reshape(-1, 4).cpu()
        out = []
        for x1, y1, x2, y2 in b.tolist():
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                raise ValueError(f"ROI box {(x1, y1, x2, y2)} is not finite")
            c = (max(math.floor(x1), 0), max(math.floor(y1), 0), min(math.ceil(x2), int(width)),
                 min(math.ceil(y2), int(height)))
            if c[2] > c[0] and c[3] > c[1]:
                out.append(c)
        gain = cls(tuple(out), half(g_roi), half(g_bg), int(dilation))
        gain.validate(height, width, ValueError)
        return gain

    def validate(self, height: int, width: int, error: type[Exception] = BitstreamError) -> None:
        """Raise ``error`` unless the boxes lie in the ``height`` x ``width`` image and the gains are in range."""
        if len(self.boxes) > MAX_BOXES:
            raise error(f"{len(self.boxes)} ROI boxes; at most {MAX_BOXES}")
        for g, what in ((self.g_roi, "g_roi"), (self.g_bg, "g_bg")):
            if not (math.isfinite(g) and G_MIN <= g <= G_MAX):
                raise error(f"{what}={g}: expected a gain in [{G_MIN}, {G_MAX}]")
        if not 0 <= self.dilation <= 8:
            raise error(f"dilation={self.dilation}: expected 0..8 cells")
        for x1, y1, x2, y2 in self.boxes:
            if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
                raise error(f"ROI box {(x1, y1, x2, y2)} is not inside the {width}x{height} image")

    # ------------------------------------------------------------------ container side information
    def to_extra(self) -> dict[str, tuple[int, ...]]:
        """The container's ``extra`` entries (integers only)."""
        return {"roi": tuple(v for box in self.boxes for v in box),
                "gain": (_half_bits(self.g_roi), _half_bits(self.g_bg), self.dilation)}

    @classmethod
    def from_extra(cls, extra: dict, height: int, width: int) -> RoiGain | None:
        """The gain of a file's ``extra`` (None when it has none), checked against the image size.

        Raises:
            BitstreamError: malformed or out-of-range entries.
        """
        if "gain" not in extra and "roi" not in extra:
            return None
        flat, gain = extra.get("roi", ()), extra.get("gain")
        if not isinstance(flat, tuple) or len(flat) % 4 or not all(isinstance(v, int) for v in flat):
            raise BitstreamError(f"vcm bitstream: extra 'roi' must be 4 integers per box, got {str(flat)[:60]}")
        if not isinstance(gain, tuple) or len(gain) != 3 or not all(isinstance(v, int) and 0 <= v < 65536 for v in gain):
            raise BitstreamError(f"vcm bitstream: extra 'gain' must be (g_roi, g_bg, dilation), got {str(gain)[:60]}")
        if len(flat) > 4 * MAX_BOXES:
            raise BitstreamError(f"vcm bitstream: {len(flat) // 4} ROI boxes; at most {MAX_BOXES}")
        roi = cls(tuple(tuple(flat[i:i + 4]) for i in range(0, len(flat), 4)), _from_half_bits(gain[0]),
                  _from_half_bits(gain[1]), gain[2])
        roi.validate(height, width, BitstreamError)
        return roi

    # ------------------------------------------------------------------ the map
    def roi_cells(self, latent_hw: Sequence[int]) -> Tensor:
        """bool [h, w]: the latent cells (``Y_STRIDE`` pixels) that overlap a box, dilated."""
        h, w = (int(v) for v in latent_hw)
        pixels = box_union_mask(torch.tensor(self.boxes, dtype=torch.float64).reshape(-1, 4), h * Y_STRIDE, w * Y_STRIDE)
        cells = F.max_pool2d(pixels[None, None].float(), Y_STRIDE)[0, 0] > 0
        if self.dilation:
            k = 2 * self.dilation + 1
            cells = F.max_pool2d(cells[None, None].float(), k, stride=1, padding=self.dilation)[0, 0] > 0
        return cells

    def map(self, latent_hw: Sequence[int]) -> Tensor:
        """float64 [1, 1, h, w] on the CPU: ``g_roi`` on ROI cells, ``g_bg`` elsewhere."""
        return gain_map(self.roi_cells(latent_hw), self.g_roi, self.g_bg)


def gain_map(roi_cells: Tensor, g_roi: float, g_bg: float) -> Tensor:
    """float64 [1, 1, h, w] from a bool [h, w] cell mask and two gains."""
    roi_cells = roi_cells.to("cpu", torch.bool)
    return torch.where(roi_cells, float(g_roi), float(g_bg)).to(torch.float64)[None, None]
