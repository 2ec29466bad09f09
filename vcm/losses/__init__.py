"""Training losses: rate-distortion objectives of the image codecs."""
from vcm.losses.image import RateDistortionLoss, RoiRateDistortionLoss, boxes_to_mask

__all__ = ["RateDistortionLoss", "RoiRateDistortionLoss", "boxes_to_mask"]
