"""Erase people from a gallery, or from an unlabeled training store: their rows' bytes leave the disk.

    python search/forget.py --gallery g/ --image cam1/0001.jpg [--thumb-cache DIR] [--milvus URI]
    person-forget --gallery g/ --track 17 --where camera=3     # kinds combine: track 17 on camera 3
    person-forget --gallery g/ --max-age 30                    # retention: rows older than 30 days
    person-forget --store embeddings/detections-ab12__siglip.h5 --track 17

A gallery's segments holding the rows are written again without them, saved indexes are rebuilt, Milvus deletes
them and their thumbnails go; the previous generation's files go once no reader holds it (up to --wait seconds;
else --purge later). A value that matches no row is refused and nothing is erased; retention finding nothing old
is not an error. Remove the images from the source too, or the next enrolment or extraction adds them again.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from person.gallery.audit import command_audit
from person.gallery.forget import ForgetReport, Selector, forget
from person.gallery.sources import TIME_FIELD
from person.gallery.store import purge
from person.options import number, run_command
from person.teacher.store.erase import StoreErasure, StoreSelector, erase_rows
from person.web.images import ThumbnailCache

Audit = Callable[[dict[str, Any]], None]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=Path, help="the gallery folder to erase rows from")
    p.add_argument("--store", type=Path, help="an unlabeled store (.h5 / .zarr) to erase rows from")
    p.add_argument("--image", action="append", default=[], help="an image's path (as enrolled, or under the root)")
    p.add_argument("--track", action="append", default=[], help="a detections track id")
    p.add_argument("--where", action="append", default=[], help="gallery: a condition, as search's (all must hold)")
    p.add_argument("--uid", type=int, nargs="+", action="extend", default=[], help="gallery: row ids")
    p.add_argument("--line", type=int, nargs="+", action="extend", default=[], help="store: detections lines")
    p.add_argument("--caption", action="append", default=[], help="store: a caption's text")
    p.add_argument("--max-age", type=number(float, above=0), help="gallery: rows older than DAYS")
    p.add_argument("--time-field", default=TIME_FIELD, help="the detections field --max-age reads (else enrolment)")
    p.add_argument("--thumb-cache", type=Path, help="the server's thumbnail folder (default ~/.cache/person/thumbs)")
    p.add_argument("--milvus", help="the gallery's Milvus URI, when it is served from Milvus")
    p.add_argument("--milvus-collection", help="its collection (default: the one named after the gallery)")
    p.add_argument("--wait", type=number(float, at_least=0), default=10.0,
                   help="seconds to wait for readers of the previous generation before leaving its files to --purge")
    p.add_argument("--purge", action="store_true", help="only remove files of generations readers have let go")
    p.add_argument("--audit-key-dir", type=Path, help="gallery: the audit log's key folder (search/audit.py)")
    args = p.parse_args(argv)
    if (args.gallery is None) == (args.store is None):
        p.error("give one of --gallery G or --store STORE")
    misplaced = (["--where", "--uid", "--max-age", "--purge"] if args.store else ["--line", "--caption"])
    given = [flag for flag in misplaced if getattr(args, flag[2:].replace("-", "_")) not in (None, [], False)]
    if given:
        p.error(f"{', '.join(given)} apply to --{'gallery' if args.store else 'store'} only")
    return args


def main(argv: list[str] | None = None, audit: Audit | None = None) -> ForgetReport | StoreErasure | list[int]:
    """`audit`: called once with each erasure's event after it commits; a gallery's audit log by default (a
    store has none: it is not served)."""
    args = parse_args(argv)
    if audit is None and args.gallery and not args.purge:
        audit = command_audit(args.gallery, args.audit_key_dir)
    if args.store:
        report = erase_rows(args.store, StoreSelector(tuple(args.image), tuple(args.track), tuple(args.line),
                                                      tuple(args.caption)), audit)
    elif args.purge:
        held = purge(args.gallery, args.wait)
        print(f"{args.gallery}: " + (f"generation(s) {held} still held by readers; their files stay" if held else
                                     "only the current generation's files are left"))
        return held
    else:
        selector = Selector(tuple(args.image), tuple(args.track), tuple(args.where), tuple(args.uid), args.max_age,
                            args.time_field)
        report = forget(args.gallery, selector, thumbs=ThumbnailCache(args.thumb_cache).purge, milvus=args.milvus,
                        milvus_collection=args.milvus_collection, audit=audit, wait=args.wait)
    print("\n".join(report.lines()))
    return report


def run() -> None:
    """`person-forget`, and the script search/forget.py."""
    run_command(main)
