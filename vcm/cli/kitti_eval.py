"""``vcm-kitti-eval``: the KITTI devkit's 2D evaluation of any folder of KITTI results files.

    vcm-kitti-eval data/kitti/training/label_2 my_detector/results/
    vcm-kitti-eval label_2/ <vcm-eval run dir>/detections --only-result-frames --classes Car
    vcm-kitti-eval label_2/ results/ --json > ap.json

Prints AP|R40 and AP|R11 at easy / moderate / hard in percent, as the devkit prints them; with
``--json``, the same numbers (percent) as JSON. Exit status 0 on success, 2 on a user or input
error (bad usage, or a bad label or results file: the message names the file and line), as every vcm
command.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from vcm.metrics.kitti import DIFFICULTIES, KITTI_CLASSES
from vcm.metrics.kitti_folder import evaluate_kitti_folder, format_kitti_table

PROG = "vcm-kitti-eval"
#: exit status of a user or input error, as every vcm command
USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].strip("`"))
    parser.add_argument("label_dir", type=Path, help="ground truth: folder of <frame>.txt in KITTI label_2 format")
    parser.add_argument("results_dir", type=Path,
                        help="detections: folder of <frame>.txt, label_2 format with the score as 16th field")
    parser.add_argument("--classes", nargs="+", default=list(KITTI_CLASSES), metavar="CLASS",
                        help=f"classes to evaluate (default: {' '.join(KITTI_CLASSES)})")
    parser.add_argument("--only-result-frames", action="store_true",
                        help="evaluate only the label frames that have a results file (default: every label "
                             "frame needs one, as in the devkit)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (APs in percent)")
    return parser


def to_percent_json(result: dict, label_dir: Path, results_dir: Path) -> dict:
    """The result of :func:`evaluate_kitti_folder` with APs in percent, for ``--json``."""
    classes = {}
    for cls, r in result["classes"].items():
        classes[cls] = {
            "min_overlap": r["min_overlap"],
            "ap_r40": {d: 100.0 * r["ap_r40"][d] for d in DIFFICULTIES},
            "ap_r11": {d: 100.0 * r["ap_r11"][d] for d in DIFFICULTIES},
            "num_valid_gt": r["num_valid_gt"],
            "num_detections": r["num_detections"],
        }
    return {
        "unit": "percent",
        "label_dir": str(label_dir),
        "results_dir": str(results_dir),
        "num_frames": result["num_frames"],
        "classes": classes,
        "mean_ap_r40_moderate": 100.0 * result["mean_ap_r40_moderate"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vcm-kitti-eval``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        result = evaluate_kitti_folder(args.label_dir, args.results_dir, classes=args.classes,
                                       only_result_frames=args.only_result_frames)
    except ValueError as e:  # DataError is a ValueError
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return USER_ERROR
    if args.json:
        print(json.dumps(to_percent_json(result, args.label_dir, args.results_dir), indent=2))
    else:
        print(f"KITTI 2D detection (bbox), {result['num_frames']} frame(s): labels {args.label_dir}, "
              f"results {args.results_dir}")
        print(format_kitti_table(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
