"""Erasure from an unlabeled store: rows of a user's own crops or descriptions removed so that their embedding bytes
leave the store, not only its row list.

How. HDF5 does not give freed space back and a zarr chunk holds many rows, so a store is never edited in place: it
is built again beside its final name without the rows, as growth builds a grown store (writer._create,
person.files.atomic_dir), with the remaining rows' embeddings, status and reasons copied, then renamed into place;
the old file or folder goes with the rename. A kill leaves the old store or the new one, never a mix.

What moves with the rows: a chunk of the new store is marked done when every row it holds came from a done chunk
(an unfinished store stays resumable: extraction computes the rest); `extraction.cuts` (where earlier runs ended)
shift down with the rows; `counts` are the new ones, with `counts.erased` adding up the rows erased so far.

Not here. A labelled store is refused: it is a dataset's, made from its records; remove the person from the
dataset and extract again. The source is not touched: a folder or detections file that still lists the image
gives it back as a new row at the next extraction, so remove it there too. A training run holding the store open
keeps reading the old file until it ends.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from person.data.formats import normalise_caption
from person.data.unlabeled import CAPTIONS, DETECTIONS, UnlabeledCaptions, UnlabeledImages, UnlabeledSource
from person.teacher.store.backends import _Backend
from person.teacher.store.checks import Layout
from person.teacher.store.growth import _writable
from person.teacher.store.schema import StoreFormatError, StoreKindError, store_format
from person.teacher.store.unlabeled import stored_source, unlabeled_contents
from person.teacher.store.writer import _create


@dataclass(frozen=True)
class StoreSelector:
    """Which rows to erase: those matching every kind given, and within a kind any value."""

    images: tuple[str, ...] = ()    # image paths as stored (relative to the store's image root), or absolute under it
    tracks: tuple[str, ...] = ()    # detections track ids, as text
    lines: tuple[int, ...] = ()     # detections lines (1-based, as the store records them)
    captions: tuple[str, ...] = ()  # caption texts (whitespace normalised as extraction does)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items() if v}


@dataclass
class StoreErasure:
    store: Path
    selector: dict[str, Any]
    image_rows: list[int] = field(default_factory=list)     # rows erased, as numbered in the store before
    caption_rows: list[int] = field(default_factory=list)
    images: int = 0                                         # rows left
    captions: int = 0

    def event(self) -> dict[str, Any]:
        """The audit event: JSON-safe."""
        return {"action": "erase", "store": str(self.store), "ids": self.image_rows + self.caption_rows,
                "selector": self.selector, "rows": len(self.image_rows) + len(self.caption_rows),
                "image_rows": self.image_rows, "caption_rows": self.caption_rows}

    def lines(self) -> list[str]:
        return [f"{self.store}: erased {len(self.image_rows)} image row(s) and {len(self.caption_rows)} caption "
                f"row(s) (the store was written again without them); {self.images} image and {self.captions} caption "
                f"row(s) left", "  remove them from the source too, or its next extraction appends them again"]


def erase_rows(path: str | Path, selector: StoreSelector,
               audit: Callable[[dict[str, Any]], None] | None = None) -> StoreErasure:
    """Write the unlabeled store at `path` again without the rows `selector` picks (the module docstring); `audit`,
    when given, is called with the event once the new store is in place. StoreKindError for a labelled store,
    StoreFormatError for a selector that matches nothing or does not fit the store's kind."""
    path = Path(path)
    store_format(path)  # a .h5 / .zarr path, or a ValueError saying so
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such feature store")
    backend = _Backend(path)
    try:
        attrs = backend.attrs
        layout = Layout.of(path, attrs)
        if layout.labelled:
            raise StoreKindError(f"{path} is a labelled store (dataset {attrs['dataset'].get('source')}): it is made "
                                 f"from a dataset's records, so remove the person from the dataset and extract it "
                                 f"again; --store erases rows of the unlabeled stores of --image-dir, --detections or "
                                 f"--captions")
        done = {kind: backend.read(f"{kind}_done").astype(bool) for kind in ("image", "caption")}
    finally:
        backend.close()
    stored = _stored(path, attrs)
    drop = _select(path, stored, selector)
    keep = np.flatnonzero(~drop)
    kept = _take(stored, keep)
    new_attrs, static = unlabeled_contents(kept, attrs["teacher"], attrs["extraction"])
    new_attrs["counts"]["skipped"] = attrs["counts"].get("skipped", {})
    new_attrs["counts"]["erased"] = attrs["counts"].get("erased", 0) + int(drop.sum())
    kind = "caption" if isinstance(stored, UnlabeledCaptions) else "image"
    cuts = attrs["extraction"].get("cuts", {})
    new_attrs["extraction"]["cuts"] = {**cuts, kind: sorted({c - int(drop[:c].sum()) for c in cuts.get(kind, [])}
                                                           - {0})}
    _create(path, new_attrs, static, fill=lambda tmp: _copy_rows(path, tmp, kind, keep, done[kind], layout.chunk_rows))
    report = StoreErasure(path, selector.to_dict(), images=new_attrs["counts"]["images"],
                          captions=new_attrs["counts"]["captions"])
    setattr(report, f"{kind}_rows", np.flatnonzero(drop).tolist())
    if audit is not None:
        audit(report.event())
    return report


def _stored(path: Path, attrs: dict[str, Any]) -> UnlabeledSource:
    """The store's rows as a source of its kind (paths, boxes, lines and tracks, or texts)."""
    dataset = attrs["dataset"]
    if dataset["format"] == CAPTIONS:
        return stored_source(path, UnlabeledCaptions(Path(dataset["source"]), []))
    empty = UnlabeledImages(dataset["format"], Path(dataset["source"]), Path(dataset["image_root"]), [],
                            np.zeros((0, 4)), np.zeros(0, np.int64), [])
    return stored_source(path, empty)


def _select(path: Path, stored: UnlabeledSource, selector: StoreSelector) -> np.ndarray:
    """bool [rows] picked; StoreFormatError naming what does not fit the store or matches no row."""
    captions = isinstance(stored, UnlabeledCaptions)
    allowed = {"captions"} if captions else {"images", "tracks", "lines"} if stored.format == DETECTIONS else {"images"}
    wrong = [k for k, v in asdict(selector).items() if v and k not in allowed]
    if wrong:
        flags = ", ".join("--" + k[:-1] for k in wrong)
        raise StoreFormatError(f"{path}: a store of {stored.format} has no {flags} to erase by; erase its rows by "
                               f"{' or '.join('--' + k[:-1] for k in sorted(allowed))}")
    if not any(asdict(selector).values()):
        raise StoreFormatError(f"{path}: nothing to erase given: name rows with --image, --track, --line or --caption")
    picked, unmatched = np.ones(len(stored), dtype=bool), []
    for kind, values, match in (("image", selector.images, lambda v: _image_rows(stored, v)),
                                ("track", selector.tracks, lambda v: np.array(
                                    [bool(t) and str(json.loads(t)) == str(v) for t in stored.tracks], dtype=bool)),
                                ("line", selector.lines, lambda v: stored.lines == int(v)),
                                ("caption", selector.captions, lambda v: np.array(
                                    [t == normalise_caption(v) for t in stored.texts], dtype=bool))):
        if values:
            hits = [match(v) for v in values]
            unmatched += [f"--{kind} {v}" for v, h in zip(values, hits) if not h.any()]
            picked &= np.logical_or.reduce(hits)
    if unmatched:
        raise StoreFormatError(f"{path}: nothing erased: {', '.join(unmatched)} match(es) no row of the store (erased "
                               f"already, or never extracted: check the value)")
    if not picked.any():
        raise StoreFormatError(f"{path}: nothing erased: no row matches all of {selector.to_dict()}")
    return picked


def _image_rows(stored: UnlabeledImages, image: str) -> np.ndarray:
    """Rows of an image path as stored, or of an absolute path under the store's image root."""
    given = Path(image)
    name = os.path.relpath(given, stored.image_root) if given.is_absolute() else given.as_posix().removeprefix("./")
    return np.array([p == Path(name).as_posix() for p in stored.paths], dtype=bool)


def _take(stored: UnlabeledSource, keep: np.ndarray) -> UnlabeledSource:
    if isinstance(stored, UnlabeledCaptions):
        return UnlabeledCaptions(stored.source, [stored.texts[i] for i in keep])
    return UnlabeledImages(stored.format, stored.source, stored.image_root, [stored.paths[i] for i in keep],
                           stored.boxes[keep].reshape(-1, 4), stored.lines[keep], [stored.tracks[i] for i in keep])


def _copy_rows(old: Path, tmp: Path, kind: str, keep: np.ndarray, done: np.ndarray, chunk_rows: int) -> None:
    """Into the build at `tmp`, chunk by chunk of it: the kept rows' embeddings (and an image's status and reason)
    from done chunks of the old store, and the chunk's done flag when all its rows came from done chunks."""
    src, dst = _Backend(old), _Backend(tmp, write=True, format=store_format(old))
    names = [f"{kind}_emb"] + (["image_status", "image_error"] if kind == "image" else [])
    try:
        for k, a in enumerate(range(0, len(keep), chunk_rows)):
            rows = keep[a:a + chunk_rows]
            if not done[rows // chunk_rows].all():
                continue  # extraction computes this chunk again
            for name in names:
                _writable(dst, name)[a:a + len(rows)] = src.read(name, rows)
            _writable(dst, f"{kind}_done")[k] = 1
    finally:
        src.close()
        dst.close()
