"""Unlabeled stores: the feature store of a user's own images (a folder, detector boxes) or descriptions (a file).

The same arrays, checks and guarantees as a labelled store (the package docstring), with `format_version` 2
(`UNLABELED_VERSION`: code that reads only version 1 refuses such a store) and:
- `dataset` attribute: `format` is the source's kind (image_dir, detections, captions), `source` its resolved
  folder or file, `split_rule` "none", `fingerprint` the sha256 of kind and resolved path
  (person.data.unlabeled.source_fingerprint): the source's identity, not its contents, which grow.
- `image_pid`, `image_split` and `caption_image` hold NONE (-1) in every row; `caption_offsets` are all 0 (no
  image has a caption); an image store has no caption rows, a caption store no image rows.
- a detections store also has `image_box` float64 [Ni, 4] (the line's box), `image_line` int64 [Ni] (its line
  in the file) and `image_track` str [Ni] (its track id as JSON text, "" where the line has none).
- `counts.skipped`: the source entries left out when it was last listed (reason -> count);
  `extraction.cuts`: the image and caption row counts at which earlier runs ended (person.teacher.store.growth).

Evaluation and every labelled reader refuse such a store (`open_store`, StoreKindError); training reads it with
`open_unlabeled`, beside a labelled store of the same teacher.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from person.data.unlabeled import DETECTIONS, UnlabeledCaptions, UnlabeledImages, UnlabeledSource
from person.teacher.store.backends import _Backend
from person.teacher.store.reader import FeatureStore, check_complete
from person.teacher.store.schema import (NONE, UNLABELED_VERSION, StoreKindError, TeacherLike, check_teacher,
                                         dataset_info)


def unlabeled_contents(source: UnlabeledSource, identity: Mapping[str, Any],
                       extraction: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(attributes, fixed arrays) of a new store of `source`."""
    images = source if isinstance(source, UnlabeledImages) else None
    texts = source.texts if isinstance(source, UnlabeledCaptions) else []
    ni, nc = (len(images) if images else 0), len(texts)
    attrs = {"format_version": UNLABELED_VERSION, "teacher": dict(identity), "dataset": dataset_info(source),
             "counts": {"images": ni, "captions": nc, "ids": 0, "skipped": dict(source.skips.counts)},
             "extraction": dict(extraction)}
    static = {"image_pid": np.full(ni, NONE, np.int64), "image_split": np.full(ni, NONE, np.int8),
              "image_path": list(images.paths) if images else [], "caption_image": np.full(nc, NONE, np.int64),
              "caption_field": np.zeros(nc, np.uint8), "caption_text": list(texts),
              "caption_offsets": np.zeros(ni + 1, np.int64)}
    if images is not None and images.format == DETECTIONS:
        static.update({"image_box": images.boxes.astype(np.float64), "image_line": images.lines.astype(np.int64),
                       "image_track": list(images.tracks)})
    return attrs, static


def stored_source(path: Path, source: UnlabeledSource) -> UnlabeledSource:
    """The rows a store of `source` holds, as a source of the same kind (what growth appends to)."""
    backend = _Backend(path)
    try:
        if isinstance(source, UnlabeledCaptions):
            return UnlabeledCaptions(source.source, backend.strings("caption_text"))
        paths = backend.strings("image_path")
        if source.format == DETECTIONS:
            boxes, lines, tracks = backend.read("image_box"), backend.read("image_line"), backend.strings("image_track")
        else:
            boxes, lines, tracks = np.full((len(paths), 4), np.nan), np.zeros(len(paths), np.int64), [""] * len(paths)
        return UnlabeledImages(source.format, source.source, source.image_root, paths, boxes, lines, tracks)
    finally:
        backend.close()


class UnlabeledStore(FeatureStore):
    """An unlabeled store opened for training (`open_unlabeled`): image rows with their paths, boxes and tracks,
    or caption rows with their texts. No identities, splits or image-caption pairs."""

    def readable_rows(self) -> np.ndarray:
        """Image rows with an embedding (unreadable images and boxes outside their image left out)."""
        return np.flatnonzero(self.image_ok)

    @property
    def image_boxes(self) -> np.ndarray:
        """float64 [Ni, 4] (x1, y1, x2, y2) of each row's box; NaN rows for whole images."""
        return self._extra(lambda b: b.read("image_box"), np.full((self.num_images, 4), np.nan))

    @property
    def image_tracks(self) -> list[Any]:
        """Each image row's track id as the detections line gave it (int, str, ...), None where it had none."""
        raw = self._extra(lambda b: b.strings("image_track"), [""] * self.num_images)
        return [json.loads(t) if t else None for t in raw]

    @property
    def image_lines(self) -> np.ndarray:
        """int64 [Ni]: each row's line in the detections file (0 for a folder's images)."""
        return self._extra(lambda b: b.read("image_line"), np.zeros(self.num_images, np.int64))

    def _extra(self, read: Callable[[_Backend], Any], default: Any) -> Any:
        """An array only a detections store has (read briefly), or what it would hold for a folder's images."""
        if self.kind != DETECTIONS:
            return default
        backend = _Backend(self.path)
        try:
            return read(backend)
        finally:
            backend.close()

    def all_caption_texts(self) -> list[str]:
        return self.caption_texts(np.arange(self.num_captions))


def open_unlabeled(path: str | Path, teacher: TeacherLike | None = None, in_memory: bool | str = "auto", *,
                   max_ram_bytes: int | None = None, allow_incomplete: bool = False) -> UnlabeledStore:
    """An unlabeled store (a .h5/.zarr path), for training beside a labelled store of the same teacher.

    A labelled store is refused (StoreKindError: it is opened with open_store); `teacher`, when given, must be
    the store's (StoreMismatchError otherwise); an unfinished store is refused unless `allow_incomplete`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"feature store {path} does not exist; make it with tools/extract_label.py "
                                f"--image-dir, --detections or --captions")
    store = UnlabeledStore(path, in_memory, max_ram_bytes)
    if store.labelled:
        store.close()
        raise StoreKindError(f"{path} is a labelled store (dataset {store.dataset_info.get('source')}): give it as "
                             f"--embedding_path; --unlabeled takes the stores tools/extract_label.py makes with "
                             f"--image-dir, --detections or --captions")
    if teacher is not None:
        check_teacher(path, store.teacher_identity, teacher)
    if not allow_incomplete:
        check_complete(store)
    return store
