"""Image inputs: decode, resize to the student's H x W, colour-true augmentation, normalise.

The per-image work (decode, crop/flip, resize) happens in loader workers and yields uint8 CHW arrays:
4x less data through worker queues than float32. Normalisation to the teacher's mean/std happens
once per batch, from one formula (`normalization`): `normalize_batch` (person.data.datasets, torch, on the
model's device) for training, `normalize_pixels` (numpy) for the exported models' torch-free runtime. This
module imports no torch.

Speed (bench/loader.py): a person crop decodes in ~150 us, so every other step must cost a fraction
of that. OpenCV does the pixel work: JPEG decode (the same libjpeg-turbo decode as Pillow's, without
Pillow's per-file Python header parsing) and SIMD bilinear resize (~6x Pillow's `resize` here). The
transform returns a CHW view; `collate_images` makes the one copy, into the batch.

Hostile files cost nothing: only regular files are opened (a FIFO would block, /dev/zero never ends), files
over `ImageLimits.max_bytes` are not read and decodes over `max_pixels` are refused from the header, each an
`ImageReadError`, so a counted skip like any corrupt image. A JPEG cut short and one whose data is damaged in the
middle (libjpeg's "Corrupt JPEG data" warnings, person.data.jpeg_warnings) are both unreadable.
"""
from __future__ import annotations

import io
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from person.errors import PersonError

from .jpeg_warnings import watched
# Re-exported: the caps live in a torch-free module so that records.DatasetOptions can build them.
from .limits import DEFAULT_LIMITS, ImageLimits  # noqa: F401

# Per-image work is small and loader workers already use every core: OpenCV's own threads would only contend.
cv2.setNumThreads(1)

DEFAULT_IMAGE_SIZE = (224, 112)  # H x W: person crops are tall
MAX_IMAGE_SIDE = 2048  # a student's input side; larger sizes are a typo that would exhaust memory, not a choice
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
Image.init()
# Pillow decodes EPS by running Ghostscript on the file: never on a dataset's untrusted bytes.
_PIL_FORMATS = tuple(f for f in Image.ID if f != "EPS")


def load_image(path: str | Path, size_hint: tuple[int, int] | None = None,
               limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode an image as a PIL RGB image. `size_hint` (H, W) lets a large JPEG decode at a reduced scale (draft).

    16-bit images keep their top byte (`_to_rgb`); files and decodes over `limits` are refused (ImageReadError).
    A plain JPEG is decoded as `load_pixels` decodes it (the same pixels), so damaged data is refused alike.
    """
    data = read_image_bytes(path, limits)
    if plain_jpeg_size(data) is None:
        return _decode_pil(data, path, size_hint, limits)
    return Image.fromarray(decode_pixels(data, path, size_hint, limits))


def load_pixels(path: str | Path, size_hint: tuple[int, int] | None = None,
                limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The pixels `load_image` gives (same draft scale, same values), as uint8 RGB [H, W, 3], faster.

    A plain 8-bit JPEG (nearly every person crop) is decoded by OpenCV's libjpeg-turbo: bit-identical
    to Pillow's decode, ~1.5x faster on crops. Anything else goes through Pillow, as `load_image`.
    """
    return decode_pixels(read_image_bytes(path, limits), path, size_hint, limits)


def decode_pixels(data: bytes, path: str | Path, size_hint: tuple[int, int] | None = None,
                  limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """`load_pixels` of bytes already read (an upload); `path` only names them in errors."""
    size = plain_jpeg_size(data)
    if size is None:
        return np.asarray(_decode_pil(data, path, size_hint, limits))
    scale = 1 if size_hint is None else _draft_scale(size, (size_hint[1], size_hint[0]))
    # libjpeg's scaled output rounds up: what imdecode would allocate, checked before it does.
    _check_pixels(path, (-(-size[0] // scale), -(-size[1] // scale)), limits)
    try:
        # EXIF orientation is ignored, as Pillow's decode ignores it: the teacher saw the pixels as stored.
        pixels, corrupt = watched(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), _JPEG_FLAGS[scale]))
    except cv2.error as e:
        raise ImageReadError(f"{path}: corrupt image ({e})") from None
    if pixels is None:
        raise ImageReadError(f"{path}: corrupt image (OpenCV could not decode this JPEG)")
    if corrupt is not None:  # decoded with made-up data where the file's was damaged: as unreadable as a cut file
        raise ImageReadError(f"{path}: corrupt image ({corrupt}; libjpeg would make up the damaged part)")
    return pixels


def read_image_bytes(path: str | Path, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of the regular file at `path`, at most `limits.max_bytes` of them.

    A FIFO would block a plain open() forever and /dev/zero never ends, so the file is opened without
    blocking and anything but a regular file (symlinks followed) is refused before one byte is read.
    """
    # O_NOCTTY: a terminal device must not become ours; O_BINARY (Windows): no newline translation.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot open ({e.strerror or e})") from None
    except ValueError as e:  # a NUL in the path, or a name the file system cannot encode
        raise ImageReadError(f"{path!r}: not a usable file name ({e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(f"{path}: not a regular file ({_file_kind(info.st_mode)}); an image path must "
                                 f"name an image file")
        if info.st_size > limits.max_bytes:
            raise ImageReadError(f"{path}: {info.st_size} bytes, over the {limits.max_bytes}-byte limit; "
                                 f"raise it with --max_image_bytes")
        return _read_capped(fd, path, info.st_size, limits.max_bytes)
    except ImageReadError:
        raise
    except OSError as e:  # an I/O error mid-file (a failing disk, a network share gone)
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)


def _read_capped(fd: int, path: str | Path, expected: int, cap: int) -> bytes:
    """Up to `cap` bytes from `fd`; more is an error (the file grew past the cap since its size was read)."""
    chunks, total = [], 0
    while total <= cap:
        # The first read asks for the whole file plus one byte, so a file read once is one bytes object.
        chunk = os.read(fd, min(cap + 1 - total, max(expected + 1 - total, 1 << 16)))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > cap:
        raise ImageReadError(f"{path}: over the {cap}-byte limit; raise it with --max_image_bytes")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return f"file type {stat.S_IFMT(mode):o}"


def _check_pixels(path: str | Path, size: tuple[int, int], limits: ImageLimits) -> None:
    """Refuse a decode of `size` (W, H) over the pixel cap; called from the header, before any allocation."""
    if size[0] * size[1] > limits.max_pixels:
        raise ImageReadError(f"{path}: decodes to {size[0]}x{size[1]} = {size[0] * size[1]} pixels, over the "
                             f"{limits.max_pixels}-pixel limit; raise it with --max_image_pixels")


def _decode_pil(data: bytes, path: str | Path, size_hint: tuple[int, int] | None, limits: ImageLimits) -> Image.Image:
    """Pillow's decode of a file's bytes, as `load_image` gives it."""
    try:
        img = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)  # lazy: reads the header only
        if size_hint is not None and img.format == "JPEG":
            # draft keeps the decoded size >= the request, so quality is unchanged after the resize.
            img.draft("RGB", (size_hint[1], size_hint[0]))
        _check_pixels(path, img.size, limits)  # the draft-reduced size: what load() allocates
        img.load()
        return _to_rgb(img, path)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as e:  # a huge or hostile file: skipped like any unreadable one
        raise ImageReadError(f"{path}: refused ({e}); that is Pillow's own cap (twice PIL.Image.MAX_IMAGE_PIXELS), "
                             f"which --max_image_pixels ({limits.max_pixels}) does not raise") from None
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{path}: corrupt image ({e})") from None


def _to_rgb(img: Image.Image, path: str | Path) -> Image.Image:
    """RGB, with 16-bit samples scaled to 8 bits by keeping the top byte (v >> 8).

    Pillow's own convert("RGB") clips 16-bit grey at 255 (a white image); its 48-bit RGB decode keeps the
    top byte, so grey follows that rule: a grey and a colour 16-bit file of the same values agree.
    """
    if img.mode == "RGB":  # most files: convert() would only copy them
        return img
    if img.mode == "I" or img.mode.startswith("I;16"):
        values = np.asarray(img)  # uint16 (either byte order), or int32 for mode I
        unsigned16 = values.dtype.kind == "u" and values.dtype.itemsize == 2
        if not unsigned16 and (values.dtype.kind not in "ui"
                               or (values.size and (values.min() < 0 or values.max() > 0xFFFF))):
            raise ImageReadError(f"{path}: integer pixels outside 0..65535 (mode {img.mode}); save it as an "
                                 f"8- or 16-bit image")
        return Image.fromarray(np.repeat((values >> 8).astype(np.uint8)[:, :, None], 3, axis=2))
    if img.mode == "F":
        raise ImageReadError(f"{path}: floating-point pixels (mode F) have no agreed 8-bit scale; save it as an "
                             f"8- or 16-bit image")
    return img.convert("RGB")


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
    return np.asarray(_to_rgb(img, "image"))  # 16-bit scaled as `load_image` scales it


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


def normalization(mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift), float64 [3]: normalised = pixel * scale + shift = (pixel / 255 - mean) / std per channel.
    The one formula behind normalize_pixels (numpy: the runtime) and normalize_batch (torch: training); each
    rounds it to the dtype it computes in."""
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} must have 3 values each, std positive")
    scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float64)
    shift = np.array([-m / s for m, s in zip(mean, std)], dtype=np.float64)
    return scale, shift


def normalize_pixels(images: np.ndarray, mean: Sequence[float] = DEFAULT_MEAN,
                     std: Sequence[float] = DEFAULT_STD) -> np.ndarray:
    """uint8 [B, 3, H, W] -> float32 (x / 255 - mean) / std, in numpy (no torch: the exported models' runtime)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 [B, 3, H, W] images, got {images.dtype} {images.shape}")
    scale, shift = normalization(mean, std)
    out = images.astype(np.float32)
    out *= scale.astype(np.float32).reshape(1, 3, 1, 1)
    out += shift.astype(np.float32).reshape(1, 3, 1, 1)
    return out
