"""Unlabeled sources: a user's own images (a folder, or detector boxes) or descriptions (a text file).

Record-like, so extraction and store naming treat them as they treat a `RecordSet`: `format` is the source's
kind, `fingerprint()` ties a store to the source's identity (its kind and resolved path, not its contents, which
grow), `split_rule` is "none". Rows carry no identity, split or captions; image rows carry a box, the
detections line and the track id where there is one. A source that has grown since its store was made yields
the rows the store lacks with `new_rows` (keyed as enrolment keys them: image and box, or the text).
Torch-free, as the records are; `person.data.crops` decodes the boxes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .detections import Skips, list_images, read_detections
from .formats import RecordError, normalise_caption, refuse_nul

IMAGE_DIR, DETECTIONS, CAPTIONS = "image_dir", "detections", "captions"
UNLABELED_KINDS = (IMAGE_DIR, DETECTIONS, CAPTIONS)
TRACK_KEYS = ("track", "track_id")  # a detections line's track id, under either name
NO_SPLIT = "none"


def source_fingerprint(kind: str, path: Path) -> str:
    """sha256 of the source's identity: its kind and resolved path (a grown source keeps its store)."""
    return hashlib.sha256(f"{kind}\0{path.resolve()}".encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class UnlabeledImages:
    """Images of a folder (no boxes) or detector boxes, paths relative to `image_root`."""

    format: str                # IMAGE_DIR | DETECTIONS
    source: Path               # the folder or the detections file
    image_root: Path
    paths: list[str]
    boxes: np.ndarray          # float64 [N, 4], NaN rows for whole images
    lines: np.ndarray          # int64 [N], the detections line (0 for a folder's images)
    tracks: list[str]          # the track id as JSON text, "" where the line has none
    skips: Skips = field(default_factory=Skips)
    split_rule: str = NO_SPLIT

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        return source_fingerprint(self.format, self.source)

    def image_path(self, i: int) -> Path:
        return self.image_root / self.paths[i]

    def key(self, i: int) -> tuple[str, tuple[float, ...] | None]:
        box = self.boxes[i]
        return self.paths[i], None if np.isnan(box).any() else tuple(box.tolist())

    def new_rows(self, stored: UnlabeledImages) -> np.ndarray:
        known = {stored.key(i) for i in range(len(stored))}
        return np.array([i for i in range(len(self)) if self.key(i) not in known], dtype=np.int64)

    def appended_to(self, stored: UnlabeledImages) -> UnlabeledImages:
        """`stored`'s rows as they are, then this source's rows that `stored` lacks, in source order."""
        new = self.new_rows(stored)
        return UnlabeledImages(self.format, self.source, self.image_root, stored.paths + [self.paths[i] for i in new],
                               np.concatenate([stored.boxes, self.boxes[new]]).reshape(-1, 4),
                               np.concatenate([stored.lines, self.lines[new]]),
                               stored.tracks + [self.tracks[i] for i in new], self.skips)


@dataclass
class UnlabeledCaptions:
    """Descriptions from a text file, one per line."""

    source: Path
    texts: list[str]
    skips: Skips = field(default_factory=Skips)
    format: str = CAPTIONS
    split_rule: str = NO_SPLIT

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def image_root(self) -> Path:
        return self.source.parent  # no images; kept so the store's attributes have the labelled store's keys

    def fingerprint(self) -> str:
        return source_fingerprint(self.format, self.source)

    def new_rows(self, stored: UnlabeledCaptions) -> np.ndarray:
        known = set(stored.texts)
        return np.array([i for i, t in enumerate(self.texts) if t not in known], dtype=np.int64)

    def appended_to(self, stored: UnlabeledCaptions) -> UnlabeledCaptions:
        new = self.new_rows(stored)
        return UnlabeledCaptions(self.source, stored.texts + [self.texts[i] for i in new], self.skips)


UnlabeledSource = UnlabeledImages | UnlabeledCaptions


def image_folder(folder: str | Path) -> UnlabeledImages:
    """Every image under `folder`, sorted."""
    root = Path(folder)
    paths, skips = list_images(root)
    return UnlabeledImages(IMAGE_DIR, root, root, paths, np.full((len(paths), 4), np.nan),
                           np.zeros(len(paths), dtype=np.int64), [""] * len(paths), skips)


def detections_file(file: str | Path, image_root: str | Path | None = None) -> UnlabeledImages:
    """The usable boxes of a detections JSON-lines file (person.data.detections); a repeated (image, box) is
    skipped and counted, as enrolment keys rows by it."""
    root, found, skips = read_detections(file, image_root)
    seen: set[tuple[str, tuple[float, ...]]] = set()
    kept = []
    for d in found:
        if (d.path, d.box) in seen:
            skips.add("the same image and box as an earlier line", f"{file} line {d.line}")
            continue
        seen.add((d.path, d.box))
        kept.append(d)
    tracks = [_track(d.meta) for d in kept]
    return UnlabeledImages(DETECTIONS, Path(file), root, [d.path for d in kept],
                           np.array([d.box for d in kept], dtype=np.float64).reshape(-1, 4),
                           np.array([d.line for d in kept], dtype=np.int64), tracks, skips)


def _track(meta: dict[str, Any]) -> str:
    for key in TRACK_KEYS:
        if meta.get(key) is not None:
            return json.dumps(meta[key])
    return ""


def captions_file(file: str | Path) -> UnlabeledCaptions:
    """One description per line, UTF-8, whitespace normalised; empty, undecodable and repeated lines are skipped
    and counted; a NUL is refused (HDF5 strings end at one), as the labelled records refuse it."""
    file = Path(file)
    if not file.is_file():
        raise RecordError(f"--captions {file}: no such file")
    texts, skips = [], Skips()
    seen: set[str] = set()
    with open(file, "rb") as f:
        for n, raw in enumerate(f, start=1):
            where = f"{file} line {n}"
            try:
                text = normalise_caption(raw.decode("utf-8"))
            except UnicodeDecodeError:
                skips.add("not UTF-8", where)
                continue
            refuse_nul(text, where, "remove it from the captions file")
            if not text:
                skips.add("empty line", where)
                continue
            if text in seen:
                skips.add("the same text as an earlier line", where)
                continue
            seen.add(text)
            texts.append(text)
    return UnlabeledCaptions(file, texts, skips)


def unlabeled_source(image_dir: str | None = None, detections: str | None = None, image_root: str | None = None,
                     captions: str | None = None) -> UnlabeledSource:
    """The one source given: --image-dir, --detections [--image-root], or --captions."""
    given = [flag for flag, value in (("--image-dir", image_dir), ("--detections", detections),
                                      ("--captions", captions)) if value]
    if len(given) != 1:
        raise ValueError(f"give one of --image-dir, --detections, --captions (got {', '.join(given) or 'none'})")
    if image_root and not detections:
        raise ValueError("--image-root goes with --data or --detections (a folder's paths are relative to it)")
    if image_dir:
        return image_folder(image_dir)
    return detections_file(detections, image_root) if detections else captions_file(captions)
