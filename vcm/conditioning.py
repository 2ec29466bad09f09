"""What a codec's encoder is given besides the image: one conditioning kind per ``Needs`` value.

A codec (or runner) declares what its encoder needs in ``needs`` (:class:`vcm.codecs.base.Needs`);
this module is the one place that says what each value asks of the places that run an encoder:
training (:class:`vcm.modules.image_codec.ImageCodecModule`, ``vcm-train``'s detector check), the
per-image evaluation (:func:`vcm.evaluation.pipeline.evaluate_image`, ``vcm-eval``'s detector) and
``vcm-compress`` (:class:`vcm.cli.bitstream.CodecSession`). They ask :func:`conditioning` and never
branch on ``Needs``, so a new kind is a new ``Needs`` value plus a :class:`Conditioning` subclass
registered in :data:`KINDS` here::

    kind = conditioning(runner)
    cond = kind.condition(runner, x, targets, detector)   # what runner.encode(image, cond=...) takes
    kind.detector(runner)      # TRAINED, CONFIGURED or None: which detector the encoder runs
    kind.needs_labels(runner)  # whether the encoder takes the image's labelled boxes
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from types import MappingProxyType

import torch

from vcm.codecs.base import Needs
from vcm.codecs.roi_gain import ROI_BOX_SOURCES
from vcm.codecs.roi_hyperprior import box_condition
from vcm.detectors.features import frame_scale_factors

__all__ = [
    "CONFIGURED",
    "KINDS",
    "TRAINED",
    "Conditioning",
    "codec_condition",
    "conditioning",
    "detector_condition",
    "roi_boxes",
]

#: the encoder runs the detector the codec was trained with (stored in its checkpoint by config and
#: weights hash): training needs one configured, ``vcm-eval`` refuses a configured one with other
#: weights, ``vcm-compress`` rebuilds it from the checkpoint
TRAINED = "trained"
#: the encoder runs whatever detector is configured (``vcm-compress --detector``, ``vcm-eval detector=``)
CONFIGURED = "configured"


def _device(module) -> torch.device:
    return next(module.parameters()).device


class Conditioning(abc.ABC):
    """One kind of conditioning: what the encoder is given and what that asks of its callers.

    Attributes:
        needs: the ``Needs`` value this kind serves.
        image_only: the encoder is given the image alone.
        time_key: the per-image metric that times computing the condition (None: not timed).
    """

    needs: Needs
    image_only: bool = False
    time_key: str | None = None

    def detector(self, codec) -> str | None:
        """Which detector the encoder of ``codec`` runs: :data:`TRAINED`, :data:`CONFIGURED` or None."""
        return None

    def needs_labels(self, codec) -> bool:
        """Whether the encoder of ``codec`` is given the image's labelled boxes (targets with ``boxes``)."""
        return False

    @abc.abstractmethod
    def condition(self, codec, x: torch.Tensor, targets: list[dict] | None = None, detector=None,
                  name: str = "codec"):
        """What the encoder of ``codec`` is given for the images ``x`` (``encode(..., cond=)``).

        Args:
            codec: an image codec or image runner (anything with ``needs``).
            x: float [B,3,H,W] in [0,1], the unpadded images.
            targets: B target dicts with ``boxes`` (xyxy pixels of ``x``), or None.
            detector: a FrozenDetector, or None.
            name: the codec's name for error messages.

        Raises:
            ValueError: what the kind needs (targets, a detector) is missing.
        """


class ImageOnly(Conditioning):
    """``Needs.NOTHING``: the encoder is given the image alone (condition None)."""

    needs = Needs.NOTHING
    image_only = True

    def condition(self, codec, x, targets=None, detector=None, name="codec"):
        return None


class DetectorFeatures(Conditioning):
    """``Needs.DETECTOR``: the features of the frozen detector the codec was trained with
    (:func:`detector_condition`)."""

    needs = Needs.DETECTOR

    def detector(self, codec) -> str | None:
        return TRAINED

    def condition(self, codec, x, targets=None, detector=None, name="codec"):
        if detector is None:
            raise ValueError(f"codec {name} is conditioned on detector features; configure a detector")
        # training crops reach the detector at their frames' scale, as whole frames do in evaluation
        return detector_condition(detector, x.to(_device(detector)), frame_scale_factors(detector, targets))


class BoxesMap(Conditioning):
    """``Needs.BOXES``: the ROI map of the targets' ``boxes`` (:func:`vcm.codecs.roi_hyperprior.box_condition`)."""

    needs = Needs.BOXES

    def needs_labels(self, codec) -> bool:
        return True

    def condition(self, codec, x, targets=None, detector=None, name="codec"):
        if targets is None or len(targets) != x.shape[0] or any(t is None or "boxes" not in t for t in targets):
            raise ValueError(f"codec {name} (roi_source=boxes) is conditioned on the ROI boxes of each image; "
                             "give targets with 'boxes' (vcm-compress: --labels <KITTI label file>)")
        return box_condition([torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4) for t in targets],
                             x.shape[-2], x.shape[-1], device=x.device)


class RoiBoxes(Conditioning):
    """``Needs.ROI_BOXES``: the image's ROI boxes themselves, from the codec's ``roi_source``
    (:func:`roi_boxes`, with its ``score_threshold``)."""

    needs = Needs.ROI_BOXES
    time_key = "roi_s"  # the encoder's own ROI detection, when it runs the detector

    def detector(self, codec) -> str | None:
        return CONFIGURED if codec.roi_source == "detector" else None

    def needs_labels(self, codec) -> bool:
        return codec.roi_source == "labels"

    def condition(self, codec, x, targets=None, detector=None, name="codec"):
        return roi_boxes(codec.roi_source, x, targets, detector, codec.score_threshold, name)


def _register(*kinds: Conditioning) -> Mapping[Needs, Conditioning]:
    table: dict[Needs, Conditioning] = {}
    for kind in kinds:
        if kind.needs in table:
            raise ValueError(f"two conditioning kinds for {kind.needs}: {type(table[kind.needs]).__name__} and "
                             f"{type(kind).__name__}")
        table[kind.needs] = kind
    missing = [n.name for n in Needs if n not in table]
    if missing:
        raise ValueError(f"no conditioning kind for Needs.{', Needs.'.join(missing)}")
    return MappingProxyType(table)


#: the kind of every ``Needs`` value
KINDS: Mapping[Needs, Conditioning] = _register(ImageOnly(), DetectorFeatures(), BoxesMap(), RoiBoxes())


def conditioning(codec) -> Conditioning:
    """The conditioning kind of ``codec`` (a codec, a runner, or anything with ``needs``)."""
    try:
        return KINDS[Needs(codec.needs)]
    except ValueError:
        raise ValueError(f"needs={codec.needs!r}; expected one of {[n.value for n in Needs]}") from None


def codec_condition(codec, x: torch.Tensor, targets: list[dict] | None = None, detector=None, name: str | None = None):
    """What the encoder of ``codec`` is given for the images ``x``: its kind's :meth:`Conditioning.condition`.

    Args:
        codec: an image codec or image runner (anything with ``needs``).
        x: float [B,3,H,W] in [0,1], the unpadded images.
        targets: B target dicts with ``boxes`` (xyxy pixels of ``x``), for the kinds that take labels.
        detector: FrozenDetector, for the kinds that run one.
        name: the codec's name for error messages (default: the codec's ``name`` or ``codec_name``).
    """
    name = name or getattr(codec, "name", None) or getattr(codec, "codec_name", type(codec).__name__)
    return conditioning(codec).condition(codec, x, targets, detector, name)


def roi_boxes(source: str, x: torch.Tensor, targets: list[dict] | None, detector, score_threshold: float = 0.5,
              name: str = "codec") -> torch.Tensor:
    """The ROI boxes of one image, [K, 4] xyxy pixels on the CPU (``Needs.ROI_BOXES``).

    Args:
        source: ``labels`` (the target's ``boxes``: the configured classes), ``detector`` (the frozen
            detector's detections with ``score >= score_threshold``, computed at the encoder from the
            original image), or ``none`` (no box: the gain is uniform).
        x: float [1,3,H,W] in [0,1], the unpadded image.
        targets: one target dict, for ``labels``.
        detector: FrozenDetector, for ``detector``.
    """
    if source == "none":
        return torch.zeros(0, 4)
    if source == "labels":
        if not targets or targets[0] is None or "boxes" not in targets[0]:
            raise ValueError(f"codec {name} takes its ROI boxes from the labels; give targets with 'boxes' "
                             "(vcm-compress: --labels <KITTI label file>)")
        return torch.as_tensor(targets[0]["boxes"], dtype=torch.float32).reshape(-1, 4).cpu()
    if source == "detector":
        if detector is None:
            raise ValueError(f"codec {name} takes its ROI boxes from the detector; configure one (detector=kitti_mobilenet_v2)")
        dets = detector.detect(detector.features([x[0].to(_device(detector))]))[0]
        keep = dets["scores"] >= score_threshold
        return dets["boxes"][keep].detach().float().reshape(-1, 4).cpu()
    raise ValueError(f"ROI source {source!r}; expected one of {ROI_BOX_SOURCES}")


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
