"""What a feature store holds: format constants, errors, the caption layout, and the dataset / teacher checks.

The checks tie a store to its dataset and teacher; the package docstring lists the arrays."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from person.data.records import RecordSet
from person.errors import PersonError

if TYPE_CHECKING:
    from person.teacher.hf import Teacher

TeacherLike = Union["Teacher", Mapping[str, Any]]  # a loaded teacher, or its identity() dict

FORMAT_VERSION = 1  # a labelled store (a dataset's records); its bytes are as they were before version 2
UNLABELED_VERSION = 2  # a store of an unlabeled source: code that reads only version 1 refuses it, as it must
READABLE_VERSIONS = (FORMAT_VERSION, UNLABELED_VERSION)
NONE = -1  # image_pid, image_split and caption_image of unlabeled rows: no identity, no split, no image
FORMATS = ("h5", "zarr")
SUFFIXES = {".h5": "h5", ".zarr": "zarr"}
PENDING, OK, UNREADABLE = 0, 1, 2
FIELDS = ("captions", "prompt_caption")
REASON_BYTES = 128
DEFAULT_CHUNK_ROWS = 16384  # 38 MB of so400m image embeddings: seconds of GPU work lost at most on a kill
MAPPED_CHUNK_FILES = 256  # zarr chunk files kept mapped at once (each holds a file descriptor)
# What must agree between a store and the teacher it is read with; extraction also needs "dtype".
TEACHER_KEYS = ("kind", "config_hash", "dim", "preprocessing")
DATASET_KEYS = ("format", "split_rule", "fingerprint")
NORM_TOLERANCE = 1e-2  # |L2 norm - 1| of a stored row (float16 rounding is ~5e-4; a lost write reads as norm 0)


class StoreFormatError(PersonError, ValueError):
    """Not a feature store this version can read (or one with arrays missing or of the wrong shape); the
    message names the path, the array and the fix."""


class StoreMismatchError(PersonError, ValueError):
    """The store was made from another dataset, teacher or preprocessing than the one it is used with;
    `differences` holds one line per field that differs (for a caller that words the refusal its own way)."""

    def __init__(self, message: str, differences: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.differences = list(differences)


class StoreIncompleteError(PersonError, ValueError):
    """The extraction that writes the store has not finished."""


class StoreDamagedError(PersonError, ValueError):
    """Chunks marked done whose rows are gone (a deleted chunk file, zeroed rows); rerunning the extraction
    redoes exactly those chunks."""


class StoreKindError(PersonError, ValueError):
    """A labelled store where an unlabeled one is wanted, or the reverse (evaluation never reads unlabeled rows)."""


class StoreWriteError(PersonError, OSError):
    """Writing the store failed (disk full, read-only, I/O error). The chunks finished before it are kept, so
    the same command continues once the cause is fixed. `errno` is the OS error's."""


def store_format(path: str | Path) -> str:
    suffix = Path(path).suffix
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: a feature store ends in .h5 or .zarr")
    return SUFFIXES[suffix]


# ---------------------------------------------------------------- what a store holds

@dataclass(frozen=True)
class CaptionLayout:
    image: np.ndarray    # int64 [Nc]
    field: np.ndarray    # uint8 [Nc]
    offsets: np.ndarray  # int64 [Ni+1]
    texts: list[str]


def caption_layout(records: RecordSet) -> CaptionLayout:
    """Caption rows in store order: for each record, its `captions`, then its `prompt_caption`s."""
    per_image = [(len(c), len(p)) for c, p in zip(records.captions, records.prompt_captions)]
    counts = np.array([c + p for c, p in per_image], dtype=np.int64).reshape(-1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    field = np.fromiter((f for c, p in per_image for f in (0,) * c + (1,) * p), dtype=np.uint8, count=offsets[-1])
    texts = [t for caps, prompts in zip(records.captions, records.prompt_captions) for t in (*caps, *prompts)]
    return CaptionLayout(np.repeat(np.arange(len(records), dtype=np.int64), counts), field, offsets, texts)


def dataset_info(records: RecordSet) -> dict[str, Any]:
    return {"source": str(records.source.resolve()), "image_root": str(records.image_root.resolve()),
            "format": records.format, "split_rule": records.split_rule, "fingerprint": records.fingerprint()}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _differences(stored: Mapping, given: Mapping, keys: Sequence[str], prefix: str = "") -> list[str]:
    out = []
    for key in keys:
        old, new = stored.get(key), given.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out += _differences(old, new, sorted(set(old) | set(new)), f"{prefix}{key}.")
        elif old != new:
            out.append(f"  {prefix}{key}: {old!r} (store) vs {new!r} (now)")
    return out


def _refuse(path: Path, what: str, lines: list[str]) -> None:
    if lines:
        raise StoreMismatchError(
            f"{path} was made with another {what} than the one given:\n" + "\n".join(lines) +
            f"\nUse another --embedding_path for this {what}, or re-extract: delete {path} and run "
            f"tools/extract_label.py again.", lines)


def check_dataset(path: Path, stored: Mapping, records: RecordSet) -> None:
    """Refuse a store made from other records (content, split or format), naming what differs."""
    given = dataset_info(records)
    lines = _differences(stored, given, DATASET_KEYS)
    if lines:
        lines.append(f"  source: {stored.get('source')} (store) vs {given['source']} (now)")
    _refuse(path, "dataset", lines)


def check_teacher(path: Path, stored: Mapping, teacher: TeacherLike, keys: Sequence[str] = TEACHER_KEYS) -> None:
    """Refuse a store made by another teacher or preprocessing; the teacher's name may differ (moved dir)."""
    identity = _jsonable(teacher if isinstance(teacher, Mapping) else teacher.identity())
    lines = _differences(stored, identity, keys)
    if lines:
        lines.append(f"  teacher: {stored.get('teacher')} (store) vs {identity.get('teacher')} (now)")
    _refuse(path, "teacher", lines)


def num_chunks(rows: int, chunk_rows: int) -> int:
    return -(-rows // chunk_rows)


@dataclass(frozen=True)
class Unit:
    """A chunk of rows written and marked done as one: image or caption rows [start, stop)."""

    kind: str  # "image" | "caption"
    index: int
    start: int
    stop: int

    def describe(self) -> str:
        return f"chunk {self.index} ({self.kind} rows {self.start}..{self.stop - 1})"


def plan_units(num_images: int, num_captions: int, chunk_rows: int) -> list[Unit]:
    return [Unit(kind, k, k * chunk_rows, min((k + 1) * chunk_rows, n))
            for kind, n in (("image", num_images), ("caption", num_captions))
            for k in range(num_chunks(n, chunk_rows))]
