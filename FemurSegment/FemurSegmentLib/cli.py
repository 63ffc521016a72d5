"""``femur-segment``: proximal-femur segmentation from the command line (model not yet shipped)."""

from __future__ import annotations

import argparse
import sys

from . import MODEL_AVAILABLE, NO_MODEL_MESSAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="femur-segment", description=__doc__)
    parser.add_argument("ct", help="CT or QCT volume in HU")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--side", choices=("left", "right", "both"), default="both")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    if not MODEL_AVAILABLE:
        print(f"femur-segment: error: {NO_MODEL_MESSAGE}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
