"""Unlabeled rows in training batches: a user's own crops and captions beside the labelled P x K part.

`UnlabeledPool` opens the unlabeled stores (person.teacher.store.open_unlabeled), refuses one whose teacher is
not the labelled store's, and numbers their readable image rows and their caption rows globally, store after
store. `UnlabeledPicker` chooses a batch's unlabeled rows as a pure function of (seed, batch number, rank), as the
identity sampler chooses the labelled ones: each epoch is one seeded permutation of all rows, cut into the global
batches, so a crop or caption is seen at most once an epoch, a resumed run sees the rows an uninterrupted one sees,
and ranks never share a row. `MixedBatchSampler` appends them to the identity sampler's batches.

With `--unlabeled_tracks`, the crops of one detection track are taken as one person: `UnlabeledPool.tracks()`
numbers the tracks globally, the picker deals a track's crops together (up to K at a time, as the identity sampler
deals an identity's images), and the trainer gives them the pseudo-identity `track_identity(t)` in the image
student's identity term and the memory (`track_identities`).

Which loss terms see these rows: person.train.losses (IDENTITY_TERMS see only the labelled part).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from person.data.sampler import IdentityBatchSampler, Item
from person.teacher.space import describe, space_of
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
            raise ValueError(f"--unlabeled {' '.join(paths)}: no readable image and no caption in these stores; "
                             f"extract them from a folder, detections or captions that hold some")
        for store in self.stores:  # moved crops would otherwise surface only as a run of unreadable batches
            root = Path(store.dataset_info["image_root"])
            if store.num_images and not root.is_dir():
                raise FileNotFoundError(f"--unlabeled {store.path}: its images' folder {root} is not there; put them "
                                        f"back, or extract the moved source again")

    @property
    def num_images(self) -> int:
        return len(self._image_row)

    @property
    def num_captions(self) -> int:
        return len(self._caption_row)

    def tracks(self) -> np.ndarray:
        """int64 [num_images]: each readable image row's track, numbered globally (a track id is its store's own),
        -1 where its detections line had none."""
        out = np.full(self.num_images, -1, np.int64)
        named: dict[tuple[int, str], int] = {}
        for i, store in enumerate(self.stores):
            at = np.flatnonzero(self._image_store == i)
            if not len(at):
                continue
            tracks = store.image_tracks  # None for each row of a folder's images
            for j, row in zip(at, self._image_row[at]):
                if tracks[row] is not None:  # 7 and "7" are two tracks, as the detections file wrote them
                    out[j] = named.setdefault((i, json.dumps(tracks[row])), len(named))
        return out

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

    def picker(self, share: float, p: int, k: int, captions_per_image: int, seed: int, rank: int = 0,
               world_size: int = 1, tracks: bool = False) -> UnlabeledPicker:
        """The picker of `--unlabeled_share` of a P x K batch with `captions_per_image` captions an image; with
        `tracks`, a track's crops are dealt together, K at a time."""
        images, captions = unlabeled_counts(share, p, k, captions_per_image)
        return UnlabeledPicker(self.num_images, self.num_captions, images, captions, seed, rank, world_size,
                               tracks=self.tracks() if tracks else None, k=k)

    def roots(self) -> list[str]:
        return [str(s.dataset_info.get("image_root")) for s in self.stores if s.num_images]

    def describe(self) -> str:
        return (f"{self.num_images} readable images and {self.num_captions} captions from "
                f"{len(self.stores)} unlabeled store(s)")


def _check_same_teacher(store: UnlabeledStore, labelled: FeatureStore) -> None:
    """The students learn one teacher's space: an unlabeled store of another teacher would pull them out of it."""
    try:
        check_teacher(store.path, store.teacher_identity, labelled.teacher_identity)
    except StoreMismatchError as e:
        raise StoreMismatchError(
            f"--unlabeled {store.path} was extracted by teacher {describe(space_of(store.teacher_identity))}, but "
            f"--embedding_path {labelled.path} by teacher {describe(space_of(labelled.teacher_identity))}:\n"
            + "\n".join(e.differences) + "\nExtract the unlabeled source again with the labelled store's teacher "
            "(tools/extract_label.py --teacher ...), or train against a labelled store of its teacher.") from None


def track_identities(tracks: np.ndarray) -> np.ndarray:
    """Pseudo-identities of crops by their global track (-1: none, kept): -2 - track, below every labelled
    identity (0..K-1), so a track is never taken for a labelled person."""
    return np.where(tracks < 0, -1, -2 - tracks)


class UnlabeledPicker:
    """A batch's unlabeled items: `images` image rows and `captions` caption rows per rank, from batch number n.

    As the identity sampler deals identities: an epoch is one seeded permutation of the rows cut into global
    batches, dealt round-robin to the ranks (rank r takes r, r+W, ...); the rows left over when the count is not a
    multiple of the batch x ranks wait for a later epoch's permutation. So no batch repeats a row and no two ranks
    share one in a step. A batch never asks for more rows than each rank can have (the pool's rows / ranks).

    `tracks` (each image row's track, -1 for none): the image permutation is then one of units, each up to `k`
    crops of one track (a track's crops in a seeded order, cut into runs of k) or one untracked crop, so a batch
    holds a track's crops side by side, as the identity sampler holds an identity's K images."""

    def __init__(self, num_images: int, num_captions: int, images: int, captions: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, tracks: np.ndarray | None = None, k: int = 2) -> None:
        self.num = {"image": num_images, "caption": num_captions}
        self.per_batch = {kind: min(wanted, self.num[kind] // world_size)
                          for kind, wanted in (("image", images), ("caption", captions))}
        for kind in ("image", "caption"):
            if self.num[kind] and self.per_batch[kind] == 0 and (images if kind == "image" else captions):
                raise ValueError(f"{self.num[kind]} unlabeled {kind} rows cannot give each of {world_size} ranks "
                                 f"one: extract more, or use fewer ranks")
        if tracks is not None and len(tracks) != num_images:
            raise ValueError(f"{len(tracks)} track numbers for {num_images} image rows")
        self.seed, self.rank, self.world_size, self.tracks, self.k = seed, rank, world_size, tracks, k
        self._perm: dict[str, tuple[int, np.ndarray]] = {}

    @property
    def counts(self) -> tuple[int, int]:
        """(images, captions) a batch adds on each rank."""
        return self.per_batch["image"], self.per_batch["caption"]

    def _permutation(self, kind: str, epoch: int) -> np.ndarray:
        if self._perm.get(kind, (None,))[0] != epoch:
            rng = np.random.default_rng([self.seed, 101 if kind == "image" else 103, epoch])
            tracked = kind == "image" and self.tracks is not None
            self._perm[kind] = (epoch, self._units(rng) if tracked else rng.permutation(self.num[kind]))
        return self._perm[kind][1]

    def _units(self, rng: np.random.Generator) -> np.ndarray:
        """A permutation of the image rows made of shuffled units: runs of up to k crops of one track, or one
        untracked crop."""
        order = rng.permutation(self.num["image"])
        tracks = self.tracks[order]
        order = order[np.argsort(tracks, kind="stable")]  # each track's crops together, in a random order
        tracks = self.tracks[order]
        # Each row's place in its track, and runs of k of them (an untracked crop: a run of its own).
        starts = np.flatnonzero(np.r_[True, tracks[1:] != tracks[:-1]])
        position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        run = position // np.where(tracks < 0, 1, self.k)
        unit = np.flatnonzero(np.r_[True, (tracks[1:] != tracks[:-1]) | (run[1:] != run[:-1])])
        sizes = np.diff(np.r_[unit, len(order)])
        shuffled = rng.permutation(len(unit))
        return np.concatenate([order[unit[u]:unit[u] + sizes[u]] for u in shuffled]) if len(unit) else order

    def rows(self, kind: str, n: int) -> np.ndarray:
        """Global rows of `kind` in this rank's batch `n`."""
        m = self.per_batch[kind]
        if m == 0:
            return np.zeros(0, np.int64)
        epoch, i = divmod(n, self.num[kind] // (m * self.world_size))  # batches a rank takes in an epoch
        start = (i * self.world_size + self.rank) * m
        return self._permutation(kind, epoch)[start:start + m].astype(np.int64)

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
