#!/usr/bin/env python3
"""Command line for the embedded toy data set (see lib/datasets/toy_generator.py).

Kept thin on purpose: `make demo`, the tests and users all go through
``make_toy_dataset`` so there is a single implementation. Re-running with the
same arguments is a no-op thanks to the manifest; pass --force to rebuild.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The script lives in <repo>/data/scripts; the generator in <repo>/lib.
_REPO = Path(__file__).resolve().parents[2]
if str(_REPO / "lib") not in sys.path:
    sys.path.insert(0, str(_REPO / "lib"))

from datasets.toy_generator import SHAPE_CATALOGUE, TOY_CLASSES, make_toy_dataset  # noqa: E402


def _classes_arg(text: str) -> list[str] | int:
    """'3' means the first three catalogue shapes; otherwise comma-separated names."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    return [c.strip() for c in text.split(",") if c.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (argv defaults to sys.argv[1:])."""
    p = argparse.ArgumentParser(
        description="Generate the synthetic toy-shapes detection data set in VOC 2007 layout.")
    p.add_argument("--out", default=str(_REPO / "data" / "toy"),
                   help="output folder (default: <repo>/data/toy)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--num-trainval", type=int, default=400, help="trainval images (default: 400)")
    p.add_argument("--num-test", type=int, default=200, help="test images (default: 200)")
    p.add_argument("--size", type=int, default=240,
                   help="shorter image side in pixels (default: 240, i.e. ~320x240 images)")
    p.add_argument("--classes", type=_classes_arg, default=None,
                   help=f"comma-separated class names from {', '.join(SHAPE_CATALOGUE)}, or a "
                        f"count N for the first N (default: {','.join(TOY_CLASSES)})")
    p.add_argument("--min-object", type=float, default=None,
                   help="smallest object size in px (default: 24 at --size 240, scaled)")
    p.add_argument("--max-object", type=float, default=None,
                   help="largest object size in px (default: 120 at --size 240, scaled)")
    p.add_argument("--max-objects", type=int, default=5, help="objects per image, 1..N (default: 5)")
    p.add_argument("--jpeg-quality", type=int, default=85,
                   help="mean JPEG quality, jittered by +-6 per image (default: 85)")
    p.add_argument("--force", action="store_true", help="regenerate even if up to date")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    try:
        summary = make_toy_dataset(
            args.out, seed=args.seed, num_trainval=args.num_trainval, num_test=args.num_test,
            size=args.size, classes=args.classes, min_object=args.min_object,
            max_object=args.max_object, max_objects=args.max_objects,
            jpeg_quality=args.jpeg_quality, force=args.force,
            verbose=not (args.quiet or args.json))
    except (ValueError, FileExistsError) as err:
        print(f"make_toy_dataset: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
