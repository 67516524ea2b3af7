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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from person import files
from person.errors import PersonError

MANIFEST, LOCK = "gallery.json", "gallery.lock"
GALLERY_FORMAT, GALLERY_VERSION = "person-gallery", 1


class GalleryError(PersonError, ValueError):
    """A gallery that cannot be used as asked; the message names the file and the fix."""


@dataclass
class Segment:
    name: str         # folder under segments/
    rows: int


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
    if raw.get("version") != GALLERY_VERSION:
        raise GalleryError(f"{path}: gallery format version {raw.get('version')!r}, this code reads version "
                           f"{GALLERY_VERSION}; enrol it again into a new --gallery")
    try:
        raw.pop("count", None)
        raw["segments"] = [Segment(**s) for s in raw["segments"]]
        return Manifest(**raw)
    except (KeyError, TypeError) as e:
        raise GalleryError(f"{path}: a field is missing or malformed ({e}); enrol it again into a new --gallery") \
            from None


def write_manifest(folder: str | Path, manifest: Manifest) -> None:
    files.write_json(Path(folder) / MANIFEST, manifest.to_dict())


@contextlib.contextmanager
def writer_lock(folder: str | Path) -> Iterator[None]:
    """Hold the gallery's writer lock; another writer is refused at once (not queued) with a message."""
    folder = files.make_folder(folder)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GalleryError(f"{folder}: another enrolment or compaction is writing this gallery; wait for it to "
                               f"finish") from None
        yield
    finally:
        os.close(fd)
