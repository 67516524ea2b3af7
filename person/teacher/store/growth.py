"""Growth: a folder, detections file or captions file that has grown since its store was made gets its new rows
appended to the same store, as enrolment appends to a gallery; the rows already there keep their bytes.

How. Rows are keyed as enrolment keys them (image and box, or the text): the store's rows stay first, in their
order, and the source's rows the store lacks follow, in source order (a file gone from the folder keeps its row).
The store is built again beside its final name with the grown row list, the old store's finished chunks copied
into it (embeddings, status, reasons, done flags), then renamed into place (person.files.atomic_dir): a kill
leaves the old store or the grown one, never a mix, and the rerun grows it again. Extraction then computes only
the new rows' chunks, and the old last chunk when it was partial (it now holds new rows too): `extraction.cuts`
records where each earlier run ended and no batch straddles a cut (person.teacher.extract), so those old rows are
computed in the very batches they had and come out with the same bytes.

Why not resize in place: HDF5 metadata is not crash-safe, so after creation a store only ever takes raw bytes
into space that existed from the start (the package docstring).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from person.data.unlabeled import UnlabeledSource
from person.teacher.store.backends import _Backend
from person.teacher.store.checks import Layout
from person.teacher.store.schema import Unit
from person.teacher.store.unlabeled import stored_source, unlabeled_contents
from person.teacher.store.writer import StoreWriter, _create

log = logging.getLogger(__name__)


def open_source_writer(path: Path, source: UnlabeledSource, identity: Mapping[str, Any], *, chunk_rows: int,
                       batch_size: int) -> tuple[StoreWriter, UnlabeledSource]:
    """The writer of `source`'s store (created, continued, or grown first) and the source's rows in store order:
    what extraction computes, row for row."""
    writer = StoreWriter.open(path, source, identity, chunk_rows=chunk_rows, batch_size=batch_size)
    stored = stored_source(path, source)
    grown = source.appended_to(stored)
    if len(grown) == len(stored):
        return writer, grown
    old = writer.layout
    attrs, static = unlabeled_contents(grown, writer.attrs["teacher"], writer.attrs["extraction"])
    new = Layout.of(path, attrs)
    counts = {"image": (old.num_images, new.num_images), "caption": (old.num_captions, new.num_captions)}
    attrs["extraction"]["cuts"] = {kind: sorted({*writer.cuts[kind], *([before] if after > before else [])})
                                   for kind, (before, after) in counts.items()}
    done = set(writer.units) - set(writer.pending())
    kept = [u for u in new.units() if u in done]  # finished chunks whose rows the grown store's chunk holds whole
    _create(path, attrs, static, fill=lambda tmp: _copy(path, tmp, writer.format, kept))
    log.info("%s: %d new rows appended (%d chunks kept as they were)", path,
             new.num_images + new.num_captions - old.num_images - old.num_captions, len(kept))
    return StoreWriter.open(path, source, identity, chunk_rows=chunk_rows, batch_size=batch_size), grown


def _copy(old: Path, tmp: Path, fmt: str, units: list[Unit]) -> None:
    """The old store's rows and done flags of `units` into the build at `tmp` (synced when it is renamed)."""
    src, dst = _Backend(old), _Backend(tmp, write=True, format=fmt)
    try:
        for unit in units:
            names = [f"{unit.kind}_emb"] + (["image_status", "image_error"] if unit.kind == "image" else [])
            for name in names + [f"{unit.kind}_done"]:
                rows = slice(unit.index, unit.index + 1) if name.endswith("_done") else slice(unit.start, unit.stop)
                _writable(dst, name)[rows] = src[name][rows]
    finally:
        src.close()
        dst.close()


def _writable(backend: _Backend, name: str) -> Any:
    """The array to assign into; zarr writes chunks of zeros too (a done unit always has its files)."""
    array = backend[name]
    return array if backend.format == "h5" else array.with_config({"write_empty_chunks": True})
