"""A row's enrolled image, and only that: read once, checked against the sha256 recorded at enrolment, decoded.

What sits at a row's path today may not be what was enrolled (a file replaced, a hard link to a file elsewhere,
an edited gallery.json): size and mtime can be forged (`touch`), a content hash cannot. The path is resolved
with symlinks followed and must lie under the image root (person.files.resolve_under); the bytes are read once
(regular files only, within the caps), hashed and compared, then decoded as an image within the caps, so a
caller only ever holds pixels of the image that was enrolled. Messages name the row's id, never a path.
"""
from __future__ import annotations

import hashlib

import numpy as np

from person.data.images import DEFAULT_LIMITS, ImageLimits, ImageReadError, decode_pixels, read_image_bytes
from person.files import resolve_under
from person.gallery.manifest import GalleryError
from person.gallery.store import Gallery


class ImageGone(GalleryError):
    """The row's image cannot be read under the image root (missing, outside it, not a file, over the caps)."""


class ImageChanged(GalleryError):
    """The file at the row's path is not the image that was enrolled (or the row recorded no hash)."""


def enrolled_bytes(gallery: Gallery, i: int, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[bytes, str]:
    """(bytes, sha256) of row i's image file, when they hash to what enrolment recorded."""
    uid = int(gallery.rows.uid[i])
    path = resolve_under(gallery.image_root, gallery.rows.path[i])
    if path is None:
        raise ImageGone(f"the image of id {uid} lies outside the gallery's image root")
    try:
        data = read_image_bytes(path, limits)
    except ImageReadError as e:
        raise ImageGone(f"the image of id {uid} cannot be read on the server") from e
    recorded = gallery.rows.sha256[i]
    if recorded is None:
        raise ImageChanged(f"the image of id {uid} was stored without a content hash, so it cannot be checked; "
                           f"enrol it again")
    if hashlib.sha256(data).hexdigest() != recorded:
        raise ImageChanged(f"the image of id {uid} changed since it was enrolled (its content hash differs); enrol "
                           f"the gallery again")
    return data, recorded


def enrolled_pixels(data: bytes, uid: int, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """uint8 RGB pixels of bytes `enrolled_bytes` checked, decoded within the caps."""
    try:
        return decode_pixels(data, f"id {uid}", None, limits)
    except ImageReadError as e:
        raise ImageGone(f"the image of id {uid} cannot be decoded within the caps") from e
