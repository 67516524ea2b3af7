"""Score the teacher's extracted embeddings, or any model's: verification table, retrieval, worst pairs, JSON + ROC.

    python evaluation_labels.py --embedding_path STORE [--split eval] [--prompt-captions] [--json OUT.json]
    person-eval-labels --features FILE.npz [--json OUT.json]

STORE is a feature store made by tools/extract_label.py (.h5 or .zarr): the teacher's own report on a
split, the upper bound the students chase, with its operating points (the thresholds at FAR 1e-2 / 1e-3 /
1e-4, text-to-image and image-to-image: search's `--calibration OUT.json` applies them to a teacher gallery). Its
readable images are the gallery and their `captions` the queries (`prompt_caption`s too with --prompt-captions);
unreadable images and their captions are left out.

FILE.npz holds plain arrays: image_emb [Ni,D], image_pid [Ni], caption_emb [Nc,D], caption_pid [Nc]
(or caption_image [Nc], the index of each caption's image, from which caption_pid is taken), and
optionally image_path [Ni] and caption_text [Nc] (unicode string arrays) for the lists of worst pairs.
Embeddings must be L2-normalised (or pass --normalize). With --json, OUT_roc.png is written beside it.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from person.eval import metrics, operating_points, report
from person.eval.features import load_features, store_features
from person.options import number, run_command
from person.vectors import unit_rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--embedding_path", "--embedding-path", type=Path, help="a feature store (.h5 / .zarr)")
    source.add_argument("--features", type=Path, help="an .npz of embeddings and labels")
    p.add_argument("--split", default=None, help="with --embedding_path: the split scored (train, val, test, "
                                                 "eval = the held-out identities; default eval)")
    p.add_argument("--prompt-captions", action="store_true",
                   help="with --embedding_path: score the prompt_caption field as well as captions")
    p.add_argument("--json", type=Path, default=None, help="write the report here (and the ROC beside it)")
    p.add_argument("--normalize", action="store_true",
                   help="L2-normalise the embeddings first (without it, unnormalised ones are an error)")
    p.add_argument("--device", type=str, default=None, help="torch device (default: cuda when available)")
    p.add_argument("--block-pairs", type=number(int, at_least=1), default=metrics.DEFAULT_BLOCK_PAIRS,
                   help="scores computed per strip (memory: a few times 4 bytes each)")
    p.add_argument("--top-k", type=number(int, at_least=0), default=15, help="how many worst pairs to list")
    args = p.parse_args(argv)
    if args.features is not None and (args.split is not None or args.prompt_captions):
        p.error("--split and --prompt-captions apply to --embedding_path, not --features")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.features is not None:
        source, f = args.features, load_features(args.features)
    else:
        source, f = args.embedding_path, store_features(args.embedding_path, args.split or "eval", args.prompt_captions)
    image_emb, caption_emb = f["image_emb"], f["caption_emb"]
    if args.normalize:
        image_emb, caption_emb = unit_rows(image_emb), unit_rows(caption_emb)
    evaluation = metrics.evaluate(image_emb, f["image_pid"], caption_emb, f["caption_pid"],
                                  top_k=args.top_k, block_pairs=args.block_pairs, device=args.device,
                                  progress=True)
    summary = evaluation.to_dict()
    if args.embedding_path is not None:  # the teacher's thresholds: a search of a teacher gallery applies them
        summary["operating_points"] = operating_points.teacher_document(args.embedding_path, args.split or "eval",
                                                                        args.device)
    print(report.format_report(evaluation, f.get("image_path"), f.get("caption_text"), f.get("caption_image")))
    if args.json is not None:
        written, plot = report.write_report(summary, evaluation.verification, args.json, title=source.name)
        print(f"\nwrote {written} and {plot}")
    return summary


def run() -> None:
    """`person-eval-labels`, and the script at the top of the repository."""
    run_command(main)
