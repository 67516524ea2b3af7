"""What /images and /thumbs send: JPEGs re-encoded from the pixels of a row's verified enrolled image (never a
file's own bytes, which could be anything), and thumbnails cached on disk by that image's content hash."""
from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from person import files
from person.data.images import ImageReadError

log = logging.getLogger(__name__)

THUMB_SIDE = 256
THUMB_TAG = b"person-thumb "     # the JPEG comment that carries the original W x H
IMAGE_QUALITY, THUMB_QUALITY = 92, 85
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def _thumb_size(data: bytes) -> tuple[int, int] | None:
    """The original (W, H) a cached thumbnail's comment carries, or None when it has none (then it is remade)."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] not in (0xDA, 0xD9):  # up to the scan
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] == 0xFE and data[i + 4:i + 2 + length].startswith(THUMB_TAG):
            try:
                w, h = (int(v) for v in data[i + 4 + len(THUMB_TAG):i + 2 + length].split(b"x"))
            except ValueError:
                return None
            return w, h
        i += 2 + length
    return None


def encode_jpeg(pixels: np.ndarray, quality: int = IMAGE_QUALITY) -> bytes:
    """A JPEG of uint8 RGB `pixels`."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageReadError(f"OpenCV could not encode a {pixels.shape[1]}x{pixels.shape[0]} JPEG")
    return encoded.tobytes()


def make_thumbnail(pixels: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """A JPEG of uint8 RGB `pixels` with its longest side at most `side`, the original W x H in a comment."""
    h, w = pixels.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1:
        pixels = cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    jpeg = encode_jpeg(pixels, THUMB_QUALITY)
    comment = THUMB_TAG + f"{w}x{h}".encode()
    at = 2
    if jpeg[2:4] == b"\xff\xe0":  # JFIF wants its APP0 right after SOI: the comment goes after it
        at = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:at] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[at:]


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/person/thumbs (~/.cache/person/thumbs): a per-user folder, not a shared /tmp name."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "person" / "thumbs"


class ThumbnailCache:
    """Small JPEGs of gallery images on disk, keyed by the image's content hash and the side: a file changed in
    place hashes to another key (and is refused before the cache is asked), so it is never answered from here."""

    def __init__(self, folder: str | Path | None = None, side: int = THUMB_SIDE) -> None:
        self.folder, self.side = Path(folder) if folder else default_cache_dir(), side
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only home: a private temp folder still caches for this run
            fallback = Path(tempfile.mkdtemp(prefix="person-thumbs-"))
            log.warning("thumbnail cache %s cannot be made (%s); using %s", self.folder, e, fallback)
            self.folder = fallback

    def get(self, sha256: str, decode: Callable[[], np.ndarray]) -> tuple[bytes, tuple[int, int]]:
        """(JPEG bytes, original (W, H)) of the image whose verified content hashes to `sha256`; `decode` gives
        its pixels when the cache has no thumbnail of it."""
        file = self.folder / sha256[:2] / f"{sha256}-{self.side}.jpg"
        try:
            data = file.read_bytes()
            size = _thumb_size(data)
            if size is not None:
                return data, size
        except OSError:
            pass
        pixels = decode()
        data = make_thumbnail(pixels, self.side)
        try:  # a cache: no fsync, a unique temp name per thread, renamed into place whole
            file.parent.mkdir(exist_ok=True)
            tmp = files.temp_name(file)
            tmp.write_bytes(data)
            os.replace(tmp, file)
        except OSError as e:
            log.warning("thumbnail cache %s: cannot write (%s); serving thumbnails uncached", self.folder, e)
        return data, (pixels.shape[1], pixels.shape[0])

    def purge(self, hashes: Iterable[str]) -> int:
        """Remove the thumbnails (every side) of the images with these content hashes: an erased row's picture must
        not outlive it. The files removed; OSError when one cannot be."""
        removed = 0
        for sha256 in set(hashes):
            if not isinstance(sha256, str) or not _SHA256.match(sha256):
                continue  # a row recorded without a hash has no thumbnail here (nor any name to glob with)
            folder = self.folder / sha256[:2]  # the thumbnails, and a killed write's temp files of them
            for file in [*folder.glob(f"{sha256}-*.jpg"), *folder.glob(f".{sha256}-*.jpg.*.tmp")]:
                file.unlink(missing_ok=True)
                removed += 1
        return removed
