"""Torch datasets over records: images through a transform, with unreadable images counted, not fatal.

Among millions of images a few are corrupt; stopping a 10-hour job for one is not what a user wants.
So an unreadable image comes out of the dataset as a skip (its row and the reason), the collate
function drops it from the batch, and a `SkipReport` counts and lists them for the final report.
`strict=True` raises on the first one instead. `normalize_batch` turns a collated uint8 batch into the
students' float input on the model's device.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .images import (DEFAULT_LIMITS, DEFAULT_MEAN, DEFAULT_STD, ImageLimits, ImageReadError, ImageTransform, load_image,
                     load_pixels, normalization)
from .records import RecordSet
from .sampler import Item


class ImageDataset(Dataset):
    """Items are record rows, or `(row, aug_seed)` pairs from `IdentityBatchSampler`.

    Returns {"row", "image"} with image = transform(decoded image[, rng]), or {"row", "error"}. An
    `ImageTransform` gets the pixels as an array (`load_pixels`, the faster decode); any other
    transform (a teacher's own processor) gets the PIL image. A file or decode over `limits` is unreadable
    like a corrupt one: a counted skip, or an error with `strict`.
    """

    def __init__(self, records: RecordSet, transform: Callable[..., Any], strict: bool = False,
                 size_hint: tuple[int, int] | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> None:
        self.records, self.transform, self.strict, self.size_hint = records, transform, strict, size_hint
        self.limits = limits
        self.decode = load_pixels if isinstance(transform, ImageTransform) else load_image

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | Item) -> dict[str, Any]:
        row, aug_seed = (item, None) if isinstance(item, (int, np.integer)) else item
        try:
            img = self.decode(self.records.image_path(row), self.size_hint, self.limits)
        except ImageReadError as e:
            if self.strict:
                raise
            return {"row": int(row), "error": str(e)}
        rng = None if aug_seed is None else np.random.default_rng(aug_seed)
        image = self.transform(img) if rng is None else self.transform(img, rng)
        return {"row": int(row), "image": image}


def collate_images(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable images; report the skipped ones as (row, reason)."""
    good = [b for b in batch if "error" not in b]
    images = [b["image"] for b in good]
    if images and isinstance(images[0], np.ndarray):
        images = stack_uint8(images)
    return {"rows": torch.tensor([b["row"] for b in good], dtype=torch.long), "images": images,
            "skipped": [(b["row"], b["error"]) for b in batch if "error" in b]}


def stack_uint8(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-shaped uint8 arrays (views welcome) -> one [B, ...] tensor, in a single copy.

    In a loader worker the batch goes straight into shared memory, as torch's default_collate does:
    an ordinary tensor would be copied there a second time on its way to the main process.
    """
    if get_worker_info() is None:
        return torch.from_numpy(np.stack(arrays))  # numpy's allocator: huge pages, few page faults
    shape = (len(arrays), *arrays[0].shape)
    out = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(math.prod(shape))).view(shape)
    np.stack(arrays, out=out.numpy())
    return out


@dataclass
class SkipReport:
    """Counts unreadable images and keeps their reasons for the final report."""

    skipped: dict[int, str] = field(default_factory=dict)

    def add(self, skipped: Sequence[tuple[int, str]]) -> None:
        self.skipped.update(skipped)

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self, limit: int = 20) -> str:
        if not self.skipped:
            return "skipped images: 0"
        lines = [f"skipped images: {len(self.skipped)} (unreadable; left out)"]
        lines += [f"  row {row}: {reason}" for row, reason in sorted(self.skipped.items())[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)


def normalize_batch(images: torch.Tensor, mean: Sequence[float] = DEFAULT_MEAN,
                    std: Sequence[float] = DEFAULT_STD, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float (x / 255 - mean) / std, on the images' device."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 [B, 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    scale, shift = (torch.from_numpy(v).to(images.device, dtype).view(1, 3, 1, 1) for v in normalization(mean, std))
    # One float tensor, scaled in place: the textbook expression allocates four of them.
    return _empty_float(images.shape, dtype, images.device).copy_(images).mul_(scale).add_(shift)


def _empty_float(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A new float tensor. On the CPU through numpy, which asks the kernel for huge pages for large arrays:
    a fresh 224x112 float batch then costs ~60 page faults instead of ~1900, which cost more than the arithmetic."""
    if device.type == "cpu" and dtype == torch.float32:
        return torch.from_numpy(np.empty(tuple(shape), dtype=np.float32))
    return torch.empty(shape, dtype=dtype, device=device)
