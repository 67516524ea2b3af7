"""A gallery opened at one generation, and the writes that make the next one (append, delete, compact, rewrite).

Every write takes the writer lock, writes its new immutable files, then replaces gallery.json; files no
manifest names any more (a replaced tombstone list, compacted segments, a killed run's half-written segment)
are removed by the next write. A `Gallery` holds what it opened: a reader never sees a mix of generations.

Leases. Each commit makes an empty file leases/gen-NNNNNN; a reader holds a shared flock on its generation's from
opening until `close()` (or until the Gallery is collected). Ordinary writes ignore them (a reader keeps what it
memory-mapped: removed files stay readable to it); erasure does not: `purge` removes every file the current
generation does not name once no reader holds an older generation's lease, so erased bytes leave the disk as
soon as the last reader of the generation that held them lets go (person.gallery.forget).
"""
from __future__ import annotations

import fcntl
import os
import time
import uuid
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from person import files
from person.gallery.manifest import (GalleryError, Manifest, check_image_root, read_manifest, write_manifest,
                                     writer_lock)
from person.gallery.segments import SEGMENTS, Rows, read_segment, verify_segment, write_segment

TOMBSTONES, LEASES = "tombstones", "leases"
PURGE_POLL = 0.05  # seconds between looks at the leases while `purge` waits for readers


class Gallery:
    """One generation of a gallery: every row's features (float16, memory-mapped) and metadata, and which
    rows are live (not deleted)."""

    def __init__(self, folder: Path, manifest: Manifest, features: list[np.ndarray], rows: Rows,
                 deleted: np.ndarray, lease: int | None = None) -> None:
        self.folder, self.manifest, self.segment_features, self.rows = folder, manifest, features, rows
        self.live = ~np.isin(rows.uid, deleted)
        self._uid_position: dict[int, int] | None = None
        self.columns: dict = {}  # field -> its values as filters compare them (person.gallery.filters), built once
        self._release = weakref.finalize(self, os.close, lease) if lease is not None else None

    @classmethod
    def open(cls, folder: str | Path) -> Gallery:
        """The gallery's current generation. A write keeps the previous generation's files, so a reader that read
        the manifest just before a commit still finds them; if it lost a race with two commits, it reads again."""
        folder = Path(folder)
        for attempt in range(3):
            manifest = read_manifest(folder)
            lease = _take_lease(folder, manifest.generation)
            try:
                features, parts = [], []
                for seg in manifest.segments:
                    f, r = read_segment(folder, seg, manifest.dim)
                    features.append(f)
                    parts.append(r)
                gallery = cls(folder, manifest, features, Rows.concat(parts), _read_tombstones(folder, manifest),
                              lease)
                lease = None  # the Gallery closes it
                return gallery
            except GalleryError:
                if attempt == 2 or read_manifest(folder).generation == manifest.generation:
                    raise  # the files of a generation that is still current are missing: damage, not a race
            finally:
                if lease is not None:
                    os.close(lease)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Let go of this generation's lease: a purge waiting for its readers may remove its files now (memory-mapped
        features stay readable). Also done when the Gallery is collected."""
        if self._release is not None:
            self._release()

    # ------------------------------------------------------------------ what it holds
    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def image_root(self) -> Path:
        return Path(self.manifest.image_root)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def __len__(self) -> int:
        return int(self.live.sum())

    def features(self) -> np.ndarray:
        """Every row's features, float16 [rows, D] (deleted rows included: mask with `live`)."""
        if not self.segment_features:
            return np.zeros((0, self.dim), np.float16)
        if len(self.segment_features) == 1:
            return self.segment_features[0]
        return np.concatenate(self.segment_features)

    def position(self, uid: int) -> int:
        """The row position of a live uid; KeyError when it is unknown or deleted."""
        if self._uid_position is None:
            self._uid_position = {int(u): i for i, u in enumerate(self.rows.uid) if self.live[i]}
        return self._uid_position[int(uid)]

    def image_path(self, i: int) -> Path:
        return self.image_root / self.rows.path[i]

    def missing_images(self, sample: int = 16) -> list[str]:
        """Paths (relative) of up to `sample` live rows, spread over the gallery, whose files are gone: an image
        root that moved shows here."""
        live = np.flatnonzero(self.live)
        picks = live[np.linspace(0, len(live) - 1, min(sample, len(live))).astype(int)] if len(live) else live
        return [self.rows.path[i] for i in picks if not self.image_path(int(i)).is_file()]

    def verify(self) -> None:
        """Refuse (GalleryError naming the file) when a segment file this generation holds is gone or no longer
        hashes to what the manifest recorded: what a search of it would meet. A stat per file when unchanged."""
        for seg in self.manifest.segments:
            verify_segment(self.folder, seg)

    def changed(self) -> bool:
        """Whether gallery.json now names another generation than the one held (a cheap read of one file);
        GalleryError when it cannot be read: the gallery a search would meet is gone, not unchanged."""
        return read_manifest(self.folder).generation != self.generation


def _lease_name(generation: int) -> str:
    return f"gen-{generation:06d}"


def _take_lease(folder: Path, generation: int) -> int | None:
    """A descriptor holding a shared lock on the generation's lease, or None: a gallery written before leases, a
    read-only one, or a generation being purged (its files are going: reading them fails and Gallery.open reads
    the manifest again)."""
    try:
        fd = os.open(folder / LEASES / _lease_name(generation), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a purge holds its exclusive lock only while it unlinks the file
        if os.fstat(fd).st_nlink:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _read_tombstones(folder: Path, manifest: Manifest) -> np.ndarray:
    if manifest.tombstones is None:
        return np.zeros(0, np.int64)
    path = folder / TOMBSTONES / manifest.tombstones
    try:
        uids = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise GalleryError(f"{path}: missing or unreadable ({e}); the gallery is damaged") from None
    if uids.dtype != np.int64 or uids.ndim != 1 or len(uids) != manifest.deleted:
        raise GalleryError(f"{path}: {uids.dtype} {uids.shape}, the manifest says {manifest.deleted} deleted uids")
    return uids


# ---------------------------------------------------------------------- writes

def create(folder: str | Path, encoder: dict[str, Any], space: dict[str, Any], dim: int,
           image_root: str | Path) -> Manifest:
    """An empty gallery (generation 0) for features of `dim` in `space`."""
    folder = Path(folder)
    with writer_lock(folder):
        if (folder / "gallery.json").exists():
            raise GalleryError(f"{folder} already holds a gallery")
        root = str(Path(image_root).resolve())
        check_image_root(root, folder)
        manifest = Manifest(encoder=encoder, space=space, dim=dim, image_root=root, id=uuid.uuid4().hex)
        write_manifest(folder, manifest)
    return manifest


def _commit(folder: Path, previous: Manifest, changed: Manifest) -> Manifest:
    """Write `changed` as the generation after `previous` (the manifest the writer read), under the writer lock."""
    manifest = replace(changed, generation=previous.generation + 1)
    os.close(os.open(files.make_folder(folder / LEASES) / _lease_name(manifest.generation), os.O_CREAT | os.O_RDONLY,
                     0o644))  # before the manifest names the generation: every reader of it finds its lease
    write_manifest(folder, manifest)
    _remove_unnamed(folder, (manifest, previous))
    return manifest


def _remove_unnamed(folder: Path, keep: tuple[Manifest, ...]) -> None:
    """Segments and tombstone files neither the new nor the previous manifest names (replaced two generations
    ago, or temp files left by a killed write: the caller holds the writer lock, so no write is under way): a
    reader that opened the previous generation still finds its files."""
    segments = {s.name for m in keep for s in m.segments}
    tombstones = {m.tombstones for m in keep}
    for p in (folder / SEGMENTS).iterdir() if (folder / SEGMENTS).is_dir() else ():
        if p.name in segments:
            continue
        files.remove(p, ignore_errors=True)
    for p in (folder / TOMBSTONES).iterdir() if (folder / TOMBSTONES).is_dir() else ():
        if p.name not in tombstones:
            p.unlink(missing_ok=True)
    leases = {_lease_name(m.generation) for m in keep}
    for p in (folder / LEASES).iterdir() if (folder / LEASES).is_dir() else ():
        if p.name not in leases:
            p.unlink(missing_ok=True)


def append(folder: str | Path, features: np.ndarray, rows: Rows) -> Manifest:
    """Add a segment of `rows` (their uids assigned here, from the manifest's counter; their enrolment time now,
    where they carry none) and commit it."""
    folder = Path(folder)
    with writer_lock(folder):
        manifest = read_manifest(folder)
        if features.shape[1:] != (manifest.dim,):
            raise GalleryError(f"{folder}: features of dimension {features.shape[1:]} for a gallery of {manifest.dim}")
        name = f"seg-{manifest.generation + 1:06d}"
        rows = replace(rows, uid=np.arange(manifest.next_uid, manifest.next_uid + len(rows), dtype=np.int64),
                       enrolled_ns=np.where(rows.enrolled_ns >= 0, rows.enrolled_ns, time.time_ns()))
        segment = write_segment(folder, name, features, rows)
        return _commit(folder, manifest, replace(manifest, segments=[*manifest.segments, segment],
                                                 next_uid=manifest.next_uid + len(rows)))


def delete(folder: str | Path, uids: np.ndarray) -> Manifest:
    """Mark rows deleted (a new tombstone file holding every deleted uid) and commit."""
    folder = Path(folder)
    with writer_lock(folder):
        manifest = read_manifest(folder)
        old = _read_tombstones(folder, manifest)
        uids = np.union1d(old, np.asarray(uids, np.int64)).astype(np.int64)
        if len(uids) == len(old):
            return manifest
        name = f"tomb-{manifest.generation + 1:06d}.npy"
        with files.atomic_file(files.make_folder(folder / TOMBSTONES) / name) as f:
            np.save(f, uids, allow_pickle=False)
        return _commit(folder, manifest, replace(manifest, tombstones=name, deleted=len(uids)))


def compact(folder: str | Path) -> Manifest:
    """Rewrite the live rows as one segment and drop the tombstones (uids are kept)."""
    folder = Path(folder)
    gallery = Gallery.open(folder)
    with writer_lock(folder):
        if read_manifest(folder).generation != gallery.generation:
            raise GalleryError(f"{folder} changed while compacting; run the compaction again")
        keep = np.flatnonzero(gallery.live)
        manifest = gallery.manifest
        name = f"seg-{manifest.generation + 1:06d}"
        rows = gallery.rows.take(keep)
        segment = write_segment(folder, name, np.asarray(gallery.features()[keep]), rows)
        return _commit(folder, manifest, replace(manifest, segments=[segment] if len(rows) else [],
                                                 tombstones=None, deleted=0))


def rewrite(folder: Path, gallery: Gallery, drop: np.ndarray) -> tuple[Manifest, list[str]]:
    """Commit the generation after `gallery`'s without the rows at positions `drop` (live or deleted): each segment
    holding one is written again without them, the others kept as they are, and the tombstones keep only the uids
    still held. (manifest, names of the segments rewritten). The caller holds the writer lock and opened `gallery`
    under it; the old segments go with the previous generation's files (`purge`)."""
    manifest = gallery.manifest
    dropped = np.zeros(len(gallery.rows), dtype=bool)
    dropped[np.asarray(drop, np.int64)] = True
    segments, rewritten, start = [], [], 0
    for seg, features in zip(manifest.segments, gallery.segment_features):
        here = np.arange(start, start + seg.rows)
        start += seg.rows
        if not dropped[here].any():
            segments.append(seg)
            continue
        rewritten.append(seg.name)
        keep = here[~dropped[here]]
        if len(keep):  # an emptied segment is simply no longer named
            name = f"seg-{manifest.generation + 1:06d}-{len(rewritten)}"
            segments.append(write_segment(folder, name, np.asarray(features[keep - here[0]]), gallery.rows.take(keep)))
    deleted = np.intersect1d(_read_tombstones(folder, manifest), gallery.rows.uid[~dropped]).astype(np.int64)
    tombstones = manifest.tombstones
    if len(deleted) != manifest.deleted:
        tombstones = f"tomb-{manifest.generation + 1:06d}.npy" if len(deleted) else None
        if tombstones is not None:
            with files.atomic_file(files.make_folder(folder / TOMBSTONES) / tombstones) as f:
                np.save(f, deleted, allow_pickle=False)
    changed = replace(manifest, segments=segments, tombstones=tombstones, deleted=len(deleted))
    return _commit(folder, manifest, changed), rewritten


def purge(folder: str | Path, wait: float = 0.0) -> list[int]:
    """Remove every file the current generation does not name (the previous generation's included) once no reader
    holds the lease of an older generation, waiting up to `wait` seconds for them to let go. The generations
    readers still hold (their files stay: the next purge, or two ordinary writes, remove them); [] when done."""
    folder = Path(folder)
    read_manifest(folder)  # not a gallery: said before the lock would leave a lock file in the folder
    deadline = time.monotonic() + wait
    while True:
        with writer_lock(folder):
            manifest = read_manifest(folder)
            held = _held_leases(folder, manifest.generation)
            if not held:
                _remove_unnamed(folder, (manifest,))
                return []
        if time.monotonic() >= deadline:
            return held
        time.sleep(PURGE_POLL)


def _held_leases(folder: Path, current: int) -> list[int]:
    """Generations before `current` whose lease a reader holds; the others' leases are unlinked while locked, so a
    reader opening one after sees it gone."""
    held = []
    for p in sorted((folder / LEASES).iterdir()) if (folder / LEASES).is_dir() else ():
        if p.name == _lease_name(current) or not p.name.removeprefix("gen-").isdigit():
            continue
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            p.unlink(missing_ok=True)
        except BlockingIOError:
            held.append(int(p.name.removeprefix("gen-")))
        finally:
            os.close(fd)
    return held
