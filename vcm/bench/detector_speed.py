"""CPU inference time of the detectors on one 1242x375 KITTI frame, side by side.

    python -m vcm.bench.detector_speed [--detectors kitti_mobilenet_v2 resnet18_fpn] [--repeats 5]

Each detector runs its whole inference (transform, backbone + FPN, RPN, RoI heads, post-processing:
``detect(features(frame))``) in fp32 under ``torch.no_grad``; one warm-up round, then ``--repeats``
rounds with the detectors interleaved so that a change of machine load hits all of them. A config
name of ``vcm/conf/detector`` is built as vcm-eval builds it (a random-weight detector where no weights
are configured: the time of a Faster R-CNN depends on its architecture and proposal counts, not on
its weights, since the test-time proposal count is fixed).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def build(name: str, class_names: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import vcm.utils.config  # noqa: F401  (resolvers)
    from vcm.utils.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"detector={name}", "data=kitti_mini"])
    cfg.detector.class_names = class_names
    return instantiate(cfg.detector).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcm.bench.detector_speed", description=__doc__.split("\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["kitti_mobilenet_v2", "resnet18_fpn"])
    ap.add_argument("--frame", type=Path, default=Path("../shared/data/kitti_mini/training/image_2/000001.png"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args(argv)
    from vcm.data.kitti import load_image

    torch.set_num_threads(a.threads)
    image = load_image(a.frame).float() / 255.0
    detectors = {n: build(n, ["Car", "Pedestrian", "Cyclist"]) for n in a.detectors}
    times: dict[str, list[float]] = {n: [] for n in detectors}
    with torch.no_grad():
        for round_ in range(a.repeats + 1):
            order = list(detectors) if round_ % 2 == 0 else list(reversed(detectors))
            for n in order:
                t = time.perf_counter()
                detectors[n].detect(detectors[n].features([image]))
                if round_:
                    times[n].append(time.perf_counter() - t)
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
