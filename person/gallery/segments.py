"""Segments: immutable batches of enrolled rows (features and metadata), each a folder written whole.

A segment is a folder `segments/<name>/` of `features.npy` (float16 [n, D], L2-normalised, memory-mapped when
read) and `rows.jsonl` (one row a line: uid, path relative to the image root, bbox or null, identity or null,
file size, mtime and sha256, when it was enrolled, and any other fields a detections line carried under "meta"). It
is written in a
temp folder and renamed into place (person.files.atomic_dir), so one that a manifest names is always whole.

A gallery knows its own rows: the manifest records each segment file's sha256, checked the first time a process
opens the file (and again whenever its stat changes), so an edited row is refused by name, never searched.
Rows are checked on the way in and out: finite unit-length features, paths that stay under the image root,
boxes of finite coordinates, standard JSON (no NaN or Infinity anywhere).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from person import files
from person.data.detections import box_values, loads_standard
from person.data.formats import RecordError, image_path_key
from person.gallery.manifest import GalleryError, Segment

SEGMENTS, FEATURES, ROWS = "segments", "features.npy", "rows.jsonl"
UNIT_TOLERANCE = 0.01   # |norm - 1| a float16 row of a unit vector stays within (rounding moves it ~1e-3)
NORM_BLOCK = 65536      # rows converted to float32 at a time when checking norms
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass
class Rows:
    """Rows as columns: what a search returns and filters on."""

    uid: np.ndarray                 # int64 [n]
    path: list[str]
    bbox: np.ndarray                # float64 [n, 4] (x1, y1, x2, y2) as the source gave it, NaN for a whole image
    identity: np.ndarray            # int64 [n], -1 where unknown
    size: np.ndarray                # int64 [n] file size at enrolment
    mtime_ns: np.ndarray            # int64 [n] file mtime at enrolment
    meta: list[dict[str, Any]] = field(default_factory=list)  # per row: extra fields (camera, time, track, ...)
    # per row: the hex sha256 of the image file's bytes as enrolment decoded them; None where a caller appending
    # rows had no file (such a row's image is never served)
    sha256: list[str | None] | None = None
    # int64 [n]: when the row was enrolled (Unix ns, what --max-age measures without a time field); -1 unknown: rows
    # enrolled before this was recorded (rows.jsonl then has no "enrolled_ns")
    enrolled_ns: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sha256 is None:
            self.sha256 = [None] * len(self.uid)
        if self.enrolled_ns is None:
            self.enrolled_ns = np.full(len(self.uid), -1, np.int64)

    def __len__(self) -> int:
        return len(self.uid)

    @classmethod
    def empty(cls) -> Rows:
        return cls(np.zeros(0, np.int64), [], np.zeros((0, 4), np.float64), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros(0, np.int64), [], [], np.zeros(0, np.int64))

    @classmethod
    def concat(cls, parts: Sequence[Rows]) -> Rows:
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.uid for p in parts]), [x for p in parts for x in p.path],
                   np.concatenate([p.bbox for p in parts]).astype(np.float64),
                   np.concatenate([p.identity for p in parts]), np.concatenate([p.size for p in parts]),
                   np.concatenate([p.mtime_ns for p in parts]), [m for p in parts for m in p.meta],
                   [h for p in parts for h in p.sha256], np.concatenate([p.enrolled_ns for p in parts]))

    def take(self, index: np.ndarray) -> Rows:
        index = np.asarray(index, dtype=np.int64)
        return Rows(self.uid[index], [self.path[i] for i in index], self.bbox[index], self.identity[index],
                    self.size[index], self.mtime_ns[index], [self.meta[i] for i in index],
                    [self.sha256[i] for i in index], self.enrolled_ns[index])

    def record(self, i: int) -> dict[str, Any]:
        """Row i as JSON (what rows.jsonl holds and what a search result carries)."""
        bbox = None if np.isnan(self.bbox[i, 0]) else [float(v) for v in self.bbox[i]]
        record = {"uid": int(self.uid[i]), "path": self.path[i], "bbox": bbox,
                  "identity": None if self.identity[i] < 0 else int(self.identity[i]), "size": int(self.size[i]),
                  "mtime_ns": int(self.mtime_ns[i]), "sha256": self.sha256[i], "meta": self.meta[i]}
        if self.enrolled_ns[i] >= 0:  # an older row compacted keeps its bytes: no key it never had
            record["enrolled_ns"] = int(self.enrolled_ns[i])
        return record


def _check_record(record: Any, where: str) -> None:
    """Refuse a row that would leave the image root, carry an unusable box or a malformed hash."""
    if not isinstance(record, dict):
        raise GalleryError(f"{where}: not a row object; enrol again into a new --gallery")
    try:
        image_path_key(record.get("path"), "path")
    except (RecordError, TypeError) as e:
        raise GalleryError(f"{where}: {e}; enrol again into a new --gallery") from None
    if record.get("bbox") is not None and box_values(record["bbox"]) is None:
        raise GalleryError(f"{where}: the box {record['bbox']!r} is not four finite numbers with x2 > x1 and "
                           f"y2 > y1; enrol again into a new --gallery")
    digest = record.get("sha256")
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        raise GalleryError(f"{where}: {digest!r} is not a sha256; enrol again into a new --gallery")


def _parse_rows(data: bytes, path: Path) -> Rows:
    records = []
    for n, line in enumerate(data.splitlines()):
        try:
            records.append(loads_standard(line))
        except (ValueError, UnicodeDecodeError) as e:
            raise GalleryError(f"{path} line {n + 1}: not standard JSON ({e}); the segment is damaged: enrol again "
                               f"into a new --gallery") from None
    for n, r in enumerate(records):
        _check_record(r, f"{path} line {n + 1}")
    try:
        return Rows(np.array([r["uid"] for r in records], np.int64), [r["path"] for r in records],
                    np.array([r["bbox"] if r["bbox"] is not None else [np.nan] * 4 for r in records],
                             np.float64).reshape(-1, 4),
                    np.array([-1 if r["identity"] is None else r["identity"] for r in records], np.int64),
                    np.array([r["size"] for r in records], np.int64),
                    np.array([r["mtime_ns"] for r in records], np.int64), [r.get("meta") or {} for r in records],
                    [r["sha256"] for r in records], np.array([r.get("enrolled_ns", -1) for r in records], np.int64))
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise GalleryError(f"{path}: a row lacks a field or holds a wrong type ({e}); enrol again into a new "
                           f"--gallery") from None


def _check_features(features: np.ndarray, where: str) -> None:
    """Refuse rows a search would rank wrongly: not finite, or not of unit length."""
    for a in range(0, len(features), NORM_BLOCK):
        norms = np.linalg.norm(np.asarray(features[a:a + NORM_BLOCK], np.float32), axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1) <= UNIT_TOLERANCE))  # NaN compares False: caught too
        if len(bad):
            raise GalleryError(f"{where}: row {a + int(bad[0])} has norm {float(norms[bad[0]])!r}; gallery features "
                               f"are finite and L2-normalised (enrol again into a new --gallery)")


def write_segment(gallery: Path, name: str, features: np.ndarray, rows: Rows) -> Segment:
    """Write segment `name` whole (person.files.atomic_dir); its rows must match its features. The Segment the
    manifest names it by, with its files' sha256."""
    if len(features) != len(rows) or features.ndim != 2:
        raise ValueError(f"segment {name}: {len(features)} features for {len(rows)} rows")
    _check_features(features, f"segment {name}")
    records = [rows.record(i) for i in range(len(rows))]
    for i, r in enumerate(records):
        _check_record(r, f"segment {name} row {i}")
    try:
        text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
    except ValueError as e:
        raise GalleryError(f"segment {name}: a row's fields hold NaN or Infinity ({e}); gallery rows are standard "
                           f"JSON") from None
    data = text.encode("utf-8")
    final = gallery / SEGMENTS / name
    with files.atomic_dir(final) as tmp:  # replaces a segment of a killed run that no manifest named
        with files.atomic_file(tmp / FEATURES) as f:
            np.save(f, np.ascontiguousarray(features, dtype=np.float16), allow_pickle=False)
        files.write_bytes(tmp / ROWS, data)
        features_sha256 = files.sha256_file(tmp / FEATURES)
    return Segment(name, len(rows), features_sha256, hashlib.sha256(data).hexdigest())


# (path, dev, inode, size, mtime, ctime, sha256) of files this process hashed and found as recorded: a segment is
# hashed once per process, again only when its stat changes (ctime moves on any write, even one with a forged mtime)
_VERIFIED: set[tuple] = set()
_VERIFIED_GUARD = threading.Lock()


def _stat_key(path: Path, sha256: str) -> tuple:
    st = os.stat(path)
    return str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256


def _damaged(path: Path, why: str) -> GalleryError:
    return GalleryError(f"{path}: {why}; the gallery is damaged: enrol again into a new --gallery")


def _check_sha256(path: Path, found: str, sha256: str) -> None:
    if found != sha256:
        raise _damaged(path, "its sha256 differs from the one gallery.json records (the file was changed after it "
                             "was written)")


def verify_file(path: Path, sha256: str, then: Callable[[], None] | None = None) -> None:
    """Refuse a segment file whose bytes do not hash to what the manifest recorded. Nothing is read when this
    process checked it already and its stat has not changed since; `then` runs the checks that must hold too
    when it is hashed (it is remembered as checked only once they passed)."""
    try:
        key = _stat_key(path, sha256)  # before the read: a change after it moves the stat, so is hashed again
        if key in _VERIFIED:
            return
        found = files.sha256_file(path)
    except OSError as e:  # gone, or removed by a commit two generations on while this reader was opening it
        raise _damaged(path, f"missing or unreadable ({e.strerror or e})") from None
    _check_sha256(path, found, sha256)
    if then is not None:
        then()
    with _VERIFIED_GUARD:
        _VERIFIED.add(key)


def verify_segment(gallery: Path, segment: Segment) -> None:
    """Both files of a segment as the manifest recorded them (cheap when this process checked them already)."""
    folder = gallery / SEGMENTS / segment.name
    verify_file(folder / FEATURES, segment.features_sha256)
    verify_file(folder / ROWS, segment.rows_sha256)


def read_segment(gallery: Path, segment: Segment, dim: int) -> tuple[np.ndarray, Rows]:
    """(features memory-mapped float16 [n, D], rows) of a segment, checked against what the manifest says."""
    folder = gallery / SEGMENTS / segment.name
    try:
        features = np.load(folder / FEATURES, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise _damaged(folder / FEATURES, f"missing or unreadable ({e})") from None
    if features.dtype != np.float16 or features.shape != (segment.rows, dim):
        raise _damaged(folder / FEATURES, f"holds {features.dtype} {features.shape}, the manifest says float16 "
                                          f"({segment.rows}, {dim})")
    # when hashed, the file was read whole: its norms cost little more (an edit with checksums rewritten to match)
    verify_file(folder / FEATURES, segment.features_sha256, lambda: _check_features(features, str(folder / FEATURES)))
    try:
        data = (folder / ROWS).read_bytes()
    except OSError as e:
        raise _damaged(folder / ROWS, f"missing or unreadable ({e.strerror or e})") from None
    _check_sha256(folder / ROWS, hashlib.sha256(data).hexdigest(), segment.rows_sha256)  # the bytes parsed below
    rows = _parse_rows(data, folder / ROWS)
    if len(rows) != segment.rows:
        raise _damaged(folder / ROWS, f"{len(rows)} rows, the manifest says {segment.rows}")
    return features, rows
