"""Enrolment: embed what a source lists into a gallery, incrementally and resumably.

Running it again adds only new or changed images (a file's size or mtime differs: its old row is deleted;
with `rehash`, also a file whose content changed under a forged size and mtime) and, with `prune`, drops rows
whose image is gone or no longer listed. Each row records the sha256 of the very bytes that were decoded, so
serving can tell the enrolled image from whatever sits at its path later (person.gallery.images). The pending
items are read, hashed, decoded and resized by `workers` threads working ahead of the forward (`_loaded`), embedded
in batches as they fill and committed in fixed chunks, one segment each; the rows, their order and their features
are the same whatever `workers` is (tests/gallery/test_enroll_pipeline.py). Killed at any moment, the next run
finds the finished chunks in the gallery and enrols the rest in the same order, so it ends with the rows, features
and uids an uninterrupted run gives (tested). Unreadable images (and boxes that lie outside their image) are
skipped and counted. With `max_age`, items whose time field (sources.timestamp) is older
are not enrolled (counted as expired; the rows already there that are older go with person.gallery.forget).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from person import files, stopping
from person.data.images import (DEFAULT_LIMITS, ImageLimits, ImageReadError, ImageTransform, decode_pixels,
                                read_image_bytes)
from person.data.detections import crop
from person.gallery import store
from person.gallery.manifest import MANIFEST, GalleryError, Manifest, writer_lock
from person.gallery.segments import Rows
from person.gallery.sources import TIME_FIELD, Item, Source, timestamp
from person.teacher.space import check_same_space

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1024   # items a segment holds: what a kill can cost
EMBED_BATCH = 64


@dataclass
class EnrollSummary:
    gallery: Path
    listed: int
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    pruned: int = 0
    missing: int = 0                          # listed but not on disk (pruned with --prune, else kept)
    unreadable: dict[str, str] = field(default_factory=dict)   # path -> reason
    clipped: int = 0                          # boxes reaching outside their image, clipped
    skipped_lines: Counter = field(default_factory=Counter)   # from the source (detections lines...)
    skip_examples: dict[str, str] = field(default_factory=dict)  # reason -> where it first happened
    expired: int = 0                          # listed items older than max_age by their time field: not enrolled
    rows: int = 0                             # live rows after the run
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.added / max(self.seconds, 1e-9)
        out = [f"{self.gallery}: {self.rows} rows; this run: {self.listed} listed, {self.added} added "
               f"({self.changed} of them changed since the last run), {self.unchanged} unchanged, {self.pruned} "
               f"pruned, {self.missing} missing on disk, {len(self.unreadable)} unreadable, {self.clipped} boxes "
               f"clipped; {self.seconds:.1f} s ({rate:.1f} images/s)"]
        out += [f"  {self.expired} item(s) older than --max-age by their time field: not enrolled"] * bool(self.expired)
        out += [f"  skipped {n} source item(s): {reason} (first: {self.skip_examples.get(reason, '?')})"
                for reason, n in self.skipped_lines.items()]
        out += [f"  unreadable: {path}: {reason}" for path, reason in list(self.unreadable.items())[:10]]
        if len(self.unreadable) > 10:
            out.append(f"  ... and {len(self.unreadable) - 10} more unreadable")
        return out


# ---------------------------------------------------------------------- loading, in threads ahead of the forward

LOAD_STEP = 8                 # items per task a loading thread takes: few futures, and order kept cheaply
LOAD_AHEAD = 2 * EMBED_BATCH  # items the threads may load beyond the caller's: the next batch is ready in time


class _Loaded(NamedTuple):
    """What loading one item gave: its prepared pixels (None when unreadable, with the reason) and its file's facts."""
    prepared: np.ndarray | None   # what encoder.embed takes
    why: str | None
    clipped: bool
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class _Job:
    root: Path
    transform: ImageTransform | None   # the exported model's resize, or None (the teacher resizes in embed)
    limits: ImageLimits

    def load(self, item: Item) -> _Loaded:
        """Read, hash, decode, crop and resize one item (the read, the hash, the decode and the resize release the
        GIL)."""
        path = self.root / item.path
        try:
            st = os.stat(path)  # before the read: a change after it shows as changed on the next run
            hint = self.transform.size if self.transform is not None and item.bbox is None else None
            data = read_image_bytes(path, self.limits)
            digest = hashlib.sha256(data).hexdigest()  # of the bytes decoded here: one read, no window between
            pixels = decode_pixels(data, path, hint, self.limits)
            clipped = False
            if item.bbox is not None:
                pixels, clipped = crop(pixels, item.bbox)
            pixels = np.ascontiguousarray(pixels)  # a box's own copy: a view would keep its whole frame while queued
            prepared = self.transform(pixels) if self.transform is not None else pixels
            return _Loaded(prepared, None, clipped, st.st_size, st.st_mtime_ns, digest)
        except (ImageReadError, OSError) as e:
            return _Loaded(None, str(e).removeprefix(f"{path}: "), False, 0, 0, "")

    def load_all(self, items: Sequence[Item]) -> list[_Loaded]:
        return [self.load(item) for item in items]


def _loaded(items: Sequence[Item], job: _Job, workers: int) -> Iterator[tuple[Item, _Loaded]]:
    """Each item with what loading it gave, in the items' order whatever `workers` is.

    With workers > 0, that many threads load up to LOAD_AHEAD items ahead of the caller, so the next batch is read
    and decoded while the caller embeds this one (onnxruntime and torch release the GIL too). Threads, not
    processes: no fork of a process holding the models and the writer lock, no pickling of pixels. OpenCV decodes
    one JPEG at a time per process (person.data.jpeg_warnings holds fd 2 for it), so a second thread overlaps only
    the read, hash, crop and resize around it (and Pillow's decodes of other formats). Closing the iterator
    cancels the loads not started and waits for those running."""
    if workers <= 0:
        yield from ((item, job.load(item)) for item in items)
        return
    tasks = (items[a:a + LOAD_STEP] for a in range(0, len(items), LOAD_STEP))
    window: deque[tuple[Sequence[Item], Future[list[_Loaded]]]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="enrol-load") as pool:
        try:
            for task in tasks:
                window.append((task, pool.submit(job.load_all, task)))
                if len(window) * LOAD_STEP >= LOAD_AHEAD:
                    done, future = window.popleft()
                    yield from zip(done, future.result())
            while window:
                done, future = window.popleft()
                yield from zip(done, future.result())
        finally:
            for _, future in window:
                future.cancel()


# ---------------------------------------------------------------------- the plan

def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _content_changed(path: Path, recorded: str | None) -> bool:
    """Whether the file no longer hashes to what its row recorded (an unreadable one counts as changed)."""
    try:
        return recorded is None or files.sha256_file(path) != recorded
    except OSError:
        return True


def enroll(gallery_dir: str | Path, encoder, source: Source, prune: bool = False, chunk: int = DEFAULT_CHUNK,
           workers: int = 2, limits: ImageLimits = DEFAULT_LIMITS, *,
           on_commit: Callable[[int], None] | None = None, rehash: bool = False, max_age: float | None = None,
           time_field: str = TIME_FIELD) -> EnrollSummary:
    """Bring the gallery up to date with `source` using `encoder` (see the module docstring).

    `rehash`: read and hash every listed file whose size and mtime are unchanged too, and enrol again those
    whose content differs (a file replaced with its mtime forged); without it, serving still refuses them.

    `max_age` (days): items whose `time_field` says they are older are not enrolled (`expired`).

    `workers`: threads that read, hash, decode and resize images ahead of the forward (0: this thread loads each
    batch before embedding it); the gallery is the same whatever it is.

    `on_commit(generation)` is called right after each chunk's segment is committed (gallery.json names it),
    with the generation that commit made; a chunk with nothing readable commits nothing and is not reported.
    It runs while the enrolment holds the writer lock (readers are not blocked): a hook to watch an enrolment
    grow, or to kill it at an exact point (tests/gallery/test_gallery.py)."""
    gallery_dir = Path(gallery_dir)
    start = time.perf_counter()
    if not encoder.has_image:
        raise GalleryError("the encoder has no image model: enrol with an export that holds model_image.onnx, or "
                           "with --teacher")
    with writer_lock(gallery_dir):  # one enrolment at a time: two would enrol the same pending images
        cutoff = -np.inf if max_age is None else time.time() - max_age * 86400

        def expired(item: Item) -> bool:  # an item without a readable time is as old as its enrolment: new
            when = timestamp(item.meta.get(time_field)) if max_age is not None else None
            return when is not None and when < cutoff

        return _enroll_locked(gallery_dir, encoder, source, prune, chunk, workers, limits, start, on_commit, rehash,
                              expired)


def _enroll_locked(gallery_dir: Path, encoder, source: Source, prune: bool, chunk: int, workers: int,
                   limits: ImageLimits, start: float, on_commit: Callable[[int], None] | None,
                   rehash: bool, expired: Callable[[Item], bool]) -> EnrollSummary:
    if not (gallery_dir / MANIFEST).is_file():
        store.create(gallery_dir, encoder.identity, encoder.space, encoder.dim, source.image_root)
    gallery = store.Gallery.open(gallery_dir)
    _check_same_encoder(gallery, encoder, source)
    summary = EnrollSummary(gallery_dir, len(source.items), skipped_lines=source.skipped,
                            skip_examples=source.examples)

    live = np.flatnonzero(gallery.live)
    by_key: dict[tuple, list[int]] = {}
    for i in live:  # rows of one key beyond the newest: left by a run killed between its two commits
        by_key.setdefault((gallery.rows.path[i], _bbox_key(gallery.rows.bbox[i])), []).append(int(i))
    stale = [gallery.rows.uid[i] for rows in by_key.values() for i in sorted(rows)[:-1]]
    newest = {k: max(rows) for k, rows in by_key.items()}
    listed = {item.key for item in source.items}
    pending, replaced = [], []
    for item in source.items:
        if expired(item):  # still listed: --prune does not take its row for gone (forget's --max-age does)
            summary.expired += 1
            continue
        found = _stat(source.image_root / item.path)
        row = newest.get(item.key)
        if found is None:
            summary.missing += 1
            if row is not None and prune:
                replaced.append(gallery.rows.uid[row])
                summary.pruned += 1
            continue
        if row is not None and (gallery.rows.size[row], gallery.rows.mtime_ns[row]) == found and not (
                rehash and _content_changed(source.image_root / item.path, gallery.rows.sha256[row])):
            summary.unchanged += 1
            continue
        if row is not None:
            replaced.append(gallery.rows.uid[row])
            summary.changed += 1
        pending.append(item)
    if prune:
        gone = [gallery.rows.uid[i] for k, i in newest.items() if k not in listed]
        summary.pruned += len(gone)
        replaced += gone
    if stale:
        store.delete(gallery_dir, np.array(stale))

    transform = getattr(getattr(encoder, "models", None), "transform", None)
    job = _Job(source.image_root, transform, limits)
    # A stop request (person.stopping) ends it after the chunk in hand: the next run enrols the rest.
    with stopping.safe_points("after this chunk"), stopping.noting(f"within a chunk ({gallery_dir} keeps the ones "
                                                                   f"committed)"):
        # One stream over every chunk: the next chunk's first batches load while this one is committed.
        with closing(_loaded(pending, job, workers)) as loaded:
            for a in range(0, len(pending), chunk):
                committed = _enroll_chunk(gallery_dir, encoder, islice(loaded, chunk), summary)
                if committed is not None and on_commit is not None:
                    on_commit(committed.generation)
                done = min(a + chunk, len(pending))
                log.info("enrolled %d of %d pending items", done, len(pending))
                if signum := stopping.requested():
                    raise stopping.Stopped(signum, f"after {done} of the {len(pending)} items left ({gallery_dir} "
                                                   f"keeps them)")
    if replaced:
        store.delete(gallery_dir, np.array(replaced))
    summary.rows = len(store.Gallery.open(gallery_dir))
    summary.seconds = time.perf_counter() - start
    return summary


def _bbox_key(box: np.ndarray) -> tuple[float, ...] | None:
    return None if np.isnan(box[0]) else tuple(float(v) for v in box)


def _check_same_encoder(gallery: store.Gallery, encoder, source: Source) -> None:
    m = gallery.manifest
    check_same_space(m.space, encoder.space, f"the gallery {gallery.folder}", "this encoder")
    same = {k: v for k, v in encoder.identity.items() if k != "name"} == {k: v for k, v in m.encoder.items()
                                                                         if k != "name"}
    if not same:
        raise GalleryError(f"{gallery.folder} was enrolled with {m.encoder}; enrolling with {encoder.identity} would "
                           f"mix two models' features in one gallery: use another --gallery")
    if Path(m.image_root) != Path(source.image_root).resolve():
        raise GalleryError(f"{gallery.folder} holds images under {m.image_root}, this source's are under "
                           f"{Path(source.image_root).resolve()}: use another --gallery for another image root")


def _enroll_chunk(gallery_dir: Path, encoder, loaded: Iterable[tuple[Item, _Loaded]],
                  summary: EnrollSummary) -> Manifest | None:
    """Embed and commit one chunk; the manifest of its commit, or None when nothing in it was readable.

    Each batch is embedded as soon as it is full, while the loading threads decode the next (`_loaded`). Batches
    are the chunk's readable items in order, EMBED_BATCH at a time, whatever `workers` is: the same inputs to
    the same forward, so the same features."""
    kept: list[Item] = []
    stats: list[tuple[int, int, str]] = []
    features: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    for item, got in loaded:
        if got.prepared is None:
            _count_unreadable(summary, item, got.why)
            continue
        kept.append(item)
        stats.append((got.size, got.mtime_ns, got.sha256))
        summary.clipped += got.clipped
        batch.append(got.prepared)
        if len(batch) == EMBED_BATCH:
            features.append(encoder.embed(batch).astype(np.float16))
            batch = []
    if batch:
        features.append(encoder.embed(batch).astype(np.float16))
    if not kept:
        return None
    rows = Rows(np.zeros(len(kept), np.int64), [i.path for i in kept],
                np.array([i.bbox if i.bbox is not None else (np.nan,) * 4 for i in kept], np.float64).reshape(-1, 4),
                np.array([-1 if i.identity is None else i.identity for i in kept], np.int64),
                np.array([s for s, _, _ in stats], np.int64), np.array([m for _, m, _ in stats], np.int64),
                [dict(i.meta) for i in kept], [d for _, _, d in stats])
    manifest = store.append(gallery_dir, np.concatenate(features), rows)
    summary.added += len(kept)
    return manifest


def _count_unreadable(summary: EnrollSummary, item: Item, why: str | None) -> None:
    name = base = item.path if item.bbox is None else f"{item.path} {list(item.bbox)}"
    repeat = 1
    while name in summary.unreadable:  # the same box listed again: each listing is counted
        repeat += 1
        name = f"{base} (listed again, #{repeat})"
    summary.unreadable[name] = why
