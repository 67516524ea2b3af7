"""Image inputs: decode with Pillow, resize to the student's H x W, colour-true augmentation, normalise.

The per-image work (decode, crop/flip, resize) happens in loader workers and yields uint8 CHW arrays:
4x less data through worker queues than float32. Normalisation to the teacher's mean/std happens
once per batch (`normalize_batch`) on whatever device the model runs on.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

DEFAULT_IMAGE_SIZE = (224, 112)  # H x W: person crops are tall
DEFAULT_MEAN = (0.5, 0.5, 0.5)   # SigLIP / SigLIP2 preprocessing
DEFAULT_STD = (0.5, 0.5, 0.5)
RESIZE_MODES = ("stretch", "pad")


class ImageReadError(OSError):
    """An image that cannot be read; the message names the file and the reason."""


def parse_image_size(text: str) -> tuple[int, int]:
    """'224x112' -> (224, 112), height first."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"image size {text!r}: expected HxW, e.g. 224x112") from None
    if h < 8 or w < 8:
        raise ValueError(f"image size {text!r}: both sides must be at least 8 pixels")
    return h, w


def load_image(path: str | Path, size_hint: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image as RGB. `size_hint` (H, W) lets a large JPEG decode at a reduced scale (draft)."""
    try:
        img = Image.open(path)
        if size_hint is not None and img.format == "JPEG":
            # draft keeps the decoded size >= the request, so quality is unchanged after the resize.
            img.draft("RGB", (size_hint[1], size_hint[0]))
        return img.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt image ({e})") from None


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> uint8 [3, H, W].

    `resize="stretch"` scales to H x W ignoring aspect (the usual choice for person crops, close to
    1:2 already); `"pad"` keeps the aspect and pads with the mean colour. With `train=True` and an rng:
    a random crop of 85-100% of the area with mild aspect jitter, and a horizontal flip. No colour
    jitter: captions name colours, so colours must stay true.
    """

    size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    resize: str = "stretch"
    mean: tuple[float, float, float] = DEFAULT_MEAN
    train: bool = False
    min_area: float = 0.85
    flip: float = 0.5

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize mode {self.resize!r}: use one of {', '.join(RESIZE_MODES)}")

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        h, w = self.size
        box = (0.0, 0.0, float(img.width), float(img.height))
        if self.train:
            if rng is None:
                raise ValueError("a training transform needs an rng (reproducible augmentation)")
            box = self._random_box(img.width, img.height, rng)
        if self.resize == "pad":
            out = self._pad_resize(img, box)
        else:
            out = img.resize((w, h), Image.Resampling.BILINEAR, box=box)
        if self.train and rng.random() < self.flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy()

    def _random_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[float, ...]:
        area = rng.uniform(self.min_area, 1.0)
        aspect = np.exp(rng.uniform(np.log(0.9), np.log(1.1)))
        cw = min(width, width * np.sqrt(area * aspect))
        ch = min(height, height * np.sqrt(area / aspect))
        x0 = rng.uniform(0, width - cw)
        y0 = rng.uniform(0, height - ch)
        return (x0, y0, x0 + cw, y0 + ch)

    def _pad_resize(self, img: Image.Image, box: tuple[float, ...]) -> Image.Image:
        h, w = self.size
        bw, bh = box[2] - box[0], box[3] - box[1]
        scale = min(w / bw, h / bh)
        nw, nh = max(1, round(bw * scale)), max(1, round(bh * scale))
        fill = tuple(int(round(m * 255)) for m in self.mean)
        canvas = Image.new("RGB", (w, h), fill)
        canvas.paste(img.resize((nw, nh), Image.Resampling.BILINEAR, box=box), ((w - nw) // 2, (h - nh) // 2))
        return canvas


def normalize_batch(images: torch.Tensor, mean: Sequence[float] = DEFAULT_MEAN,
                    std: Sequence[float] = DEFAULT_STD, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float (x / 255 - mean) / std, on the images' device."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 [B, 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    m = torch.tensor(mean, dtype=dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=images.device).view(1, 3, 1, 1)
    return (images.to(dtype) / 255.0 - m) / s
