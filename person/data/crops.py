"""Detector boxes cut out of their decoded images, as enrolment cuts them (`load_crop`), and as a torch dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .detections import Box, crop
from .images import DEFAULT_LIMITS, ImageLimits, ImageReadError, load_pixels
from .unlabeled import UnlabeledImages


def load_crop(path: str | Path, box: Box | None, size_hint: tuple[int, int] | None = None,
              limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """uint8 RGB [H, W, 3] of `box` (clipped to the image) or the whole image (`box` None, decoded for `size_hint`);
    ImageReadError when the image is unreadable or the box lies outside it. A box is cut from the full decode."""
    pixels = load_pixels(path, None if box is not None else size_hint, limits)
    return pixels if box is None else crop(pixels, box)[0]


class CropDataset(Dataset):
    """Detector boxes cut as enrolment cuts them (decoded pixels, box clipped to the image), as PIL images for a
    teacher's own processor; {"row", "image"} or {"row", "error"} (an unreadable image, a box outside it)."""

    def __init__(self, images: UnlabeledImages, limits: ImageLimits = DEFAULT_LIMITS) -> None:
        self.images, self.limits = images, limits

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> dict[str, Any]:
        try:
            pixels = load_crop(self.images.image_path(row), self.images.key(row)[1], None, self.limits)
        except ImageReadError as e:
            return {"row": int(row), "error": str(e)}
        return {"row": int(row), "image": Image.fromarray(np.ascontiguousarray(pixels))}
