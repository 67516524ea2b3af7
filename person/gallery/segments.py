"""Segments: immutable batches of enrolled rows (features and metadata), each a folder written whole.

A segment is a folder `segments/<name>/` of `features.npy` (float16 [n, D], L2-normalised, memory-mapped when
read) and `rows.jsonl` (one row a line: uid, path relative to the image root, bbox or null, identity or null,
file size and mtime, and any other fields a detections line carried under "meta"). It is written in a temp
folder and renamed into place (person.files.atomic_dir), so one that a manifest names is always whole.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from person import files
from person.gallery.manifest import GalleryError

SEGMENTS, FEATURES, ROWS = "segments", "features.npy", "rows.jsonl"


@dataclass
class Rows:
    """Rows as columns: what a search returns and filters on."""

    uid: np.ndarray                 # int64 [n]
    path: list[str]
    bbox: np.ndarray                # float32 [n, 4] (x1, y1, x2, y2), NaN where the row is a whole image
    identity: np.ndarray            # int64 [n], -1 where unknown
    size: np.ndarray                # int64 [n] file size at enrolment
    mtime_ns: np.ndarray            # int64 [n] file mtime at enrolment
    meta: list[dict[str, Any]] = field(default_factory=list)  # per row: extra fields (camera, time, track, ...)

    def __len__(self) -> int:
        return len(self.uid)

    @classmethod
    def empty(cls) -> Rows:
        return cls(np.zeros(0, np.int64), [], np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros(0, np.int64), [])

    @classmethod
    def concat(cls, parts: Sequence[Rows]) -> Rows:
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.uid for p in parts]), [x for p in parts for x in p.path],
                   np.concatenate([p.bbox for p in parts]), np.concatenate([p.identity for p in parts]),
                   np.concatenate([p.size for p in parts]), np.concatenate([p.mtime_ns for p in parts]),
                   [m for p in parts for m in p.meta])

    def take(self, index: np.ndarray) -> Rows:
        index = np.asarray(index, dtype=np.int64)
        return Rows(self.uid[index], [self.path[i] for i in index], self.bbox[index], self.identity[index],
                    self.size[index], self.mtime_ns[index], [self.meta[i] for i in index])

    def record(self, i: int) -> dict[str, Any]:
        """Row i as JSON (what rows.jsonl holds and what a search result carries)."""
        bbox = None if np.isnan(self.bbox[i, 0]) else [float(v) for v in self.bbox[i]]
        return {"uid": int(self.uid[i]), "path": self.path[i], "bbox": bbox,
                "identity": None if self.identity[i] < 0 else int(self.identity[i]), "size": int(self.size[i]),
                "mtime_ns": int(self.mtime_ns[i]), "meta": self.meta[i]}


def _parse_rows(path: Path) -> Rows:
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise GalleryError(f"{path} line {n + 1}: not JSON ({e}); the segment is damaged: enrol again into "
                                   f"a new --gallery") from None
    try:
        return Rows(np.array([r["uid"] for r in records], np.int64), [r["path"] for r in records],
                    np.array([r["bbox"] if r["bbox"] is not None else [np.nan] * 4 for r in records],
                             np.float32).reshape(-1, 4),
                    np.array([-1 if r["identity"] is None else r["identity"] for r in records], np.int64),
                    np.array([r["size"] for r in records], np.int64),
                    np.array([r["mtime_ns"] for r in records], np.int64), [r.get("meta") or {} for r in records])
    except (KeyError, TypeError, ValueError) as e:
        raise GalleryError(f"{path}: a row lacks a field or holds a wrong type ({e}); enrol again into a new "
                           f"--gallery") from None


def write_segment(gallery: Path, name: str, features: np.ndarray, rows: Rows) -> Path:
    """Write segment `name` whole (person.files.atomic_dir); its rows must match its features."""
    if len(features) != len(rows) or features.ndim != 2:
        raise ValueError(f"segment {name}: {len(features)} features for {len(rows)} rows")
    final = gallery / SEGMENTS / name
    with files.atomic_dir(final) as tmp:  # replaces a segment of a killed run that no manifest named
        with files.atomic_file(tmp / FEATURES) as f:
            np.save(f, np.ascontiguousarray(features, dtype=np.float16), allow_pickle=False)
        files.write_text(tmp / ROWS, "".join(json.dumps(rows.record(i), ensure_ascii=False) + "\n"
                                             for i in range(len(rows))))
    return final


def read_segment(gallery: Path, name: str, dim: int, rows_expected: int) -> tuple[np.ndarray, Rows]:
    """(features memory-mapped float16 [n, D], rows) of a segment, checked against what the manifest says."""
    folder = gallery / SEGMENTS / name
    try:
        features = np.load(folder / FEATURES, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise GalleryError(f"{folder / FEATURES}: missing or unreadable ({e}); the gallery is damaged: enrol again "
                           f"into a new --gallery") from None
    if features.dtype != np.float16 or features.shape != (rows_expected, dim):
        raise GalleryError(f"{folder / FEATURES}: holds {features.dtype} {features.shape}, the manifest says float16 "
                           f"({rows_expected}, {dim}); the gallery is damaged: enrol again into a new --gallery")
    try:
        rows = _parse_rows(folder / ROWS)
    except OSError:  # gone, or removed by a commit two generations on while this reader was opening it
        raise GalleryError(f"{folder / ROWS}: missing; the gallery is damaged: enrol again into a new --gallery") \
            from None
    if len(rows) != rows_expected:
        raise GalleryError(f"{folder / ROWS}: {len(rows)} rows, the manifest says {rows_expected}; the gallery is "
                           f"damaged: enrol again into a new --gallery")
    return features, rows
