"""Unlabeled rows in training batches: a user's own crops and captions beside the labelled P x K part.

`UnlabeledPool` opens the unlabeled stores (person.teacher.store.open_unlabeled), refuses one whose teacher is
not the labelled store's, and numbers their readable image rows and their caption rows globally, store after
store. `UnlabeledPicker` chooses a batch's unlabeled rows as a pure function of (seed, batch number, rank), as the
identity sampler chooses the labelled ones: each epoch is one seeded permutation of all rows, walked in order by
the global batches, so every crop and caption is seen once an epoch, a resumed run sees the rows an uninterrupted
one sees, and ranks never share a row. `MixedBatchSampler` appends them to the identity sampler's batches.

Which loss terms see these rows: person.train.losses (IDENTITY_TERMS see only the labelled part).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from person.data.sampler import IdentityBatchSampler, Item
from person.teacher.store import FeatureStore, StoreMismatchError, UnlabeledStore, check_teacher, open_unlabeled


@dataclass(frozen=True)
class UnlabeledItem:
    """One unlabeled row of a batch: an image (decoded, cropped and augmented with `aug_seed`) or a caption."""

    kind: str  # "image" | "caption"
    row: int   # the pool's global row
    aug_seed: int = 0


@dataclass
class UnlabeledFiles:
    """What a loader worker needs to read the pool's rows: image files and boxes, caption texts (no store)."""

    image_paths: list[Path]
    boxes: np.ndarray  # float64 [N, 4], NaN rows for whole images
    texts: list[str]

    def box(self, row: int) -> tuple[float, ...] | None:
        box = self.boxes[row]
        return None if np.isnan(box).any() else tuple(box.tolist())


def teacher_name(identity: dict[str, Any]) -> str:
    return str(identity.get("teacher") or identity.get("model") or "an unnamed teacher")


class UnlabeledPool:
    """The unlabeled stores of a run, their rows numbered globally (images, captions), and their teacher rows."""

    def __init__(self, paths: list[str], labelled: FeatureStore, max_ram_bytes: int | None = None) -> None:
        self.stores: list[UnlabeledStore] = []
        for path in paths:
            store = open_unlabeled(path, max_ram_bytes=max_ram_bytes)
            self.stores.append(store)
            _check_same_teacher(store, labelled)
        image_rows = [s.readable_rows() for s in self.stores]
        self._image_store = np.concatenate([np.full(len(r), i, np.int64) for i, r in enumerate(image_rows)])
        self._image_row = np.concatenate(image_rows).astype(np.int64)
        self._caption_store = np.concatenate([np.full(s.num_captions, i, np.int64) for i, s in enumerate(self.stores)])
        self._caption_row = np.concatenate([np.arange(s.num_captions, dtype=np.int64) for s in self.stores])
        if not len(self._image_row) and not len(self._caption_row):
            raise ValueError(f"--unlabeled {' '.join(paths)}: no readable image and no caption in these stores")

    @property
    def num_images(self) -> int:
        return len(self._image_row)

    @property
    def num_captions(self) -> int:
        return len(self._caption_row)

    def files(self) -> UnlabeledFiles:
        """The pool's image paths, boxes and caption texts in global row order (read once, for the loader)."""
        paths, boxes, texts = [], [], []
        for i, store in enumerate(self.stores):
            rows = self._image_row[self._image_store == i]
            if len(rows):
                root, names = Path(store.dataset_info["image_root"]), store.image_paths
                paths += [root / names[r] for r in rows]
                boxes.append(store.image_boxes[rows])
            if store.num_captions:
                texts += store.all_caption_texts()
        return UnlabeledFiles(paths, np.concatenate(boxes) if boxes else np.zeros((0, 4)), texts)

    def images(self, rows: np.ndarray) -> np.ndarray:
        """The teacher's embeddings [n, D] of global image rows."""
        return self._gather(rows, self._image_store, self._image_row, "images")

    def captions(self, rows: np.ndarray) -> np.ndarray:
        return self._gather(rows, self._caption_store, self._caption_row, "captions")

    def _gather(self, rows: np.ndarray, which: np.ndarray, local: np.ndarray, kind: str) -> np.ndarray:
        dim = self.stores[0].dim
        out = np.empty((len(rows), dim), np.float32)
        stores = which[rows]
        for i in np.unique(stores):
            at = np.flatnonzero(stores == i)
            out[at] = getattr(self.stores[i], kind)(local[rows[at]])
        return out

    def roots(self) -> list[str]:
        return [str(s.dataset_info.get("image_root")) for s in self.stores if s.num_images]

    def describe(self) -> str:
        return (f"{self.num_images} readable images and {self.num_captions} captions from "
                f"{len(self.stores)} unlabeled store(s)")

    def close(self) -> None:
        for store in self.stores:
            store.close()


def _check_same_teacher(store: UnlabeledStore, labelled: FeatureStore) -> None:
    """The students learn one teacher's space: an unlabeled store of another teacher would pull them out of it."""
    try:
        check_teacher(store.path, store.teacher_identity, labelled.teacher_identity)
    except StoreMismatchError as e:
        differences = "\n".join(line for line in str(e).splitlines() if line.startswith("  "))
        raise StoreMismatchError(
            f"--unlabeled {store.path} was extracted by teacher {teacher_name(store.teacher_identity)}, but "
            f"--embedding_path {labelled.path} by teacher {teacher_name(labelled.teacher_identity)}:\n{differences}\n"
            f"Extract the unlabeled source again with the labelled store's teacher (tools/extract_label.py "
            f"--teacher ...), or train against a labelled store of its teacher.") from None


class UnlabeledPicker:
    """A batch's unlabeled items: `images` image rows and `captions` caption rows per rank, from batch number n."""

    def __init__(self, num_images: int, num_captions: int, images: int, captions: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.num = {"image": num_images, "caption": num_captions}
        self.per_batch = {"image": images if num_images else 0, "caption": captions if num_captions else 0}
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._perms: dict[tuple[str, int], np.ndarray] = {}

    def _permutation(self, kind: str, epoch: int) -> np.ndarray:
        key = (kind, epoch)
        if key not in self._perms:
            if len(self._perms) > 4:  # a batch spans at most two epochs of each kind
                self._perms.pop(next(iter(self._perms)))
            stream = 101 if kind == "image" else 103
            self._perms[key] = np.random.default_rng([self.seed, stream, epoch]).permutation(self.num[kind])
        return self._perms[key]

    def rows(self, kind: str, n: int) -> np.ndarray:
        """Global rows of `kind` in this rank's batch `n`: the next slice of the epoch permutations."""
        m, total = self.per_batch[kind], self.num[kind]
        if m == 0:
            return np.zeros(0, np.int64)
        positions = (n * self.world_size + self.rank) * m + np.arange(m)
        epochs, at = np.divmod(positions, total)
        return np.array([self._permutation(kind, int(e))[i] for e, i in zip(epochs, at)], dtype=np.int64)

    def batch(self, n: int) -> list[UnlabeledItem]:
        images, captions = self.rows("image", n), self.rows("caption", n)
        seeds = np.random.default_rng([self.seed, 102, n, self.rank]).integers(0, 2**63 - 1, size=len(images))
        return ([UnlabeledItem("image", int(r), int(s)) for r, s in zip(images, seeds)]
                + [UnlabeledItem("caption", int(r)) for r in captions])


class MixedBatchSampler:
    """The identity sampler's batch n followed by the picker's unlabeled items of batch n, forever."""

    def __init__(self, labelled: IdentityBatchSampler, picker: UnlabeledPicker) -> None:
        self.labelled, self.picker = labelled, picker

    def __len__(self) -> int:
        return len(self.labelled)

    def __iter__(self) -> Iterator[list[Item | UnlabeledItem]]:
        n = self.labelled.start
        while True:
            yield self.labelled.batch(n) + self.picker.batch(n)
            n += 1


def unlabeled_counts(share: float, p: int, k: int, captions_per_image: int) -> tuple[int, int]:
    """(images, captions) of unlabeled rows per batch and rank for `--unlabeled_share` (at least one of each)."""
    if share == 0:
        return 0, 0
    return max(1, round(share * p * k)), max(1, round(share * p * k * captions_per_image))
