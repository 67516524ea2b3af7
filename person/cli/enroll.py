"""Enrol images into a gallery with an exported image student (no torch) or a teacher, for text search.

    python search/enroll.py --model EXPORT_DIR --image-dir photos/ --gallery gallery/
    person-enroll --teacher ID_OR_DIR --data CUHK-PEDES/reid_raw.json --split eval --gallery g/
    person-enroll --model EXPORT_DIR --detections boxes.jsonl [--image-root frames/] --gallery g/

Run it again to add new or changed images (--prune also drops rows whose image is gone; --rehash also finds
files changed under a forged size and mtime); killed at any moment, it resumes and ends with the gallery an
uninterrupted run gives. Each row records its file's sha256: the web app serves only the image enrolled.
Unreadable images, boxes with nothing inside their image and unusable detection lines are skipped and counted.
--max-age DAYS: items older by their detections time field are not enrolled, and rows older by it (or by their
enrolment time) are erased as search/forget.py --max-age erases them.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from person.data.records import DatasetOptions
from person.gallery import sources
from person.gallery.audit import command_audit
from person.gallery.encoders import open_encoder
from person.gallery.enroll import DEFAULT_CHUNK, EnrollSummary, enroll
from person.gallery.forget import Selector, forget
from person.gallery.sources import TIME_FIELD
from person.options import add_options, from_namespace, number, run_command
from person.runtime import VARIANTS
from person.web.images import ThumbnailCache


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=Path, required=True, help="the gallery folder (made when missing)")
    p.add_argument("--model", type=Path, default=None, help="an export directory (export_model.py's OUTDIR)")
    p.add_argument("--teacher", default=None, help="a teacher directory or Hugging Face id in the local cache")
    p.add_argument("--variant", choices=VARIANTS, default="fp32", help="which exported model")
    p.add_argument("--image-dir", type=Path, help="every image under this folder, recursively")
    p.add_argument("--detections", type=Path, help="JSON lines {\"image\": path, \"bbox\": [x1, y1, x2, y2], ...}")
    add_options(p, DatasetOptions)  # --data (a dataset as the source), --image-root, its split rule, image caps
    p.add_argument("--split", choices=("eval", "train", "val", "test", "all"), default="eval",
                   help="with --data: the split to enrol")
    p.add_argument("--prune", action="store_true", help="drop rows whose image is gone or no longer listed")
    p.add_argument("--rehash", action="store_true",
                   help="also read every unchanged-looking file and enrol again those whose content changed (size "
                        "and mtime can be forged)")
    p.add_argument("--chunk", type=number(int, at_least=1), default=DEFAULT_CHUNK,
                   help="items per committed segment (what a kill can cost)")
    p.add_argument("--workers", type=number(int, at_least=0, at_most=64), default=2,
                   help="image loading threads (read, sha256, decode, resize) working ahead of the forward; 0: load "
                        "in the forward's thread, between batches")
    p.add_argument("--max-age", type=number(float, above=0), help="retention: enrol nothing, keep nothing older (days)")
    p.add_argument("--time-field", default=TIME_FIELD, help="the detections field --max-age reads (else enrolment)")
    p.add_argument("--thumb-cache", type=Path, help="with --max-age: the server's thumbnail folder to purge")
    p.add_argument("--audit-key-dir", type=Path, help="with --max-age: the audit log's key folder (search/audit.py)")
    args = p.parse_args(argv)
    if sum(bool(s) for s in (args.data, args.image_dir, args.detections)) != 1:
        p.error("give one source: --image-dir DIR, --detections FILE or --data DATASET.json")
    return args


def main(argv: list[str] | None = None, audit: Callable[[dict[str, Any]], None] | None = None) -> EnrollSummary:
    """`audit`: called with the event of the --max-age erasure, when it erases anything (the gallery's audit log
    by default)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    options = from_namespace(DatasetOptions, args)
    encoder = open_encoder(args.model, args.teacher, args.variant)
    if args.image_dir:
        source = sources.image_dir(args.image_dir)
    elif args.detections:
        source = sources.detections(args.detections, args.image_root)
    else:
        source = sources.dataset(options, args.split)
    summary = enroll(args.gallery, encoder, source, args.prune, args.chunk, args.workers, options.image_limits(),
                     rehash=args.rehash, max_age=args.max_age, time_field=args.time_field)
    print("\n".join(summary.lines()))
    if args.max_age is not None:
        expired = forget(args.gallery, Selector(max_age_days=args.max_age, time_field=args.time_field),
                         thumbs=ThumbnailCache(args.thumb_cache).purge,
                         audit=audit or command_audit(args.gallery, args.audit_key_dir))
        print("\n".join(expired.lines()))
    return summary


def run() -> None:
    """`person-enroll`, and the script at the top of the repository."""
    run_command(main)
