"""Export a student checkpoint for devices: ONNX graphs, the character table, the card, and their parity.

    python export_model.py logs/expModel-.../RUN/best.pt export/            # generic: onnxruntime, dynamic shapes
    person-export CKPT OUTDIR --target npu --batch 1 --seq-len 64           # static shapes, NPU op set
    person-export CKPT OUTDIR --fp16 --int8 [--calibration 512]              # smaller variants beside fp32

OUTDIR gets model_image.onnx, model_text.onnx, input_embeddings.npy (the byte table the text graph's input is
looked up in, outside the graph), optional *.fp16.onnx / *.int8.onnx, and model.json (the card). It is written
atomically: a failed export leaves OUTDIR as it was. The graphs are checked against PyTorch on held-out images
and captions of the checkpoint's dataset (fp32: cosine >= 0.99999 per row, or the export fails).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from person.data.flags import add_moved_files, moved_files
from person.export.exporter import ExportResult, export_checkpoint
from person.export.onnx_files import format_ops
from person.export.options import ExportOptions
from person.options import add_options, from_namespace, run_command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint (.pt) or a run folder (its last checkpoint)")
    p.add_argument("out_dir", type=Path, help="the export directory")
    add_options(p, ExportOptions)
    add_moved_files(p)
    p.add_argument("--import-module", action="append", default=[], metavar="MODULE",
                   help="a module outside the project that the checkpoint's student names may be imported from")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> ExportResult:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    dataset, embedding_path = moved_files(args)
    result = export_checkpoint(args.checkpoint, args.out_dir, from_namespace(ExportOptions, args), dataset,
                               embedding_path, args.import_module)
    for graph in result.graphs:
        print(format_ops(graph) + "\n")
    for parity in result.parity:
        print(("PASS " if parity.variant == "fp32" else "     ") + parity.line())
    for note in result.notes:
        print(f"note: {note}")
    card = result.card
    print(f"\n{result.out_dir}: " + ", ".join(f"{name} ({info['bytes'] / 2**20:.2f} MiB)"
                                              for name, info in card["files"].items()))
    return result


def run() -> None:
    """`person-export`, and the script at the top of the repository."""
    run_command(main)
