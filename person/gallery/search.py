"""The Searcher: free-text (or by-image) queries against an enrolled gallery, the library under the command-line
client (person-search, search/api.py) and the web app.

    searcher = Searcher("gallery/", ExportEncoder("export/"))
    [result] = searcher.search(["a girl in a red coat"], k=5, where=["camera=3"], group_by="track")

Queries are checked (empty, control characters, longer than MAX_QUERY_CHARS: an error; longer than the text
model reads: truncated, and the result says so), embedded, and scanned by a backend: the local one (exact or a
FAISS index over the gallery's own files, person.gallery.index) or a vector database (person.gallery.milvus).
Conditions filter inside the scan, so a filtered query returns k rows when k match (exact search and Milvus FLAT;
an approximate index does its best); conditions and a `group_by` field that no live row could satisfy (an unknown
field, a value of a kind the field never holds) are refused by name (filters.check); `group_by` returns one row
per value of a field (a track's best frame), the rest of the group skipped, still k groups when there are k.
`search_batch([TextRequest(...), ...])` answers many requests together (the web app gathers concurrent ones):
one text-encoder call and one scan per distinct set of conditions, each request still with its own k, filters,
group_by, FAR, notes and error.
`refresh()` picks up a new gallery generation (an enrolment that finished meanwhile) and swaps it in whole, then
calls `on_refresh(generation)` when given (to log each swap, or for a test to see them).

Operating points (person.gallery.thresholds): each hit lists the FARs whose threshold its score reaches
(`passes`), and `far=` keeps only the hits with score >= the threshold at that FAR for the encoder pair in use
(the rule FAR is measured by); a result then names the threshold, and says so when no hit reaches it. A FAR with
no threshold for the pair, direction and variant is refused, naming what exists.
"""
from __future__ import annotations

import json
import os
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from person.gallery import filters, index as search_index, thresholds
from person.gallery.manifest import GalleryError
from person.gallery.store import Gallery
from person.teacher.space import check_same_space

MAX_QUERY_CHARS = 1000   # a query is a sentence or two; a 100k-character "query" is refused, not embedded
MAX_K = 1000
MASKS_KEPT = 8           # row masks a backend keeps, by conditions: a bool a row each (100 KB per 100k rows)


@dataclass
class Hit:
    rank: int
    score: float
    uid: int
    path: str
    bbox: list[float] | None
    identity: int | None
    meta: dict[str, Any] = field(default_factory=dict)
    passes: list[str] | None = None  # the FARs whose threshold the score reaches; None: the pair has none


@dataclass
class QueryResult:
    query: str
    hits: list[Hit]
    seconds: float
    note: str | None = None   # e.g. "truncated to the first 128 characters"
    far: str | None = None    # the FAR applied (search(far=...)), and its threshold: hits have score >= it
    threshold: float | None = None
    operating_points: dict[str, float | None] | None = None  # the pair's thresholds by FAR; None: it has none
    calibration: str | None = None  # where they came from, or why there are none

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "seconds": self.seconds, "note": self.note, "far": self.far,
                "threshold": self.threshold, "operating_points": self.operating_points,
                "calibration": self.calibration, "hits": [asdict(h) for h in self.hits]}


@dataclass(frozen=True)
class TextRequest:
    """One request's text queries and what they share, as `Searcher.search` takes them (for `search_batch`)."""

    texts: Sequence[str]
    k: int = 10
    where: Sequence[str] = ()
    group_by: str | None = None
    far: str | float | None = None


class Backend(Protocol):
    def search(self, queries: np.ndarray, k: int, conditions: list[filters.Condition]
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k], row positions in the gallery [q, k], -1 where fewer rows match)."""


class LocalBackend:
    """Exact or FAISS search over the gallery's own files; deleted rows and conditions as a row mask."""

    def __init__(self, gallery: Gallery, kind: str = "auto") -> None:
        self.gallery = gallery
        self.index = search_index.load_or_build(gallery.folder, gallery.features(),
                                                search_index.choose(kind, len(gallery.rows)), gallery.manifest)
        self._masks: OrderedDict[tuple[filters.Condition, ...], np.ndarray | None] = OrderedDict()
        self._masks_lock = threading.Lock()

    def allowed(self, conditions: list[filters.Condition]) -> np.ndarray | None:
        """The live rows matching `conditions`, or None for all rows. The last MASKS_KEPT masks are kept: grouping
        asks for the same one in every round of a query, and a batch of searches (search_batch) for each of the
        sets of conditions its requests give, batch after batch."""
        key = tuple(conditions)
        with self._masks_lock:
            if key in self._masks:
                self._masks.move_to_end(key)
                return self._masks[key]
        mask = self.gallery.live
        if conditions:
            mask = mask & filters.mask(self.gallery.rows, conditions, self.gallery.columns)
        allowed = None if mask.all() else mask
        with self._masks_lock:
            self._masks[key] = allowed
            if len(self._masks) > MASKS_KEPT:
                self._masks.popitem(last=False)
        return allowed

    def search(self, queries: np.ndarray, k: int, conditions: list[filters.Condition]
               ) -> tuple[np.ndarray, np.ndarray]:
        if len(self.gallery.rows) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self.index.search(queries, k, self.allowed(conditions))


def check_query(text: Any, max_seq_length: int | None) -> str | None:
    """None for a query the text model reads whole, a note when it is truncated; GalleryError when unusable."""
    if not isinstance(text, str):
        raise GalleryError(f"a query must be text, got {type(text).__name__}")
    if not text.strip():
        raise GalleryError("an empty query: give a description, e.g. \"a woman in a red coat\"")
    if len(text) > MAX_QUERY_CHARS:
        raise GalleryError(f"a query of {len(text)} characters: the limit is {MAX_QUERY_CHARS}")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r"), None)
    if bad is not None:
        raise GalleryError(f"the query holds the control character U+{ord(bad):04X}: send plain text")
    if max_seq_length is not None and len(text) > max_seq_length:
        return f"truncated to the first {max_seq_length} characters (the text model reads no more)"
    return None


class Searcher:
    """Queries against one gallery with a text encoder (and optionally an image encoder, to search by image).

    Both must live in the gallery's embedding space (person.teacher.space): a teacher-enrolled gallery takes
    the text student distilled from that teacher; anything else is refused, naming both spaces."""

    def __init__(self, gallery: str | Path, text_encoder=None, image_encoder=None, index: str = "auto",
                 backend_factory=None, on_refresh: Callable[[int], None] | None = None,
                 calibration: str | Path | None = None) -> None:
        if text_encoder is None and image_encoder is None:
            raise GalleryError("a Searcher needs a text encoder, an image encoder, or both")
        # absolute: messages name the gallery's files wherever the process's working folder is
        self.folder, self.text_encoder, self.image_encoder = Path(gallery).absolute(), text_encoder, image_encoder
        self.on_refresh, self.calibration_file = on_refresh, calibration
        self.backend_factory = backend_factory or (lambda g: LocalBackend(g, index))
        self._lock = threading.Lock()
        self.gallery, self.backend, self.calibration = self._open()

    def _open(self) -> tuple[Gallery, Backend, thresholds.Calibration]:
        gallery = Gallery.open(self.folder)
        try:
            return self._prepare(gallery)
        except BaseException:
            gallery.close()  # not served: its lease must not keep a purge waiting until it is collected
            raise

    def _prepare(self, gallery: Gallery) -> tuple[Gallery, Backend, thresholds.Calibration]:
        for name, encoder in (("the text model", self.text_encoder), ("the image model", self.image_encoder)):
            if encoder is not None:
                check_same_space(gallery.manifest.space, encoder.space, f"the gallery {self.folder}", name)
        identities = [gallery.manifest.encoder] + [getattr(e, "identity", {}) for e in (self.text_encoder,
                                                                                         self.image_encoder) if e]
        cards = {c[0]: c for c in map(thresholds.export_card, identities) if c is not None}
        calibration = thresholds.Calibration(self.folder, gallery.manifest.space, self.calibration_file,
                                             list(cards.values()))
        return gallery, self.backend_factory(gallery), calibration

    def refresh(self) -> bool:
        """Reopen the gallery when its manifest names a new generation; True when it did. The new generation is
        opened (and its index built) before the swap, so searches meanwhile keep answering from the old one; searches
        after it, and `on_refresh`, which is called with the new generation, see the new one. GalleryError when the
        gallery on disk cannot be read (the one held stays).

        The generation replaced is closed: its lease goes, so a purge (store.purge; the web service runs one after
        each swap) may remove its files, which hold the bytes of rows an erasure removed. Searches still under way
        on it keep reading what they memory-mapped or loaded (an unlinked file stays readable to them)."""
        if not self.gallery.changed():
            return False
        gallery, backend, calibration = self._open()
        with self._lock:
            old = self.gallery
            if gallery.generation <= old.generation:
                old = gallery  # another refresh got there first: this one is not served
            else:
                self.gallery, self.backend, self.calibration = gallery, backend, calibration
        old.close()
        if old is gallery:
            return False
        if self.on_refresh is not None:
            self.on_refresh(gallery.generation)
        return True

    def notes(self) -> list[str]:
        """What to know before reading the results: an approximate index's recall against exact search, and images
        missing under the gallery's image root (moved or deleted)."""
        out = []
        info = getattr(getattr(self.backend, "index", None), "info", None)
        if info is not None and info.kind != "exact":
            out.append(f"index {info.kind} over {info.rows:,} rows (generation {info.generation}): recall@10 "
                       f"{info.recall_at_10:.3f} against exact search on sample queries")
        missing = self.gallery.missing_images()
        if missing:
            out.append(f"warning: images are missing under {self.gallery.image_root} (e.g. {', '.join(missing[:3])}): "
                       f"the image root moved or files were deleted; results still list them")
        return out

    # ------------------------------------------------------------------ queries
    def _need_text(self) -> None:
        if not self.has_text:
            raise GalleryError("this Searcher has no text model: give --text-model or --teacher")

    @property
    def has_text(self) -> bool:
        """Whether text queries can be answered (a text encoder with its text model)."""
        return self.text_encoder is not None and bool(getattr(self.text_encoder, "has_text", True))

    @property
    def has_image(self) -> bool:
        """Whether image queries can be answered (an image encoder with its image model)."""
        return self.image_encoder is not None and bool(getattr(self.image_encoder, "has_image", True))

    def search(self, texts: Sequence[str], k: int = 10, where: Sequence[str] = (), group_by: str | None = None,
               far: str | float | None = None) -> list[QueryResult]:
        """The top-k rows for each text query (with `far`: of those at or above its threshold)."""
        self._need_text()
        notes = self._notes(texts)
        start = time.perf_counter()
        vectors = self.text_encoder.embed_texts(list(texts)) if texts else np.zeros((0, self.gallery.dim))
        return self._results(list(texts), vectors, k, where, group_by, start, notes,
                             ("text_to_image", getattr(self.text_encoder, "identity", None), far))

    def search_vectors(self, vectors: np.ndarray, labels: Sequence[str], k: int = 10, where: Sequence[str] = (),
                       group_by: str | None = None, far: str | float | None = None,
                       encoder: dict[str, Any] | None = None) -> list[QueryResult]:
        """The top-k rows for ready-made image query vectors (by-image search embeds the crops first), made by
        `encoder` (an identity as the manifest records one; default: the gallery's own, as its rows' vectors are)."""
        return self._results(list(labels), vectors, k, where, group_by, time.perf_counter(), [None] * len(labels),
                             ("image_to_image", encoder or self.gallery.manifest.encoder, far))

    def search_images(self, images: Sequence[Any], k: int = 10, where: Sequence[str] = (),
                      group_by: str | None = None, far: str | float | None = None) -> list[QueryResult]:
        """The top-k rows for each query image (uint8 RGB pixels, or an image file, decoded as enrolment decodes
        it): the same person elsewhere in the gallery. A result is labelled by its file's path, or "image N"."""
        if not self.has_image:
            raise GalleryError("this Searcher has no image model: give --image-model (or --teacher) to search by "
                               "image")
        start = time.perf_counter()
        vectors = self.image_encoder.embed([self.image_encoder.prepare(im if isinstance(im, (str, os.PathLike))
                                                                       else np.asarray(im)) for im in images])
        labels = [str(im) if isinstance(im, (str, os.PathLike)) else f"image {i}" for i, im in enumerate(images)]
        return self._results(labels, vectors, k, where, group_by, start, [None] * len(images),
                             ("image_to_image", getattr(self.image_encoder, "identity", None), far))

    def search_batch(self, requests: Sequence[TextRequest]) -> list[list[QueryResult] | GalleryError]:
        """What `search` answers each request, or the GalleryError it raises there, computed together from one
        generation: one text-encoder call for every query of the batch (the text model pads a batch and masks the
        padding, so each query's vector is its unbatched one at float precision), and one backend scan per distinct
        set of conditions over the requests without `group_by`, at the largest k among them, each request cut to
        its own k; a request with `group_by` is scanned as `search` scans it. A bad request fails alone. `seconds`:
        the batch's time over its queries. GalleryError for the whole batch when there is no text model."""
        self._need_text()
        start = time.perf_counter()
        gallery, backend, _ = generation = self._snapshot()
        identity = getattr(self.text_encoder, "identity", None)
        out: dict[int, list[QueryResult] | GalleryError] = {}
        planned: dict[int, tuple[list[str | None], _Plan]] = {}
        for i, r in enumerate(requests):
            try:
                notes = self._notes(r.texts)
                planned[i] = notes, _plan(generation, r.k, r.where, r.group_by, ("text_to_image", identity, r.far))
            except GalleryError as e:
                out[i] = e
        texts = [t for i in planned for t in requests[i].texts]
        vectors = self.text_encoder.embed_texts(texts) if texts else np.zeros((0, gallery.dim), np.float32)
        ends = np.cumsum([len(requests[i].texts) for i in planned]).tolist()
        own = {i: vectors[end - len(requests[i].texts):end] for i, end in zip(planned, ends)}
        found: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        scans: dict[tuple[filters.Condition, ...], list[int]] = {}
        for i, (_, plan) in planned.items():
            if requests[i].group_by is None:
                scans.setdefault(tuple(plan.conditions), []).append(i)
            else:  # each round of a grouped search depends on its own hits so far
                found[i] = _top(backend, own[i], requests[i].k, plan.conditions, gallery, requests[i].group_by)
        for conditions, members in scans.items():
            positions, scores = _top(backend, np.concatenate([own[i] for i in members]),
                                     max(requests[i].k for i in members), list(conditions), gallery, None)
            a = 0
            for i in members:  # a top-k is the first k of a larger top: hits come best first
                b, k = a + len(requests[i].texts), requests[i].k
                found[i] = [p[:k] for p in positions[a:b]], [s[:k] for s in scores[a:b]]
                a = b
        seconds = (time.perf_counter() - start) / max(len(texts), 1)
        for i, (notes, plan) in planned.items():
            out[i] = _answers(gallery, plan, list(requests[i].texts), notes, *found[i], seconds)
        return [out[i] for i in range(len(requests))]

    def _notes(self, texts: Sequence[str]) -> list[str | None]:
        """Each query's note (check_query); GalleryError for the first unusable one."""
        if isinstance(texts, str):
            raise TypeError("search takes a list of queries, got a single str")
        return [check_query(t, getattr(self.text_encoder, "max_seq_length", None)) for t in texts]

    def _snapshot(self) -> tuple[Gallery, Backend, thresholds.Calibration]:
        """The generation served now, with its backend and thresholds: what one search reads throughout."""
        with self._lock:
            return self.gallery, self.backend, self.calibration

    def _results(self, labels: list[str], vectors: np.ndarray, k: int, where: Sequence[str],
                 group_by: str | None, start: float, notes: list[str | None],
                 calibrated: tuple[str, dict[str, Any] | None, str | float | None]) -> list[QueryResult]:
        """`calibrated`: (direction, the query encoder's identity, the FAR to apply or None)."""
        generation = self._snapshot()
        plan = _plan(generation, k, where, group_by, calibrated)
        positions, scores = _top(generation[1], vectors, k, plan.conditions, generation[0], group_by)
        return _answers(generation[0], plan, labels, notes, positions, scores,
                        (time.perf_counter() - start) / max(len(labels), 1))


@dataclass(frozen=True)
class _Plan:
    """A request checked against one generation: its conditions, and the FAR asked with its threshold and the
    pair's operating points (None, and `why` there are none, when the pair has none)."""

    conditions: list[filters.Condition]
    far: str | None
    threshold: float | None
    points: thresholds.PairPoints | None
    why: str


def _plan(generation: tuple[Gallery, Backend, thresholds.Calibration], k: int, where: Sequence[str],
          group_by: str | None, calibrated: tuple[str, dict[str, Any] | None, str | float | None]) -> _Plan:
    """GalleryError for a k out of range, a malformed condition, a FAR without a threshold, or a condition or
    group_by field that no live row of the generation could satisfy."""
    gallery, _, calibration = generation
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise GalleryError(f"k={k!r}: ask for 1 to {MAX_K} results")
    conditions = [filters.parse(w) for w in where]
    direction, query, far = calibrated
    far = None if far is None else thresholds.far_of(far)
    points, why = calibration.for_pair(direction, query, gallery.manifest.encoder)
    if far is not None and points is None:
        raise GalleryError(f"no threshold at FAR {far}: {why}")
    threshold = points.threshold(far) if far is not None else None
    filters.check(gallery.rows, gallery.live, conditions, group_by, gallery.columns)
    return _Plan(conditions, far, threshold, points, why)


def _answers(gallery: Gallery, plan: _Plan, labels: list[str], notes: list[str | None], positions: list[np.ndarray],
             scores: list[np.ndarray], seconds: float) -> list[QueryResult]:
    """Each query's result from its top rows: the hits at or above the FAR's threshold, or a note that none is."""
    far, threshold, points = plan.far, plan.threshold, plan.points
    out = []
    for label, note, pos, sc in zip(labels, notes, positions, scores):
        hits = []
        for p, s in zip(pos, sc):
            if far is not None and (threshold is None or float(s) < threshold):
                continue
            rec = gallery.rows.record(int(p))
            hits.append(Hit(len(hits) + 1, float(s), rec["uid"], rec["path"], rec["bbox"], rec["identity"],
                            rec["meta"], None if points is None else points.passes(float(s))))
        if far is not None and not hits:
            shown = "accepts nothing" if threshold is None else f"is {threshold:.4f}"
            note = "; ".join(filter(None, [note, f"no hit reaches FAR {far}: its threshold {shown} "
                                                 f"({points.describe()})"]))
        out.append(QueryResult(label, hits, seconds, note, far, threshold,
                               None if points is None else dict(points.thresholds),
                               points.describe() if points is not None else plan.why))
    return out


def _top(backend: Backend, vectors: np.ndarray, k: int, conditions: list[filters.Condition], gallery: Gallery,
         group_by: str | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Positions and scores of each query's top k rows (or, with group_by, top k groups' best rows)."""
    q = np.asarray(vectors, dtype=np.float32)
    if group_by is None:
        scores, ids = backend.search(q, k, conditions)
        return [i[i >= 0] for i in ids], [s[i >= 0] for s, i in zip(scores, ids)]
    values = filters.column(gallery.rows, group_by)
    positions, scores = [], []
    for row in q:
        fetch = 4 * k
        while True:  # fetch more until k groups are found or every matching row was seen
            s, ids = backend.search(row[None], fetch, conditions)
            s, ids = s[0][ids[0] >= 0], ids[0][ids[0] >= 0]
            seen, keep = set(), []
            for j, i in enumerate(ids):
                value = values[i]
                group = (("__row__", int(i)) if value is None  # no value: a group of its own
                         else json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value)
                if group not in seen:
                    seen.add(group)
                    keep.append(j)
                    if len(keep) == k:
                        break
            if len(keep) == k or len(ids) < fetch:
                break
            fetch *= 4
        positions.append(ids[keep])
        scores.append(s[keep])
    return positions, scores
