"""Extraction: run the teacher over every image and caption of a dataset and write its feature store.

Units. The work is cut into units (person.teacher.store.Unit): `chunk_rows` image rows, or `chunk_rows` caption
rows, each written and marked done as one. A unit is computed in fixed batches: rows start, start+B, ...
of the unit, whichever run (fresh or resumed) and whichever rank computes it. Float32 matmuls on CPU
can round differently when a batch holds other rows, so fixing the batches is what makes a unit's bytes
independent of where a run started and of the number of ranks. (The thread count does not change them.)

Resuming. The store marks a unit done only after its rows are flushed (person.teacher.store says why a kill
cannot tear a store), and a run computes the units not marked. So kill a run at any moment, run it
again, and the finished store has the same bytes as an uninterrupted run. Resuming with another batch
size or chunk size is refused, since those decide the bytes.

torchrun. Rank 0 is the only writer: HDF5 has no parallel writes here, and one writer keeps both
formats alike, with no shard files and no merge. Rank 0 reads the pending units and broadcasts them;
rank r computes pending[r::N]; after each round (one unit per rank) the results are gathered to rank 0,
which writes them. A round waits for its slowest rank; units are alike in size, image units first.

Unreadable images are skipped: status unreadable, a zero embedding, the reason kept in the store. Their
captions are still embedded (text needs no image, so caption units stay independent of image units);
training and evaluation pick images with FeatureStore.split_rows (readable ones) and their captions
through caption_offsets, which leaves both out.

Unlabeled sources (person.data.unlabeled: a folder, detector boxes cut as enrolment cuts them, a captions file) go
the same way into a store without identities; one that has grown is appended to its store first
(person.teacher.store.growth), and rank 0 hands every rank the rows in store order.

Images are decoded in DataLoader workers (person.data.datasets.ImageDataset turns an unreadable file into a
skip) while the teacher runs in the main process.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from person import stopping
from person.data.datasets import ImageDataset, collate_images
from person.data.images import DEFAULT_LIMITS, ImageLimits, ImageReadError
from person.data.records import RecordSet
from person.data.crops import CropDataset
from person.data.unlabeled import DETECTIONS, UnlabeledCaptions, UnlabeledImages, UnlabeledSource
from person.distributed import DistInfo, agreed_stop, barrier
from person.teacher.hf import Teacher
from person.teacher.store import (DEFAULT_CHUNK_ROWS, OK, UNREADABLE, FeatureStore, StoreWriter, Unit, caption_layout,
                                  resolve_store_path)
from person.teacher.store.growth import open_source_writer
from person.teacher.store.writer import CUTS_NONE

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
Source = RecordSet | UnlabeledSource


@dataclass(frozen=True)
class ExtractSummary:
    """What an extraction did; `*_rows_written` and `units_written` count this run only (not earlier runs)."""

    store: Path
    images: int
    captions: int
    unreadable: int
    skipped: list[tuple[int, str, str]]  # (row, path, reason) of every unreadable image in the store
    image_rows_written: int
    caption_rows_written: int
    units_written: int
    units_total: int
    seconds: float
    store_bytes: int
    source_skipped: dict[str, int] = field(default_factory=dict)  # an unlabeled source's entries left out, by why


@dataclass
class UnitResult:
    unit: Unit
    emb: np.ndarray                  # float16 [n, D]
    status: np.ndarray | None = None  # uint8 [n], images only
    reasons: dict[int, str] | None = None


def _batches(unit: Unit, batch_size: int, cuts: Sequence[int] = ()) -> list[range]:
    """The unit's fixed batches: the same whoever computes the unit (see module docstring). A grown store's
    `cuts` (where earlier runs ended) also end batches, so its old rows keep the batches they had."""
    edges = sorted({*range(unit.start, unit.stop, batch_size), *(c for c in cuts if unit.start < c < unit.stop),
                    unit.stop})
    return [range(a, b) for a, b in zip(edges, edges[1:])]


def _as_is(img: Image.Image) -> Image.Image:
    return img  # the teacher's own processor prepares the pixels


def _half(x: torch.Tensor) -> np.ndarray:
    return x.to(torch.float16).numpy()


def _image_unit(unit: Unit, batches: Iterator[dict[str, Any]], records: Source, teacher: Teacher,
                batches_of: Callable[[Unit], list[range]], strict: bool,
                tick: Callable[[int, int], None]) -> UnitResult:
    n = unit.stop - unit.start
    emb = np.zeros((n, teacher.dim), dtype=np.float16)
    status = np.full(n, OK, dtype=np.uint8)
    reasons: dict[int, str] = {}
    for rows in batches_of(unit):
        batch = next(batches)
        for row, reason in batch["skipped"]:
            if strict:
                raise ImageReadError(f"{reason} (record {row}; drop --strict to skip unreadable images)")
            status[row - unit.start] = UNREADABLE
            reasons[row] = reason.removeprefix(f"{records.image_path(row)}: ")  # the store keeps the path
        if batch["images"]:
            emb[batch["rows"].numpy() - unit.start] = _half(teacher.encode_images(batch["images"]))
        tick(len(rows), 0)
    return UnitResult(unit, emb, status, reasons)


def _caption_unit(unit: Unit, texts: Sequence[str], teacher: Teacher, batches_of: Callable[[Unit], list[range]],
                  tick: Callable[[int, int], None]) -> UnitResult:
    emb = np.zeros((unit.stop - unit.start, teacher.dim), dtype=np.float16)
    for rows in batches_of(unit):
        out = slice(rows.start - unit.start, rows.stop - unit.start)
        emb[out] = _half(teacher.encode_texts(list(texts[rows.start:rows.stop])))
        tick(0, len(rows))
    return UnitResult(unit, emb)


def _image_dataset(records: Source, limits: ImageLimits) -> Dataset:
    if isinstance(records, UnlabeledImages) and records.format == DETECTIONS:
        return CropDataset(records, limits)  # boxes cut as enrolment cuts them
    return ImageDataset(records, _as_is, limits=limits)


def _texts(records: Source) -> list[str]:
    if isinstance(records, RecordSet):
        return caption_layout(records).texts
    return records.texts if isinstance(records, UnlabeledCaptions) else []


def _compute(units: list[Unit], records: Source, teacher: Teacher, batches_of: Callable[[Unit], list[range]],
             workers: int, strict: bool, tick: Callable[[int, int], None], limits: ImageLimits) -> Iterator[UnitResult]:
    """Results of `units` in order; one DataLoader decodes the images of all of them ahead of the teacher."""
    image_batches = [list(rows) for u in units if u.kind == "image" for rows in batches_of(u)]
    batches = iter(DataLoader(_image_dataset(records, limits), batch_sampler=image_batches, num_workers=workers,
                              collate_fn=collate_images)) if image_batches else iter(())
    texts = _texts(records) if any(u.kind == "caption" for u in units) else []
    for unit in units:
        if unit.kind == "image":
            yield _image_unit(unit, batches, records, teacher, batches_of, strict, tick)
        else:
            yield _caption_unit(unit, texts, teacher, batches_of, tick)


class _Progress:
    """Rows done, with images/s and captions/s (a disabled bar still counts)."""

    def __init__(self, total: int, show: bool) -> None:
        self.bar = tqdm(total=total, unit="row", desc="extract", disable=not show, dynamic_ncols=True)
        self.images = self.captions = 0
        self.start = time.perf_counter()

    def __call__(self, images: int, captions: int) -> None:
        self.images += images
        self.captions += captions
        seconds = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.images / seconds:.1f} images/s, {self.captions / seconds:.1f} captions/s",
                                 refresh=False)
        self.bar.update(images + captions)

    def close(self) -> None:
        self.bar.close()


def _broadcast(value: Any, info: DistInfo) -> Any:
    if not info.distributed:
        return value
    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(result: UnitResult | None, info: DistInfo) -> list[UnitResult | None]:
    if not info.distributed:
        return [result]
    out = [None] * info.world_size if info.is_main else None
    tdist.gather_object(result, out, dst=0)
    return out or []


def extract(records: Source, teacher: Teacher, store_path: str | Path, *, format: str | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, chunk_rows: int = DEFAULT_CHUNK_ROWS, workers: int = 2,
            dist: DistInfo | None = None, progress: bool = False, strict: bool = False,
            limits: ImageLimits = DEFAULT_LIMITS, on_chunk: Callable[[int], None] | None = None) -> ExtractSummary:
    """Embed every image and caption of `records` with `teacher` into a store (created, or continued).

    `records` is a dataset's RecordSet, or an unlabeled source (person.data.unlabeled: a folder, detector boxes,
    a captions file), whose store grows when the source has (person.teacher.store.growth).

    `store_path` is `--embedding_path` (person.teacher.store.resolve_store_path: a .h5/.zarr path, or a folder
    that gets a name from the dataset and teacher). `dist` from person.distributed.init_distributed()
    under torchrun (every rank calls this with the same arguments). `strict` raises on the first
    unreadable image instead of skipping it; `limits` caps each image's bytes and pixels (a bigger one is
    unreadable). `on_chunk(units_done)` is called on rank 0 right after each chunk is written and marked done
    on disk, with the number of the store's chunks now done (earlier runs' included): a kill from there lands at
    an exact point (tests/teacher/test_extract.py). Returns the same summary on every rank.

    A stop request (person.stopping) ends it after the chunk in hand, on every rank, with `Stopped`.
    """
    info = dist or DistInfo()
    start = time.perf_counter()
    path = resolve_store_path(store_path, records, teacher, format)
    writer = pending = None
    units_done = 0
    cuts = CUTS_NONE
    if info.is_main:
        if isinstance(records, RecordSet):
            writer = StoreWriter.open(path, records, teacher.identity(), chunk_rows=chunk_rows, batch_size=batch_size)
        else:  # the rows in store order, which a grown source's listing need not be
            writer, records = open_source_writer(path, records, teacher.identity(), chunk_rows=chunk_rows,
                                                 batch_size=batch_size)
        pending, cuts = writer.pending(), writer.cuts
        units_done = len(writer.units) - len(pending)
        log.info("%s: %d of %d chunks to extract", path, len(pending), len(writer.units))
    pending, cuts = _broadcast((pending, cuts), info)
    if not isinstance(records, RecordSet):
        records = _broadcast(records, info)  # every rank computes rows of rank 0's order
    counts = _Progress(sum(u.stop - u.start for u in pending), progress and info.is_main)
    mine = pending[info.rank::info.world_size]

    def batches_of(unit: Unit) -> list[range]:
        return _batches(unit, batch_size, cuts[unit.kind])

    results = _compute(mine, records, teacher, batches_of, workers, strict, counts, limits)
    rounds = -(-len(pending) // info.world_size)
    try:
        with stopping.safe_points("after this chunk"), stopping.noting(f"within a chunk ({path} keeps the ones done)"):
            for r in range(rounds):
                for rank, result in enumerate(_gather(next(results, None), info)):
                    if result is None or writer is None:
                        continue
                    writer.write(result.unit, result.emb, result.status, result.reasons)
                    units_done += 1
                    if on_chunk is not None:
                        on_chunk(units_done)
                    if rank != info.rank:  # rank 0 ticked its own rows batch by batch
                        n = result.unit.stop - result.unit.start
                        images = n if result.unit.kind == "image" else 0
                        counts(images, n - images)
                signum = agreed_stop(info.device)
                if signum:
                    done = min((r + 1) * info.world_size, len(pending))
                    raise stopping.Stopped(signum, f"after {done} of the {len(pending)} chunks left ({path} keeps "
                                                   f"them)")
    finally:
        counts.close()
    barrier()
    summary = None
    if info.is_main:
        listing = {} if isinstance(records, RecordSet) else dict(records.skips.counts)
        summary = _summary(path, pending, len(writer.units), time.perf_counter() - start, listing)
    return _broadcast(summary, info)


def _summary(path: Path, written: list[Unit], units_total: int, seconds: float,
             listing: dict[str, int]) -> ExtractSummary:
    with FeatureStore(path, in_memory=False) as store:
        skipped = store.skipped()
        return ExtractSummary(
            store=path, images=store.num_images, captions=store.num_captions, unreadable=len(skipped),
            skipped=skipped, image_rows_written=sum(u.stop - u.start for u in written if u.kind == "image"),
            caption_rows_written=sum(u.stop - u.start for u in written if u.kind == "caption"),
            units_written=len(written), units_total=units_total, seconds=seconds, store_bytes=store.size_bytes(),
            source_skipped=listing)
