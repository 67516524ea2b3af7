"""Caps on what one image file may cost to read: bytes on disk and decoded pixels.

Torch- and OpenCV-free on purpose: `records.DatasetOptions` builds these, and records are read by light
commands that never decode an image. `images.py` enforces them and re-exports the names.
"""
from __future__ import annotations

from dataclasses import dataclass

# Person crops are tens of KB; a whole 8K frame (7680 x 4320 = 33M pixels) still fits both caps.
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


@dataclass(frozen=True)
class ImageLimits:
    """`max_bytes`: the largest file read (a bigger one is refused before it is read whole).
    `max_pixels`: the most pixels one decode may allocate (checked from the header, after the JPEG draft
    reduction, before any pixel is decoded)."""

    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        for name, flag in (("max_bytes", "--max_image_bytes"), ("max_pixels", "--max_image_pixels")):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{flag} {value!r}: must be a whole number >= 1")


DEFAULT_LIMITS = ImageLimits()
