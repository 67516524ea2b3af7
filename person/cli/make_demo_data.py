"""Draw a synthetic pedestrian demo set (JPEGs + a dataset JSON in a real format + demo_truth.json).

    python tools/make_demo_data.py --out demo/synth --ids 1000 --images-per-id 4 --seed 0 [--format cuhk-pedes]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from person.demo.synthetic.captions import DEFAULT_CHINESE_SHARE
from person.demo.synthetic.sites import SITES
from person.demo.synthetic.writer import FORMATS, dataset_summary, default_workers, write_dataset
from person.options import run_command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--ids", type=int, default=1000, help="number of identities")
    p.add_argument("--images-per-id", type=int, default=4, help="images per identity")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    p.add_argument("--format", choices=FORMATS, default="synthpedes", help="dataset layout to write")
    p.add_argument("--chinese", type=float, default=DEFAULT_CHINESE_SHARE, help="share of captions in Chinese")
    p.add_argument("--workers", type=int, default=default_workers(), help="drawing processes")
    p.add_argument("--site", choices=sorted(SITES), default="demo",
                   help="drawing style: the demo set's cameras, or the second site's (another user's cameras)")
    p.add_argument("--odd-paths", action="store_true",
                   help="give some files names with spaces and non-ASCII characters (reader tests)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        json_path = write_dataset(args.out, args.ids, args.images_per_id, args.seed, args.format,
                                  chinese=args.chinese, workers=args.workers, odd_paths=args.odd_paths,
                                  site=args.site)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    s = dataset_summary(json_path)
    print(f"{args.format}: {s['ids']} ids, {s['images']} images, {s['captions']} captions "
          f"({100 * s['chinese_share']:.1f}% Chinese) in {seconds:.1f} s -> {json_path}")
    return 0


def run() -> None:
    """`person-demo-data`, and the script at the top of the repository."""
    run_command(main)
