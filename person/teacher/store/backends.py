"""The store's two on-disk formats, HDF5 and zarr v3, behind one short-lived handle.

HDF5 (one file, contiguous arrays allocated at creation) and zarr v3 (a directory, one file per chunk):
creation, reads, shapes, where the bytes of an array are (HDF5 byte regions, zarr chunk files: what `durable`
writes and fsyncs) and memory-mapped rows."""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

from person.teacher.store.schema import (FORMAT_VERSION, MAPPED_CHUNK_FILES, READABLE_VERSIONS, REASON_BYTES,
                                         UNLABELED_VERSION, StoreFormatError, num_chunks, store_format)

REEXTRACT = "delete it and run tools/extract_label.py again to re-extract it"


def _dcpl(fill: bool) -> h5py.h5p.PropDCID:
    """Space allocated at creation (writes never change metadata); zero-filled only when asked."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC if fill else h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _writable_arrays(ni: int, nc: int, dim: int, chunk_rows: int) -> dict[str, tuple[tuple[int, ...], str, bool]]:
    """name -> (shape, dtype, zero-filled at creation) of the arrays extraction writes."""
    return {"image_emb": ((ni, dim), "<f2", False), "caption_emb": ((nc, dim), "<f2", False),
            "image_status": ((ni,), "u1", True), "image_error": ((ni, REASON_BYTES), "u1", False),
            "image_done": ((num_chunks(ni, chunk_rows),), "u1", True),
            "caption_done": ((num_chunks(nc, chunk_rows),), "u1", True)}


def _create_h5(tmp: Path, static: dict[str, Any], attrs: dict[str, Any], writable: dict) -> None:
    with h5py.File(tmp, "w", libver="earliest") as f:
        for name, (shape, dtype, fill) in writable.items():
            f.create_dataset(name, shape=shape, dtype=dtype, dcpl=_dcpl(fill))
        for name, data in static.items():
            if isinstance(data, list):
                f.create_dataset(name, data=np.array(data, dtype=object), dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=data)
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value)


def _create_zarr(tmp: Path, static: dict[str, Any], attrs: dict[str, Any], writable: dict, chunk_rows: int) -> None:
    group = zarr.open_group(tmp, mode="w")
    for name, (shape, dtype, _) in writable.items():
        per_chunk = name.endswith("_done")  # one file per flag: each flag is written atomically
        chunks = (1,) if per_chunk else (chunk_rows,) + shape[1:]
        raw = name.endswith("_emb")  # raw chunk files, mapped for random row reads
        group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
                           **({"compressors": None} if raw else {}))
    for name, data in static.items():
        values = np.array(data, dtype=object if isinstance(data, list) else data.dtype)
        array = group.create_array(name, shape=values.shape, dtype=str if isinstance(data, list) else values.dtype,
                                   chunks=(min(chunk_rows, max(len(values), 1)),) + values.shape[1:])
        array[:] = values
    group.attrs.update(attrs)


class _Backend:
    """One short-lived handle on a store: attributes, shapes, whole arrays, rows of arrays, byte regions."""

    def __init__(self, path: Path, write: bool = False, format: str | None = None) -> None:
        self.path, self.format, self.h5 = path, format or store_format(path), None
        try:
            if self.format == "h5":
                self.h5 = h5py.File(path, "r+" if write else "r")
                self.attrs = {k: json.loads(v) for k, v in self.h5.attrs.items()}
            else:
                self.zarr = zarr.open_group(path, mode="r+" if write else "r")
                self.attrs = dict(self.zarr.attrs)
        except (OSError, ValueError, TypeError) as e:  # zarr's errors and JSONDecodeError are ValueErrors
            self.close()
            raise StoreFormatError(f"{path}: not a readable feature store ({e}); re-extract it with "
                                   f"tools/extract_label.py") from None
        if "format_version" not in self.attrs:
            self.close()
            raise StoreFormatError(f"{path}: attribute format_version is missing: not a feature store, or a damaged "
                                   f"one; {REEXTRACT}")
        version = self.attrs["format_version"]
        if version not in READABLE_VERSIONS:
            self.close()
            raise StoreFormatError(f"{path}: feature store format version {version!r}, this code reads version "
                                   f"{FORMAT_VERSION} (labelled stores) and {UNLABELED_VERSION} (unlabeled sources); "
                                   f"re-extract it with tools/extract_label.py")

    def __getitem__(self, name: str) -> Any:
        return self.h5[name] if self.format == "h5" else self.zarr[name]

    def read(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The whole array, or its rows at sorted unique `rows`."""
        array = self[name]
        if self.format == "h5":
            return array[...] if rows is None else array[rows]
        return array[:] if rows is None else array.oindex[rows]

    def strings(self, name: str, rows: np.ndarray | None = None) -> list[str]:
        """Strings at sorted unique `rows` (all when None)."""
        if self.format == "h5":
            array = self[name].asstr()
            return (array[...] if rows is None else array[rows]).tolist()
        return self.read(name, rows).tolist()

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The array's shape; None when the store has no array of that name."""
        container = self.h5 if self.format == "h5" else self.zarr
        if name not in container:
            return None
        array = container[name]
        return tuple(array.shape) if isinstance(array, (h5py.Dataset, zarr.Array)) else None

    def raw_region(self, name: str) -> tuple[int, tuple[int, ...], np.dtype]:
        """(byte offset, shape, dtype) of an HDF5 dataset stored as one contiguous, allocated block: the
        bytes writers and maps address directly."""
        array = self.h5[name]
        offset = array.id.get_offset()
        if array.chunks is not None or offset is None or array.compression is not None:
            raise StoreFormatError(f"{self.path}: {name} is not a contiguous, allocated dataset; {REEXTRACT}")
        return offset, tuple(array.shape), array.dtype

    def chunk_file(self, name: str, k: int) -> Path:
        """The file of a zarr array's chunk k (along rows), whether or not it exists."""
        array = self.zarr[name]
        key = array.metadata.encode_chunk_key((k,) + (0,) * (array.ndim - 1))
        return Path(self.zarr.store.root) / array.path / key

    def close(self) -> None:
        if self.h5 is not None:
            self.h5.close()

    def mapped(self, name: str) -> _Rows:
        """Random row access to an embedding array through np.memmap (see module docstring)."""
        array = self[name]
        n, dim = array.shape
        if n == 0:  # nothing to map (an empty file cannot be mapped)
            return _Rows(lambda k: np.empty((0, dim), dtype=np.float16), 1, dim, 0)
        if self.format == "h5":
            offset, shape, dtype = self.raw_region(name)
            if dtype != np.dtype("<f2"):
                raise StoreFormatError(f"{self.path}: {name} is not a float16 dataset; {REEXTRACT}")
            try:
                whole = np.memmap(self.path, dtype="<f2", mode="r", offset=offset, shape=shape).view(np.ndarray)
            except ValueError:  # numpy: "mmap length is greater than file size"
                raise StoreFormatError(f"{self.path}: {name} runs past the end of the file (a truncated copy?); "
                                       f"{REEXTRACT}") from None
            return _Rows(lambda k: whole, max(n, 1), dim, n)
        if array.compressors or array.filters or array.dtype != np.dtype("<f2"):
            raise StoreFormatError(f"{self.path}: {name} has compressed chunks; re-extract it")

        @functools.lru_cache(maxsize=MAPPED_CHUNK_FILES)
        def chunk(k: int) -> np.ndarray:
            return np.memmap(self.chunk_file(name, k), dtype="<f2", mode="r").reshape(-1, dim).view(np.ndarray)

        return _Rows(chunk, array.chunks[0], dim, n)

    def in_memory(self, name: str) -> _Rows:
        whole = self.read(name)
        return _Rows(lambda k: whole, max(len(whole), 1), whole.shape[1], len(whole))


class _Rows:
    """`n` float16 rows in segments of `seg_rows` (one segment: a whole array in RAM or one map)."""

    def __init__(self, segment: Callable[[int], np.ndarray], seg_rows: int, dim: int, n: int) -> None:
        self.segment, self.seg_rows, self.dim, self.n = segment, seg_rows, dim, n

    def take(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.empty((0, self.dim), dtype=np.float16)
        if rows.min() < 0 or rows.max() >= self.n:  # never wrap into another segment's rows
            raise IndexError(f"row {int(rows.max() if rows.max() >= self.n else rows.min())} is outside "
                             f"0..{self.n - 1}")
        seg = rows // self.seg_rows
        if seg[0] == seg[-1] and (seg == seg[0]).all():
            return self.segment(int(seg[0]))[rows - seg[0] * self.seg_rows]
        # Gather segment by segment in sorted order (one index op per segment), then undo the sort.
        order = np.argsort(seg, kind="stable")
        sorted_seg = seg[order]
        cuts = [0, *(np.flatnonzero(sorted_seg[1:] != sorted_seg[:-1]) + 1).tolist(), len(rows)]
        local = rows[order] - sorted_seg * self.seg_rows
        parts = [self.segment(int(sorted_seg[a]))[local[a:b]] for a, b in zip(cuts[:-1], cuts[1:])]
        out = np.empty((len(rows), self.dim), dtype=np.float16)
        out[order] = np.concatenate(parts)
        return out
