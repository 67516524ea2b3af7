"""Writing a store: create it whole beside its final name, then fill it unit by unit, each unit's done flag
written after its rows are flushed (the package docstring says why a kill cannot tear a store)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from person.data.records import RecordSet
from person.teacher.store.backends import _Backend, _create_h5, _create_zarr, _writable_arrays
from person.teacher.store.schema import (FIELDS, FORMAT_VERSION, REASON_BYTES, TEACHER_KEYS, StoreMismatchError,
                                         _differences, _jsonable, caption_layout, check_dataset, check_teacher,
                                         dataset_info, num_chunks, store_format)


@dataclass(frozen=True)
class Unit:
    """A chunk of rows written and marked done as one: image or caption rows [start, stop)."""

    kind: str  # "image" | "caption"
    index: int
    start: int
    stop: int


def plan_units(num_images: int, num_captions: int, chunk_rows: int) -> list[Unit]:
    return [Unit(kind, k, k * chunk_rows, min((k + 1) * chunk_rows, n))
            for kind, n in (("image", num_images), ("caption", num_captions))
            for k in range(num_chunks(n, chunk_rows))]


class StoreWriter:
    """Creates a store or reopens one to continue it; writes whole units. Used by one process only."""

    def __init__(self, path: Path, attrs: dict[str, Any]) -> None:
        self.path, self.attrs = path, attrs
        counts, self.chunk_rows = attrs["counts"], attrs["extraction"]["chunk_rows"]
        self.units = plan_units(counts["images"], counts["captions"], self.chunk_rows)

    @classmethod
    def open(cls, path: str | Path, records: RecordSet, identity: Mapping[str, Any], *, chunk_rows: int,
             batch_size: int) -> StoreWriter:
        """The store at `path`, created when missing; an existing one must match everything (resume)."""
        path = Path(path)
        if chunk_rows < 1 or batch_size < 1:
            raise ValueError(f"chunk_rows {chunk_rows} and batch_size {batch_size} must be at least 1")
        extraction = {"chunk_rows": chunk_rows, "batch_size": batch_size}
        if not path.exists():
            _create(path, records, _jsonable(identity), extraction)
        elif path.is_dir():  # zarr's temp files of chunk writes a kill interrupted
            for partial in path.rglob("*.partial"):
                partial.unlink()
        backend = _Backend(path)
        try:
            attrs = backend.attrs
        finally:
            backend.close()
        check_dataset(path, attrs["dataset"], records)
        # Resuming must give the bytes an uninterrupted run gives: same dtype, same chunks and batches.
        check_teacher(path, attrs["teacher"], identity, TEACHER_KEYS + ("dtype",))
        lines = _differences(attrs["extraction"], extraction, ("chunk_rows", "batch_size"))
        if lines:
            raise StoreMismatchError(
                f"{path} was started with other extraction settings:\n" + "\n".join(lines) +
                "\nFinish it with the store's settings (the batches decide the exact bytes), or use another "
                "--embedding_path.")
        return cls(path, attrs)

    def pending(self) -> list[Unit]:
        backend = _Backend(self.path)
        try:
            done = {"image": backend.read("image_done"), "caption": backend.read("caption_done")}
        finally:
            backend.close()
        return [u for u in self.units if not done[u.kind][u.index]]

    def write(self, unit: Unit, emb: np.ndarray, status: np.ndarray | None = None,
              reasons: Mapping[int, str] | None = None) -> None:
        """Rows of `unit` (float16 [n, D]; for images their status and the reasons of unreadable ones),
        flushed, then the unit's done flag."""
        backend = _Backend(self.path, write=True)
        try:
            backend.write(f"{unit.kind}_emb", unit.start, emb)
            if unit.kind == "image":
                backend.write("image_status", unit.start, status)
                if reasons:
                    rows = np.array(sorted(reasons), dtype=np.int64)
                    backend.write_rows("image_error", rows, np.stack([_reason_bytes(reasons[r]) for r in rows]))
            backend.flush()
            backend.write(f"{unit.kind}_done", unit.index, np.ones(1, dtype=np.uint8))
            backend.flush()
        finally:
            backend.close()


def _reason_bytes(reason: str) -> np.ndarray:
    out = np.zeros(REASON_BYTES, dtype=np.uint8)
    raw = reason.encode()[:REASON_BYTES]
    out[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def _create(path: Path, records: RecordSet, identity: dict[str, Any], extraction: dict[str, int]) -> None:
    """Build the store beside its final name, then rename it into place: a kill leaves no half store."""
    fmt = store_format(path)
    layout = caption_layout(records)
    by_field = np.bincount(layout.field, minlength=len(FIELDS))
    attrs = {"format_version": FORMAT_VERSION, "teacher": identity, "dataset": dataset_info(records),
             "counts": {"images": len(records), "captions": len(layout.texts), "ids": records.num_ids,
                        "captions_by_field": {f: int(n) for f, n in zip(FIELDS, by_field)}},
             "extraction": extraction}
    static = {"image_pid": records.pids.astype(np.int64), "image_split": records.splits.astype(np.int8),
              "image_path": list(records.paths), "caption_image": layout.image, "caption_field": layout.field,
              "caption_text": layout.texts, "caption_offsets": layout.offsets}
    writable = _writable_arrays(len(records), len(layout.texts), identity["dim"], extraction["chunk_rows"])
    tmp = path.with_name(path.name + ".partial")
    _remove(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "h5":
        _create_h5(tmp, static, attrs, writable)
    else:
        _create_zarr(tmp, static, attrs, writable, extraction["chunk_rows"])
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()

