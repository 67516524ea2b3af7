"""What to enrol: the images of a folder or of a dataset, or a detector's person boxes, as a list of `Item`s.

Every image under a folder, a dataset's images (with their identities), or person boxes from a detector (JSON
lines of frames and boxes). Each becomes a list of `Item`s, paths relative to one image root.

A detections line is `{"image": path, "bbox": [x1, y1, x2, y2], "score": s, ...}`; every other field (camera,
time, track, ...) is kept as the row's metadata, to filter and group on. A line that is not standard JSON (NaN,
Infinity, or a number beyond float64 anywhere), lacks its image or box, or has a box that is not four finite
numbers with x2 > x1 and y2 > y1 is skipped and counted; a box that reaches outside its image is clipped when
the image is read, and skipped and counted when nothing of it is left inside.

A line's `time` (or another field: --time-field) is what --max-age measures its age by (`timestamp`): a number is
Unix seconds, text is ISO 8601 ("2026-11-01T10:00:00", a time without a zone is taken as UTC).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from person.data import detections as found
from person.data.records import DatasetOptions
from person.gallery.manifest import GalleryError

TIME_FIELD = "time"  # the detections field --max-age reads by default


@dataclass(frozen=True)
class Item:
    path: str                                   # relative to the image root, '/'-separated
    bbox: tuple[float, float, float, float] | None = None
    identity: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, tuple[float, ...] | None]:
        """What identifies a row across enrolments: the image and the box."""
        return self.path, self.bbox


@dataclass
class Source:
    image_root: Path
    items: list[Item]
    skipped: Counter = field(default_factory=Counter)   # reason -> count (lines not usable)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> the first line / path it happened to


def _source(root: Path, items: list[Item], skips: found.Skips) -> Source:
    return Source(root, items, skips.counts, skips.examples)


def image_dir(folder: str | Path) -> Source:
    """Every image file under `folder`, recursively, sorted; links that lead outside it are skipped."""
    try:
        paths, skips = found.list_images(folder)
    except found.SourceError as e:
        raise GalleryError(str(e)) from None
    return _source(Path(folder), [Item(path) for path in paths], skips)


def dataset(options: DatasetOptions, split: str = "eval") -> Source:
    """The images of a dataset split ("eval", "train", "val", "test" or "all"), with their identities
    (the contiguous ones evaluation scores, so a gallery's Rank-1 equals evaluation_model.py's)."""
    records = options.load_records()
    rows = range(len(records)) if split == "all" else records.split_indices(split)
    return Source(records.image_root, [Item(records.paths[i], None, int(records.pids[i])) for i in rows])


def detections(file: str | Path, image_root: str | Path | None = None) -> Source:
    """Person boxes from a detections JSON-lines file; image paths relative to `image_root` (default: the
    file's folder); paths that leave the root are skipped and counted."""
    try:
        root, lines, skips = found.read_detections(file, image_root)
    except found.SourceError as e:
        raise GalleryError(str(e)) from None
    return _source(root, [Item(d.path, d.box, None, d.meta) for d in lines], skips)


def timestamp(value: Any) -> float | None:
    """A time field's value in Unix seconds: a finite number as it is, ISO 8601 text parsed (UTC when it names no
    zone); None for anything else (the row's enrolment time is used instead)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)).timestamp()
