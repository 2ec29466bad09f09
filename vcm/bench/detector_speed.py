"""CPU inference time of the detectors on one 1242x375 KITTI frame, side by side.

The command is ``python -m vcm.cli.bench_detector_speed`` (:mod:`vcm.cli.bench_detector_speed`).
Each detector runs its whole inference (transform, backbone + FPN, RPN, RoI heads, post-processing:
``detect(features(frame))``) in fp32 under ``torch.no_grad``; one warm-up round, then ``repeats``
rounds with the detectors interleaved so that a change of machine load hits all of them. A config
name of ``vcm/conf/detector`` is built as vcm-eval builds it (a random-weight detector where no weights
are configured: the time of a Faster R-CNN depends on its architecture and proposal counts, not on
its weights, since the test-time proposal count is fixed).
"""
from __future__ import annotations

import time

import torch
from torch import Tensor


def build(name: str, class_names: list[str]):
    """The detector of config ``vcm/conf/detector/<name>.yaml``, as vcm-eval builds it, in eval mode."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import vcm.utils.config  # noqa: F401  (resolvers)
    from vcm.utils.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"detector={name}", "data=kitti_mini"])
    cfg.detector.class_names = class_names
    return instantiate(cfg.detector).eval()


def time_detectors(detectors: dict, image: Tensor, repeats: int) -> dict[str, list[float]]:
    """Seconds of each detector's whole inference on ``image``, ``repeats`` rounds after one warm-up.

    Args:
        detectors: by name, each with ``features(images)`` and ``detect(features)``.
        image: one frame, float in [0, 1], (3, H, W).
        repeats: timed rounds; the order of the detectors alternates from round to round.

    Returns:
        ``{name: [seconds of each timed round]}``.
    """
    times: dict[str, list[float]] = {n: [] for n in detectors}
    with torch.no_grad():
        for round_ in range(repeats + 1):
            order = list(detectors) if round_ % 2 == 0 else list(reversed(detectors))
            for n in order:
                t = time.perf_counter()
                detectors[n].detect(detectors[n].features([image]))
                if round_:
                    times[n].append(time.perf_counter() - t)
    return times
