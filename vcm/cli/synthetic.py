"""``python -m vcm.cli.synthetic``: generate synthetic road scenes as a KITTI object tree."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vcm.data.synthetic.camera import KITTI_HEIGHT, KITTI_WIDTH, MIN_HEIGHT, MIN_WIDTH
from vcm.data.synthetic.writer import generate, label_statistics
from vcm.errors import ConfigError, DataError


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _int_arg(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vcm.cli.synthetic",
        description="Generate synthetic road scenes as a KITTI object tree (training/image_2, label_2, calib).",
    )
    p.add_argument("--out", type=Path, required=True, help="root folder (gets training/ and synthetic.json)")
    p.add_argument("--num", type=_int_arg(1, "a positive integer (number of frames)"), required=True)
    p.add_argument("--seed", type=_int_arg(0, "a non-negative integer"), default=0)
    p.add_argument("--width", type=_int_arg(MIN_WIDTH, f"an integer >= {MIN_WIDTH}"), default=KITTI_WIDTH)
    p.add_argument("--height", type=_int_arg(MIN_HEIGHT, f"an integer >= {MIN_HEIGHT}"), default=KITTI_HEIGHT)
    p.add_argument("--overwrite", action="store_true", help="replace a set generated with other parameters")
    p.add_argument("--stats", action="store_true", help="print label statistics as JSON afterwards")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0, exits with status 2 and a message on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    try:
        root = generate(args.out, args.num, args.seed, args.width, args.height, overwrite=args.overwrite)
    except (ConfigError, DataError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(f"{root}: {args.num} frames ({args.width}x{args.height}, seed {args.seed}) in {time.perf_counter() - t0:.1f} s")
    if args.stats:
        print(json.dumps(label_statistics(root), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
