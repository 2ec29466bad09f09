"""Frozen object detectors: multi-scale features for codecs, detections and differentiable losses."""
from vcm.detectors.checkpoints import load_detector_state, save_detector
from vcm.detectors.faster_rcnn import BACKBONE_NAMES, build_faster_rcnn
from vcm.detectors.features import LEVEL_NAMES, DetectorFeatures
from vcm.detectors.frozen import FrozenDetector
from vcm.detectors.weights import WeightsUnavailableError

__all__ = [
    "BACKBONE_NAMES",
    "LEVEL_NAMES",
    "DetectorFeatures",
    "FrozenDetector",
    "WeightsUnavailableError",
    "build_faster_rcnn",
    "load_detector_state",
    "save_detector",
]
