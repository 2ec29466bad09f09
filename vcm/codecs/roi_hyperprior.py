"""ROI-aware scale hyperprior: an image codec whose encoder sees the features of a frozen detector."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models import CompressionModel
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from vcm.codecs.base import CodecContract, FineScaleTable, Needs
from vcm.codecs.exact import (
    LatentAnalysis,
    code_analysis,
    decode_gaussian,
    exact_forward,
)
from vcm.data.masks import boxes_to_mask, cell_coverage

__all__ = ["ROI_SOURCES", "RoiHyperprior", "RoiMap", "box_condition"]

# Detector levels the encoder uses and their strides (torchvision FPN: P3, P4, P5).
LEVELS: tuple[str, ...] = ("p3", "p4", "p5")
LEVEL_STRIDES: dict[str, int] = {"p3": 8, "p4": 16, "p5": 32}
#: What the encoder is conditioned on: the frozen detector's FPN levels, or a map of given ROI boxes.
ROI_SOURCES: tuple[str, ...] = ("detector", "boxes")


@dataclass(frozen=True)
class RoiMap:
    """An ROI map in the form the encoder takes detector features: one channel per level.

    ``levels[k]`` [B, 1, ceil(H / s_k), ceil(W / s_k)] is the share of each ``s_k x s_k`` cell of the
    image covered by a box (s = 8, 16, 32 for p3, p4, p5); ``image_sizes`` = ``original_sizes`` = (H, W)
    per image (no resize), so the codec aligns it with its input as it does a detector's output.
    """

    levels: dict[str, Tensor]
    image_sizes: tuple[tuple[int, int], ...]
    original_sizes: tuple[tuple[int, int], ...]


def box_condition(boxes_list: Sequence[Tensor], height: int, width: int, device: torch.device | str | None = None) -> RoiMap:
    """The ROI map of ``roi_source="boxes"``: the union of each image's boxes, pooled to P3..P5.

    Args:
        boxes_list: B tensors [K_i, 4] of xyxy pixel boxes (K_i may be 0), e.g. the ground-truth
            boxes of the configured classes (the ROI of the ROI-weighted loss), or an external
            tracker's boxes.
        height, width: size of the (unpadded) images.
        device: device of the maps (default: that of the boxes).
    """
    levels = cell_coverage(boxes_to_mask(boxes_list, height, width, device=device), LEVEL_STRIDES)
    sizes = tuple((int(height), int(width)) for _ in boxes_list)
    return RoiMap(levels, sizes, sizes)


@dataclass(frozen=True)
class _Geometry:
    """Where each image's content lies in the detector's (resized, batch-padded) feature maps."""

    image_sizes: tuple[tuple[int, int], ...]  # per image, (h, w) after the detector's resize
    original_sizes: tuple[tuple[int, int], ...]  # per image, (H, W) of the image the detector saw


def _hyper_analysis(in_channels: int, N: int) -> nn.Sequential:
    """Ballé et al.'s hyper-analysis: 3x3 conv, then two strided 5x5 convs (stride 4 overall)."""
    return nn.Sequential(
        conv(in_channels, N, stride=1, kernel_size=3),
        nn.ReLU(inplace=True),
        conv(N, N),
        nn.ReLU(inplace=True),
        conv(N, N),
    )


def _hyper_synthesis(N: int, M: int) -> nn.Sequential:
    """Ballé et al.'s hyper-synthesis, ending in non-negative scales for M channels."""
    return nn.Sequential(
        deconv(N, N),
        nn.ReLU(inplace=True),
        deconv(N, N),
        nn.ReLU(inplace=True),
        conv(N, M, stride=1, kernel_size=3),
        nn.ReLU(inplace=True),
    )


class RoiHyperprior(CodecContract, FineScaleTable, CompressionModel):
    r"""Scale hyperprior (Ballé et al. 2018, "Variational image compression with a scale hyperprior",
    ICLR) whose encoder is conditioned on a frozen detector's FPN features P3, P4, P5.

    Two changes to the scale hyperprior, both on the encoder side only:

    * ``g_a`` is built stage by stage (conv 5x5 stride 2 + GDN); the detector's stride-8 features (P3)
      join after the first downsampling, stride-16 (P4) after the second and stride-32 (P5) after the
      third. Each level is projected by a 1x1 conv (``proj_p3``, ``proj_p4``, ``proj_p5``:
      256 -> ``cond_channels``), resampled bilinearly to that stage's resolution and concatenated along
      channels, so the next conv takes ``N + cond_channels`` inputs.
    * A second, "object" hyperprior: P3, P4 and P5 are all resampled to the latent resolution (stride
      16) and projected together by ``proj_obj`` (1x1 conv, 3*256 -> ``cond_channels``); all three are
      used so that small (P3) and large (P5) objects both reach it. They are concatenated with ``|y|``
      and analysed by ``h_a_obj`` into a second side latent ``w`` with its own entropy bottleneck.
      The Gaussian scales of ``y`` come from both hyper-decoders: ``h_s(z_hat)`` and
      ``h_s_obj(w_hat)`` (M channels each) are concatenated and fused by ``h_s_fuse`` (1x1 conv
      2M -> M, then softplus, so the scales are positive and no channel dies as after a ReLU; or a
      ReLU, as the scale hyperprior's own ``h_s``, to start exactly from a trained one).

    A new model starts close to the scale hyperprior: the projections are zero and ``h_s_fuse`` is
    the identity on ``h_s(z_hat)`` plus a small contribution of ``h_s_obj(w_hat)``, which is also
    what lets it start from a trained hyperprior (``init_from``).

    Each detector level is first standardised per image (zero mean, unit variance over its channels
    and positions, no learned parameters; ``feature_norm="standardize"``), so what the encoder sees
    does not depend on the detector's activation scale (a trained ResNet-18 FPN's levels have
    standard deviations of 3.5-5, far above the codec's own activations), then scaled by
    1/sqrt(channels) so that the first optimiser steps on the projections do not move the encoder
    far from where it started. The projections also start at zero (weights and
    biases): a new model's encoder ignores the detector and learns how much of its features to let in.

    .. code-block:: none

                          P3                P4                P5   detector, encoder side only
                          │ proj_p3         │ proj_p4         │ proj_p5
                          ▼                 ▼                 ▼
        x ─► conv↓2,GDN ─cat─► conv↓2,GDN ─cat─► conv↓2,GDN ─cat─► conv↓2 ─► y           (g_a)
                                                                             │
        P3,P4,P5 ─► resize to y ─► proj_obj ─► f_obj                         │
                                                 │                           │
            ┌──────────────── |y| ───────────────┼───────────────────────────┤
            ▼                                    ▼                           │
           h_a ─► z ─► Q,EB ─► z_hat ─► h_s   cat(|y|, f_obj) ─► h_a_obj ─► w│
                                         │                                │  │
                 w_hat ◄── Q,EB_obj ◄────┼────────────────────────────────┘  │
                   │                     │                                   │
                h_s_obj ─────────► h_s_fuse ─► scales ─► Q,GC ◄──────────────┘
                                                           │ y_hat
                                                          g_s ─► x_hat

        EB = entropy bottleneck, GC = Gaussian conditional

    Detector features (``cond``): a mapping with keys ``"p3"``, ``"p4"``, ``"p5"`` (others ignored) of
    tensors [B, 256, h, w] of any size, or an object with such a mapping in ``.levels`` (e.g.
    :class:`vcm.detectors.DetectorFeatures`). A plain mapping is assumed to cover the same field of
    view as ``x`` (the padded input) and is resized to each stage with ``F.interpolate``; features of
    the unpadded image would be stretched over the padding. When the object also has ``image_sizes``
    and ``original_sizes`` (a detector that resizes and batch-pads its input), each image is
    resampled from the part of the map its content occupies, with the content at the top-left of
    ``x`` as :func:`vcm.codecs.base.pad_image` leaves it; rows and columns beyond the content (the
    codec's own padding) repeat the border, as the image padding does. So pass the detector's output
    for the unpadded image as it is.

    Args:
        N: channels of the transforms and of ``z`` and ``w``.
        M: channels of ``y``.
        cond_channels: channels each detector level is projected to.
        feature_channels: channels of the detector levels (default 256, torchvision's FPNs; 1 with
            ``roi_source="boxes"``).
        zero_features: ablation: every detector feature is replaced by zeros (same architecture, and
            ``cond`` is then not needed).
        feature_norm: ``"standardize"`` (per image and level, see above) or ``"none"`` (raw levels).
            Applies to detector features only: with ``roi_source="boxes"`` the ROI map always reaches
            the encoder as it is (the share of each cell covered by ROI, in [0, 1]).
        roi_source: ``"detector"`` (the frozen detector's P3..P5) or ``"boxes"``: the encoder is given
            the ROI boxes themselves as a one-channel map per level (:func:`box_condition`), in the
            same places — an encoder that knows exactly where the objects are (ground truth in
            training and evaluation, or an external tracker's boxes at ``vcm-compress --labels``). It
            bounds what any detector's features can give the same codec. The decoder needs neither.
        scale_activation: the activation after ``h_s_fuse``: ``"softplus"`` (no scale channel can
            die) or ``"relu"``, the scale hyperprior's own: with it a model warm-started from a trained
            hyperprior gives that hyperprior's scales from the first step (softplus lifts every scale
            the hyperprior sets to 0 to 0.69, several times its rate for y at first), which is what a
            fine-tune of a few hundred steps needs (``experiment=roi_kitti``).
    """

    codec_name = "roi_hyperprior"
    min_div = 64

    def __init__(
        self,
        N: int = 128,
        M: int = 192,
        cond_channels: int = 64,
        feature_channels: int | None = None,
        zero_features: bool = False,
        feature_norm: str = "standardize",
        roi_source: str = "detector",
        scale_activation: str = "softplus",
    ):
        super().__init__()
        activations = {"softplus": nn.Softplus, "relu": nn.ReLU}
        if scale_activation not in activations:
            raise ValueError(f"RoiHyperprior: scale_activation={scale_activation!r}; expected one of {list(activations)}")
        if feature_norm not in ("standardize", "none"):
            raise ValueError(f"RoiHyperprior: feature_norm={feature_norm!r}; expected 'standardize' or 'none'")
        if roi_source not in ROI_SOURCES:
            raise ValueError(f"RoiHyperprior: roi_source={roi_source!r}; expected one of {list(ROI_SOURCES)}")
        if feature_channels is None:
            feature_channels = 1 if roi_source == "boxes" else 256
        if roi_source == "boxes" and int(feature_channels) != 1:
            raise ValueError(f"RoiHyperprior: roi_source='boxes' gives 1 channel per level, got feature_channels={feature_channels}")
        self.feature_norm = feature_norm
        self.roi_source = roi_source
        for name, value in (("N", N), ("M", M), ("cond_channels", cond_channels), ("feature_channels", feature_channels)):
            if int(value) < 1:
                raise ValueError(f"RoiHyperprior: {name} must be positive, got {value}")
        N, M, C, Fc = int(N), int(M), int(cond_channels), int(feature_channels)
        self.N, self.M, self.cond_channels, self.feature_channels = N, M, C, Fc
        self.zero_features = bool(zero_features)

        self.g_a = nn.ModuleList(
            [
                nn.Sequential(conv(3, N), GDN(N)),
                nn.Sequential(conv(N + C, N), GDN(N)),
                nn.Sequential(conv(N + C, N), GDN(N)),
                conv(N + C, M),
            ]
        )
        self.proj_p3 = nn.Conv2d(Fc, C, kernel_size=1)
        self.proj_p4 = nn.Conv2d(Fc, C, kernel_size=1)
        self.proj_p5 = nn.Conv2d(Fc, C, kernel_size=1)
        self.proj_obj = nn.Conv2d(len(LEVELS) * Fc, C, kernel_size=1)

        self.g_s = nn.Sequential(
            deconv(M, N),
            GDN(N, inverse=True),
            deconv(N, N),
            GDN(N, inverse=True),
            deconv(N, N),
            GDN(N, inverse=True),
            deconv(N, 3),
        )
        # Both hyperpriors use the scale hyperprior's transforms; the object one also sees C
        # channels of projected detector features.
        self.h_a = _hyper_analysis(M, N)
        self.h_s = _hyper_synthesis(N, M)
        self.h_a_obj = _hyper_analysis(M + C, N)
        self.h_s_obj = _hyper_synthesis(N, M)
        self.h_s_fuse = nn.Sequential(nn.Conv2d(2 * M, M, kernel_size=1), activations[scale_activation]())

        self.entropy_bottleneck = EntropyBottleneck(N)
        self.entropy_bottleneck_obj = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        for proj in (self.proj_p3, self.proj_p4, self.proj_p5, self.proj_obj):
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
        # The fusion starts close to the scale hyperprior's scales: identity on h_s(z_hat), a tenth of
        # its default initialisation on h_s_obj(w_hat) (small, but every part gets a gradient).
        fuse: nn.Conv2d = self.h_s_fuse[0]
        with torch.no_grad():
            fuse.weight[:, M:].mul_(0.1)
            fuse.weight[:, :M].copy_(torch.eye(M).view(M, M, 1, 1))
            fuse.bias.zero_()

    @staticmethod
    def pretrained_key(name: str) -> str:
        """Map a scale-hyperprior parameter name onto this model's (``g_a`` is built stage by stage
        here), so :func:`vcm.codecs.base.warm_start` can start it from a trained hyperprior."""
        parts = name.split(".")
        if parts[0] == "g_a" and len(parts) > 2 and parts[1].isdigit() and not parts[2].isdigit():
            i = int(parts[1])  # hyperprior g_a: conv, GDN, conv, GDN, conv, GDN, conv
            stage, sub = divmod(i, 2)
            return ".".join(["g_a", "3"] + parts[2:]) if i == 6 else ".".join(["g_a", str(stage), str(sub)] + parts[2:])
        return name

    @staticmethod
    def pretrained_alias(name: str) -> str | None:
        """The object hyperprior starts from a trained hyperprior's own side path (``h_a_obj`` on
        its leading ``|y|`` channels, ``h_s_obj`` and ``entropy_bottleneck_obj``): with the
        projections at zero, ``w`` then starts as a copy of ``z`` and costs what ``z`` costs, instead
        of ~4 bits per element under an untrained entropy bottleneck (~0.15 bpp, more than the
        hyperprior's whole rate at quality 1, for a few hundred fine-tuning steps)."""
        for own, theirs in (("h_a_obj.", "h_a."), ("h_s_obj.", "h_s."), ("entropy_bottleneck_obj.", "entropy_bottleneck.")):
            if name.startswith(own):
                return theirs + name[len(own):]
        return None

    @property
    def needs(self) -> Needs:
        """The detector's features (``roi_source=detector``), an ROI map of boxes (``boxes``,
        :func:`box_condition`), or nothing (the zero-features ablation)."""
        if self.zero_features:
            return Needs.NOTHING
        return Needs.BOXES if self.roi_source == "boxes" else Needs.DETECTOR

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (4 + 2)

    # ------------------------------------------------------------------ detector features
    def _features(self, cond: Any, x: Tensor) -> tuple[dict[str, Tensor] | None, _Geometry | None]:
        """Check ``cond`` and return its levels P3..P5 (None for the zero-features ablation)."""
        if self.zero_features:
            return None, None
        if cond is None:
            if self.roi_source == "boxes":
                raise ValueError("RoiHyperprior(roi_source='boxes') needs the ROI map: pass cond=box_condition(boxes, H, W)")
            raise ValueError(
                "RoiHyperprior needs detector features: pass cond = a dict with 'p3', 'p4', 'p5' "
                "[B, 256, h, w] or DetectorFeatures (or build it with zero_features=True)"
            )
        levels = getattr(cond, "levels", cond)
        if not isinstance(levels, Mapping):
            raise ValueError(  # noqa: TRY004 (vcm reports bad input as ValueError)
                f"RoiHyperprior: cond must be a mapping of levels or have a .levels mapping, got {type(cond).__name__}"
            )
        batch = x.shape[0]
        feats: dict[str, Tensor] = {}
        for key in LEVELS:
            if key not in levels:
                raise ValueError(f"RoiHyperprior: cond has no level {key!r} (has {sorted(levels)}); needs {list(LEVELS)}")
            f = levels[key]
            if not isinstance(f, Tensor) or f.dim() != 4 or f.shape[0] != batch or f.shape[1] != self.feature_channels:
                shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise ValueError(
                    f"RoiHyperprior: cond[{key!r}] must be [B={batch}, {self.feature_channels}, h, w], got {shape}"
                )
            feats[key] = f.to(device=x.device, dtype=x.dtype)
        geometry = None
        image_sizes = getattr(cond, "image_sizes", None)
        original_sizes = getattr(cond, "original_sizes", None)
        if image_sizes is not None and original_sizes is not None:
            if len(image_sizes) != batch or len(original_sizes) != batch:
                raise ValueError(
                    f"RoiHyperprior: cond describes {len(image_sizes)} images, the input batch has {batch}"
                )
            geometry = _Geometry(
                tuple((int(h), int(w)) for h, w in image_sizes),
                tuple((int(h), int(w)) for h, w in original_sizes),
            )
        if self.feature_norm == "standardize" and self.roi_source == "detector":
            # An ROI map is given as it is: its values (the ROI share of each cell, in [0, 1]) are the
            # information; standardised per image, no ROI and all ROI would both become zeros.
            # Detector levels: unit variance, then 1/sqrt(channels): each projection's output starts near zero and
            # grows at the pace of the codec's own layers (Adam moves every weight by ~lr per step,
            # so a 1x1 conv over 256 unit-variance channels would otherwise move 16x faster)
            scale = self.feature_channels ** -0.5
            feats = {k: self._standardize(f, k, geometry) * scale for k, f in feats.items()}
        return feats, geometry

    @staticmethod
    def _standardize(f: Tensor, level: str, geometry: _Geometry | None, eps: float = 1e-5) -> Tensor:
        """Zero mean, unit variance per image over channels and positions.

        With ``geometry``, the statistics come from each image's content only (not the detector's
        batch padding); the whole map is normalised with them.
        """
        if geometry is None:
            return F.group_norm(f, 1, eps=eps)
        stride = LEVEL_STRIDES[level]
        out = []
        for i, (det_h, det_w) in enumerate(geometry.image_sizes):
            h = max(1, min(f.shape[-2], -(-det_h // stride)))
            w = max(1, min(f.shape[-1], -(-det_w // stride)))
            content = f[i, :, :h, :w]
            var, mean = torch.var_mean(content, unbiased=False)
            out.append((f[i] - mean) * torch.rsqrt(var + eps))
        return torch.stack(out)

    @staticmethod
    def _resample(f: Tensor, level: str, size: Sequence[int], x_hw: Sequence[int], geometry: _Geometry | None) -> Tensor:
        """Resample a level map [B, C, h, w] to ``size`` = a stage of the codec on an input of size ``x_hw``."""
        if geometry is None:
            if tuple(f.shape[-2:]) == tuple(size):
                return f
            return F.interpolate(f, size=tuple(size), mode="bilinear", align_corners=False)
        stride = LEVEL_STRIDES[level]
        out_h, out_w = int(size[0]), int(size[1])
        lev_h, lev_w = f.shape[-2:]
        step_h, step_w = x_hw[0] / out_h, x_hw[1] / out_w
        grids = []
        for (det_h, det_w), (orig_h, orig_w) in zip(geometry.image_sizes, geometry.original_sizes):
            # stage pixel centre (in input pixels) -> detector pixels -> level pixels (centres at j + 0.5)
            rows = (torch.arange(out_h, device=f.device, dtype=f.dtype) + 0.5) * (step_h * det_h / orig_h / stride)
            cols = (torch.arange(out_w, device=f.device, dtype=f.dtype) + 0.5) * (step_w * det_w / orig_w / stride)
            # stay inside the image's content, never in the detector's batch padding
            rows = rows.clamp(0.5, max(0.5, min(det_h / stride, lev_h) - 0.5))
            cols = cols.clamp(0.5, max(0.5, min(det_w / stride, lev_w) - 0.5))
            gy = (2 * rows / lev_h - 1)[:, None].expand(out_h, out_w)
            gx = (2 * cols / lev_w - 1)[None, :].expand(out_h, out_w)
            grids.append(torch.stack([gx, gy], dim=-1))
        grid = torch.stack(grids, dim=0)
        return F.grid_sample(f, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _stage_condition(
        self, level: str, feats: dict[str, Tensor] | None, geometry: _Geometry | None, h: Tensor, x: Tensor
    ) -> Tensor:
        proj: nn.Conv2d = getattr(self, f"proj_{level}")
        if feats is None:
            # zeros through the 1x1 conv give its bias everywhere: compute once, broadcast
            zeros = x.new_zeros(h.shape[0], self.feature_channels, 1, 1)
            return proj(zeros).expand(-1, -1, *h.shape[-2:])
        # the 1x1 projection commutes with bilinear resampling (weights sum to 1): project first, cheaper
        return self._resample(proj(feats[level]), level, h.shape[-2:], x.shape[-2:], geometry)

    def _analysis(self, x: Tensor, feats: dict[str, Tensor] | None, geometry: _Geometry | None) -> Tensor:
        h = self.g_a[0](x)
        for stage, level in zip(self.g_a[1:], LEVELS):
            c = self._stage_condition(level, feats, geometry, h, x)
            h = stage(torch.cat([h, c], dim=1))
        return h

    def _object_features(
        self, feats: dict[str, Tensor] | None, geometry: _Geometry | None, y: Tensor, x: Tensor
    ) -> Tensor:
        if feats is None:
            zeros = x.new_zeros(y.shape[0], len(LEVELS) * self.feature_channels, 1, 1)
            return self.proj_obj(zeros).expand(-1, -1, *y.shape[-2:])
        resized = [self._resample(feats[k], k, y.shape[-2:], x.shape[-2:], geometry) for k in LEVELS]
        return self.proj_obj(torch.cat(resized, dim=1))

    def _scales(self, z_hat: Tensor, w_hat: Tensor) -> Tensor:
        return self.h_s_fuse(torch.cat([self.h_s(z_hat), self.h_s_obj(w_hat)], dim=1))

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"RoiHyperprior expects images [B, 3, H, W], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.min_div or w % self.min_div:
            raise ValueError(
                f"RoiHyperprior: input {h}x{w} is not a multiple of {self.min_div}; pad it with vcm.codecs.base.pad_image"
            )

    # ------------------------------------------------------------------ CompressAI contract
    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Load weights, resizing the entropy models' CDF buffers first.

        CompressAI's ``CompressionModel.load_state_dict`` remaps legacy keys by name prefix, which
        breaks on ``entropy_bottleneck_obj`` (it starts with ``entropy_bottleneck``); the buffers are
        resized here the same way, without the legacy remapping.
        """
        from compressai.models.utils import update_registered_buffers

        for name, module in self.named_modules():
            if isinstance(module, EntropyBottleneck):
                update_registered_buffers(module, name, ["_quantized_cdf", "_offset", "_cdf_length"], state_dict)
            elif isinstance(module, GaussianConditional):
                update_registered_buffers(module, name, ["_quantized_cdf", "_offset", "_cdf_length", "scale_table"],
                                          state_dict)
        return nn.Module.load_state_dict(self, state_dict, strict=strict, **kwargs)

    def forward(self, x: Tensor, cond: Any = None) -> dict:
        """Code ``x`` with quantisation noise (training) or rounding (eval).

        Args:
            x: images [B, 3, H, W] in [0, 1], H and W multiples of 64.
            cond: detector features (see the class docstring); ignored with ``zero_features``.

        Returns:
            ``{"x_hat": [B, 3, H, W], "likelihoods": {"y": [B, M, H/16, W/16], "z": [B, N, H/64, W/64],
            "w": [B, N, H/64, W/64]}}``.
        """
        self._check_input(x)
        feats, geometry = self._features(cond, x)
        y = self._analysis(x, feats, geometry)
        f_obj = self._object_features(feats, geometry, y, x)
        y_abs = torch.abs(y)
        z = self.h_a(y_abs)
        w = self.h_a_obj(torch.cat([y_abs, f_obj], dim=1))
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        w_hat, w_likelihoods = self.entropy_bottleneck_obj(w)
        y_hat, y_likelihoods = self.gaussian_conditional(y, self._scales(z_hat, w_hat))
        x_hat = self.g_s(y_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods, "w": w_likelihoods}}

    @torch.no_grad()
    def compress(self, x: Tensor, cond: Any = None, gain: Tensor | None = None) -> dict:
        """Entropy-code ``x`` (needs ``update()`` first).

        Args:
            x: images [B, 3, H, W] in [0, 1], H and W multiples of 64.
            cond: detector features or the ROI map (see the class docstring).
            gain: a gain map [1, 1, H/16, W/16] on the quantiser (:mod:`vcm.codecs.roi_gain`), or None.

        Returns:
            ``{"strings": [y_strings, z_strings, w_strings], "shape": (z_h, z_w, w_h, w_w), "check": CRC32}``,
            each group a list of B byte strings; the scales are computed exactly (:mod:`vcm.codecs.exact`).
        """
        return code_analysis(self.gaussian_conditional, self.analyse(x, cond), gain)

    @torch.no_grad()
    def analyse(self, x: Tensor, cond: Any = None) -> LatentAnalysis:
        """Everything :meth:`compress` computes before coding ``y``: z and w coded, the exact scales."""
        self._check_input(x)
        feats, geometry = self._features(cond, x)
        y = self._analysis(x, feats, geometry)
        f_obj = self._object_features(feats, geometry, y, x)
        y_abs = torch.abs(y)
        z = self.h_a(y_abs)
        w = self.h_a_obj(torch.cat([y_abs, f_obj], dim=1))
        # the scales are computed from the decoded side latents, exactly as the decoder will
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        w_strings = self.entropy_bottleneck_obj.compress(w)
        w_hat = self.entropy_bottleneck_obj.decompress(w_strings, w.shape[-2:])
        shape = (*(int(s) for s in z.shape[-2:]), *(int(s) for s in w.shape[-2:]))
        return LatentAnalysis(y, self._scales_exact(z_hat, w_hat), None, [z_strings, w_strings], [z_hat, w_hat], shape)

    def _side_latents(self, strings: list[list[bytes]], shape: Sequence[int]) -> tuple[Tensor, Tensor]:
        if not isinstance(strings, (list, tuple)) or len(strings) != 3:
            raise ValueError(f"RoiHyperprior.decompress expects 3 string groups (y, z, w), got {len(strings)}")
        if len(shape) != 4:
            raise ValueError(f"RoiHyperprior.decompress expects shape (z_h, z_w, w_h, w_w), got {tuple(shape)}")
        z_hat = self.entropy_bottleneck.decompress(list(strings[1]), (int(shape[0]), int(shape[1])))
        w_hat = self.entropy_bottleneck_obj.decompress(list(strings[2]), (int(shape[2]), int(shape[3])))
        return z_hat, w_hat

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The ``shape`` :meth:`compress` writes for an input of ``height`` x ``width`` (multiples of 64)."""
        return (height // 64, width // 64, height // 64, width // 64)

    def _scales_exact(self, z_hat: Tensor, w_hat: Tensor) -> Tensor:
        """:meth:`_scales` with the same bits on every CPU (:mod:`vcm.codecs.exact`)."""
        both = torch.cat([exact_forward(self.h_s, z_hat, "h_s"), exact_forward(self.h_s_obj, w_hat, "h_s_obj")], dim=1)
        return exact_forward(self.h_s_fuse, both, "h_s_fuse")

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], shape: Sequence[int], check: int | None = None,
                   gain: Tensor | None = None) -> dict:
        """Decode without any detector.

        Args:
            strings: ``[y_strings, z_strings, w_strings]`` as returned by :meth:`compress`.
            shape: ``(z_h, z_w, w_h, w_w)``.
            check: the encoder's :func:`~vcm.codecs.exact.symbols_check`, verified when given.
            gain: the gain map the file was coded with, or None.

        Returns:
            ``{"x_hat": [B, 3, H, W]}`` clamped to [0, 1].
        """
        z_hat, w_hat = self._side_latents(strings, shape)
        y_hat = decode_gaussian(self.gaussian_conditional, strings[0], self._scales_exact(z_hat, w_hat), check=check,
                                side=[z_hat, w_hat], device=z_hat.device, gain=gain)
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}

    @torch.no_grad()
    def decompress_float(self, strings: list[list[bytes]], shape: Sequence[int]) -> dict:
        """Decoding with float scales, as format-1 files were written."""
        z_hat, w_hat = self._side_latents(strings, shape)
        indexes = self.gaussian_conditional.build_indexes(self._scales(z_hat, w_hat))
        y_hat = self.gaussian_conditional.decompress(list(strings[0]), indexes, z_hat.dtype)
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}
