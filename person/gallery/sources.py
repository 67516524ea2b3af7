"""What to enrol: the images of a folder or of a dataset, or a detector's person boxes, as a list of `Item`s.

Every image under a folder, a dataset's images (with their identities), or person boxes from a detector (JSON
lines of frames and boxes). Each becomes a list of `Item`s, paths relative to one image root.

A detections line is `{"image": path, "bbox": [x1, y1, x2, y2], "score": s, ...}`; every other field (camera,
time, track, ...) is kept as the row's metadata, to filter and group on. A line that is not standard JSON (NaN,
Infinity, or a number beyond float64 anywhere), lacks its image or box, or has a box that is not four finite
numbers with x2 > x1 and y2 > y1 is skipped and counted; a box that reaches outside its image is clipped when
the image is read, and skipped and counted when nothing of it is left inside.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from person import files
from person.data.records import DatasetOptions
from person.gallery.manifest import GalleryError
from person.gallery.segments import NotStandardJSON, box_values, loads_standard

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_DETECTION_LINE = 1 << 16  # bytes: a detections line is a frame path, a box and a few fields


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


def _inside(root: Path, path: Path) -> str | None:
    """`path` relative to `root` when it resolves inside it (symlinks followed; person.files.resolve_under), else
    None."""
    # `path` includes `root` (relative or not): made absolute first, or resolve_under would join root twice.
    target = files.resolve_under(root, os.path.join(os.getcwd(), os.fspath(path)))
    return None if target is None else PurePosixPath(Path(target).relative_to(os.path.realpath(root))).as_posix()


def image_dir(folder: str | Path) -> Source:
    """Every image file under `folder`, recursively, sorted; links that lead outside it are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise GalleryError(f"--image-dir {root}: not a folder")
    source = Source(root, [])
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(dirpath) / name
            if _inside(root, path) is None:
                source.skipped["link leading outside the folder"] += 1
                source.examples.setdefault("link leading outside the folder", str(path))
                continue
            source.items.append(Item(PurePosixPath(path.relative_to(root)).as_posix()))
    return source


def dataset(options: DatasetOptions, split: str = "eval") -> Source:
    """The images of a dataset split ("eval", "train", "val", "test" or "all"), with their identities
    (the contiguous ones evaluation scores, so a gallery's Rank-1 equals evaluation_model.py's)."""
    records = options.load_records()
    rows = range(len(records)) if split == "all" else records.split_indices(split)
    return Source(records.image_root, [Item(records.paths[i], None, int(records.pids[i])) for i in rows])


def detections(file: str | Path, image_root: str | Path | None = None) -> Source:
    """Person boxes from a detections JSON-lines file; image paths relative to `image_root` (default: the
    file's folder); paths that leave the root are skipped and counted."""
    file = Path(file)
    if not file.is_file():
        raise GalleryError(f"--detections {file}: no such file")
    root = Path(image_root) if image_root is not None else file.parent
    source = Source(root, [])

    def skip(reason: str, n: int) -> None:
        source.skipped[reason] += 1
        source.examples.setdefault(reason, f"{file} line {n}")

    with open(file, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if len(raw) > MAX_DETECTION_LINE:
                skip(f"line longer than {MAX_DETECTION_LINE} bytes", n)
                continue
            try:
                line = loads_standard(raw)
            except NotStandardJSON:
                skip("a number that is not finite in float64 (NaN, Infinity, 1e400): not standard JSON", n)
                continue
            except ValueError:  # not JSON, not UTF-8, or an integer of more digits than Python converts
                skip("not JSON", n)
                continue
            if not isinstance(line, dict) or not isinstance(line.get("image"), str) or not line["image"]:
                skip("no \"image\" path", n)
                continue
            box = box_values(line.get("bbox"))
            if box is None:
                skip("no usable \"bbox\" ([x1, y1, x2, y2], finite, with x2 > x1 and y2 > y1)", n)
                continue
            rel = _inside(root, root / line["image"])
            if rel is None:
                skip("image path outside the image root", n)
                continue
            meta = {k: v for k, v in line.items() if k not in ("image", "bbox")}
            source.items.append(Item(rel, box, None, meta))
    return source
