"""The searches behind the routes, and what one request may cost."""
from __future__ import annotations

import io
import logging
import threading
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.responses import Response
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException

from person.data.images import ImageLimits, ImageReadError, decode_pixels, read_image_bytes
from person.errors import PersonError
from person.files import resolve_under
from person.gallery.manifest import MANIFEST, GalleryError
from person.gallery.search import MAX_K, MAX_QUERY_CHARS, QueryResult, Searcher
from person.gallery.store import Gallery
from person.teacher.space import describe
from person.web.images import ThumbnailCache

log = logging.getLogger(__name__)

MAX_QUERIES = 64                 # queries in one POST /api/search
MAX_JSON_BYTES = 1 << 20         # a JSON body: 64 queries of 1000 characters fit several times over
MAX_UPLOAD_BYTES = 8 << 20       # an uploaded photo: a person crop is tens of KB, a phone photo a few MB
MAX_UPLOAD_PIXELS = 40_000_000   # a 7296x5472 phone photo; a bomb's header says more and is refused unread
MULTIPART_SLACK = 64 << 10       # a multipart body's boundaries and form fields around the file
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # what a browser's photo picker gives
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".bmp": "image/bmp", ".gif": "image/gif", ".tif": "image/tiff", ".tiff": "image/tiff"}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost; each over-the-cap request is refused with a message naming the cap."""

    json_bytes: int = MAX_JSON_BYTES
    upload_bytes: int = MAX_UPLOAD_BYTES
    upload_pixels: int = MAX_UPLOAD_PIXELS


class Refused(HTTPException):
    """A request the app answers with a 4xx JSON error (the message names the cap or the fix)."""


def describe_bytes(n: int) -> str:
    return f"{n} bytes ({n / (1 << 20):g} MiB)"


def _finite(value: Any) -> Any:
    """`value` with NaN/inf floats as None: a detections line may carry them, and JSON (and the page) cannot."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _public_encoder(encoder: dict[str, Any]) -> dict[str, Any]:
    """The manifest's encoder without the server's folders (an export's absolute path becomes its folder name)."""
    out = dict(encoder)
    if isinstance(out.get("name"), str) and os.path.isabs(out["name"]):
        out["name"] = os.path.basename(out["name"].rstrip("/"))
    return out


class SearchService:
    """What the routes call: one Searcher, the thumbnail cache and the caps; safe to call from many threads."""

    def __init__(self, searcher: Searcher, thumbs: ThumbnailCache, limits: ServeLimits) -> None:
        self.searcher, self.thumbs, self.limits = searcher, thumbs, limits
        self._seen = self._manifest_stat()
        self._refreshing = threading.Lock()

    def _manifest_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.searcher.folder / MANIFEST)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @property
    def has_text(self) -> bool:
        return self.searcher.has_text

    @property
    def has_image(self) -> bool:
        return self.searcher.has_image

    def current(self) -> Gallery:
        """The generation to answer from, after swapping in one an enrolment committed since the last request.
        gallery.json is replaced by rename, so one stat tells whether it changed; the Searcher reopens it whole."""
        seen = self._manifest_stat()
        if seen != self._seen and self._refreshing.acquire(blocking=False):  # one request refreshes, others answer
            try:
                self.searcher.refresh()
                self._seen = seen  # only once it worked: a failed refresh is tried again by the next request
            except (PersonError, OSError) as e:
                log.warning("the gallery changed but cannot be opened (%s); still serving generation %d", e,
                            self.searcher.gallery.generation)
            finally:
                self._refreshing.release()
        return self.searcher.gallery

    def answer(self, run: Callable[[], list[QueryResult]]) -> dict[str, Any]:
        """Run a search and report the generation its hits came from (retried if a refresh swapped it meanwhile)."""
        self.current()
        for _ in range(5):
            gallery = self.searcher.gallery
            try:
                results = run()
            except GalleryError as e:
                raise Refused(400, str(e)) from None
            if self.searcher.gallery is gallery:
                break
        return {"generation": gallery.generation, "count": len(gallery),
                "results": [self._result(r) for r in results]}

    @staticmethod
    def _result(result: QueryResult) -> dict[str, Any]:
        return {"query": result.query, "seconds": result.seconds, "note": result.note,
                "hits": [{"id": h.uid, "rank": h.rank, "score": _finite(h.score), "path": h.path, "bbox": h.bbox,
                          "identity": h.identity, "meta": _finite(h.meta), "image": f"/images/{h.uid}",
                          "thumb": f"/thumbs/{h.uid}"} for h in result.hits]}

    def locate(self, uid: int) -> str:
        """The real path of a live row's image, when it lies under the image root; a 404 for anything else."""
        gallery = self.current()
        try:
            i = gallery.position(uid)
        except (KeyError, OverflowError):
            raise Refused(404, f"no image with id {uid} in this gallery") from None
        path = resolve_under(gallery.image_root, gallery.rows.path[i])
        if path is None:
            log.warning("row %d's path %r leads outside the image root %s: refused", uid, gallery.rows.path[i],
                        gallery.image_root)
            raise Refused(404, f"no image with id {uid} in this gallery")
        return path

    def image(self, uid: int) -> Response:
        path = self.locate(uid)
        try:
            data = read_image_bytes(path)  # regular files only, at most DEFAULT_LIMITS.max_bytes
        except ImageReadError as e:
            log.warning("image %d: %s", uid, e)
            raise Refused(404, f"the image of id {uid} cannot be read on the server") from None
        media = MEDIA_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
        return Response(data, media_type=media, headers={"cache-control": "private, max-age=3600"})

    def thumbnail(self, uid: int) -> Response:
        path = self.locate(uid)
        try:
            data, (w, h) = self.thumbs.get(path)
        except (ImageReadError, OSError) as e:
            log.warning("thumbnail %d: %s", uid, e)
            raise Refused(404, f"the image of id {uid} cannot be read on the server") from None
        return Response(data, media_type="image/jpeg", headers={"x-image-size": f"{w}x{h}",
                                                                "cache-control": "private, max-age=3600"})

    def row_vector(self, uid: int) -> np.ndarray:
        """A live row's enrolled features: the embedding of its own crop, made when it was enrolled."""
        gallery = self.current()
        try:
            i = gallery.position(uid)
        except (KeyError, OverflowError):
            raise Refused(404, f"no row with id {uid} in this gallery") from None
        for part in gallery.segment_features:  # one segment's row: no concatenation of the whole gallery
            if i < len(part):
                return np.asarray(part[i], np.float32)[None]
            i -= len(part)
        raise AssertionError("a live row's position lies beyond the gallery's features")

    def decode_upload(self, data: bytes) -> np.ndarray:
        """uint8 RGB pixels of an uploaded photo; its size and decoded pixels checked against the caps first."""
        if len(data) > self.limits.upload_bytes:
            raise Refused(413, f"the upload holds more than {describe_bytes(self.limits.upload_bytes)}, the limit; send a "
                               f"smaller photo or a crop of the person")
        try:
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as im:  # the header only
                w, h = im.size
        except Image.DecompressionBombError:  # over Pillow's own cap, far over ours
            w = h = None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise Refused(400, f"the upload is not an image ({', '.join(UPLOAD_FORMATS)})") from None
        if w is None or w * h > self.limits.upload_pixels:
            said = f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)}" if w is None else f"{w}x{h} = {w * h}"
            raise Refused(413, f"the upload decodes to {said} pixels, over the {self.limits.upload_pixels}-pixel "
                               f"limit; send a smaller photo")
        limits = ImageLimits(self.limits.upload_bytes, self.limits.upload_pixels)
        try:  # decoded exactly as enrolment decodes a file
            return decode_pixels(data, "upload", None, limits)
        except ImageReadError as e:
            raise Refused(400, f"the upload cannot be decoded: {e}") from None

    def info(self) -> dict[str, Any]:
        gallery = self.current()
        manifest = gallery.manifest
        index = getattr(getattr(self.searcher.backend, "index", None), "kind", None)
        return {"count": len(gallery), "rows": manifest.rows, "deleted": manifest.deleted,
                "generation": gallery.generation, "dimension": gallery.dim,
                "encoder": _public_encoder(manifest.encoder), "space": describe(manifest.space), "index": index,
                "text_model": self.has_text, "image_model": self.has_image, "max_k": MAX_K,
                "max_query_chars": MAX_QUERY_CHARS, "max_queries": MAX_QUERIES,
                "max_upload_bytes": self.limits.upload_bytes, "max_upload_pixels": self.limits.upload_pixels}
