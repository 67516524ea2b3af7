"""Writing a store (`StoreWriter`): created whole beside its final name, then filled unit by unit, resumably.

Each unit's done flag is written after its rows are on disk (`durable` says how; the package docstring why a
kill cannot tear a store). Reopening a store to continue it checks it first: chunks marked done whose rows are
gone are marked pending again, so the rerun redoes exactly those."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from person import files
from person.data.records import RecordSet
from person.data.unlabeled import UnlabeledSource
from person.errors import PersonError
from person.teacher.store.backends import _Backend, _create_h5, _create_zarr, _writable_arrays
from person.teacher.store.checks import (Damage, Layout, check_caption_offsets, check_shapes, find_damage, non_unit,
                                         row_norms)
from person.teacher.store.durable import (H5Units, Part, ZarrUnits, block_size, create_failure, unit_bytes,
                                          write_failure)
from person.teacher.store.schema import (FIELDS, FORMAT_VERSION, OK, REASON_BYTES, TEACHER_KEYS, StoreFormatError,
                                         StoreMismatchError, StoreWriteError, Unit, _differences, _jsonable,
                                         caption_layout, check_dataset, check_teacher, dataset_info, plan_units,
                                         store_format)
from person.teacher.store.unlabeled import unlabeled_contents

__all__ = ["StoreWriter", "Unit", "plan_units"]

log = logging.getLogger(__name__)

CUTS_NONE = {"image": [], "caption": []}


class StoreWriter:
    """Creates a store or reopens one to continue it; writes whole units. Used by one process only."""

    def __init__(self, path: Path, attrs: dict[str, Any]) -> None:
        self.path, self.attrs, self.format = path, attrs, store_format(path)
        self.layout = Layout.of(path, attrs)
        self.chunk_rows, self.units = self.layout.chunk_rows, self.layout.units()
        # Row counts where earlier runs of a grown source ended: batches never straddle them (extraction).
        self.cuts: dict[str, list[int]] = attrs["extraction"].get("cuts", CUTS_NONE)
        self._io = H5Units(path) if self.format == "h5" else ZarrUnits(path, self.chunk_rows)

    @classmethod
    def open(cls, path: str | Path, records: RecordSet | UnlabeledSource, identity: Mapping[str, Any], *,
             chunk_rows: int, batch_size: int) -> StoreWriter:
        """The store at `path` of a dataset's records or an unlabeled source, created when missing; an existing
        one must match everything (resume), and its done chunks that lost their rows are marked pending again
        (logged). A grown unlabeled source is appended by person.teacher.store.growth, not here."""
        path = Path(path)
        if chunk_rows < 1 or batch_size < 1:
            raise ValueError(f"chunk_rows {chunk_rows} and batch_size {batch_size} must be at least 1")
        extraction: dict[str, Any] = {"chunk_rows": chunk_rows, "batch_size": batch_size}
        if not path.exists():
            if isinstance(records, RecordSet):
                attrs, static = _labelled_contents(records, _jsonable(identity), extraction)
            else:  # the row counts where earlier runs ended: none yet (growth adds them)
                attrs, static = unlabeled_contents(records, _jsonable(identity), {**extraction, "cuts": CUTS_NONE})
            _create(path, attrs, static)
        backend = _Backend(path)
        try:
            attrs = backend.attrs
            layout = Layout.of(path, attrs)
            check_shapes(backend, layout)  # before any write: raw writes trust the shapes
            check_caption_offsets(path, backend.read("caption_offsets"), backend.read("caption_image"), layout.labelled)
            _check_same_run(path, attrs, records, identity, extraction)
            done = {"image": backend.read("image_done"), "caption": backend.read("caption_done")}
            # Every row, not a sample: this rerun is the repair for whatever damage a reader reported.
            damage = find_damage(backend, layout, backend.read("image_status"), done, every_row=True)
        finally:
            backend.close()
        writer = cls(path, attrs)
        writer._remove_partials()
        if damage:
            writer._redo(damage)
        return writer

    def pending(self) -> list[Unit]:
        backend = _Backend(self.path)
        try:
            done = {"image": backend.read("image_done"), "caption": backend.read("caption_done")}
        finally:
            backend.close()
        return [u for u in self.units if not done[u.kind][u.index]]

    def write(self, unit: Unit, emb: np.ndarray, status: np.ndarray | None = None,
              reasons: Mapping[int, str] | None = None) -> None:
        """Rows of `unit` (float16 [n, D], L2-normalised; for images their status and the reasons of unreadable
        ones), on disk, then the unit's done flag. A failed write raises StoreWriteError, the unit not done."""
        n, dim = unit.stop - unit.start, self.layout.dim
        if emb.shape != (n, dim):
            raise ValueError(f"{self.path}: {unit.describe()} takes embeddings [{n}, {dim}], got {emb.shape}")
        if unit.kind == "image" and (status is None or np.shape(status) != (n,)):
            raise ValueError(f"{self.path}: {unit.describe()} takes a status per row [{n}], got "
                             f"{None if status is None else np.shape(status)}")
        self._check_unit_norm(unit, emb, status)
        parts: list[Part] = [(f"{unit.kind}_emb", unit.start, emb)]
        if unit.kind == "image":
            parts.append(("image_status", unit.start, status))
            parts += [("image_error", r, _reason_bytes(reasons[r])[None]) for r in sorted(reasons or {})]
        try:
            self._io.write(unit, parts)
        except OSError as e:
            raise self._failure(f"writing {unit.describe()}", e, unit) from e

    def _check_unit_norm(self, unit: Unit, emb: np.ndarray, status: np.ndarray | None) -> None:
        """Refuse rows a reader would call damaged (a teacher's NaN, say), before they are marked done."""
        rows = np.flatnonzero(status == OK) if unit.kind == "image" else np.arange(len(emb))
        norms = row_norms(emb[rows])
        bad = non_unit(norms)
        if len(bad):
            raise ValueError(f"{self.path}: {unit.kind} row {unit.start + rows[bad[0]]} given for {unit.describe()} "
                             f"has L2 norm {norms[bad[0]]:.3g}, not 1: a store holds L2-normalised embeddings (a "
                             f"teacher output with NaN or overflow?); nothing of the chunk was written")

    def _redo(self, damage: list[Damage]) -> None:
        for found in damage:
            log.warning("%s: %s; marked pending, so this run extracts it again", self.path, found.describe())
        try:
            self._io.clear_done([found.unit for found in damage])
        except OSError as e:
            raise self._failure(f"marking {len(damage)} damaged chunks pending", e) from e

    def _remove_partials(self) -> None:
        """zarr's temp files of chunk writes that a kill or a full disk interrupted."""
        if self.format == "zarr":
            try:
                for partial in self.path.rglob("*.partial"):
                    partial.unlink()
            except OSError as e:
                raise self._failure("removing unfinished temp files", e) from e

    def _failure(self, what: str, error: OSError, unit: Unit | None = None) -> StoreWriteError:
        try:
            unfinished = self.pending()
        except (OSError, PersonError):  # the disk may not even be readable now
            unfinished = [unit] if unit else []
        block = block_size(self.path)
        need = sum(unit_bytes(u, self.layout.dim, self.chunk_rows, self.format, block) for u in unfinished)
        return write_failure(self.path, what, error, need, len(unfinished), len(self.units))


def _check_same_run(path: Path, attrs: Mapping[str, Any], records: RecordSet, identity: Mapping[str, Any],
                    extraction: dict[str, int]) -> None:
    check_dataset(path, attrs["dataset"], records)
    # Resuming must give the bytes an uninterrupted run gives: same dtype, same chunks and batches.
    check_teacher(path, attrs["teacher"], identity, TEACHER_KEYS + ("dtype",))
    lines = _differences(attrs["extraction"], extraction, ("chunk_rows", "batch_size"))
    if lines:
        raise StoreMismatchError(
            f"{path} was started with other extraction settings:\n" + "\n".join(lines) +
            "\nFinish it with the store's settings (the batches decide the exact bytes), or use another "
            "--embedding_path.")


def _reason_bytes(reason: str) -> np.ndarray:
    out = np.zeros(REASON_BYTES, dtype=np.uint8)
    raw = reason.encode()[:REASON_BYTES]
    out[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def _labelled_contents(records: RecordSet, identity: dict[str, Any],
                       extraction: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(attributes, fixed arrays) of a new store of a dataset's records."""
    layout = caption_layout(records)
    by_field = np.bincount(layout.field, minlength=len(FIELDS))
    attrs = {"format_version": FORMAT_VERSION, "teacher": identity, "dataset": dataset_info(records),
             "counts": {"images": len(records), "captions": len(layout.texts), "ids": records.num_ids,
                        "captions_by_field": {f: int(n) for f, n in zip(FIELDS, by_field)}},
             "extraction": extraction}
    static = {"image_pid": records.pids.astype(np.int64), "image_split": records.splits.astype(np.int8),
              "image_path": list(records.paths), "caption_image": layout.image, "caption_field": layout.field,
              "caption_text": layout.texts, "caption_offsets": layout.offsets}
    return attrs, static


def _create(path: Path, attrs: dict[str, Any], static: dict[str, Any], fill: Callable[[Path], None] | None = None,
            ) -> None:
    """Build the store beside its final name (person.files.atomic_dir), read it back, then rename it into place: a
    kill leaves no half store, and a full or read-only disk a StoreWriteError (with the partial build removed).
    `fill(tmp)`, when given, writes rows into the build before the rename (growth copies the old store's)."""
    fmt = store_format(path)
    extraction = attrs["extraction"]
    writable = _writable_arrays(attrs["counts"]["images"], attrs["counts"]["captions"], attrs["teacher"]["dim"],
                                extraction["chunk_rows"])
    try:
        with files.atomic_dir(path, make=False) as tmp:  # the format's library makes the file or folder
            if fmt == "h5":
                _create_h5(tmp, static, attrs, writable)
            else:
                _create_zarr(tmp, static, attrs, writable, extraction["chunk_rows"])
            if fill is not None:
                fill(tmp)
            _read_back(tmp, fmt)
    except (OSError, RuntimeError, StoreFormatError) as e:  # h5py: RuntimeError when closing on a full disk
        embeddings = sum(_nbytes(shape, dtype) for name, (shape, dtype, _) in writable.items() if name.endswith("_emb"))
        total = sum(_nbytes(shape, dtype) for shape, dtype, _ in writable.values()) + sum(
            sum(len(t.encode()) + 16 for t in v) if isinstance(v, list) else v.nbytes for v in static.values())
        raise create_failure(path, e, total, embeddings) from e


def _read_back(tmp: Path, fmt: str) -> None:
    """The build opens and has every array: HDF5 may report a failed write only by leaving it out."""
    backend = _Backend(tmp, format=fmt)
    try:
        check_shapes(backend, Layout.of(tmp, backend.attrs))
    finally:
        backend.close()


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


