"""Image inputs: decode, resize to the student's H x W, colour-true augmentation, normalise.

The per-image work (decode, crop/flip, resize) happens in loader workers and yields uint8 CHW arrays:
4x less data through worker queues than float32. Normalisation to the teacher's mean/std happens
once per batch (`normalize_batch`) on whatever device the model runs on.

Speed (bench/loader.py): a person crop decodes in ~150 us, so every other step must cost a fraction
of that. OpenCV does the pixel work: JPEG decode (the same libjpeg-turbo decode as Pillow's, without
Pillow's per-file Python header parsing) and SIMD bilinear resize (~6x Pillow's `resize` here). The
transform returns a CHW view; `collate_images` makes the one copy, into the batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from person.errors import PersonError

# Per-image work is small and loader workers already use every core: OpenCV's own threads would only contend.
cv2.setNumThreads(1)

DEFAULT_IMAGE_SIZE = (224, 112)  # H x W: person crops are tall
DEFAULT_MEAN = (0.5, 0.5, 0.5)   # SigLIP / SigLIP2 preprocessing
DEFAULT_STD = (0.5, 0.5, 0.5)
RESIZE_MODES = ("stretch", "pad")


class ImageReadError(PersonError, OSError):
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


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
# Frame types both decoders handle the same way: baseline, extended and progressive Huffman JPEG.
_PLAIN_FRAMES = (0xC0, 0xC1, 0xC2)
_OTHER_FRAMES = (0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
# imdecode flags for RGB at each draft scale: IMREAD_REDUCED_GRAYSCALE_n is the bare reduction bit.
_REDUCTION_BITS = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                   8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_JPEG_FLAGS = {s: cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION | bit for s, bit in _REDUCTION_BITS.items()}


def load_image(path: str | Path, size_hint: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image as a PIL RGB image. `size_hint` (H, W) lets a large JPEG decode at a reduced scale (draft)."""
    try:
        img = Image.open(path)
        if size_hint is not None and img.format == "JPEG":
            # draft keeps the decoded size >= the request, so quality is unchanged after the resize.
            img.draft("RGB", (size_hint[1], size_hint[0]))
        img.load()
        # Most files decode to RGB already; convert() would then only copy them.
        return img if img.mode == "RGB" else img.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as e:  # a huge or hostile file: skipped like any unreadable one
        raise ImageReadError(f"{path}: refused ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt image ({e})") from None


def load_pixels(path: str | Path, size_hint: tuple[int, int] | None = None) -> np.ndarray:
    """The pixels `load_image` gives (same draft scale, same values), as uint8 RGB [H, W, 3], faster.

    A plain 8-bit JPEG (nearly every person crop) is decoded by OpenCV's libjpeg-turbo: bit-identical
    to Pillow's decode, ~1.5x faster on crops. Anything else goes through `load_image`.
    """
    try:
        with open(path, "rb", buffering=0) as f:  # unbuffered: one read into one bytes object
            data = f.read()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e})") from None
    size = plain_jpeg_size(data)
    if size is None:
        return np.asarray(load_image(path, size_hint))
    scale = 1 if size_hint is None else _draft_scale(size, (size_hint[1], size_hint[0]))
    try:
        # EXIF orientation is ignored, as Pillow's decode ignores it: the teacher saw the pixels as stored.
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), _JPEG_FLAGS[scale])
    except cv2.error as e:
        raise ImageReadError(f"{path}: corrupt image ({e})") from None
    if pixels is None:
        raise ImageReadError(f"{path}: corrupt image (OpenCV could not decode this JPEG)")
    return pixels


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an 8-bit grey or colour JPEG that ends with its end-of-image marker, else None.

    Truncated files (no end marker), CMYK, 12-bit and arithmetic-coded JPEGs are left to Pillow, which
    decodes or reports them as it always has.
    """
    if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
        return None
    i = 2
    while i + 10 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _PLAIN_FRAMES:
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            plain = data[i + 4] == 8 and data[i + 9] in (1, 3) and height > 0 and width > 0
            return (width, height) if plain else None
        if marker in _OTHER_FRAMES:
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _draft_scale(size: tuple[int, int], request: tuple[int, int]) -> int:
    """The JPEG reduction (1, 2, 4 or 8) Pillow's `draft` picks: the largest that keeps W x H >= `request`."""
    fit = min(size[0] // request[0], size[1] // request[1])
    return next(s for s in (8, 4, 2, 1) if s <= max(fit, 1))


def _resize_box(pixels: np.ndarray, box: Box, width: int, height: int) -> np.ndarray:
    """The `box` region of HWC `pixels` resized to `width` x `height` (bilinear)."""
    x0, y0, x1, y1 = box
    crop = pixels[y0:y1, x0:x1]
    if x1 - x0 >= 2 * width or y1 - y0 >= 2 * height:
        # Bilinear reads two pixels a side, so past a 2x shrink it skips pixels (aliasing): area-average first.
        # Rare: `load_pixels` already decodes large JPEGs at a reduced scale.
        crop = cv2.resize(crop, (min(width, x1 - x0), min(height, y1 - y0)), interpolation=cv2.INTER_AREA)
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)


def _rgb_pixels(img: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] from a PIL image or such an array."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected uint8 RGB [H, W, 3] pixels, got {img.dtype} {img.shape}")
        return img
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


@dataclass(frozen=True)
class ImageTransform:
    """PIL image or uint8 RGB [H, W, 3] array -> uint8 [3, H, W] (a strided view: `collate_images` copies
    it once, into the batch).

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

    def __call__(self, img: Image.Image | np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.train and rng is None:
            raise ValueError("a training transform needs an rng (reproducible augmentation)")
        pixels = _rgb_pixels(img)
        height, width = pixels.shape[:2]
        box = self._random_box(width, height, rng) if self.train else (0, 0, width, height)
        h, w = self.size
        out = self._pad_resize(pixels, box) if self.resize == "pad" else _resize_box(pixels, box, w, h)
        if self.train and rng.random() < self.flip:
            out = cv2.flip(out, 1)
        return out.transpose(2, 0, 1)

    def _random_box(self, width: int, height: int, rng: np.random.Generator) -> Box:
        u_area, u_aspect, u_x, u_y = rng.random(4).tolist()  # Python floats: scalar maths on them is faster
        area = self.min_area + (1.0 - self.min_area) * u_area
        aspect = 0.9 * (1.1 / 0.9) ** u_aspect  # log-uniform in [0.9, 1.1]
        cw = max(1, min(width, round(width * math.sqrt(area * aspect))))
        ch = max(1, min(height, round(height * math.sqrt(area / aspect))))
        x0, y0 = int(u_x * (width - cw + 1)), int(u_y * (height - ch + 1))
        return x0, y0, x0 + cw, y0 + ch

    def _pad_resize(self, pixels: np.ndarray, box: Box) -> np.ndarray:
        h, w = self.size
        bw, bh = box[2] - box[0], box[3] - box[1]
        scale = min(w / bw, h / bh)
        nw, nh = max(1, round(bw * scale)), max(1, round(bh * scale))
        canvas = np.empty((h, w, 3), dtype=np.uint8)
        canvas[:] = [round(m * 255) for m in self.mean]
        top, left = (h - nh) // 2, (w - nw) // 2
        canvas[top:top + nh, left:left + nw] = _resize_box(pixels, box, nw, nh)
        return canvas


def normalize_batch(images: torch.Tensor, mean: Sequence[float] = DEFAULT_MEAN,
                    std: Sequence[float] = DEFAULT_STD, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float (x / 255 - mean) / std, on the images' device."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 [B, 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    scale, shift = (torch.tensor(v, dtype=dtype, device=images.device).view(1, 3, 1, 1)
                    for v in ([1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std)]))
    # One float tensor, scaled in place: the textbook expression allocates four of them.
    return _empty_float(images.shape, dtype, images.device).copy_(images).mul_(scale).add_(shift)


def _empty_float(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A new float tensor. On the CPU through numpy, which asks the kernel for huge pages for large arrays:
    a fresh 224x112 float batch then costs ~60 page faults instead of ~1900, which cost more than the arithmetic."""
    if device.type == "cpu" and dtype == torch.float32:
        return torch.from_numpy(np.empty(tuple(shape), dtype=np.float32))
    return torch.empty(shape, dtype=dtype, device=device)
