"""Unit writes that are on disk before their done flag, and the one error a failed write becomes.

Why by hand. h5py reports HDF5 write errors late or not at all (a full disk showed only as "Exception
ignored in __dealloc__"), after which chunks were marked done with nothing in them. The writable HDF5
datasets are contiguous and allocated at creation, so their bytes are ours to address: rows go in with
os.pwrite at the dataset's offset, then fsync, then the done flag, then fsync; every error is raised
where it happens, and no HDF5 metadata is ever touched. zarr writes each chunk file atomically itself;
the files and their folders are fsynced before the flag is written, and the flag's file after it.

Any OSError (ENOSPC, EDQUOT, EROFS, EIO...) becomes one StoreWriteError saying what failed, where, why,
and the space the unfinished chunks still need against what is free there.
"""
from __future__ import annotations

import errno as E
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from person import files
from person.teacher.store.backends import _Backend
from person.teacher.store.schema import StoreWriteError, Unit

WRITABLE = ("image_emb", "caption_emb", "image_status", "image_error", "image_done", "caption_done")
Part = tuple[str, int, np.ndarray]  # (array, first row, rows to write there)

REMEDIES = {E.ENOSPC: "free space there", E.EDQUOT: "free space there or raise your disk quota",
            E.EROFS: "make that filesystem writable (or move the store to one that is)",
            E.EACCES: "make the store writable for this user", E.EPERM: "make the store writable for this user"}


class H5Units:
    """Raw writes into the contiguous datasets of one HDF5 store (offsets read once: they never change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        backend = _Backend(path)
        try:
            # An empty array has no region (a caption store has no image rows), and nothing is written to it.
            self.regions = {name: backend.raw_region(name) for name in WRITABLE if np.prod(backend.shape(name))}
        finally:
            backend.close()

    def write(self, unit: Unit, parts: Sequence[Part]) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for name, row, values in parts:
                self._put(fd, name, row, values)
            os.fsync(fd)  # the rows are on disk before the flag that says so
            self._put(fd, f"{unit.kind}_done", unit.index, np.ones(1, dtype=np.uint8))
            os.fsync(fd)
        finally:
            os.close(fd)

    def clear_done(self, units: Sequence[Unit]) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for unit in units:
                self._put(fd, f"{unit.kind}_done", unit.index, np.zeros(1, dtype=np.uint8))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _put(self, fd: int, name: str, row: int, values: np.ndarray) -> None:
        offset, shape, dtype = self.regions[name]
        values = np.ascontiguousarray(values, dtype=dtype)
        if values.shape[1:] != shape[1:] or row < 0 or row + len(values) > shape[0]:
            raise ValueError(f"{self.path}: {values.shape} values at row {row} do not fit {name} {shape}")
        data = memoryview(values).cast("B")
        position = offset + row * dtype.itemsize * int(np.prod(shape[1:]))
        while data:  # pwrite may write less than asked (a disk filling up): the rest, or its error
            written = os.pwrite(fd, data, position)
            data, position = data[written:], position + written


class ZarrUnits:
    """Writes through zarr (atomic chunk files), made durable by fsyncing what they touched."""

    def __init__(self, path: Path, chunk_rows: int) -> None:
        self.path, self.chunk_rows = path, chunk_rows

    def write(self, unit: Unit, parts: Sequence[Part]) -> None:
        backend = _Backend(self.path, write=True)
        # Empty chunks written too: a done unit then always has its files, which is what the checks look for.
        arrays = {name: backend[name].with_config({"write_empty_chunks": True}) for name in {p[0] for p in parts}}
        touched = set()
        for name, row, values in parts:
            arrays[name][row:row + len(values)] = values
            last = row + len(values) - 1
            touched |= {(name, k) for k in range(row // self.chunk_rows, last // self.chunk_rows + 1)}
        for name, k in sorted(touched):
            _fsync_chunk(backend, name, k)
        backend[f"{unit.kind}_done"][unit.index] = 1
        _fsync_chunk(backend, f"{unit.kind}_done", unit.index)

    def clear_done(self, units: Sequence[Unit]) -> None:
        backend = _Backend(self.path, write=True)
        for unit in units:
            backend[f"{unit.kind}_done"][unit.index] = 0  # the fill value: zarr removes the flag's file
            _fsync_chunk(backend, f"{unit.kind}_done", unit.index)


def _fsync_chunk(backend: _Backend, name: str, k: int) -> None:
    """fsync a chunk file (when it exists) and the folders from it up to its array's, which a rename or a
    new folder changed."""
    file = backend.chunk_file(name, k)
    if file.exists():
        files.fsync(file)
    top = Path(backend.zarr.store.root) / backend[name].path
    folder = file.parent
    while True:
        files.fsync(folder)
        if folder == top or folder == folder.parent:
            break
        folder = folder.parent


def unit_bytes(unit: Unit, dim: int, chunk_rows: int, fmt: str, block: int) -> int:
    """About what writing a unit takes on disk: its embedding rows (a zarr chunk file is always a whole chunk)
    in whole blocks, a block for image status / error text, a block for a zarr done flag's file."""
    rows = chunk_rows if fmt == "zarr" else unit.stop - unit.start
    extra = (unit.kind == "image") + (fmt == "zarr")
    return -(-rows * dim * 2 // block) * block + extra * block


def write_failure(path: Path, what: str, error: OSError, need: int, unfinished: int, total: int) -> StoreWriteError:
    """A failed unit write, said in one line: what, where, the OS reason, space needed vs free, what to do."""
    free, mount = free_space(path)
    message = (f"{path}: {what} failed: {os_reason(error)}; the {unfinished} unfinished chunks need about "
               f"{human(need)} and {human(free)} is free on {mount}; {remedy(error)}, then run the same command "
               f"again: it continues where it stopped ({total - unfinished} of {total} chunks are finished and kept)")
    return _error(message, error)


def create_failure(path: Path, error: Exception, total: int, embeddings: int) -> StoreWriteError:
    """A store that could not be built, in one line, as write_failure."""
    free, mount = free_space(path)
    message = (f"{path}: creating the store failed: {os_reason(error)}; the store needs about {human(total)} "
               f"({human(embeddings)} of it embeddings, written after creation) and {human(free)} is free on "
               f"{mount}; {remedy(error)}, then run the same command again")
    return _error(message, error)


def _error(message: str, cause: Exception) -> StoreWriteError:
    out = StoreWriteError(message)
    out.errno = errno_of(cause)  # strerror stays unset, so str() is the message
    return out


def errno_of(error: Exception) -> int | None:
    """The OS error number, also from an HDF5 error that carries it only in its text (h5py's RuntimeError of
    a failed flush: "... errno = 28, error message = 'No space left on device' ...")."""
    code = getattr(error, "errno", None)
    if isinstance(code, int):
        return code
    found = re.search(r"errno = (\d+)", str(error))
    return int(found.group(1)) if found else None


def os_reason(error: Exception) -> str:
    code = errno_of(error)
    if code in E.errorcode:
        return f"{os.strerror(code)} ({E.errorcode[code]})"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def remedy(error: Exception) -> str:
    return REMEDIES.get(errno_of(error), "check the disk (the system log says more)")


def free_space(path: Path) -> tuple[int, Path]:
    """(bytes free to this user, mount point) of the filesystem `path` is or would be on."""
    place = _existing(path)
    stats, device = os.statvfs(place), place.stat().st_dev
    while place != place.parent and place.parent.stat().st_dev == device:
        place = place.parent
    return stats.f_bavail * stats.f_frsize, place


def block_size(path: Path) -> int:
    return os.statvfs(_existing(path)).f_frsize or 4096


def _existing(path: Path) -> Path:
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    return place


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
