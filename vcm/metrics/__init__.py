"""Evaluation metrics: KITTI 2D AP (devkit-exact), COCO mAP (pycocotools), image quality."""
from vcm.metrics.coco import CocoMAP, class_key, save_coco_json, targets_to_coco
from vcm.metrics.image import (
    MS_SSIM_MIN_SIZE,
    masked_psnr,
    ms_ssim,
    psnr,
    roi_mask_from_boxes,
    to_uint8_range,
)
from vcm.metrics.kitti import (
    DIFFICULTIES,
    KITTI_CLASSES,
    KITTI_MIN_OVERLAP,
    KittiAP,
    eval_kitti_2d,
)

__all__ = [
    "DIFFICULTIES",
    "KITTI_CLASSES",
    "KITTI_MIN_OVERLAP",
    "MS_SSIM_MIN_SIZE",
    "CocoMAP",
    "KittiAP",
    "class_key",
    "eval_kitti_2d",
    "masked_psnr",
    "ms_ssim",
    "psnr",
    "roi_mask_from_boxes",
    "save_coco_json",
    "targets_to_coco",
    "to_uint8_range",
]
