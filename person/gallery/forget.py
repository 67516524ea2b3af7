"""Erasure and retention: rows removed from a gallery so that their bytes leave the disk, not only its searches.

    report = forget("gallery/", Selector(images=("cam1/0001.jpg",)), thumbs=ThumbnailCache().purge)
    report = forget("gallery/", Selector(max_age_days=30))          # retention

What goes, in this order:
- the rows the selector picks, live ones and deleted ones whose bytes a segment still held: the segments holding
  them are written again without them and one atomic commit names the new ones (store.rewrite);
- every saved approximate index is built anew from the rows left (index.rebuild_saved), not filtered;
- the Milvus collection `milvus` names (a URI; the gallery's default collection unless `milvus_collection`)
  deletes them (milvus.erase);
- thumbnails of images no live row shows any more are removed by `thumbs` (ThumbnailCache.purge of
  person.web.images, passed in: the web stage sits above this one);
- the previous generation's files, which still hold the bytes, are removed as soon as no reader holds that
  generation (store.purge, waiting up to `wait` seconds); generations still held are named in the report.
`audit`, when given, is called once after the commit with the event (`ForgetReport.event`), also when a later
step failed (its "error" then says which).

A selector picks the rows matching every kind given; within a kind any value (--where conditions: all of them,
as in search). An --image, --track or --uid value that matches no row, or conditions no row meets, is refused
before anything is erased (a typo must not pass for an erasure); retention that finds nothing old is not an error.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from person import files
from person.data.unlabeled import TRACK_KEYS
from person.gallery import filters, index, milvus as vector_db, store
from person.gallery.manifest import GalleryError, read_manifest, writer_lock
from person.gallery.segments import Rows
from person.gallery.sources import TIME_FIELD, timestamp

DAY = 86400.0
SHOWN = 20  # uids listed in the report's lines (the event lists them all)


@dataclass(frozen=True)
class Selector:
    """Which rows to erase (see the module docstring for how kinds combine)."""

    images: tuple[str, ...] = ()       # image files: their path under the image root, or any row of the same bytes
    tracks: tuple[str, ...] = ()       # a detections line's track id (its `track` or `track_id`), as text
    where: tuple[str, ...] = ()        # conditions, as search's --where
    uids: tuple[int, ...] = ()
    max_age_days: float | None = None  # rows older than this: the time field, else the enrolment time
    time_field: str = TIME_FIELD

    def explicit(self) -> bool:
        return bool(self.images or self.tracks or self.where or self.uids)

    def to_dict(self) -> dict[str, Any]:
        """What was given (the time field only with --max-age), JSON-safe."""
        given = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v not in ((), None)}
        if self.max_age_days is None:
            del given["time_field"]
        return given


@dataclass
class ForgetReport:
    gallery: Path
    selector: dict[str, Any]
    generation: int                  # the generation the erasure committed (the one read, when nothing was erased)
    uids: list[int] = field(default_factory=list)   # every row that left the gallery
    rows: int = 0                    # of them live (searchable) ones
    deleted_rows: int = 0            # of them rows deleted before whose bytes were still on disk
    no_age: int = 0                  # rows --max-age could not date (no time field, enrolled before it was recorded)
    segments_rewritten: list[str] = field(default_factory=list)
    indexes_rebuilt: list[str] = field(default_factory=list)
    milvus_deleted: int | None = None    # None: no Milvus collection given or found
    thumbnails: int | None = None        # None: no thumbnail cache given
    held_by_readers: list[int] = field(default_factory=list)  # generations whose files readers still hold
    error: str | None = None             # a step after the commit that failed

    def event(self) -> dict[str, Any]:
        """The audit event: JSON-safe."""
        return {"action": "erase", "gallery": str(self.gallery), "ids": self.uids, "selector": self.selector,
                "rows": self.rows, "deleted_rows": self.deleted_rows, "generation": self.generation,
                "segments_rewritten": self.segments_rewritten, "indexes_rebuilt": self.indexes_rebuilt,
                "milvus_deleted": self.milvus_deleted, "thumbnails": self.thumbnails,
                "held_by_readers": self.held_by_readers, "error": self.error}

    def lines(self) -> list[str]:
        if not self.uids:
            out = [f"{self.gallery}: nothing to erase (no row is older than --max-age); generation {self.generation}"]
        else:
            shown = ", ".join(map(str, self.uids[:SHOWN])) + (", ..." if len(self.uids) > SHOWN else "")
            out = [f"{self.gallery}: erased {self.rows} row(s) and {self.deleted_rows} deleted row(s) still on disk "
                   f"(uids {shown}); generation {self.generation}",
                   f"  segments rewritten without them: {len(self.segments_rewritten)}",
                   f"  saved indexes rebuilt: {', '.join(self.indexes_rebuilt) or 'none saved'}",
                   "  Milvus: " + ("no collection given or found" if self.milvus_deleted is None else
                                   f"{self.milvus_deleted} row(s) deleted"),
                   "  thumbnails removed: " + ("no cache given" if self.thumbnails is None else str(self.thumbnails))]
            out.append("  the previous generation's files are removed" if not self.held_by_readers else
                       f"  generation(s) {', '.join(map(str, self.held_by_readers))} still held by a reader, so their "
                       f"files (with the erased bytes) stay until it lets go (a server does at its next request): "
                       f"then run search/forget.py --gallery {self.gallery} --purge")
        if self.no_age:
            out.append(f"  {self.no_age} row(s) have no {self.selector.get('time_field', TIME_FIELD)!r} field and no "
                       f"enrolment time (enrolled before it was recorded): kept; erase them with --uid or --where")
        return out


def forget(gallery_dir: str | Path, selector: Selector, *, thumbs: Callable[[set[str]], int] | None = None,
           milvus: str | None = None, milvus_collection: str | None = None,
           audit: Callable[[dict[str, Any]], None] | None = None, wait: float = 0.0,
           now: float | None = None) -> ForgetReport:
    """Erase the rows `selector` picks from the gallery, everywhere they are kept (the module docstring); `now`
    (Unix seconds, default the clock) is what --max-age counts back from."""
    folder = Path(gallery_dir)
    if not selector.explicit() and selector.max_age_days is None:
        raise GalleryError("nothing to erase given: name rows with --image, --track, --where, --uid or --max-age")
    read_manifest(folder)  # not a gallery: said before the lock would leave a lock file in the folder
    with writer_lock(folder):  # one erasure or enrolment at a time, from the selection to the rebuilt index
        gallery = store.Gallery.open(folder)
        try:
            picked, no_age = select(gallery, selector, time.time() if now is None else now)
            drop = np.flatnonzero(picked)
            report = ForgetReport(folder, selector.to_dict(), gallery.generation,
                                  [int(u) for u in gallery.rows.uid[drop]], int(gallery.live[drop].sum()),
                                  int((~gallery.live[drop]).sum()), no_age)
            if not len(drop):
                if selector.max_age_days is None:
                    raise GalleryError(f"{folder}: nothing erased: no row matches all of {_said(selector)}")
                return report
            erased = {gallery.rows.sha256[i] for i in drop}
            manifest, report.segments_rewritten = store.rewrite(folder, gallery, drop)
        finally:
            gallery.close()  # this process must not count as a reader of the generation it replaced
        report.generation = manifest.generation
        _after_commit(report, audit, lambda: _copies(folder, report, erased, thumbs, milvus, milvus_collection))
    _after_commit(report, audit, lambda: setattr(report, "held_by_readers", store.purge(folder, wait)))
    if audit is not None:
        audit(report.event())
    return report


def _after_commit(report: ForgetReport, audit: Callable[[dict[str, Any]], None] | None, step: Callable[[], Any]
                  ) -> None:
    """Run a step after the commit; when it fails, the erasure that did happen is audited, and the error says it
    happened."""
    try:
        step()
    except Exception as e:
        report.error = str(e) or type(e).__name__
        if audit is not None:
            audit(report.event())
        raise GalleryError(f"{report.gallery}: {report.rows + report.deleted_rows} row(s) erased from the gallery's "
                           f"segments (generation {report.generation}), then: {report.error}") from e


def _copies(folder: Path, report: ForgetReport, erased: set[str | None], thumbs: Callable[[set[str]], int] | None,
            milvus: str | None, milvus_collection: str | None) -> None:
    """The erased rows out of the copies beside the segments: saved indexes, Milvus, thumbnails."""
    current = store.Gallery.open(folder)
    try:
        report.indexes_rebuilt = index.rebuild_saved(folder, current.features(), current.manifest)
        if milvus:
            report.milvus_deleted = vector_db.erase(current, milvus, milvus_collection)
        if thumbs is not None:  # an image another live row still shows keeps its thumbnail
            report.thumbnails = thumbs({h for h in erased if h} - {current.rows.sha256[i]
                                                                  for i in np.flatnonzero(current.live)})
    finally:
        current.close()


def _said(selector: Selector) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in selector.to_dict().items())


def select(gallery: store.Gallery, selector: Selector, now: float) -> tuple[np.ndarray, int]:
    """(bool [rows]: the rows picked, live or deleted; how many rows --max-age could not date). GalleryError naming
    every value that matches no row."""
    rows, unmatched = gallery.rows, []
    picked = np.ones(len(rows), dtype=bool)

    def any_of(kind: str, values: tuple, match: Callable[[Any], np.ndarray]) -> None:
        nonlocal picked
        if values:
            hits = [match(v) for v in values]
            unmatched.extend(f"--{kind} {v}" for v, h in zip(values, hits) if not h.any())
            picked &= np.logical_or.reduce(hits)

    any_of("image", selector.images, lambda image: _image_rows(gallery, image))
    tracks = [{str(m[k]) for k in TRACK_KEYS if m.get(k) is not None} for m in rows.meta]
    any_of("track", selector.tracks, lambda track: np.array([str(track) in t for t in tracks], dtype=bool))
    any_of("uid", selector.uids, lambda uid: rows.uid == uid)
    if selector.where:
        conditions = [filters.parse(w) for w in selector.where]
        filters.check(rows, np.ones(len(rows), dtype=bool), conditions, None)  # an unknown field, by name
        any_of("where", (" ".join(selector.where),), lambda _: filters.mask(rows, conditions))
    if unmatched:
        raise GalleryError(f"{gallery.folder}: nothing erased: {', '.join(unmatched)} match(es) no row of the gallery "
                           f"(erased already, or never enrolled: check the value)")
    no_age = 0
    if selector.max_age_days is not None:
        when = row_times(rows, selector.time_field)
        no_age = int((np.isnan(when) & picked & gallery.live).sum())
        with np.errstate(invalid="ignore"):  # NaN (no date known) is never older: kept, and counted
            picked &= when < now - selector.max_age_days * DAY
    return picked, no_age


def row_times(rows: Rows, time_field: str = TIME_FIELD) -> np.ndarray:
    """float64 [n]: each row's time in Unix seconds, from its detections field `time_field` when it has a readable
    one, else when it was enrolled; NaN when neither is known."""
    out = np.where(rows.enrolled_ns >= 0, rows.enrolled_ns / 1e9, np.nan)
    for i, meta in enumerate(rows.meta):
        t = timestamp(meta.get(time_field))
        if t is not None:
            out[i] = t
    return out


def _image_rows(gallery: store.Gallery, image: str) -> np.ndarray:
    """Rows of the image file `image`: its path as enrolled (relative to the image root; an absolute path, or one
    relative to here, under the root), and any row whose enrolled bytes hash as that file's do (a copy)."""
    root, given = gallery.image_root, Path(image)
    names = set() if given.is_absolute() else {given.as_posix().removeprefix("./")}
    found = None
    for candidate in (given if given.is_absolute() else Path.cwd() / given, root / given):
        if candidate.is_file():
            found = found or candidate
            for base, path in ((str(root), os.path.abspath(candidate)),
                               (os.path.realpath(root), os.path.realpath(candidate))):
                relative = os.path.relpath(path, base)
                if not relative.startswith(".."):
                    names.add(Path(relative).as_posix())
    match = np.array([p in names for p in gallery.rows.path], dtype=bool)
    if found is not None:
        digest = files.sha256_file(found)
        match |= np.array([h == digest for h in gallery.rows.sha256], dtype=bool)
    return match
