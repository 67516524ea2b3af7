"""Search a gallery from the command line (a client of the library, not an HTTP API): by free text in any language,
or by image (--image) for the same person elsewhere.

    python search/api.py --gallery gallery/ --text-model EXPORT_DIR --queries "a girl in a red coat" "穿红色外套的女孩"
    person-search --gallery gallery/ --teacher ID_OR_DIR --queries "..." --top-n 5 --json
    person-search --gallery g/ --text-model E --queries "a man in black" --where camera=3 --group-by track
    person-search --gallery g/ --image-model E --image crop.jpg
    person-search --gallery g/ --text-model E --queries "..." --far 1e-3

--far F returns only hits at or above the threshold at that false-accept rate for the encoder pair in use (from
--calibration FILE, else the gallery's calibration.json, else the card), and may return none; each hit shows the
FARs it passes. A gallery of N rows gets about F x N false hits a query at that threshold.

The gallery's encoder and the query encoder must live in one embedding space (a teacher-enrolled gallery takes
the text student distilled from that teacher). --index auto|exact|ivf|hnsw picks the scan (auto: exact below
200k rows); an approximate index is built once, saved beside the gallery, and says its recall@10. --milvus URI
searches a Milvus collection kept in sync with the gallery instead (the production path for galleries that outgrow
one machine; a local .db file runs Milvus Lite in-process, what the tests use).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from person.gallery.manifest import GalleryError
from person.gallery.search import MAX_K, QueryResult
from person.gallery.search_options import SearcherOptions
from person.options import add_options, from_namespace, number, run_command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=Path, required=True, help="a gallery folder (search/enroll.py)")
    p.add_argument("--queries", nargs="+", default=[], help="free-text queries, any language")
    p.add_argument("--image", nargs="+", type=Path, default=[], help="query images (crops of a person)")
    p.add_argument("--top-n", "--k", dest="k", type=number(int, at_least=1, at_most=MAX_K), default=5)
    p.add_argument("--where", action="append", default=[],
                   help="a condition on the rows' fields, e.g. camera=3 or \"time>=2026-11-01T10:00\" (repeatable: "
                        "all must hold)")
    p.add_argument("--group-by", default=None, help="one result per value of this field (e.g. track)")
    p.add_argument("--far", default=None, help="keep hits at or above the threshold of this false-accept rate")
    add_options(p, SearcherOptions)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if not args.queries and not args.image:
        p.error("give --queries TEXT ... or --image FILE ...")
    try:
        from_namespace(SearcherOptions, args).check(needs_text=bool(args.queries))
    except GalleryError as e:
        p.error(str(e))
    if args.image and not (args.image_model or args.teacher):
        p.error("--image needs an image model: give --image-model EXPORT_DIR or --teacher")
    return args


def format_result(result: QueryResult) -> str:
    """The seed's block: query, time, then rank, score, image, box (and identity, metadata) per hit."""
    lines = [f"query: {result.query}", f"time: {1000 * result.seconds:.1f} ms"]
    if result.note:
        lines.append(f"note: {result.note}")
    if result.far is not None:
        lines.append(f"threshold: {result.threshold} at FAR {result.far} ({result.calibration})")
    if not result.hits:
        lines.append("no results")
    for h in result.hits:
        extra = "".join([f"  identity {h.identity}" if h.identity is not None else "",
                         f"  {json.dumps(h.meta, ensure_ascii=False)}" if h.meta else "",
                         f"  passes FAR {', '.join(h.passes)}" if h.passes else ""])
        box = "" if h.bbox is None else "  bbox [" + ", ".join(f"{v:g}" for v in h.bbox) + "]"
        lines.append(f"  {h.rank:>3}  {h.score:.4f}  {h.path}{box}{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[QueryResult]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    searcher = from_namespace(SearcherOptions, args).open(args.gallery)
    for note in searcher.notes():
        print(note, file=sys.stderr)
    results = searcher.search(args.queries, args.k, args.where, args.group_by, args.far) if args.queries else []
    if args.image:  # each labelled by its file
        results += searcher.search_images(args.image, args.k, args.where, args.group_by, args.far)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2, allow_nan=False))
    else:
        print("\n\n".join(format_result(r) for r in results))
    return results


def run() -> None:
    """`person-search`, and the script at the top of the repository."""
    run_command(main)
