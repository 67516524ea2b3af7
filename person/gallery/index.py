"""Search indexes over a gallery's features: exact by default, approximate (FAISS IVF or HNSW) for large ones.

Exact: person.gallery.exact_scan, an int8 scan of the rows that bounds every score, then the float16 rows the
bound cannot rule out scored exactly: the same top k and scores as a full float32 scan of the float16 rows, built
in memory when the gallery is opened (nothing saved). A row mask (deleted rows, --where conditions) goes into the
scan, so a filtered exact query still returns k rows when k match, and a mask keeping few rows, or a few runs of
rows, reads only those (an approximate index with a selector explores only part of the graph or the lists: a very
selective filter may leave it fewer).
Approximate: `ivf` (IVF with fp16 rows, nlist ~ sqrt(n), nprobe 64) or `hnsw` (M 32, efSearch 128), saved
under index/ with the gallery id and segments it covers: extended when segments were appended, rebuilt after a
compaction, an erasure (`rebuild_saved`: the erased rows' vectors leave it) or for another gallery; a reader that
saved one for a generation an erasure or compaction has since replaced removes it again; building one
measures its recall@10 against exact search on sample queries drawn from the gallery itself. `auto` picks exact
below AUTO_EXACT_ROWS rows, as autofaiss does.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from person import files
from person.gallery.exact_scan import ExactScan, check_queries
from person.gallery.manifest import GalleryError, Manifest, read_manifest
from person.vectors import unit_rows

log = logging.getLogger(__name__)

KINDS = ("auto", "exact", "ivf", "hnsw")
AUTO_EXACT_ROWS = 200_000
INDEX_DIR = "index"
ADD_BLOCK = 65536  # rows converted to float32 at a time when filling an index


@dataclass(frozen=True)
class IndexInfo:
    kind: str
    generation: int
    rows: int
    recall_at_10: float | None = None   # measured when the index was built (rows added later are not re-measured)
    build_seconds: float = 0.0
    gallery: str = ""                            # the manifest's id: a gallery made again in the folder is another
    segments: tuple[tuple[str, int], ...] = ()   # the gallery segments it covers, in order: (name, rows)


def _fill(index: faiss.Index, features: np.ndarray) -> None:
    for a in range(0, len(features), ADD_BLOCK):
        index.add(np.ascontiguousarray(features[a:a + ADD_BLOCK], dtype=np.float32))


def _approximate(kind: str, features: np.ndarray) -> faiss.Index:
    n, dim = features.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
    else:
        # sqrt(n) lists trained on 64 rows each: k-means over 4 sqrt(n) lists on a million 512-d rows takes many
        # minutes on a CPU; nprobe 64 of sqrt(n) lists still scans a few percent of the rows at a million.
        nlist = max(1, min(int(math.sqrt(n)), n // 39))  # FAISS wants >= 39 training rows per list
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        sample = features[np.sort(np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    _fill(index, features)
    return index


def _tune(index: faiss.Index, kind: str) -> None:
    if kind == "hnsw":
        index.hnsw.efSearch = 128
    elif kind == "ivf":
        index.nprobe = min(64, index.nlist)


class SearchIndex:
    """One index over every row of a gallery generation (deleted rows are masked at search time)."""

    def __init__(self, index: faiss.Index | ExactScan, info: IndexInfo) -> None:
        self.index, self.info = index, info

    @property
    def kind(self) -> str:
        return self.info.kind

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k], row positions [q, k]; -1 where fewer than k rows are allowed) for float32 queries."""
        if isinstance(self.index, ExactScan):
            return self.index.search(queries, k, allowed)
        q = check_queries(queries, self.index.d)
        k = max(1, min(k, self.index.ntotal))
        if allowed is None:
            return self.index.search(q, k)
        # The bitmap and the selector must outlive the search: FAISS keeps only pointers to them.
        bits = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        scores, ids = self.index.search(q, k, params=self._params(selector))
        del selector, bits
        return scores, ids

    def _params(self, selector: faiss.IDSelector) -> faiss.SearchParameters:
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.index.hnsw.efSearch)
        return faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)


def choose(kind: str, rows: int) -> str:
    if kind not in KINDS:
        raise GalleryError(f"--index {kind!r}: use one of {', '.join(KINDS)}")
    return ("exact" if rows < AUTO_EXACT_ROWS else "hnsw") if kind == "auto" else kind


def recall_at_10(index: SearchIndex, exact: SearchIndex, features: np.ndarray, samples: int = 200) -> float:
    """Share of exact search's top 10 that the index returns, for queries drawn from the gallery's own rows
    (with a little noise): the structure of real queries, which uniform random vectors do not have."""
    rng = np.random.default_rng(0)
    picks = rng.choice(len(features), size=min(samples, len(features)), replace=False)
    q = np.asarray(features[picks], dtype=np.float32) + rng.normal(0, 0.05, (len(picks), features.shape[1]))
    q = unit_rows(q)
    _, want = exact.search(q, 10)
    _, got = index.search(q, 10)
    return float(np.mean([len(set(w) & set(g)) / len(w) for w, g in zip(want, got)]))


def build(features: np.ndarray, kind: str, generation: int) -> SearchIndex:
    """An index of `kind` (exact, ivf, hnsw) over float16 [n, D] features."""
    start = time.perf_counter()
    if kind == "exact":
        return SearchIndex(ExactScan(features), IndexInfo("exact", generation, len(features), 1.0,
                                                          time.perf_counter() - start))
    index = _approximate(kind, features)
    _tune(index, kind)
    seconds = time.perf_counter() - start
    built = SearchIndex(index, IndexInfo(kind, generation, len(features), None, seconds))
    recall = recall_at_10(built, SearchIndex(ExactScan(features), IndexInfo("exact", generation, len(features))),
                          features)
    log.info("%s index over %d rows built in %.1f s: recall@10 %.3f against exact search", kind, len(features),
             seconds, recall)
    return SearchIndex(index, IndexInfo(kind, generation, len(features), recall, seconds))


def _covers(info: IndexInfo, manifest: Manifest) -> bool:
    """Whether a saved index holds exactly the rows of the first segments of this gallery, in order."""
    covered = info.segments
    return (bool(info.gallery) and info.gallery == manifest.id and 0 < len(covered) <= len(manifest.segments)
            and covered == tuple((seg.name, seg.rows) for seg in manifest.segments[:len(covered)])
            and info.rows == sum(rows for _, rows in covered))


def _saved(folder: Path, kind: str) -> tuple[faiss.Index, IndexInfo] | None:
    """The index `<kind>.json` names, or None (none saved, damaged, from another version: built again)."""
    meta = folder / f"{kind}.json"
    if not meta.is_file():
        return None
    try:
        raw = json.loads(meta.read_text(encoding="utf-8"))
        name = raw.pop("file")
        if not re.fullmatch(rf"{kind}-[0-9a-f]{{32}}\.faiss", name):
            raise ValueError(f"not an index file name: {name!r}")
        info = IndexInfo(**{**raw, "segments": tuple((str(n), int(r)) for n, r in raw["segments"])})
        index = faiss.read_index(str(folder / name))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as e:
        log.warning("%s: unreadable saved %s index (%s); building it again", folder, kind, e)
        return None
    return (index, info) if index.ntotal == info.rows else None


def _save(folder: Path, built: SearchIndex) -> str | None:
    """The index under a name of its own, then `<kind>.json` naming it: the description and the index it names
    always agree, whichever of two processes saving at once renames last. Index files no description names (a
    replaced one, a killed save's) are removed after. The file's name, or None when it could not be saved."""
    kind = built.kind
    name = f"{kind}-{uuid.uuid4().hex}.faiss"
    tmp = files.temp_name(folder / name)
    try:
        files.make_folder(folder)
        faiss.write_index(built.index, str(tmp))
        tmp.replace(folder / name)
        files.write_json(folder / f"{kind}.json", {**asdict(built.info), "file": name})
    except (OSError, RuntimeError) as e:  # a full or read-only disk: search goes on with the index in memory
        tmp.unlink(missing_ok=True)
        (folder / name).unlink(missing_ok=True)
        log.warning("%s: cannot save the %s index (%s); it will be built again next time", folder, kind, e)
        return None
    with contextlib.suppress(OSError, ValueError, KeyError):  # tidying: what fails is tried again next save
        files.clean_stale_temps(folder)
        _forget_files(folder, kind, keep=_described(folder, kind))
    return name


def _described(folder: Path, kind: str) -> str:
    return json.loads((folder / f"{kind}.json").read_text(encoding="utf-8"))["file"]


def load_or_build(gallery_folder: Path, features: np.ndarray, kind: str, manifest: Manifest) -> SearchIndex:
    """The saved approximate index of the gallery: reused as it is when it covers exactly these segments (rows
    deleted since are masked at search time), extended with the rows of segments appended since, else built
    anew (after a compaction, or for a gallery made again in the folder) and saved beside the gallery. Exact
    indexes are built in memory (a scan needs no structure worth saving)."""
    generation = manifest.generation
    if kind == "exact":
        return build(features, kind, generation)
    segments = tuple((seg.name, seg.rows) for seg in manifest.segments)
    folder = gallery_folder / INDEX_DIR
    saved = _saved(folder, kind)
    if saved is not None and _covers(saved[1], manifest) and manifest.rows == len(features):
        index, info = saved
        if info.rows < len(features):  # segments appended by enrolments: add their rows, keep the structure
            _fill(index, features[info.rows:])
            log.info("%s index: added %d rows of %d new segment(s)", kind, len(features) - info.rows,
                     len(segments) - len(info.segments))
        _tune(index, kind)
        extended = SearchIndex(index, replace(info, generation=generation, rows=len(features), segments=segments))
        if info.rows < len(features):  # a deletion alone changes nothing saved: rows are masked at search time
            _unsave_if_replaced(gallery_folder, extended.info, _save(folder, extended))
        return extended
    return _build_and_save(gallery_folder, features, kind, manifest)


def _build_and_save(gallery_folder: Path, features: np.ndarray, kind: str, manifest: Manifest) -> SearchIndex:
    segments = tuple((seg.name, seg.rows) for seg in manifest.segments)
    built = build(features, kind, manifest.generation)
    built = SearchIndex(built.index, replace(built.info, gallery=manifest.id, segments=segments))
    _unsave_if_replaced(gallery_folder, built.info, _save(gallery_folder / INDEX_DIR, built))
    return built


def _unsave_if_replaced(gallery_folder: Path, info: IndexInfo, name: str | None) -> None:
    """Remove an index just saved for segments the gallery no longer starts with: a reader still on the generation
    before an erasure must not leave the erased rows' vectors on disk (checked after the save: the erasure's own
    rebuild, which follows its commit, removes any file saved before this look)."""
    try:
        current = read_manifest(gallery_folder)
    except GalleryError:
        return
    if name is not None and not _covers(info, current):
        folder = gallery_folder / INDEX_DIR
        (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError, ValueError, KeyError):
            if _described(folder, info.kind) == name:
                (folder / f"{info.kind}.json").unlink(missing_ok=True)


def _forget_files(folder: Path, kind: str, keep: str | None) -> None:
    """Every saved `kind` index file but `keep`; with keep None, its description too."""
    for p in folder.glob(f"{kind}-*.faiss"):
        if p.name != keep:
            p.unlink(missing_ok=True)
    if keep is None:
        (folder / f"{kind}.json").unlink(missing_ok=True)


def rebuild_saved(gallery_folder: Path, features: np.ndarray, manifest: Manifest) -> list[str]:
    """Build every saved approximate index of the gallery anew from `features` (the current generation's), not
    filtered: rows erased from the gallery leave the index files too; an empty gallery's are removed. The kinds
    rebuilt; index files no description names are removed."""
    folder = gallery_folder / INDEX_DIR
    kinds = sorted(p.stem for p in folder.glob("*.json") if p.stem in KINDS) if folder.is_dir() else []
    for kind in kinds:
        if len(features):
            _build_and_save(gallery_folder, features, kind, manifest)
        else:
            _forget_files(folder, kind, keep=None)
    for p in folder.glob("*.faiss") if folder.is_dir() else ():  # a killed save's, or a kind without description
        kind = p.name.split("-")[0]
        if kind not in kinds or not (folder / f"{kind}.json").is_file():
            p.unlink(missing_ok=True)
    return kinds if len(features) else []
