"""Detector boxes as a torch dataset: each row's box cut out of its decoded image, as enrolment cuts it."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .detections import crop
from .images import DEFAULT_LIMITS, ImageLimits, ImageReadError, load_pixels
from .unlabeled import UnlabeledImages


class CropDataset(Dataset):
    """Detector boxes cut as enrolment cuts them (decoded pixels, box clipped to the image), as PIL images for a
    teacher's own processor; {"row", "image"} or {"row", "error"} (an unreadable image, a box outside it)."""

    def __init__(self, images: UnlabeledImages, limits: ImageLimits = DEFAULT_LIMITS) -> None:
        self.images, self.limits = images, limits

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> dict[str, Any]:
        try:
            pixels = load_pixels(self.images.image_path(row), None, self.limits)
            box = self.images.key(row)[1]
            if box is not None:
                pixels, _ = crop(pixels, box)
        except ImageReadError as e:
            return {"row": int(row), "error": str(e)}
        return {"row": int(row), "image": Image.fromarray(np.ascontiguousarray(pixels))}
