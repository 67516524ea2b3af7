"""Extract the teacher's embeddings of every image and caption of a dataset into the feature store.

    python tools/extract_label.py --data demo/synth --teacher DIR_OR_HUB_ID --embedding_path embeddings
    person-extract --data DATASET.json --teacher DIR_OR_HUB_ID --embedding_path store.zarr
    ... --image-dir DIR | --detections FILE.jsonl [--image-root DIR] | --captions FILE.txt   (unlabeled stores)
    torchrun --nproc_per_node=N tools/extract_label.py ...   (same arguments; one store, as a single run makes)

Killed? Run the same command again: it continues, and ends with the store an uninterrupted run makes.
A folder --embedding_path (default embeddings/) gets a store named after the dataset (or unlabeled source: run
again after it grew, and its new rows are appended) and the teacher (its format: person/teacher/store/).
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from person.data.datasets import SkipReport
from person.data.records import DatasetOptions, RecordSet
from person.data.unlabeled import UnlabeledSource, unlabeled_source
from person.distributed import cleanup, init_distributed
from person.options import add_options, from_namespace, option, run_command
from person.teacher.extract import DEFAULT_BATCH_SIZE, ExtractSummary, extract
from person.teacher.hf import load_teacher
from person.teacher.store import DEFAULT_CHUNK_ROWS, FORMATS as STORE_FORMATS


@dataclass
class ExtractOptions(DatasetOptions):
    teacher: str | None = option(None, "teacher: a model directory, or a Hugging Face id in the local cache "
                                       "(required)")
    image_dir: str | None = option(None, "unlabeled: every image below this folder (instead of --data)")
    detections: str | None = option(None, "unlabeled: person boxes from this JSON-lines file, as search/enroll.py "
                                          "reads them (paths relative to --image-root, default its folder)")
    captions: str | None = option(None, "unlabeled: one description per line of this UTF-8 file")
    embedding_path: str = option("embeddings", "the store (.h5 or .zarr), or a folder to name it in")
    format: str | None = option(None, "store format when --embedding_path is a folder (default: h5)",
                                choices=STORE_FORMATS)
    batch_size: int = option(DEFAULT_BATCH_SIZE, "images or captions per teacher forward pass", at_least=1)
    chunk_rows: int = option(DEFAULT_CHUNK_ROWS, "rows written and marked done together (what a kill can lose)",
                             at_least=1)
    workers: int = option(4, "image decoding processes per rank", at_least=0)
    device: str | None = option(None, "torch device (default: cuda:LOCAL_RANK when there is a GPU, else cpu)")
    dtype: str = option("auto", "teacher dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    pad_to_square: bool = option(False, "pad person crops to square instead of stretching them")
    strict: bool = option(False, "stop at the first unreadable image instead of skipping it")
    progress: bool = option(True, "show a progress bar")


def parse_args(argv: list[str] | None) -> ExtractOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, ExtractOptions)
    opts = from_namespace(ExtractOptions, parser.parse_args(argv))
    if sum(map(bool, (opts.data, opts.image_dir, opts.detections, opts.captions))) != 1 or not opts.teacher:
        parser.error("--teacher and one of --data, --image-dir, --detections, --captions are required")
    return opts


def load_source(opts: ExtractOptions) -> RecordSet | UnlabeledSource:
    if not opts.data:
        return unlabeled_source(opts.image_dir, opts.detections, opts.image_root, opts.captions)
    records = opts.load_records()
    records.check_image_root()
    return records


def describe(summary: ExtractSummary) -> str:
    rate = f"{summary.image_rows_written / max(summary.seconds, 1e-9):.1f} images/s, " \
           f"{summary.caption_rows_written / max(summary.seconds, 1e-9):.1f} captions/s"
    skips = SkipReport({row: f"{path}: {reason}" for row, path, reason in summary.skipped})
    return "\n".join([
        f"{summary.store}: {summary.images} images ({summary.images - summary.unreadable} embedded), "
        f"{summary.captions} captions, {summary.store_bytes / 2**20:.1f} MiB",
        f"this run: {summary.units_written} of {summary.units_total} chunks, {summary.image_rows_written} image rows "
        f"and {summary.caption_rows_written} caption rows in {summary.seconds:.1f} s ({rate})",
        skips.summary()] + [f"left out of the source: {n} ({reason})" for reason, n in summary.source_skipped.items()])


def main(argv: list[str] | None = None) -> ExtractSummary:
    opts = parse_args(argv)
    info = init_distributed(opts.device)
    logging.basicConfig(level=logging.INFO if info.is_main else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        records = load_source(opts)
        teacher = load_teacher(opts.teacher, device=info.device, dtype=opts.dtype, pad_to_square=opts.pad_to_square)
        summary = extract(records, teacher, opts.embedding_path, format=opts.format, batch_size=opts.batch_size,
                          chunk_rows=opts.chunk_rows, workers=opts.workers, dist=info, progress=opts.progress,
                          strict=opts.strict, limits=opts.image_limits())
    finally:
        cleanup()
    if info.is_main:
        print(describe(summary))
    return summary


def run() -> None:
    """`person-extract`, and the script at the top of the repository."""
    run_command(main)
