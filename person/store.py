"""The feature store: a teacher's embeddings of every image and caption of a dataset, in one HDF5 or zarr store.

Layout (the same names in both formats; `.h5` is one HDF5 file, `.zarr` a zarr v3 directory; Ni images,
Nc captions, D the teacher's dim, C = chunk_rows, the unit of writing and resuming):

    image_emb       float16 [Ni, D]   L2-normalised in float32, then cast; zeros for unreadable images
    caption_emb     float16 [Nc, D]
    image_status    uint8   [Ni]      0 pending, 1 ok, 2 unreadable
    image_error     uint8   [Ni, 128] why an image was unreadable: UTF-8, zero-padded (path left out)
    image_pid       int64   [Ni]      contiguous identities 0..K-1 (RecordSet.pids)
    image_split     int8    [Ni]      index into person.records.SPLITS
    image_path      str     [Ni]      relative to the dataset's image root
    caption_image   int64   [Nc]      the caption's image row
    caption_field   uint8   [Nc]      0 = `captions`, 1 = `prompt_caption` (FIELDS)
    caption_text    str     [Nc]
    caption_offsets int64   [Ni+1]    captions of image i are rows offsets[i]:offsets[i+1]
    image_done      uint8   [ceil(Ni/C)]  chunk k (rows kC:(k+1)C) written
    caption_done    uint8   [ceil(Nc/C)]
    attributes: format_version, teacher (Teacher.identity()), dataset (source, image_root, format,
                split_rule, fingerprint), counts (images, captions, ids, captions_by_field),
                extraction (chunk_rows, batch_size)

Caption rows follow the records: for record i in order, its `captions`, then its `prompt_caption`s.

Surviving a kill at any moment. A store is built under `<name>.partial` with everything but the
embeddings, status and error text, then renamed into place (atomic). After that, extraction only
ever writes raw bytes of fixed-size arrays whose space exists from the start; a chunk's done flag is
written after its rows are flushed.
- HDF5 is not crash-safe when its metadata (B-trees, heaps, attributes) changes. So the writable
  arrays are contiguous, allocated at creation and uncompressed: writing them never touches
  metadata, and a killed writer leaves a valid file (tests/test_store.py pins that the bytes outside
  the data regions never change). Unwritten space stays a sparse hole on disk.
- zarr's LocalStore writes each chunk file atomically (temp file + rename, since zarr 3.1.2), and the
  embedding, status and error chunks are exactly the writing unit, so a chunk is old or new, never torn.

Naming. `--embedding_path` is the store (a path ending in .h5 or .zarr) or a folder (default
`embeddings/`) holding `<dataset>__<teacher>[-pad].<h5|zarr>`: see `resolve_store_path` (the writer's
name) and `locate_store` (a reader's lookup, which needs the records but not the teacher).

Reading. The whole embedding arrays in RAM when they fit (`in_memory="auto"`: at most `max_ram_bytes`,
default half the machine's memory), otherwise random rows straight from the file through np.memmap:
the HDF5 datasets are contiguous (one map at the dataset's offset), the zarr embedding chunks are
stored raw (no compression: fp16 embeddings hardly compress), one map per chunk file. Through
h5py/zarr indexing a random row costs a whole chunk or a slow selection; the maps cost what a plain
memmap costs (bench/store.py). A store keeps no HDF5/zarr handle open between calls (text and path
reads open it briefly), so it is safe to use after fork and never blocks a writer.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import h5py
import numpy as np
import zarr
from numpy.typing import DTypeLike

from person.records import DatasetOptions, RecordSet, load_records, split_code, split_kwargs_of

if TYPE_CHECKING:
    from person.teachers import Teacher

TeacherLike = Union["Teacher", Mapping[str, Any]]  # a loaded teacher, or its identity() dict

FORMAT_VERSION = 1
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


class StoreFormatError(ValueError):
    """Not a feature store this version can read; the message names the path and the fix."""


class StoreMismatchError(ValueError):
    """The store was made from another dataset, teacher or preprocessing than the one it is used with."""


class StoreIncompleteError(ValueError):
    """The extraction that writes the store has not finished."""


# ---------------------------------------------------------------- naming

def _teacher_slug(name: str) -> str:
    name = name.rstrip("/\\")
    local = Path(name).expanduser().is_dir() or name.startswith((".", "/", "~", "\\"))
    slug = Path(name).name if local else name.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", slug)


def resolve_store_path(embedding_path: str | Path, records: RecordSet, teacher: TeacherLike | str,
                       format: str | None = None, pad_to_square: bool = False) -> Path:
    """Turn `--embedding_path` into the store's path.

    A path ending in `.h5` or `.zarr` is the store itself. Anything else is a folder (the default
    `embeddings/`), and the store in it is `<dataset>__<teacher>[-pad].<format>`: <dataset> is the
    records' format and the first 10 hex digits of `RecordSet.fingerprint()` (content and split),
    <teacher> the model's name (a hub id with '/' as '--', a local directory by its own name), `-pad`
    when crops are padded to square. E.g. `embeddings/synthpedes-3fa2b1c09d__google--siglip2-base-
    patch16-224.h5`. `teacher` is a Teacher, its identity() dict, or a name (then `pad_to_square` says
    the crop handling). `format` (h5 / zarr) applies to folders; for a file it must agree or be None.
    """
    path = Path(embedding_path)
    if path.suffix in SUFFIXES:
        if format is not None and format != SUFFIXES[path.suffix]:
            raise ValueError(f"--embedding_path {path} is a .{SUFFIXES[path.suffix]} store but --format is "
                             f"{format}; give a path ending in .{format}, or a folder")
        return path
    format = format or "h5"
    if format not in FORMATS:
        raise ValueError(f"store format {format!r}: use one of {', '.join(FORMATS)}")
    if isinstance(teacher, str):
        name, pad = teacher, pad_to_square
    else:
        identity = teacher if isinstance(teacher, Mapping) else teacher.identity()
        name, pad = identity["teacher"], bool(identity["preprocessing"].get("pad_to_square"))
    return path / f"{_dataset_slug(records)}__{_teacher_slug(name)}{'-pad' if pad else ''}.{format}"


def _dataset_slug(records: RecordSet) -> str:
    return f"{records.format}-{records.fingerprint()[:10]}"


def locate_store(embedding_path: str | Path, records: RecordSet | None = None,
                 teacher: TeacherLike | None = None) -> Path:
    """The store `--embedding_path` names, for reading (no teacher needed).

    A .h5/.zarr path is the store. In a folder, the store made from `records` under the name
    `resolve_store_path` gives (with `teacher`: exactly that name, in either format; without: the one
    store of this dataset in the folder, whichever teacher made it).
    """
    path = Path(embedding_path)
    if path.suffix in SUFFIXES:
        return path
    if records is None:
        raise ValueError(f"--embedding_path {path} is a folder: name the store in it (.h5 or .zarr)")
    if teacher is not None:
        wanted = [resolve_store_path(path, records, teacher, fmt).name for fmt in FORMATS]
    else:
        wanted = [f"{_dataset_slug(records)}__*{suffix}" for suffix in SUFFIXES]
    found = sorted({p for pattern in wanted for p in path.glob(pattern)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no feature store of this dataset in {path} (looked for {' or '.join(wanted)}); "
                                f"make it with tools/extract_label.py --embedding_path {path}")
    raise ValueError(f"{path} holds {len(found)} stores of this dataset ({', '.join(p.name for p in found)}); "
                     f"pass the one to use as --embedding_path")


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
            f"tools/extract_label.py again.")


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


# ---------------------------------------------------------------- the two formats

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
                                   chunks=(min(chunk_rows, max(len(values), 1)),))
        array[:] = values
    group.attrs.update(attrs)


class _Backend:
    """One short-lived handle on a store: attributes, whole arrays, rows of arrays, writes."""

    def __init__(self, path: Path, write: bool = False) -> None:
        self.path, self.format, self.h5 = path, store_format(path), None
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
        version = self.attrs.get("format_version")
        if version != FORMAT_VERSION:
            self.close()
            raise StoreFormatError(f"{path}: feature store format version {version!r}, this code reads version "
                                   f"{FORMAT_VERSION}; re-extract it with tools/extract_label.py")

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

    def write(self, name: str, start: int, values: np.ndarray) -> None:
        self[name][start:start + len(values)] = values

    def write_rows(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Write at sorted unique `rows`."""
        if self.format == "h5":
            self.h5[name][rows] = values
        else:
            self.zarr[name].oindex[rows] = values

    def flush(self) -> None:
        if self.format == "h5":
            self.h5.flush()  # raw bytes reach the OS before the done flag is written: a kill cannot reorder them

    def close(self) -> None:
        if self.h5 is not None:
            self.h5.close()

    def mapped(self, name: str) -> _Rows:
        """Random row access to an embedding array through np.memmap (see module docstring)."""
        array = self[name]
        dim = array.shape[1]
        if self.format == "h5":
            offset = array.id.get_offset()
            if array.chunks is not None or offset is None or array.dtype != np.dtype("<f2"):
                raise StoreFormatError(f"{self.path}: {name} is not a contiguous float16 dataset; re-extract it")
            whole = np.memmap(self.path, dtype="<f2", mode="r", offset=offset, shape=array.shape).view(np.ndarray)
            return _Rows(lambda k: whole, max(len(whole), 1), dim)
        if array.compressors or array.filters or array.dtype != np.dtype("<f2"):
            raise StoreFormatError(f"{self.path}: {name} has compressed chunks; re-extract it")
        folder, chunk_rows = Path(self.zarr.store.root) / array.path, array.chunks[0]

        @functools.lru_cache(maxsize=MAPPED_CHUNK_FILES)
        def chunk(k: int) -> np.ndarray:
            file = folder / array.metadata.encode_chunk_key((k, 0))
            return np.memmap(file, dtype="<f2", mode="r").reshape(-1, dim).view(np.ndarray)

        return _Rows(chunk, chunk_rows, dim)

    def in_memory(self, name: str) -> _Rows:
        whole = self.read(name)
        return _Rows(lambda k: whole, max(len(whole), 1), whole.shape[1])


class _Rows:
    """float16 rows in segments of `seg_rows` (one segment: a whole array in RAM or one map)."""

    def __init__(self, segment: Callable[[int], np.ndarray], seg_rows: int, dim: int) -> None:
        self.segment, self.seg_rows, self.dim = segment, seg_rows, dim

    def take(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.empty((0, self.dim), dtype=np.float16)
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


# ---------------------------------------------------------------- writing

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


# ---------------------------------------------------------------- reading

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
            self.teacher_identity: dict[str, Any] = attrs["teacher"]
            self.dataset_info: dict[str, Any] = attrs["dataset"]
            self.counts: dict[str, int] = attrs["counts"]
            self.chunk_rows: int = attrs["extraction"]["chunk_rows"]
            self.dim: int = int(self.teacher_identity["dim"])
            self.image_pid: np.ndarray = backend.read("image_pid")
            self.image_split: np.ndarray = backend.read("image_split")
            self.caption_image: np.ndarray = backend.read("caption_image")
            self.caption_field: np.ndarray = backend.read("caption_field")
            self.caption_offsets: np.ndarray = backend.read("caption_offsets")
            self._image_done = backend.read("image_done").astype(bool)
            self._caption_done = backend.read("caption_done").astype(bool)
            status = backend.read("image_status")
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
        return self._images.take(rows).astype(dtype, copy=False)

    def captions(self, rows: Sequence[int] | np.ndarray, dtype: DTypeLike = np.float32) -> np.ndarray:
        """[n, D] caption embeddings (`dtype` as for images)."""
        rows = self._check_rows(rows, self.num_captions, "caption")
        pending = rows[~self._caption_done[rows // self.chunk_rows]]
        if len(pending):
            raise ValueError(f"{self.path}: caption row {int(pending[0])} is not extracted yet; run "
                             f"tools/extract_label.py again to finish the store")
        return self._captions.take(rows).astype(dtype, copy=False)

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
    if records is not None:
        check_dataset(path, store.dataset_info, records)
    if teacher is not None:
        check_teacher(path, store.teacher_identity, teacher)
    if not store.complete and not allow_incomplete:
        done = int(store._image_done.sum() + store._caption_done.sum())
        total = len(store._image_done) + len(store._caption_done)
        raise StoreIncompleteError(f"{path}: extraction not finished ({done} of {total} chunks written); run "
                                   f"tools/extract_label.py with the same arguments again to finish it")
    return store


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
