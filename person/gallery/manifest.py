"""gallery.json, the manifest: which segments are live, which rows are deleted, what encoder and space.

Readers read the manifest once and then only files it names, all immutable, so they see one consistent
generation; writers build a new segment or tombstone file first and then replace the manifest atomically
(person.files), bumping `generation`. One writer at a time holds `gallery.lock` (an advisory flock).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from person import files
from person.errors import PersonError

MANIFEST, LOCK = "gallery.json", "gallery.lock"
# 2: each row records its image file's sha256 and each segment its files' sha256 (version 1 recorded neither)
GALLERY_FORMAT, GALLERY_VERSION = "person-gallery", 2


class GalleryError(PersonError, ValueError):
    """A gallery that cannot be used as asked; the message names the file and the fix."""


class GalleryVersionError(GalleryError):
    """A gallery of another format version: made by an older (or newer) checkout; enrol it again."""


@dataclass
class Segment:
    name: str               # folder under segments/
    rows: int
    features_sha256: str    # of its features.npy and rows.jsonl as written: checked when a process first opens them
    rows_sha256: str


@dataclass
class Manifest:
    """What a gallery holds at one generation."""

    encoder: dict[str, Any]   # kind ("export" / "teacher"), name, card sha256 or teacher id, variant
    space: dict[str, Any]     # person.teacher.space.space_of: what its features can be compared with
    dim: int
    image_root: str
    generation: int = 0
    segments: list[Segment] = field(default_factory=list)
    tombstones: str | None = None   # file (uids of deleted rows) under tombstones/, or None
    deleted: int = 0
    next_uid: int = 0
    id: str = ""                    # random, set at creation: tells a gallery from one made again in its folder
    format: str = GALLERY_FORMAT
    version: int = GALLERY_VERSION

    @property
    def rows(self) -> int:
        """Rows in live segments, deleted ones included."""
        return sum(s.rows for s in self.segments)

    @property
    def count(self) -> int:
        """Rows a search can return."""
        return self.rows - self.deleted

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "count": self.count}


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of a gallery folder, checked for its format, version and fields."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise GalleryError(f"{folder}: no {MANIFEST}; not a gallery (make one with search/enroll.py --gallery "
                           f"{folder})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GalleryError(f"{path}: not a readable manifest ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != GALLERY_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise GalleryError(f"{path}: not a gallery manifest (format {found!r})")
    version = raw.get("version")
    if version != GALLERY_VERSION:
        made = (" (made before images and segments were recorded by content hash)"
                if isinstance(version, int) and not isinstance(version, bool) and version < GALLERY_VERSION else "")
        raise GalleryVersionError(f"{folder}: gallery format version {version!r}{made}, this code reads version "
                           f"{GALLERY_VERSION}; enrol it again into a new folder: search/enroll.py --gallery "
                           f"NEW_FOLDER with the same source and model")
    try:
        raw.pop("count", None)
        raw["segments"] = [Segment(**s) for s in raw["segments"]]
        manifest = Manifest(**raw)
    except (KeyError, TypeError) as e:
        raise GalleryError(f"{path}: a field is missing or malformed ({e}); enrol it again into a new --gallery") \
            from None
    check_image_root(manifest.image_root, path)
    return manifest


def check_image_root(root: Any, where: str | Path) -> None:
    """Refuse an image root that is not an absolute folder path, or that is the file system's root: images are
    served from under it, and `/` would put every file of the server under it."""
    if not isinstance(root, str) or not os.path.isabs(root) or "\x00" in root:
        raise GalleryError(f"{where}: the image root {root!r} is not an absolute folder path; enrol again into a new "
                           f"--gallery")
    real = os.path.realpath(root)
    if os.path.dirname(real) == real:
        raise GalleryError(f"{where}: the image root {root!r} is the file system's root; give the folder that holds "
                           f"the images (search/enroll.py --image-dir / --image-root)")


def write_manifest(folder: str | Path, manifest: Manifest) -> None:
    files.write_json(Path(folder) / MANIFEST, manifest.to_dict())


_HELD: dict[str, tuple[threading.RLock, list[int]]] = {}  # folder -> (the thread lock, [depth, flock fd])
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def writer_lock(folder: str | Path) -> Iterator[None]:
    """Hold the gallery's writer lock: an enrolment holds it for its whole run and its commits take it again
    (reentrant in the holding thread). Another writer, in this process or another, is refused at once (not
    queued) with a message."""
    folder = files.make_folder(folder)
    key = os.path.realpath(folder)
    with _HELD_GUARD:
        lock, state = _HELD.setdefault(key, (threading.RLock(), [0, -1]))
    if not lock.acquire(blocking=False):
        raise GalleryError(f"{folder}: another enrolment or compaction is writing this gallery; wait for it to finish")
    try:
        if state[0] == 0:
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise GalleryError(f"{folder}: another enrolment or compaction is writing this gallery; wait for it "
                                   f"to finish") from None
            state[1] = fd
        state[0] += 1
        try:
            yield
        finally:
            state[0] -= 1
            if state[0] == 0:
                os.close(state[1])
                state[1] = -1
    finally:
        lock.release()
