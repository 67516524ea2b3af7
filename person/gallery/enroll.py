"""Enrolment: embed what a source lists into a gallery, incrementally and resumably.

Running it again adds only new or changed images (a file's size or mtime differs: its old row is deleted;
with `rehash`, also a file whose content changed under a forged size and mtime) and, with `prune`, drops rows
whose image is gone or no longer listed. Each row records the sha256 of the very bytes that were decoded, so
serving can tell the enrolled image from whatever sits at its path later (person.gallery.images). The pending
items are cut into fixed chunks, each decoded in worker processes, embedded in batches and committed as one
segment; killed at any moment, the next run finds the finished chunks in the gallery and enrols the rest in the
same order, so it ends with the rows, features and uids an uninterrupted run gives (tested). Unreadable images (and boxes that lie
outside their image) are skipped and counted. With `max_age`, items whose time field (sources.timestamp) is older
are not enrolled (counted as expired; the rows already there that are older go with person.gallery.forget).
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from person import files, stopping
from person.data.images import (DEFAULT_LIMITS, ImageLimits, ImageReadError, ImageTransform, decode_pixels,
                                read_image_bytes)
from person.data.detections import crop
from person.gallery import store
from person.gallery.manifest import MANIFEST, GalleryError, Manifest, close_inherited_locks, writer_lock
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


# ---------------------------------------------------------------------- decoding, in worker processes

@dataclass(frozen=True)
class _Job:
    root: Path
    transform: ImageTransform | None   # the exported model's resize (in the worker), or None (the teacher's own)
    limits: ImageLimits


_JOB: _Job | None = None


def _use(job: _Job) -> None:
    global _JOB
    _JOB = job


def _init_worker(job: _Job) -> None:
    _use(job)
    close_inherited_locks()


def _load(item: Item) -> tuple[np.ndarray | None, str | None, bool, int, int, str]:
    """(prepared pixels or None, why not, clipped, size, mtime_ns, sha256) of one item, in a worker."""
    path = _JOB.root / item.path
    try:
        st = os.stat(path)  # before the read: a change after it shows as changed on the next run
        hint = _JOB.transform.size if _JOB.transform is not None and item.bbox is None else None
        data = read_image_bytes(path, _JOB.limits)
        digest = hashlib.sha256(data).hexdigest()  # of the bytes decoded here: one read, no window between
        pixels = decode_pixels(data, path, hint, _JOB.limits)
        clipped = False
        if item.bbox is not None:
            pixels, clipped = crop(pixels, item.bbox)
        prepared = _JOB.transform(np.ascontiguousarray(pixels)) if _JOB.transform is not None else pixels
        return prepared, None, clipped, st.st_size, st.st_mtime_ns, digest
    except (ImageReadError, OSError) as e:
        return None, str(e).removeprefix(f"{path}: "), False, 0, 0, ""


def _decoded(items: Sequence[Item], job: _Job, workers: int) -> Iterator[tuple[Item, tuple]]:
    if workers <= 0:
        _use(job)
        yield from ((item, _load(item)) for item in items)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield from zip(items, pool.imap(_load, items, chunksize=8))


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
        for a in range(0, len(pending), chunk):
            committed = _enroll_chunk(gallery_dir, encoder, pending[a:a + chunk], job, workers, summary)
            if committed is not None and on_commit is not None:
                on_commit(committed.generation)
            done = min(a + chunk, len(pending))
            log.info("enrolled %d of %d pending items", done, len(pending))
            if signum := stopping.requested():
                raise stopping.Stopped(signum, f"after {done} of the {len(pending)} items left ({gallery_dir} keeps "
                                               f"them)")
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


def _enroll_chunk(gallery_dir: Path, encoder, items: Sequence[Item], job: _Job, workers: int,
                  summary: EnrollSummary) -> Manifest | None:
    """Embed and commit one chunk; the manifest of its commit, or None when nothing in it was readable."""
    kept, prepared, stats = [], [], []
    for item, (ready, why, clipped, size, mtime_ns, digest) in _decoded(items, job, workers):
        if ready is None:
            name = base = item.path if item.bbox is None else f"{item.path} {list(item.bbox)}"
            repeat = 1
            while name in summary.unreadable:  # the same box listed again: each listing is counted
                repeat += 1
                name = f"{base} (listed again, #{repeat})"
            summary.unreadable[name] = why
            continue
        kept.append(item)
        prepared.append(ready)
        stats.append((size, mtime_ns, digest))
        summary.clipped += clipped
    if not kept:
        return None
    features = np.concatenate([encoder.embed(prepared[a:a + EMBED_BATCH])
                               for a in range(0, len(prepared), EMBED_BATCH)]).astype(np.float16)
    rows = Rows(np.zeros(len(kept), np.int64), [i.path for i in kept],
                np.array([i.bbox if i.bbox is not None else (np.nan,) * 4 for i in kept], np.float64).reshape(-1, 4),
                np.array([-1 if i.identity is None else i.identity for i in kept], np.int64),
                np.array([s for s, _, _ in stats], np.int64), np.array([m for _, m, _ in stats], np.int64),
                [dict(i.meta) for i in kept], [d for _, _, d in stats])
    manifest = store.append(gallery_dir, features, rows)
    summary.added += len(kept)
    return manifest
