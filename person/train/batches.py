"""Training batches: images, N captions per image, and the teacher's cached embeddings of both.

The identity sampler (person.data.sampler) yields `(row, aug_seed)` items. In a loader worker each item
becomes its augmented image (person.data.datasets.ImageDataset) and N of its captions (`--captions_per_image`,
distinct, fewer when the record has fewer), picked by the same seed, so a batch is a pure function of
(seed, batch number) and a resumed run sees the batches an uninterrupted one sees. The teacher's rows
are looked up in the main process (`teacher_targets`), where the feature store lives; a store opened
before the loader forks is never shared with workers.

A caption of record `row` is number j of `captions[row] + prompt_captions[row]`; its row in the store
is `caption_offsets[row] + j` (the store's caption order, person.teacher.store).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from person.data.datasets import ImageDataset, collate_images
from person.data.images import DEFAULT_LIMITS, ImageLimits, ImageTransform
from person.data.records import RecordSet
from person.data.sampler import Item
from person.data.text import encode_batch


class DistillDataset(Dataset):
    """`(row, aug_seed)` -> {"row", "image" (uint8 CHW, absent without images), "captions" (store rows),
    "texts"}.

    `fields="captions"` picks only among a record's `captions`; `"all"` also among its prompt captions.
    Each item brings `per_image` distinct captions, or all of them when the record has fewer.
    With `transform=None` no image is read (a text-only run).
    """

    def __init__(self, records: RecordSet, caption_offsets: np.ndarray, transform: ImageTransform | None,
                 fields: str = "all", strict: bool = False, per_image: int = 1,
                 limits: ImageLimits = DEFAULT_LIMITS) -> None:
        if fields not in ("all", "captions"):
            raise ValueError(f"caption fields {fields!r}: use all or captions")
        if per_image < 1:
            raise ValueError(f"captions per image must be >= 1, got {per_image}")
        self.records, self.offsets, self.fields, self.per_image = records, caption_offsets, fields, per_image
        self.images = None if transform is None else ImageDataset(records, transform, strict, transform.size,
                                                                              limits)

    def __len__(self) -> int:
        return len(self.records)

    def caption_choices(self, row: int) -> int:
        n = len(self.records.captions[row])
        return n + len(self.records.prompt_captions[row]) if self.fields == "all" else n

    def __getitem__(self, item: Item) -> dict[str, Any]:
        row, aug_seed = item
        out = {"row": int(row)} if self.images is None else self.images[item]
        # A separate stream from the image's (person.data.datasets seeds the augmentation with aug_seed itself).
        choices = self.caption_choices(row)
        picks = np.random.default_rng([aug_seed, 1]).choice(choices, size=min(self.per_image, choices), replace=False)
        texts = self.records.captions[row] + self.records.prompt_captions[row]
        out.update(captions=[int(self.offsets[row]) + int(j) for j in picks], texts=[texts[j] for j in picks])
        return out


class DistillCollate:
    """Stack a batch: uint8 images, rows, and every caption's bytes + mask, store row and `caption_owner` (the
    position of its image in the batch); unreadable images are dropped with their captions."""

    def __init__(self, max_seq_length: int) -> None:
        self.max_seq_length = max_seq_length

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        with_images = any("image" in b or "error" in b for b in batch)
        out = collate_images(batch) if with_images else {
            "rows": torch.tensor([b["row"] for b in batch], dtype=torch.long), "images": None, "skipped": []}
        good = [b for b in batch if "error" not in b]
        chars, mask = encode_batch([t for b in good for t in b["texts"]], self.max_seq_length)
        out.update(captions=torch.tensor([c for b in good for c in b["captions"]], dtype=torch.long),
                   caption_owner=torch.tensor([i for i, b in enumerate(good) for _ in b["captions"]], dtype=torch.long),
                   chars=torch.from_numpy(chars), mask=torch.from_numpy(mask))
        return out


def teacher_targets(store: Any, rows: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's image and caption embeddings of a batch, float32, from the store."""
    return (torch.from_numpy(store.images(rows.numpy())), torch.from_numpy(store.captions(captions.numpy())))
