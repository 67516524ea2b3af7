"""Reading a store (`open_store`, `FeatureStore`): its rows in RAM or memory-mapped, checked before use.

Embeddings in RAM when they fit, else rows straight from the file through memory maps; a store is refused
when it does not match the dataset or teacher it is used with, or is unfinished."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from person.data.records import DatasetOptions, RecordSet, load_records, split_code, split_kwargs_of
from person.teacher.store.backends import _Backend
from person.teacher.store.checks import (REDO, Layout, check_caption_offsets, check_shapes, damaged_error, find_damage,
                                         non_unit, row_norms)
from person.teacher.store.naming import locate_store
from person.teacher.store.schema import (OK, PENDING, SUFFIXES, UNREADABLE, StoreDamagedError, StoreIncompleteError,
                                         StoreKindError, TeacherLike, check_dataset, check_teacher, store_format)


def default_ram_bytes() -> int:
    """Half the machine's memory: the default budget for holding a store's embeddings in RAM."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


class FeatureStore:
    """A store opened for reading (`open_store`). Rows are int arrays in any order, repeats allowed."""

    def __init__(self, path: Path, in_memory: bool | str = "auto", max_ram_bytes: int | None = None) -> None:
        self.path, self.format = path, store_format(path)
        backend = _Backend(path)
        try:
            attrs = backend.attrs
            # Shapes before any row is read: a short array would give rows that are not there.
            self.layout = Layout.of(path, attrs)
            check_shapes(backend, self.layout)
            self.teacher_identity: dict[str, Any] = attrs["teacher"]
            self.dataset_info: dict[str, Any] = attrs["dataset"]
            self.counts: dict[str, int] = attrs["counts"]
            self.chunk_rows, self.dim = self.layout.chunk_rows, self.layout.dim
            self.image_pid: np.ndarray = backend.read("image_pid")
            self.image_split: np.ndarray = backend.read("image_split")
            self.caption_image: np.ndarray = backend.read("caption_image")
            self.caption_field: np.ndarray = backend.read("caption_field")
            self.caption_offsets: np.ndarray = backend.read("caption_offsets")
            check_caption_offsets(path, self.caption_offsets, self.caption_image, self.layout.labelled)
            self._image_done = backend.read("image_done").astype(bool)
            self._caption_done = backend.read("caption_done").astype(bool)
            status = backend.read("image_status")
            # Done chunks that lost their rows are refused now, not when training ends on zero targets.
            damage = find_damage(backend, self.layout, status, {"image": self._image_done,
                                                                "caption": self._caption_done})
            if damage:
                raise damaged_error(path, damage)
            # A unit killed half-written may have status bytes; until its done flag it is pending.
            self.image_status: np.ndarray = np.where(self._row_done(self._image_done, len(status)), status,
                                                     PENDING).astype(np.uint8)
            embedding_bytes = 2 * self.dim * (self.num_images + self.num_captions)
            limit = default_ram_bytes() if max_ram_bytes is None else max_ram_bytes
            if in_memory not in (True, False, "auto"):
                raise ValueError(f"in_memory={in_memory!r}: use True, False or 'auto'")
            self.in_memory = embedding_bytes <= limit if in_memory == "auto" else bool(in_memory)
            load = backend.in_memory if self.in_memory else backend.mapped
            self._images, self._captions = load("image_emb"), load("caption_emb")
            bad = np.flatnonzero(self.image_status == UNREADABLE)
            reasons = backend.read("image_error", bad) if len(bad) else []
            self._reasons = {int(r): bytes(b).rstrip(b"\0").decode(errors="replace") for r, b in zip(bad, reasons)}
        finally:
            backend.close()
        self._paths: list[str] | None = None

    def _row_done(self, done: np.ndarray, n: int) -> np.ndarray:
        return np.repeat(done, self.chunk_rows)[:n]

    @property
    def kind(self) -> str:
        """The dataset's format, or the unlabeled source's kind (person.data.unlabeled.UNLABELED_KINDS)."""
        return self.layout.kind

    @property
    def labelled(self) -> bool:
        return self.layout.labelled

    @property
    def num_images(self) -> int:
        return int(self.counts["images"])

    @property
    def num_captions(self) -> int:
        return int(self.counts["captions"])

    @property
    def complete(self) -> bool:
        return bool(self._image_done.all() and self._caption_done.all())

    @property
    def image_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The teacher's image (mean, std): students see pixels normalised the same way (0.5 when unknown)."""
        pre = self.teacher_identity.get("preprocessing", {})
        return tuple(pre.get("image_mean") or (0.5,) * 3), tuple(pre.get("image_std") or (0.5,) * 3)

    @property
    def image_ok(self) -> np.ndarray:
        return self.image_status == OK

    @property
    def image_paths(self) -> list[str]:
        if self._paths is None:
            self._paths = self._strings("image_path")
        return self._paths

    def _strings(self, name: str, rows: np.ndarray | None = None) -> list[str]:
        backend = _Backend(self.path)
        try:
            return backend.strings(name, rows)
        finally:
            backend.close()

    def caption_texts(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        rows = self._check_rows(rows, self.num_captions, "caption")
        unique, inverse = np.unique(rows, return_inverse=True)
        texts = self._strings("caption_text", unique) if len(unique) else []
        return [texts[i] for i in inverse]

    def images(self, rows: Sequence[int] | np.ndarray, dtype: DTypeLike = np.float32) -> np.ndarray:
        """[n, D] image embeddings; every row must be a readable image (see split_rows). `dtype=np.float16`
        gives the stored values unconverted (numpy's fp16 -> fp32 is most of a read; a GPU does it faster)."""
        rows = self._check_rows(rows, self.num_images, "image")
        bad = rows[self.image_status[rows] != OK]
        if len(bad):
            row = int(bad[0])
            state = "unreadable" if self.image_status[row] == UNREADABLE else "not extracted yet"
            raise ValueError(f"{self.path}: image row {row} ({self.image_paths[row]}) is {state}; "
                             f"{len(bad)} of the {len(rows)} rows asked for have no embedding: select rows "
                             f"with split_rows() or image_ok")
        return self._checked(self._images.take(rows).astype(dtype, copy=False), rows, "image")

    def captions(self, rows: Sequence[int] | np.ndarray, dtype: DTypeLike = np.float32) -> np.ndarray:
        """[n, D] caption embeddings (`dtype` as for images)."""
        rows = self._check_rows(rows, self.num_captions, "caption")
        pending = rows[~self._caption_done[rows // self.chunk_rows]]
        if len(pending):
            raise ValueError(f"{self.path}: caption row {int(pending[0])} is not extracted yet; run "
                             f"tools/extract_label.py again to finish the store")
        return self._checked(self._captions.take(rows).astype(dtype, copy=False), rows, "caption")

    def _checked(self, values: np.ndarray, rows: np.ndarray, kind: str) -> np.ndarray:
        """`values` when every row is a unit vector, else StoreDamagedError naming the row (it costs a few
        percent of a float32 read; the float16 path looks for zero rows only, what a lost write leaves,
        since exact norms need the float32 copy that path exists to skip)."""
        if values.dtype == np.float16:
            bad = np.flatnonzero(values.view(np.uint16).max(axis=1) == 0)
            norms = np.zeros(len(values))
        else:
            norms = row_norms(values)
            bad = non_unit(norms)
        if len(bad):
            row = int(rows[bad[0]])
            raise StoreDamagedError(f"{self.path}: {kind}_emb row {row} ({self.layout.unit_of(kind, row).describe()}) "
                                    f"has L2 norm {norms[bad[0]]:.3g}, not 1: the store is damaged; {REDO}")
        return values

    def _check_rows(self, rows: Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.size == 0:
            return rows.astype(np.int64).reshape(0)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"{what} rows must be a 1-D integer array, got {rows.dtype} {rows.shape}")
        if rows.min() < 0 or rows.max() >= n:
            raise IndexError(f"{self.path}: {what} row {int(rows.max() if rows.max() >= n else rows.min())} "
                             f"is outside 0..{n - 1}")
        return rows.astype(np.int64)

    def split_rows(self, split: str) -> np.ndarray:
        """Image rows of a split ("train"/"val"/"test", "eval" = the test split), unreadable ones left out."""
        refuse_unlabeled(self)
        return np.flatnonzero((self.image_split == split_code(split)) & self.image_ok)

    def skipped(self) -> list[tuple[int, str, str]]:
        """(row, path, reason) of every unreadable image."""
        return [(row, self.image_paths[row], reason) for row, reason in sorted(self._reasons.items())]

    def size_bytes(self) -> int:
        files = [self.path] if self.path.is_file() else [p for p in self.path.rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files)

    def close(self) -> None:
        self._images = self._captions = None  # drops the maps (and their file descriptors)

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, {self.num_images} images, {self.num_captions} captions, "
                f"dim {self.dim}, {'complete' if self.complete else 'incomplete'})")


def refuse_unlabeled(store: FeatureStore) -> None:
    """Identities, splits and caption-image pairs exist only in a labelled store: evaluation never reads an
    unlabeled one, and training reads it only beside a labelled one (person.teacher.store.open_unlabeled)."""
    if not store.labelled:
        info = store.dataset_info
        raise StoreKindError(f"{store.path} is an unlabeled store (made from the {store.kind} {info.get('source')}): "
                             f"it has no identities, splits or image-caption pairs, so it cannot be evaluated on or "
                             f"be the labelled store; open it with open_unlabeled to mix it into training beside a "
                             f"labelled store of the same teacher")


def open_store(path: str | Path, records: RecordSet | None = None, teacher: TeacherLike | None = None,
               in_memory: bool | str = "auto", *, max_ram_bytes: int | None = None,
               allow_incomplete: bool = False) -> FeatureStore:
    """Open a store for reading.

    `path` is a store, or a folder to find it in (`locate_store`). `records` (RecordSet) and `teacher`
    (Teacher or its identity() dict), when given, must be what the store was made from, else
    StoreMismatchError says what differs. `in_memory`: True loads the
    embeddings into RAM, False reads rows from the file, "auto" loads when they take at most
    `max_ram_bytes` (default half the machine's memory). An unfinished store is refused unless
    `allow_incomplete` (its pending rows then cannot be read).
    """
    path = locate_store(path, records, teacher)
    if not path.exists():
        raise FileNotFoundError(f"feature store {path} does not exist; make it with tools/extract_label.py "
                                f"(--embedding_path {path})")
    store = FeatureStore(path, in_memory, max_ram_bytes)
    refuse_unlabeled(store)
    if records is not None:
        check_dataset(path, store.dataset_info, records)
    if teacher is not None:
        check_teacher(path, store.teacher_identity, teacher)
    if not allow_incomplete:
        check_complete(store)
    return store


def check_complete(store: FeatureStore) -> None:
    if not store.complete:
        done = int(store._image_done.sum() + store._caption_done.sum())
        total = len(store._image_done) + len(store._caption_done)
        raise StoreIncompleteError(f"{store.path}: extraction not finished ({done} of {total} chunks written); run "
                                   f"tools/extract_label.py with the same arguments again to finish it")


def open_with_records(embedding_path: str | Path, dataset: DatasetOptions | None = None,
                      **open_kwargs: Any) -> tuple[FeatureStore, RecordSet]:
    """A store and the records it was made from, split as they were at extraction.

    A store file names its dataset (JSON, image root, format) and split rule itself, so `dataset` is
    needed only where files moved (its data / image_root win; a split option given explicitly must
    give the store's split, which is checked). A folder `embedding_path` needs `dataset` (with the
    split options the store was extracted with) to find the store of that dataset in it.
    """
    dataset = dataset or DatasetOptions()
    path = Path(embedding_path)
    if path.suffix not in SUFFIXES:
        if not dataset.data:
            raise ValueError(f"--embedding_path {path} is a folder: pass --data (the dataset its store was made "
                             f"from) or the store file itself")
        records = dataset.load_records()
        return open_store(path, records=records, **open_kwargs), records
    store = open_store(path, **open_kwargs)
    info = store.dataset_info
    explicit = dataset.eval_ids is not None or dataset.eval_first_records is not None or dataset.split_seed != 0
    split = dataset.split_kwargs() if explicit else split_kwargs_of(info["split_rule"])
    image_root = dataset.image_root or (None if dataset.data else info["image_root"])
    records = load_records(dataset.data or info["source"], image_root, dataset.dataset_format or info["format"],
                           **split)
    check_dataset(path, info, records)
    return store, records
