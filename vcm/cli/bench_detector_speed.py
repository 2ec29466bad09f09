"""CPU inference time of the detectors on one KITTI frame, side by side (:mod:`vcm.bench.detector_speed`).

    python -m vcm.cli.bench_detector_speed [--detectors kitti_mobilenet_v2 resnet18_fpn] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from vcm.bench.detector_speed import build, time_detectors


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vcm.cli.bench_detector_speed``; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_detector_speed", description=__doc__.split("\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["kitti_mobilenet_v2", "resnet18_fpn"])
    ap.add_argument("--frame", type=Path, default=Path("../shared/data/kitti_mini/training/image_2/000001.png"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args(argv)
    from vcm.data.kitti import load_image

    torch.set_num_threads(a.threads)
    image = load_image(a.frame).float() / 255.0
    detectors = {n: build(n, ["Car", "Pedestrian", "Cyclist"]) for n in a.detectors}
    times = time_detectors(detectors, image, a.repeats)
    h, w = image.shape[-2:]
    print(f"{w}x{h} frame {a.frame.name}, {a.threads} thread(s), median of {a.repeats} (min-max):")
    first = statistics.median(times[a.detectors[0]])
    for n, v in times.items():
        params = sum(p.numel() for p in detectors[n].parameters()) / 1e6
        print(f"  {n:22s} {statistics.median(v):.3f} s ({min(v):.3f}-{max(v):.3f}), {params:.1f} M parameters, "
              f"{statistics.median(v) / first:.2f}x the first")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
