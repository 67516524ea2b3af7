"""The searches behind the routes, what one request may cost, and what a client may see.

Every request first makes sure the generation it answers from is what the gallery on disk holds (a new one
swapped in; the files of the one served still hashing to what gallery.json recorded, a stat per file when
unchanged): when they do not, searches, images and /api/health alike answer 503 naming the problem, so health
reports what a search would meet. Nothing sent names a server path: hits carry ids, the encoder and teacher are
named by their folder's name, messages name the gallery's files relative to it, and a calibration file or an
export folder (in a threshold's source, a refusal, a note) by its name.

A request's `far` is one of the operating points the project measures (FARS): a hit is kept when its score reaches
that FAR's threshold for the encoder pair in use (person.gallery.search); each hit lists the FARs it reaches.
"""
from __future__ import annotations

import io
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi.responses import Response
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException

from person.data.images import ImageLimits, ImageReadError, decode_pixels
from person.errors import PersonError
from person.eval.operating_points import FARS
from person.gallery import store
from person.gallery.images import ImageChanged, enrolled_bytes, enrolled_pixels
from person.gallery.manifest import MANIFEST, GalleryError
from person.gallery.search import MAX_K, MAX_QUERY_CHARS, QueryResult, Searcher, TextRequest
from person.gallery.thresholds import far_of
from person.gallery.store import Gallery
from person.teacher.space import describe
from person.web.images import ThumbnailCache, encode_jpeg

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_QUERIES = 64                 # queries in one POST /api/search
MAX_JSON_BYTES = 1 << 20         # a JSON body: 64 queries of 1000 characters fit several times over
MAX_UPLOAD_BYTES = 8 << 20       # an uploaded photo: a person crop is tens of KB, a phone photo a few MB
MAX_UPLOAD_PIXELS = 40_000_000   # a 7296x5472 phone photo; a bomb's header says more and is refused unread
MULTIPART_SLACK = 64 << 10       # a multipart body's boundaries and form fields around the file
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # what a browser's photo picker gives
IMAGE_HEADERS = {"cache-control": "private, max-age=3600"}
SWAP_RETRIES = 5                 # searches run again when a refresh swapped the generation under them


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


def far_level(far: str | float | None) -> str | None:
    """The FAR a request asks for, as the operating points name it ("1e-3" for 0.001); None (or "") for every
    result. Refused(400) naming the levels there are for anything else."""
    if far is None or far == "":
        return None
    try:
        level = far_of(far)
    except GalleryError:
        level = None
    if level not in FARS:
        raise Refused(400, f"far={far!r}: give one of {', '.join(FARS)} (the measured operating points; 0.001 is "
                           f"1e-3), or leave it out for every result")
    return level


def _score(value: float) -> float | None:
    """A score as JSON can carry it: rows are finite unit vectors, so only a broken query vector gives NaN."""
    return value if math.isfinite(value) else None


def _public(named: dict[str, Any], key: str) -> dict[str, Any]:
    """`named` with its `key` (an export folder or a teacher directory) as the folder's name when it is a path."""
    out = dict(named)
    if isinstance(out.get(key), str) and os.path.isabs(out[key]):
        out[key] = os.path.basename(out[key].rstrip("/"))
    return out


class SearchService:
    """What the routes call: one Searcher, the thumbnail cache and the caps; safe to call from many threads."""

    def __init__(self, searcher: Searcher, thumbs: ThumbnailCache, limits: ServeLimits) -> None:
        self.searcher, self.thumbs, self.limits = searcher, thumbs, limits
        self._seen = self._manifest_stat()
        self._refreshing = threading.Lock()
        self._hashes: tuple[Gallery, frozenset] | None = None  # the live rows' image hashes of one generation
        self._replaced: tuple[tuple, list[tuple[str, str]]] | None = None  # public()'s, for what it was made of

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

    def public(self, message: str) -> str:
        """A message for a client: the gallery's folder named "<gallery>", a calibration file or an export folder by
        its name, not by its path on the server."""
        for path, name in self._shown():
            message = message.replace(path, name)
        return message

    def _shown(self) -> list[tuple[str, str]]:
        """What `public` replaces, (path, name), the longest path first (a file inside the gallery before the
        gallery). Made again only when what is named changes (a new generation may name another encoder): every
        result's message passes through `public`, and realpath stats each component of each path."""
        searcher = self.searcher
        named = (searcher.calibration_file, searcher.gallery.manifest.encoder.get("name"),
                 *(getattr(e, "identity", {}).get("name") for e in (searcher.text_encoder, searcher.image_encoder)))
        cached = self._replaced  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != named:
            shown = {str(p): os.path.basename(str(p).rstrip("/")) for p in named if p and os.sep in str(p)}
            shown.update({os.path.realpath(p): name for p, name in shown.items()})
            shown.update({str(searcher.folder): "<gallery>", os.path.realpath(searcher.folder): "<gallery>"})
            cached = self._replaced = (named, sorted(shown.items(), key=lambda kv: len(kv[0]), reverse=True))
        return cached[1]

    def _unavailable(self, e: Exception) -> Refused:
        log.warning("the gallery cannot be served: %s", e)
        return Refused(503, self.public(f"the gallery on disk cannot be served: {e}"))

    def current(self) -> Gallery:
        """The generation to answer from, after swapping in one an enrolment committed since the last request;
        Refused(503) when the gallery on disk cannot be opened or the files of the generation served no longer hold
        what gallery.json recorded. gallery.json is replaced by rename, so one stat tells whether it changed; the
        Searcher reopens it whole."""
        seen = self._manifest_stat()
        if seen != self._seen and self._refreshing.acquire(blocking=False):  # one request refreshes, others answer
            try:
                swapped = self.searcher.refresh()  # which closes the generation it replaces (its lease goes)
                self._seen = seen  # only once it worked: a failed refresh is tried again by the next request
            except (PersonError, OSError) as e:
                raise self._unavailable(e) from None
            finally:
                self._refreshing.release()
            if swapped:
                self._purge()
        gallery = self.searcher.gallery
        try:
            gallery.verify()
        except GalleryError as e:
            # unless commits since removed its files (a newer generation is swapped in, or is about to be)
            if self.searcher.gallery is gallery and self._manifest_stat() == self._seen:
                raise self._unavailable(e) from None
        return gallery

    def health(self) -> dict[str, Any]:
        """What a search would meet now: the generation and count it answers from, or Refused(503) saying why not."""
        gallery = self.current()
        return {"status": "ok", "generation": gallery.generation, "count": len(gallery)}

    def answer(self, run: Callable[[], list[QueryResult]]) -> dict[str, Any]:
        """Run a search and report the generation its hits came from (retried if a refresh swapped it meanwhile)."""
        try:
            gallery, results = self._on_one_generation(run)
        except GalleryError as e:
            raise Refused(400, self.public(str(e))) from None
        return self._body(gallery, len(gallery), results)

    def answer_texts(self, requests: list[TextRequest]) -> list[dict[str, Any] | Refused]:
        """Each text search's answer, as `answer` gives it, searched together (Searcher.search_batch: one gallery
        check, one text-model call, one scan per set of conditions) from one generation, or its own refusal: a 400
        for a bad request alone, a 503 for each when the gallery on disk cannot be served."""
        try:
            gallery, answers = self._on_one_generation(lambda: self.searcher.search_batch(requests))
        except Refused as e:
            return [Refused(e.status_code, e.detail) for _ in requests]
        except GalleryError as e:  # no text model: every request is refused alike
            return [Refused(400, self.public(str(e))) for _ in requests]
        count = len(gallery)  # a sum over every row: once per batch
        return [Refused(400, self.public(str(a))) if isinstance(a, GalleryError) else self._body(gallery, count, a)
                for a in answers]

    def _on_one_generation(self, run: Callable[[], T]) -> tuple[Gallery, T]:
        """(the generation, `run()`): run again while a refresh swapped the generation under it (a few times)."""
        self.current()
        for _ in range(SWAP_RETRIES):
            gallery = self.searcher.gallery
            result = run()
            if self.searcher.gallery is gallery:
                break
        return gallery, result

    def _body(self, gallery: Gallery, count: int, results: list[QueryResult]) -> dict[str, Any]:
        return {"generation": gallery.generation, "count": count, "results": [self._result(r) for r in results]}

    def _purge(self) -> list[int]:
        """Remove the files of generations no reader holds any more (store.purge, not waiting): an erasure committed
        by another process (another worker, search/forget.py) leaves the erased rows' old segments on disk until
        every reader of them lets go; this process just did. Cheap when nothing is left over. A writer holding the
        gallery (an enrolment) or a file that cannot go is logged: the next swap, or purge, tries again. The
        generations still held (by other processes)."""
        try:
            return store.purge(self.searcher.folder, wait=0)
        except (PersonError, OSError) as e:
            log.info("after swapping in a new generation, its predecessors' files stay for now: %s", e)
            return []

    def _drop_if_erased(self, served: Gallery, sha256: str) -> None:
        """Remove the thumbnail of `sha256` just served (and maybe cached) from `served` when that generation is no
        longer the gallery's current one and no live row of the current one shows the image: an erasure committed
        meanwhile purged the cache before this request wrote it, and its picture must not outlive the row. (The
        commit precedes the erasure's purge, and the write precedes this check: one of the two sees the other.)"""
        try:
            if not served.changed():
                return
        except GalleryError:
            pass  # unreadable now: not known to still hold the row
        latest = self.searcher.gallery
        try:
            if latest is not served and not latest.changed() and sha256 in self.live_hashes(latest):
                return  # another live row of the current generation shows the same image
        except GalleryError:
            pass
        try:
            self.thumbs.purge({sha256})
        except OSError as e:
            log.warning("thumbnail cache %s: cannot remove an erased image's thumbnail (%s)", self.thumbs.folder, e)

    def live_hashes(self, gallery: Gallery | None = None) -> frozenset:
        """The content hashes of the images live rows of `gallery` (default: the generation served) show."""
        gallery = self.searcher.gallery if gallery is None else gallery
        cached = self._hashes  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] is not gallery:
            cached = self._hashes = (gallery, frozenset(gallery.rows.sha256[i] for i in np.flatnonzero(gallery.live)))
        return cached[1]

    def swap_in_latest(self) -> None:
        """Swap in the generation this process just committed (an erasure) and let go of the one held, so that a
        purge may remove its files now (searches still on it keep their memory-mapped features; the Searcher's
        refresh closes the generation it replaces)."""
        with self._refreshing:  # waits for a refresh under way: this one must happen
            try:
                self.searcher.refresh()
                self._seen = self._manifest_stat()
            except (PersonError, OSError) as e:
                raise self._unavailable(e) from None

    def _result(self, result: QueryResult) -> dict[str, Any]:
        return {"query": result.query, "seconds": result.seconds,
                "note": None if result.note is None else self.public(result.note), "far": result.far,
                "threshold": result.threshold, "operating_points": result.operating_points,
                "calibration": None if result.calibration is None else self.public(result.calibration),
                "hits": [{"id": h.uid, "rank": h.rank, "score": _score(h.score), "passes": h.passes, "bbox": h.bbox,
                          "identity": h.identity, "meta": h.meta, "image": f"/images/{h.uid}",
                          "thumb": f"/thumbs/{h.uid}"} for h in result.hits]}

    def _enrolled(self, uid: int, gallery: Gallery | None = None) -> tuple[bytes, str]:
        """(bytes, sha256) of a live row's image as enrolled (in `gallery`, default the generation `current()`
        answers from): a 404 for an unknown id or an unreadable file, a 409 for a file that is not the image enrolled;
        the reason (with the path) goes to the log only."""
        gallery = self.current() if gallery is None else gallery
        try:
            i = gallery.position(uid)
        except (KeyError, OverflowError):
            raise Refused(404, f"no image with id {uid} in this gallery") from None
        try:
            return enrolled_bytes(gallery, i)
        except GalleryError as e:
            log.warning("image %d (%s under %s): %s (%s)", uid, gallery.rows.path[i], gallery.image_root, e,
                        e.__cause__)
            raise Refused(409 if isinstance(e, ImageChanged) else 404, str(e)) from None

    def _pixels(self, data: bytes, uid: int) -> np.ndarray:
        try:
            return enrolled_pixels(data, uid)
        except GalleryError as e:
            log.warning("image %d: %s (%s)", uid, e, e.__cause__)
            raise Refused(404, str(e)) from None

    def image(self, uid: int) -> Response:
        """The enrolled image, re-encoded from its decoded pixels: never the file's own bytes."""
        data, _ = self._enrolled(uid)
        return Response(encode_jpeg(self._pixels(data, uid)), media_type="image/jpeg", headers=IMAGE_HEADERS)

    def thumbnail(self, uid: int) -> Response:
        """A thumbnail of a live row's image, from the cache or made and cached; when the generation it was served
        from was replaced meanwhile (an erasure), the cached file is removed again unless the image is still live."""
        gallery = self.current()
        data, sha256 = self._enrolled(uid, gallery)
        try:
            jpeg, (w, h) = self.thumbs.get(sha256, lambda: self._pixels(data, uid))
        finally:
            self._drop_if_erased(gallery, sha256)
        return Response(jpeg, media_type="image/jpeg", headers={"x-image-size": f"{w}x{h}", **IMAGE_HEADERS})

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
                "encoder": _public(manifest.encoder, "name"), "space": describe(_public(manifest.space, "teacher")),
                "index": index,
                "text_model": self.has_text, "image_model": self.has_image, "max_k": MAX_K,
                "max_query_chars": MAX_QUERY_CHARS, "max_queries": MAX_QUERIES,
                "max_upload_bytes": self.limits.upload_bytes, "max_upload_pixels": self.limits.upload_pixels}
