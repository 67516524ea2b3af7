"""Evaluate a student checkpoint (or its ONNX export) on the held-out split: the verification table, retrieval,
worst pairs, JSON and ROC, plus the mixed cases (student text against teacher-enrolled images and the reverse).

    python evaluation_model.py logs/expModel-.../RUN/best.pt [--json report.json]
    person-eval EXPORT_DIR [--variant fp32|fp16|int8]   # the exported models, through onnxruntime

Everything comes from the checkpoint's saved options (dataset, store, input size); pass --data,
--image-root or --embedding_path only when those files have moved. With --json OUT the checkpoint's main
case (students together, or the one trained student against the teacher) is written to OUT with the
metrics keys, the other cases under "cases", and OUT_roc.png beside it.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from person.data.flags import add_moved_files, moved_files
from person.eval import report
from person.eval.evaluate import CASES, checkpoint_summary, evaluate_checkpoint
from person.export.evaluation import evaluate_export, export_summary
from person.options import number, run_command
from person.runtime import CARD_FILE, VARIANTS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint (.pt), a run folder (its last checkpoint), or an "
                                                  "export directory (export_model.py's OUTDIR)")
    p.add_argument("--variant", choices=VARIANTS, default="fp32",
                   help="which models of an export directory to score")
    p.add_argument("--json", type=Path, default=None, help="write the report here (and the ROC plot beside it)")
    p.add_argument("--split", default="eval", help="split to score (default: eval, the held-out identities)")
    p.add_argument("--cases", nargs="+", choices=CASES, default=None, help="which cases (default: all it can)")
    add_moved_files(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--num-workers", type=number(int, at_least=0), default=2, help="image loading processes")
    p.add_argument("--top-k", type=number(int, at_least=0), default=15, help="how many worst pairs to list")
    p.add_argument("--import-module", action="append", default=[], metavar="MODULE",
                   help="a module outside the project that the checkpoint's --backbone / --tbackbone names may be "
                        "imported from (its code runs); names read from a checkpoint resolve only in the project "
                        "otherwise")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset, embedding_path = moved_files(args)
    if (args.checkpoint / CARD_FILE).is_file():  # an export directory: its models through onnxruntime
        card, result = evaluate_export(args.checkpoint, args.variant, dataset, embedding_path, args.split,
                                       args.cases, args.top_k)
        out = export_summary(args.checkpoint, args.variant, card, result)
        title = f"{args.checkpoint} ({args.variant}, from iteration {out['iteration']} of {out['checkpoint']})"
    else:
        state, result = evaluate_checkpoint(args.checkpoint, dataset, embedding_path, args.split, args.cases,
                                            args.device, args.num_workers, args.top_k, args.import_module)
        out = checkpoint_summary(state, result)
        title = f"{state['path']} (iteration {state['iteration']})"
    data = result.split
    print(f"{title}, split {args.split}: {len(data.rows)} images, {len(data.caption_rows)} captions")
    if len(result.skipped):
        print(result.skipped.summary())
    for case, evaluation in result.cases.items():
        print(f"\n== {case}\n")
        print(report.format_report(evaluation, data.paths, data.caption_texts, data.caption_image,
                                   top_errors=args.top_k > 0))
    print("\n" + report.format_comparison(result.titled_summaries()))
    if args.json is not None:
        written, plot = report.write_report(out, result.cases[out["case"]].verification, args.json,
                                            title=f"{out['case']} @ {out['iteration']}")
        print(f"\nwrote {written} and {plot}")
    return out


def run() -> None:
    """`person-eval`, and the script at the top of the repository."""
    run_command(main)
