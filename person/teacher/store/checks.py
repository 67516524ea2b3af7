"""The checks that make a store safe to read: attributes, array shapes, caption offsets, rows of done chunks.

Before a row of a store is used: its attributes are all there, every array has the shape its counts say (a
short array would otherwise give rows that are not there), the caption offsets agree with each other, and
every chunk marked done still holds its rows (a deleted zarr chunk file and zeroed bytes both read as zeros:
rows of L2 norm 0).

`find_damage` spot-checks a few rows per done chunk (opening for reading) or every row (the writer,
whose rerun is the repair: it must find what a reader's per-row check found).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from person.data.unlabeled import DETECTIONS, UNLABELED_KINDS
from person.teacher.store.backends import REEXTRACT, _Backend
from person.teacher.store.schema import (NONE, NORM_TOLERANCE, OK, REASON_BYTES, UNLABELED_VERSION, UNREADABLE,
                                         StoreDamagedError, StoreFormatError, Unit, num_chunks, plan_units)

# Attributes a store must have, with the keys inside them that reading and writing use.
REQUIRED_ATTRS = {"teacher": ("dim",), "dataset": ("source", "image_root", "format", "split_rule", "fingerprint"),
                  "counts": ("images", "captions"), "extraction": ("chunk_rows",)}
REDO = "run tools/extract_label.py with the same arguments again: it redoes the damaged chunks and keeps the rest"


@dataclass(frozen=True)
class Layout:
    """The sizes a store's attributes promise; every array's shape follows from them."""

    path: Path
    num_images: int
    num_captions: int
    dim: int
    chunk_rows: int
    kind: str = "dataset"  # the dataset's format, or the unlabeled source's kind (person.data.unlabeled)

    @property
    def labelled(self) -> bool:
        return self.kind not in UNLABELED_KINDS

    @classmethod
    def of(cls, path: Path, attrs: Mapping[str, Any]) -> Layout:
        """The layout of a store's attributes; StoreFormatError names an attribute that is missing or wrong."""
        for key, inner in REQUIRED_ATTRS.items():
            if not isinstance(attrs.get(key), Mapping):
                what = "is missing" if key not in attrs else f"is {attrs[key]!r}, not a mapping"
                raise StoreFormatError(f"{path}: attribute {key} {what}; {REEXTRACT}")
            for sub in inner:
                if sub not in attrs[key]:
                    raise StoreFormatError(f"{path}: attribute {key}.{sub} is missing; {REEXTRACT}")
        sizes = {}
        for key, sub, least in (("counts", "images", 0), ("counts", "captions", 0), ("teacher", "dim", 1),
                                ("extraction", "chunk_rows", 1)):
            value = attrs[key][sub]
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise StoreFormatError(f"{path}: attribute {key}.{sub} is {value!r}, not an integer >= {least}; "
                                       f"{REEXTRACT}")
            sizes[sub] = value
        kind = attrs["dataset"]["format"]
        if (kind in UNLABELED_KINDS) != (attrs.get("format_version") == UNLABELED_VERSION):
            raise StoreFormatError(f"{path}: dataset.format {kind!r} does not go with format_version "
                                   f"{attrs.get('format_version')!r}; {REEXTRACT}")
        return cls(path, sizes["images"], sizes["captions"], sizes["dim"], sizes["chunk_rows"], kind)

    def units(self) -> list[Unit]:
        return plan_units(self.num_images, self.num_captions, self.chunk_rows)

    def unit_of(self, kind: str, row: int) -> Unit:
        n, k = self.num_images if kind == "image" else self.num_captions, row // self.chunk_rows
        return Unit(kind, k, k * self.chunk_rows, min((k + 1) * self.chunk_rows, n))

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape, what the shape follows from)."""
        ni, nc, d, c = self.num_images, self.num_captions, self.dim, self.chunk_rows
        images, captions = f"counts.images = {ni}", f"counts.captions = {nc}"
        out = {"image_emb": ((ni, d), f"{images}, teacher.dim = {d}"),
               "caption_emb": ((nc, d), f"{captions}, teacher.dim = {d}"),
               "image_error": ((ni, REASON_BYTES), images), "caption_offsets": ((ni + 1,), images),
               "image_done": ((num_chunks(ni, c),), f"{images} in chunks of {c}"),
               "caption_done": ((num_chunks(nc, c),), f"{captions} in chunks of {c}")}
        out.update({name: ((ni,), images) for name in ("image_status", "image_pid", "image_split", "image_path")})
        out.update({name: ((nc,), captions) for name in ("caption_image", "caption_field", "caption_text")})
        if self.kind == DETECTIONS:
            out.update({"image_box": ((ni, 4), images), "image_line": ((ni,), images), "image_track": ((ni,), images)})
        return out


def check_shapes(backend: _Backend, layout: Layout) -> None:
    """Every array present, with the shape the counts give; StoreFormatError names the first that is not."""
    for name, (expected, basis) in layout.shapes().items():
        found = backend.shape(name)
        if found is None:
            raise StoreFormatError(f"{backend.path}: array {name} is missing; {REEXTRACT}")
        if found != expected:
            raise StoreFormatError(f"{backend.path}: array {name} has shape {found}, expected {expected} "
                                   f"({basis}); the store is truncated or damaged: {REEXTRACT}")


def check_caption_offsets(path: Path, offsets: np.ndarray, caption_image: np.ndarray, labelled: bool = True) -> None:
    """offsets start at 0, never decrease, end at the caption count, and caption_image follows them; in an
    unlabeled store no caption has an image and no image a caption."""
    def refuse(what: str) -> None:
        raise StoreFormatError(f"{path}: caption_offsets are inconsistent: {what}; {REEXTRACT}")

    if not labelled:
        if offsets.any() or (caption_image != NONE).any():
            refuse(f"an unlabeled store ties no caption to an image (offsets all 0, caption_image all {NONE})")
        return

    if offsets[0] != 0:
        refuse(f"caption_offsets[0] is {offsets[0]}, expected 0")
    steps = np.diff(offsets)
    if (steps < 0).any():
        i = int(np.flatnonzero(steps < 0)[0])
        refuse(f"they decrease after image {i} ({offsets[i]}, then {offsets[i + 1]})")
    if offsets[-1] != len(caption_image):
        refuse(f"caption_offsets[-1] is {offsets[-1]}, expected {len(caption_image)} (the caption count)")
    expected = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), steps)
    wrong = np.flatnonzero(caption_image != expected)
    if len(wrong):
        c = int(wrong[0])
        refuse(f"caption_image[{c}] is {caption_image[c]} but the offsets put caption {c} under image {expected[c]}")


def row_norms(values: np.ndarray) -> np.ndarray:
    x = values.astype(np.float32, copy=False)
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def non_unit(norms: np.ndarray) -> np.ndarray:
    """Indices of norms off 1 (NaN included)."""
    return np.flatnonzero(~(np.abs(norms - 1) <= NORM_TOLERANCE))


@dataclass(frozen=True)
class Damage:
    """A done unit whose rows are not what was written."""

    unit: Unit
    array: str
    problem: str

    def describe(self) -> str:
        return f"{self.array} {self.unit.describe()} is marked done but {self.problem}"


def damaged_error(path: Path, damage: list[Damage]) -> StoreDamagedError:
    more = f" (and {len(damage) - 1} more damaged chunks)" if len(damage) > 1 else ""
    return StoreDamagedError(f"{path}: {damage[0].describe()}{more}; the store is damaged: {REDO}")


def find_damage(backend: _Backend, layout: Layout, status: np.ndarray, done: Mapping[str, np.ndarray],
                every_row: bool = False) -> list[Damage]:
    """Damage of the done units: chunk files missing or short (zarr), status bytes not written, rows whose
    L2 norm is not 1 (image rows only where the status is ok). First, middle and last row of each unit, or
    `every_row`."""
    readers: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    out = []
    for unit in layout.units():
        if done[unit.kind][unit.index]:
            found = _unit_damage(backend, layout, unit, status, every_row, readers)
            if found is not None:
                out.append(found)
    return out


def _unit_damage(backend: _Backend, layout: Layout, unit: Unit, status: np.ndarray, every_row: bool,
                 readers: dict[str, Callable[[np.ndarray], np.ndarray]]) -> Damage | None:
    rows = np.arange(unit.start, unit.stop)
    name = f"{unit.kind}_emb"
    if unit.kind == "image":
        if backend.format == "zarr" and not backend.chunk_file("image_status", unit.index).exists():
            return Damage(unit, "image_status", f"its chunk file {_relative(backend, 'image_status', unit)} is "
                                                f"missing")
        unit_status = status[unit.start:unit.stop]
        unset = np.flatnonzero((unit_status != OK) & (unit_status != UNREADABLE))
        if len(unset):
            r = int(unset[0])
            return Damage(unit, "image_status", f"row {unit.start + r} has status {unit_status[r]} (0 = pending)")
        rows = rows[unit_status == OK]
        if not len(rows):
            return None  # every image unreadable: zero rows are what was written
    if backend.format == "zarr":
        file = backend.chunk_file(name, unit.index)
        if not file.exists():
            return Damage(unit, name, f"its chunk file {_relative(backend, name, unit)} is missing")
        expected = layout.chunk_rows * layout.dim * 2
        array = backend[name]
        if not (array.compressors or array.filters) and file.stat().st_size != expected:
            return Damage(unit, name, f"its chunk file {_relative(backend, name, unit)} has "
                                      f"{file.stat().st_size} bytes, expected {expected}")
    if not every_row:
        rows = np.unique(rows[[0, len(rows) // 2, -1]])
    norms = row_norms(_reader(backend, name, readers)(rows))
    bad = non_unit(norms)
    if len(bad):
        return Damage(unit, name, f"row {rows[bad[0]]} has L2 norm {norms[bad[0]]:.3g}, not 1")
    return None


def _reader(backend: _Backend, name: str,
            readers: dict[str, Callable[[np.ndarray], np.ndarray]]) -> Callable[[np.ndarray], np.ndarray]:
    """Rows through the maps (a few pages per chunk), or through h5py/zarr for a store laid out otherwise."""
    if name not in readers:
        try:
            readers[name] = backend.mapped(name).take
        except StoreFormatError:
            readers[name] = lambda rows: backend.read(name, rows)
    return readers[name]


def _relative(backend: _Backend, name: str, unit: Unit) -> str:
    return os.path.relpath(backend.chunk_file(name, unit.index), backend.path)
