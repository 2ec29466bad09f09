"""hevc444 with ROI QP offsets on the kitti_mini test frames: rate and ROI / background quality.

    python -m vcm.cli.bench_hevc_roi                          # qp 27, 32, 37 x roi_qp_offset 0, -6, -12
    python -m vcm.cli.bench_hevc_roi --qps 32 --offsets 0 -10 --bg-offset 4 --split val

Each frame is coded by :class:`~vcm.anchors.hevc_roi.HevcRoiAnchor` with its ground-truth boxes of the
configured classes (Car, Pedestrian, Cyclist: the ROI of vcm's metrics), decoded, and measured by
:func:`vcm.evaluation.pipeline.image_quality` (PSNR, ROI-PSNR over the union of the boxes, background
PSNR outside the boxes and DontCare regions); ``bpp`` is ``8 * len(bitstream) / (H * W)``, header
included. Plain ``hevc444`` (constant QP) at each qp is printed as a reference row. Values are means
over the frames.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from vcm.anchors import HevcAnchor, HevcRoiAnchor
from vcm.data.kitti import KittiDataset, index_kitti
from vcm.data.masks import region_masks
from vcm.evaluation.pipeline import image_quality
from vcm.utils.config import CONF_DIR

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "kitti_mini"
METRICS = ("bpp", "psnr", "roi_psnr", "bg_psnr")


def measure(anchor, image: torch.Tensor, boxes: torch.Tensor | None, target: dict) -> dict[str, float]:
    """Code one uint8 [3,H,W] frame and return bpp and the quality metrics of vcm's evaluation."""
    data = anchor.encode(image) if boxes is None else anchor.encode(image, boxes)
    decoded = torch.from_numpy(anchor.decode(data)).permute(2, 0, 1)
    _, h, w = image.shape
    return {"bpp": 8.0 * len(data) / (h * w), **image_quality(image, decoded, target)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_hevc_roi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="kitti_mini root (holds training/)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"), help="kitti_mini split list")
    ap.add_argument("--qps", type=int, nargs="+", default=[27, 32, 37])
    ap.add_argument("--offsets", type=int, nargs="+", default=[0, -6, -12], help="roi_qp_offset values")
    ap.add_argument("--bg-offset", type=int, default=0, help="bg_qp_offset")
    ap.add_argument("--preset", default="medium")
    args = ap.parse_args(argv)

    ids = (CONF_DIR / "data" / "splits" / "kitti_mini" / f"{args.split}.txt").read_text().split()
    frames = {f.frame_id: f for f in index_kitti(args.root)}
    missing = [i for i in ids if i not in frames]
    if missing:
        ap.error(f"{args.root} lacks frames {missing[:5]} of the kitti_mini {args.split} split")
    data = [KittiDataset([frames[i]])[0] for i in ids]
    n_boxes = sum(len(t["boxes"]) for _, t in data)
    roi_share = [float(region_masks(t, *im.shape[-2:])[0].float().mean()) for im, t in data]
    with_roi = sum(r > 0 for r in roi_share)
    print(f"kitti_mini {args.split}: {len(data)} frames ({with_roi} with ROI), {n_boxes} ROI boxes, ROI "
          f"{100 * np.mean(roi_share):.1f} % of the pixels; bg_qp_offset {args.bg_offset}, preset {args.preset}; "
          "means over frames (ROI-PSNR over the frames with ROI)\n")
    print("| codec | qp | roi_qp_offset | bpp | PSNR (dB) | ROI-PSNR (dB) | background PSNR (dB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for qp in args.qps:
        rows = [("hevc444", "", HevcAnchor(qp=qp, chroma="444", preset=args.preset), False)]
        rows += [("hevc444_roi", off, HevcRoiAnchor(qp=qp, roi_qp_offset=off, bg_qp_offset=args.bg_offset,
                                                    preset=args.preset), True) for off in args.offsets]
        for name, off, anchor, with_boxes in rows:
            per = [measure(anchor, im, t["boxes"] if with_boxes else None, t) for im, t in data]
            mean = {k: float(np.nanmean([p[k] for p in per])) for k in METRICS}
            print(f"| {name} | {qp} | {off} | {mean['bpp']:.4f} | {mean['psnr']:.2f} | {mean['roi_psnr']:.2f} | "
                  f"{mean['bg_psnr']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
