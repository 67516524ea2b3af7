"""Training batches: images, N captions per image, and the teacher's cached embeddings of both.

The identity sampler (person.data.sampler) yields `(row, aug_seed)` items. In a loader worker each item
becomes its augmented image (person.data.datasets.ImageDataset) and N of its captions (`--captions_per_image`,
distinct, fewer when the record has fewer), picked by the same seed, so a batch is a pure function of
(seed, batch number) and a resumed run sees the batches an uninterrupted one sees. The teacher's rows
are looked up in the main process (`teacher_targets`), where the feature store lives; a store opened
before the loader forks is never shared with workers.

A caption of record `row` is number j of `captions[row] + prompt_captions[row]`; its row in the store
is `caption_offsets[row] + j` (the store's caption order, person.teacher.store).

With unlabeled stores (person.train.unlabeled) a batch also holds `UnlabeledItem`s: crops cut and augmented as the
labelled images are, and captions without images. They come after the labelled rows in the batch's images and
captions (`u_rows`, `u_captions`: the pool's global rows), so the first len(rows) images and len(captions)
captions are the labelled part.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from person.data.datasets import ImageDataset, stack_uint8
from person.data.crops import load_crop
from person.data.images import DEFAULT_LIMITS, ImageLimits, ImageReadError, ImageTransform
from person.data.records import RecordSet
from person.data.sampler import Item
from person.data.text import encode_batch
from person.teacher.store import FeatureStore
from person.train.unlabeled import UnlabeledFiles, UnlabeledItem, UnlabeledPool


class DistillDataset(Dataset):
    """`(row, aug_seed)` -> {"row", "image" (uint8 CHW, absent without images), "captions" (store rows),
    "texts"}.

    `fields="captions"` picks only among a record's `captions`; `"all"` also among its prompt captions.
    Each item brings `per_image` distinct captions, or all of them when the record has fewer.
    With `transform=None` no image is read (a text-only run).
    """

    def __init__(self, records: RecordSet, caption_offsets: np.ndarray, transform: ImageTransform | None,
                 fields: str = "all", strict: bool = False, per_image: int = 1,
                 limits: ImageLimits = DEFAULT_LIMITS, unlabeled: UnlabeledFiles | None = None) -> None:
        if fields not in ("all", "captions"):
            raise ValueError(f"caption fields {fields!r}: use all or captions")
        if per_image < 1:
            raise ValueError(f"captions per image must be >= 1, got {per_image}")
        self.records, self.offsets, self.fields, self.per_image = records, caption_offsets, fields, per_image
        self.images = None if transform is None else ImageDataset(records, transform, strict, transform.size,
                                                                              limits)
        self.transform, self.strict, self.limits, self.unlabeled = transform, strict, limits, unlabeled

    def __len__(self) -> int:
        return len(self.records)

    def caption_choices(self, row: int) -> int:
        n = len(self.records.captions[row])
        return n + len(self.records.prompt_captions[row]) if self.fields == "all" else n

    def __getitem__(self, item: Item | UnlabeledItem) -> dict[str, Any]:
        if isinstance(item, UnlabeledItem):
            return self._unlabeled(item)
        row, aug_seed = item
        out = {"row": int(row)} if self.images is None else self.images[item]
        # A separate stream from the image's (person.data.datasets seeds the augmentation with aug_seed itself).
        choices = self.caption_choices(row)
        picks = np.random.default_rng([aug_seed, 1]).choice(choices, size=min(self.per_image, choices), replace=False)
        texts = self.records.captions[row] + self.records.prompt_captions[row]
        out.update(captions=[int(self.offsets[row]) + int(j) for j in picks], texts=[texts[j] for j in picks])
        return out

    def _unlabeled(self, item: UnlabeledItem) -> dict[str, Any]:
        """{"unlabeled": kind, "row", and "text", or "image" (absent in a run without images), or "error"}."""
        out: dict[str, Any] = {"unlabeled": item.kind, "row": item.row}
        if item.kind == "caption":
            return out | {"text": self.unlabeled.texts[item.row]}
        if self.transform is None:  # a text-only run: the teacher's embedding of the crop stands in for the student's
            return out
        try:  # cut as enrolment and unlabeled extraction cut it
            pixels = load_crop(self.unlabeled.image_paths[item.row], self.unlabeled.box(item.row), self.transform.size,
                               self.limits)
        except ImageReadError as e:
            if self.strict:
                raise
            return out | {"error": str(e)}
        return out | {"image": self.transform(pixels, np.random.default_rng(item.aug_seed))}


class DistillCollate:
    """Stack a batch: uint8 images, rows, and every caption's bytes + mask, store row and `caption_owner` (the
    position of its image in the batch); unreadable images are dropped with their captions. Unlabeled images and
    captions follow the labelled ones (`u_rows`, `u_captions`, `u_skipped`)."""

    def __init__(self, max_seq_length: int) -> None:
        self.max_seq_length = max_seq_length

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        labelled = [b for b in batch if "unlabeled" not in b]
        u_images = [b for b in batch if b.get("unlabeled") == "image"]
        u_captions = [b for b in batch if b.get("unlabeled") == "caption"]
        good = [b for b in labelled if "error" not in b]
        u_good = [b for b in u_images if "error" not in b]
        pixels = [b["image"] for b in good + u_good if "image" in b]
        chars, mask = encode_batch([t for b in good for t in b["texts"]] + [b["text"] for b in u_captions],
                                   self.max_seq_length)
        return {"rows": _rows(good), "images": stack_uint8(pixels) if pixels else None,
                "skipped": [(b["row"], b["error"]) for b in labelled if "error" in b],
                "captions": torch.tensor([c for b in good for c in b["captions"]], dtype=torch.long),
                "caption_owner": torch.tensor([i for i, b in enumerate(good) for _ in b["captions"]], dtype=torch.long),
                "chars": torch.from_numpy(chars), "mask": torch.from_numpy(mask),
                "u_rows": _rows(u_good), "u_captions": _rows(u_captions),
                "u_skipped": [(b["row"], b["error"]) for b in u_images if "error" in b]}


def _rows(items: Sequence[dict[str, Any]]) -> torch.Tensor:
    return torch.tensor([b["row"] for b in items], dtype=torch.long)


def teacher_targets(store: FeatureStore, batch: dict[str, Any], pool: UnlabeledPool | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's image and caption embeddings of a batch, float32: the labelled rows from the store, then the
    unlabeled ones from the pool (person.train.unlabeled.UnlabeledPool)."""
    images, captions = store.images(batch["rows"].numpy()), store.captions(batch["captions"].numpy())
    if pool is not None:
        images = np.concatenate([images, pool.images(batch["u_rows"].numpy())])
        captions = np.concatenate([captions, pool.captions(batch["u_captions"].numpy())])
    return torch.from_numpy(images), torch.from_numpy(captions)
