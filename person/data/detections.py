"""Image folders and detector boxes, stage-neutral: what enrolment and unlabeled extraction both read.

A folder is every image file under it, recursively, sorted; links that lead outside it are skipped and counted.

A detections line is `{"image": path, "bbox": [x1, y1, x2, y2], "score": s, ...}`; every other field (camera,
time, track, ...) is kept as the line's metadata. A line that is not standard JSON (NaN, Infinity, or a number
beyond float64 anywhere), lacks its image or box, has a box that is not four finite numbers with x2 > x1 and
y2 > y1, or names an image outside the image root is skipped and counted. `crop` cuts a box out of decoded
pixels: clipped to the image, unreadable when nothing of it is left inside.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from person import files
from person.errors import PersonError

from .images import ImageReadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_DETECTION_LINE = 1 << 16  # bytes: a detections line is a frame path, a box and a few fields
Box = tuple[float, float, float, float]


class SourceError(PersonError, ValueError):
    """A folder or detections file that is not there (or not a folder / file)."""


class NotStandardJSON(ValueError):
    """A number JSON has no standard form for (NaN, Infinity) or that float64 cannot hold (1e400, 10**400):
    kept, it would make every answer that shows its row fail or be non-standard JSON."""


def _refuse(text: str) -> Any:
    raise NotStandardJSON(f"{text} is not a finite number")


def _float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else _refuse(text)


def _int(text: str) -> int:
    value = int(text)
    try:
        float(value)
    except OverflowError:
        _refuse(f"{text[:20]}... ({len(text)} digits)")
    return value


def loads_standard(data: str | bytes) -> Any:
    """json.loads of standard JSON whose every number is a finite float64; NotStandardJSON for other numbers."""
    return json.loads(data, parse_float=_float, parse_int=_int, parse_constant=_refuse)


def box_values(box: Any) -> Box | None:
    """`box` as (x1, y1, x2, y2) when it is four finite numbers (not bools) with x2 > x1 and y2 > y1, else None."""
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(
            isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) for v in box):
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except OverflowError:  # an integer beyond float's range
        return None
    if not all(np.isfinite((x1, y1, x2, y2))):
        return None
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def crop(pixels: np.ndarray, box: Box) -> tuple[np.ndarray, bool]:
    """The box's pixels, clipped to the image (and whether it had to be); ImageReadError when under 2 pixels of its
    width or height lie inside the image (measured on the box itself, so a box 1.5 pixels high is refused even though
    it touches 2 rows of pixels)."""
    h, w = pixels.shape[:2]
    x1, y1, x2, y2 = box
    if min(x2, w) - max(x1, 0) < 2 or min(y2, h) - max(y1, 0) < 2:
        raise ImageReadError(f"box {list(box)} lies outside the {w}x{h} image (under 2 pixels of it inside)")
    cx1, cy1, cx2, cy2 = max(0, int(x1)), max(0, int(y1)), min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    return pixels[cy1:cy2, cx1:cx2], x1 < 0 or y1 < 0 or x2 > w or y2 > h


@dataclass
class Skips:
    """Source entries left out: reason -> count, and where each reason first happened."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, where)


def inside(root: Path, path: Path) -> str | None:
    """`path` relative to `root` when it resolves inside it (symlinks followed; person.files.resolve_under), else
    None."""
    # `path` includes `root` (relative or not): made absolute first, or resolve_under would join root twice.
    target = files.resolve_under(root, os.path.join(os.getcwd(), os.fspath(path)))
    return None if target is None else PurePosixPath(Path(target).relative_to(os.path.realpath(root))).as_posix()


def list_images(folder: str | Path, flag: str = "--image-dir") -> tuple[list[str], Skips]:
    """Every image file under `folder` ('/'-separated paths relative to it), recursively, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"{flag} {root}: not a folder")
    paths, skips = [], Skips()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(dirpath) / name
            if inside(root, path) is None:
                skips.add("link leading outside the folder", str(path))
                continue
            paths.append(PurePosixPath(path.relative_to(root)).as_posix())
    return paths, skips


@dataclass(frozen=True)
class Detection:
    path: str   # relative to the image root, '/'-separated
    box: Box
    line: int   # 1-based line of the detections file
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # the line's other fields


def read_detections(file: str | Path, image_root: str | Path | None = None,
                    flag: str = "--detections") -> tuple[Path, list[Detection], Skips]:
    """(image root, usable lines, skips) of a detections JSON-lines file; paths relative to `image_root`
    (default: the file's folder)."""
    file = Path(file)
    if not file.is_file():
        raise SourceError(f"{flag} {file}: no such file")
    root = Path(image_root) if image_root is not None else file.parent
    out, skips = [], Skips()
    with open(file, "rb") as f:
        for n, raw in enumerate(f, start=1):
            where = f"{file} line {n}"
            if not raw.strip():
                continue
            if len(raw) > MAX_DETECTION_LINE:
                skips.add(f"line longer than {MAX_DETECTION_LINE} bytes", where)
                continue
            try:
                line = loads_standard(raw)
            except NotStandardJSON:
                skips.add("a number that is not finite in float64 (NaN, Infinity, 1e400): not standard JSON", where)
                continue
            except ValueError:  # not JSON, not UTF-8, or an integer of more digits than Python converts
                skips.add("not JSON", where)
                continue
            if not isinstance(line, dict) or not isinstance(line.get("image"), str) or not line["image"]:
                skips.add("no \"image\" path", where)
                continue
            box = box_values(line.get("bbox"))
            if box is None:
                skips.add("no usable \"bbox\" ([x1, y1, x2, y2], finite, with x2 > x1 and y2 > y1)", where)
                continue
            rel = inside(root, root / line["image"])
            if rel is None:
                skips.add("image path outside the image root", where)
                continue
            out.append(Detection(rel, box, n, {k: v for k, v in line.items() if k not in ("image", "bbox")}))
    return root, out, skips
