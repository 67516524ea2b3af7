"""The vector-database backend: a gallery that outgrows one machine lives in Milvus behind the same Searcher.

    searcher = Searcher("gallery/", encoder, backend_factory=backend_factory("http://milvus:19530"))

`MilvusBackend(gallery, uri)` keeps one Milvus collection in step with the gallery (`sync`, run on creation,
so the Searcher's refresh() after a new generation syncs again) and answers `search` as the local backend does:
row positions in `gallery.rows`, conditions applied inside the Milvus search (its `filter=`), so a filtered
query returns k rows when k match. `uri` is a local path ending in .db (Milvus Lite, in-process, one process
per path) or a server / cluster address; the same code serves both through pymilvus.MilvusClient.

A collection row: `uid` (INT64 primary key, the gallery row's uid), `stamp` (INT64, a hash of the row's
content and encoder: a gallery made again in the same folder reuses uids), `vector` (FLOAT_VECTOR, the
float16 features as float32; a FLAT index, inner product: exact, like the local exact search), `identity`
(INT64, -1 unknown), `path` (VARCHAR), `meta` (JSON, the row's metadata as enrolled) and three JSON maps that let a
condition keep person.gallery.filters' meaning exactly (a number compares as a number only against numbers,
anything else as its text) with single-type comparisons, whatever a Milvus version does across types
(Milvus Lite 3.2.2 finds `true == 1`): `numbers` (field -> value, numbers only; bools are not numbers),
`texts` (field -> str(value) of every other value) and `number_texts` (field -> str(value) of the numbers,
identity included). A missing key never matches, as a row without the field never does in filters.mask.

What a collection was synced to (gallery folder, generation, manifest hash, its files' mtimes) is a collection
property, so a second sync of the same generation reads one property and does nothing; any other sync lists the
uids and stamps the collection holds and puts right what differs (so a sync killed midway is finished by the next).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from person.gallery import filters
from person.gallery.manifest import GalleryError
from person.gallery.segments import FEATURES, ROWS, SEGMENTS
from person.gallery.store import TOMBSTONES, Gallery

log = logging.getLogger(__name__)

FIELDS = ("uid", "stamp", "vector", "identity", "path", "meta", "numbers", "texts", "number_texts")
STATE = "person.gallery.sync"     # collection property: what the collection was synced to
MAX_TOPK = 16384                  # Milvus refuses a larger limit (and offset + limit)
MAX_PATH = 65535                  # Milvus's VARCHAR limit, in bytes
BATCH_BYTES = 8 << 20             # per upsert message: far below gRPC's and Milvus's request limits
QUERY_BATCH = 1024                # queries per search request
MISSING = np.finfo(np.float32).min  # the score of an empty slot, as FAISS gives it
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_INT64 = 2 ** 63


@dataclass(frozen=True)
class SyncReport:
    """What one sync did."""

    generation: int
    inserted: int = 0       # rows the collection lacked
    deleted: int = 0        # rows deleted or gone from the gallery
    replaced: int = 0       # rows it held with other content (a gallery made again in the same folder)
    skipped: bool = False   # the collection already held this generation


# ---------------------------------------------------------------------- conditions -> Milvus expressions

def quote(text: str) -> str:
    """A Milvus string literal holding `text` exactly: every quote and backslash escaped, so a value can
    never end the literal early and add to the expression (Milvus Lite knows only \\" \\' \\\\ \\n \\r \\t)."""
    return '"' + (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
                  .replace("\t", "\\t")) + '"'


def _number(value: int | float, where: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise GalleryError(f"--where {where}: {value} is not a finite number; compare with a finite one")
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        value = float(value)  # filters.mask compares as float64; a Milvus INT64 literal would overflow
    return repr(value)


def _condition(c: filters.Condition) -> str:
    if not isinstance(c.field, str) or not _FIELD.match(c.field):
        raise GalleryError(f"--where {c.text()!r}: a field name is letters, digits, _ . - (e.g. camera)")
    if c.op not in ("=", "!=", ">", ">=", "<", "<="):
        raise GalleryError(f"--where {c.text()!r}: expected one of = != > >= < <=")
    op = "==" if c.op == "=" else c.op
    numeric = isinstance(c.value, (int, float)) and not isinstance(c.value, bool)
    if not numeric and not isinstance(c.value, str):
        raise GalleryError(f"--where {c.text()!r}: the value must be a number or text")
    key = quote(c.field)
    if numeric:
        text, number = quote(str(c.value)), _number(c.value, c.text())
    else:
        text = quote(c.value)
    if c.field == "identity":  # an INT64 column, -1 where unknown: a number, or absent
        return f"(identity >= 0 and identity {op} {number})" if numeric else f"number_texts[{key}] {op} {text}"
    if c.field == "path":      # always text
        return (f"path {op} {text}" if op in ("==", "!=") else "false") if numeric else f"path {op} {text}"
    if not numeric:
        return f"(texts[{key}] {op} {text} or number_texts[{key}] {op} {text})"
    if op in ("==", "!="):     # a number may be stored as text ("3"): filters.mask compares that as text
        return f"(numbers[{key}] {op} {number} or texts[{key}] {op} {text})"
    return f"numbers[{key}] {op} {number}"


def expression(conditions: list[filters.Condition]) -> str:
    """The Milvus boolean filter for `conditions` (all must hold); "" for none."""
    if len(conditions) > filters.MAX_CONDITIONS:
        raise GalleryError(f"{len(conditions)} --where conditions: at most {filters.MAX_CONDITIONS}")
    return " and ".join(f"({_condition(c)})" for c in conditions)


# ---------------------------------------------------------------------- rows -> entities

def _plain(value: Any) -> Any:
    """A JSON value Milvus stores: integers beyond int64 as floats (rows hold finite float64 numbers only,
    person.data.detections.loads_standard)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _stamp(gallery: Gallery, i: int, encoder: dict[str, Any]) -> int:
    """A 64-bit hash of row i's content (file, box, size, mtime, identity, metadata) and encoder: what tells a
    row the collection holds from another row that reuses its uid."""
    record = gallery.rows.record(i)
    del record["uid"]
    record.pop("enrolled_ns", None)  # not content: a row enrolled before it was recorded is the same row
    text = json.dumps([record, encoder], sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def _entity(gallery: Gallery, i: int, vector: np.ndarray, stamp: int) -> dict[str, Any]:
    """Row i of the gallery as a collection row (see the module docstring for the three maps)."""
    rows = gallery.rows
    numbers: dict[str, Any] = {}
    texts: dict[str, str] = {}
    number_texts: dict[str, str] = {}
    for field, value in rows.meta[i].items():
        if field in ("identity", "path") or value is None:  # filters read these two from the row's columns
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers[field] = float(value) if isinstance(value, int) and not -_INT64 <= value < _INT64 else value
            number_texts[field] = str(value)
        else:
            texts[field] = str(value)
    identity = int(rows.identity[i])
    if identity >= 0:
        number_texts["identity"] = str(identity)
    return {"uid": int(rows.uid[i]), "stamp": stamp, "vector": vector.tolist(), "identity": identity,
            "path": rows.path[i], "meta": _plain(rows.meta[i]), "numbers": numbers, "texts": texts,
            "number_texts": number_texts}


def default_collection(gallery: Gallery) -> str:
    """A collection name of the gallery's own (Milvus names: letters, digits, underscores)."""
    return "person_gallery_" + hashlib.sha256(str(gallery.folder.resolve()).encode()).hexdigest()[:16]


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _fingerprint(gallery: Gallery) -> dict[str, Any]:
    """What the gallery is at this generation; the files' mtimes tell a gallery made again in the same folder
    (the same manifest, other rows) from the one synced before."""
    m = gallery.manifest
    files = [gallery.folder / SEGMENTS / s.name / name for s in m.segments for name in (FEATURES, ROWS)]
    files += [gallery.folder / TOMBSTONES / m.tombstones] if m.tombstones else []
    manifest = json.dumps(m.to_dict(), sort_keys=True).encode()
    return {"folder": str(gallery.folder.resolve()), "id": m.id, "generation": gallery.generation,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "mtimes": [_mtime(f) for f in files]}


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "message", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------------- the backend

class MilvusBackend:
    """Search a gallery's rows in a Milvus collection (the `Backend` of person.gallery.search), synced on
    creation. `collection` defaults to a name derived from the gallery's folder."""

    def __init__(self, gallery: Gallery, uri: str, collection: str | None = None, token: str | None = None, *,
                 timeout: float = 10.0, client=None) -> None:
        self.gallery, self.uri = gallery, str(uri)
        self.collection = collection or default_collection(gallery)
        self.client = client if client is not None else connect(self.uri, token, timeout)
        self._open()
        self.last_sync = self.sync(gallery)

    def _where(self) -> str:
        return f"Milvus at {self.uri}, collection {self.collection}"

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        from pymilvus.exceptions import MilvusException
        try:
            return fn(*args, **kwargs)
        except MilvusException as e:
            raise GalleryError(f"{self._where()}: {what} failed ({_first_line(e)}); check that the server is up and "
                               f"has room, or give another collection name") from None

    def _open(self) -> None:
        """Create the collection (FLAT, inner product) or check the existing one; load it for search."""
        from pymilvus import DataType, MilvusClient
        c = self.client
        if not self._call("has_collection", c.has_collection, self.collection):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("uid", DataType.INT64, is_primary=True)
            schema.add_field("stamp", DataType.INT64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.gallery.dim)
            schema.add_field("identity", DataType.INT64)
            schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
            for name in ("meta", "numbers", "texts", "number_texts"):
                schema.add_field(name, DataType.JSON)
            index = c.prepare_index_params()
            # FLAT: exact. The default (HNSW) is built in the background after a flush: results would drift.
            index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
            self._call("create_collection", c.create_collection, self.collection, schema=schema,
                       index_params=index, consistency_level="Strong")
        else:
            self._check_schema()
        self._call("load_collection", c.load_collection, self.collection)  # a reopened collection starts unloaded

    def _check_schema(self) -> None:
        described = self._call("describe_collection", self.client.describe_collection, self.collection)
        fields = {f["name"]: f for f in described.get("fields", [])}
        missing = [f for f in FIELDS if f not in fields]
        if missing:
            raise GalleryError(f"{self._where()}: not a person gallery collection (no {', '.join(missing)}); give "
                               f"another collection name or drop it")
        dim = int(fields["vector"].get("params", {}).get("dim", -1))
        if dim != self.gallery.dim:
            raise GalleryError(f"{self._where()}: holds vectors of dimension {dim}, the gallery {self.gallery.folder} "
                               f"has {self.gallery.dim}; give another collection name or drop this one")
        index = self._call("describe_index", self.client.describe_index, self.collection, "vector") or {}
        if index.get("metric_type") not in (None, "IP"):
            raise GalleryError(f"{self._where()}: indexed with metric {index.get('metric_type')}, search needs IP "
                               f"(inner product); give another collection name or drop this one")

    # ------------------------------------------------------------------ sync
    def _state(self) -> dict[str, Any] | None:
        described = self._call("describe_collection", self.client.describe_collection, self.collection)
        raw = (described.get("properties") or {}).get(STATE)
        try:
            state = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return None
        return state if isinstance(state, dict) else None

    def held(self, below: int) -> tuple[np.ndarray, np.ndarray]:
        """(uids, stamps) of the rows the collection holds with uid < `below`, read in uid windows: a plain
        query (Milvus Lite's query_iterator logs a server-side traceback each time, as it lacks AllocTimestamp)
        whose limit (at most MAX_TOPK) always covers its window."""
        uids, stamps = [], []
        for lo in range(0, below, MAX_TOPK):
            got = self._call("query", self.client.query, self.collection,
                             filter=f"uid >= {lo} and uid < {lo + MAX_TOPK}", output_fields=["uid", "stamp"],
                             limit=MAX_TOPK, consistency_level="Strong")
            uids += [int(r["uid"]) for r in got]
            stamps += [int(r["stamp"]) for r in got]
        return np.array(uids, np.int64), np.array(stamps, np.int64)

    def sync(self, gallery: Gallery) -> SyncReport:
        """Bring the collection to `gallery`'s generation: insert the live rows it lacks (or holds with other
        content: a gallery made again in the same folder reuses uids), delete the rows deleted or gone from the
        gallery, record the generation; nothing when it already holds it."""
        state, mine = self._state(), _fingerprint(gallery)
        if state is not None and state.get("folder") != mine["folder"]:
            raise GalleryError(f"{self._where()}: holds the gallery {state.get('folder')}, not {mine['folder']}; "
                               f"give another collection name")
        self.gallery = gallery
        if state == mine or (state is not None and state.get("id") == mine["id"]
                             and state.get("generation", -1) > gallery.generation):
            # a reader still on an older generation: syncing back would put erased rows in again
            return SyncReport(gallery.generation, skipped=True)
        encoder = {k: v for k, v in gallery.manifest.encoder.items() if k != "name"}  # a moved export is the same
        live = np.flatnonzero(gallery.live)
        stamps = np.array([_stamp(gallery, int(i), encoder) for i in live], np.int64)
        have, have_stamps = self.held(gallery.manifest.next_uid)
        holding = dict(zip(have.tolist(), have_stamps.tolist()))
        old = [holding.get(int(u)) for u in gallery.rows.uid[live]]
        add = np.array([j for j, h in enumerate(old) if h is None], np.int64)
        replace = np.array([j for j, (h, s) in enumerate(zip(old, stamps)) if h is not None and h != s], np.int64)
        drop = np.setdiff1d(have, gallery.rows.uid[live])
        dropped = len(drop)
        for a in range(0, len(drop), MAX_TOPK):
            self._call("delete", self.client.delete, self.collection, ids=drop[a:a + MAX_TOPK].tolist())
        last: list[int] = []
        while True:  # uids beyond the gallery's counter: rows of a bigger gallery once made in this folder
            beyond = sorted(int(r["uid"]) for r in self._call(
                "query", self.client.query, self.collection, filter=f"uid >= {gallery.manifest.next_uid}",
                output_fields=["uid"], limit=MAX_TOPK, consistency_level="Strong"))
            if not beyond:
                break
            if beyond == last:
                raise GalleryError(f"{self._where()}: deleted rows (uid {beyond[0]}...) are still there; the server "
                                   f"must give strong consistency: check its configuration")
            self._call("delete", self.client.delete, self.collection, ids=beyond)
            dropped, last = dropped + len(beyond), beyond
        features = gallery.features()
        batch = max(1, BATCH_BYTES // (4 * gallery.dim + 1024))
        todo = np.sort(np.concatenate([add, replace]))
        for a in range(0, len(todo), batch):
            part = todo[a:a + batch]
            vectors = np.asarray(features[live[part]], dtype=np.float32)
            # upsert, not insert: it replaces a stale row, and a sync racing another one cannot duplicate a uid
            self._call("upsert", self.client.upsert, self.collection,
                       [_entity(gallery, int(i), v, int(s)) for i, v, s in zip(live[part], vectors, stamps[part])])
        self._call("record the synced generation", self.client.alter_collection_properties, self.collection,
                   properties={STATE: json.dumps(mine, sort_keys=True)})
        log.info("%s: synced to generation %d: %d rows inserted, %d replaced, %d deleted", self._where(),
                 gallery.generation, len(add), len(replace), dropped)
        return SyncReport(gallery.generation, len(add), dropped, len(replace))

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, conditions: list[filters.Condition]
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k] float32, row positions in gallery.rows [q, k] int64, -1 where fewer rows match)."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.gallery.dim:
            raise GalleryError(f"{self._where()}: queries of shape {q.shape}, the gallery holds vectors of "
                               f"dimension {self.gallery.dim}; embed them with the gallery's model")
        if k > MAX_TOPK:
            log.warning("%s: k=%d clamped to %d, the most Milvus returns", self._where(), k, MAX_TOPK)
        limit = max(1, min(int(k), MAX_TOPK))
        where = expression(conditions)
        scores = np.full((len(q), limit), MISSING, np.float32)
        positions = np.full((len(q), limit), -1, np.int64)
        gallery, unknown = self.gallery, 0
        for a in range(0, len(q), QUERY_BATCH):
            found = self._call("search", self.client.search, self.collection, data=q[a:a + QUERY_BATCH].tolist(),
                               anns_field="vector", limit=limit, filter=where, output_fields=["uid"],
                               search_params={"metric_type": "IP"}, consistency_level="Strong")
            for j, hits in enumerate(found):
                n = 0
                for hit in hits:
                    try:
                        positions[a + j, n] = gallery.position(int(hit.id))
                    except KeyError:  # a row of another generation (a sync racing this one): never shown
                        unknown += 1
                        continue
                    scores[a + j, n] = hit.distance
                    n += 1
        if unknown:
            log.warning("%s: %d hit(s) not live in generation %d skipped; the collection is being synced",
                        self._where(), unknown, gallery.generation)
        return scores, positions

    def close(self) -> None:
        """Release the client (one a backend_factory made is shared by every backend it made)."""
        self.client.close()


def connect(uri: str, token: str | None = None, timeout: float = 10.0):
    """A pymilvus.MilvusClient for `uri` (a path ending in .db: Milvus Lite), or a one-line GalleryError."""
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError:
        raise GalleryError("the Milvus backend needs pymilvus (and milvus-lite for a .db path): pip install -r "
                           "requirements.txt") from None
    try:
        return MilvusClient(uri=str(uri), token=token or "", timeout=timeout)
    except MilvusException as e:
        lite = str(uri).endswith(".db")
        fix = ("its folder must exist and no other process may hold it (one process per Milvus Lite file; serve "
               "several from a Milvus server)") if lite else "start the server or fix the address (http://host:19530)"
        raise GalleryError(f"Milvus at {uri}: cannot connect ({_first_line(e)}); {fix}") from None


def erase(gallery: Gallery, uri: str, collection: str | None = None, token: str | None = None,
          timeout: float = 10.0) -> int | None:
    """After an erasure: delete from the gallery's collection the rows `gallery` (the generation the erasure
    committed) no longer holds, then ask Milvus to compact, which drops deleted rows from its files (Milvus Lite
    may not: its deletes stay marks until it compacts on its own). The rows deleted; None when the collection does
    not exist (nothing to erase there: none is made)."""
    from pymilvus.exceptions import MilvusException
    client = connect(uri, token, timeout)
    name = collection or default_collection(gallery)
    try:
        if not client.has_collection(name):
            return None
        deleted = MilvusBackend(gallery, uri, name, token, timeout=timeout, client=client).last_sync.deleted
        try:
            client.compact(name)
        except MilvusException as e:
            log.info("Milvus at %s: compaction of %s not run (%s)", uri, name, _first_line(e))
        return deleted
    except MilvusException as e:
        raise GalleryError(f"Milvus at {uri}, collection {name}: {_first_line(e)}; the gallery's files are erased; a "
                           f"search or server with --milvus deletes the rows from the collection once Milvus answers") \
            from None
    finally:
        client.close()


def backend_factory(uri: str, collection: str | None = None, token: str | None = None, timeout: float = 10.0
                    ) -> Callable[[Gallery], MilvusBackend]:
    """For Searcher(..., backend_factory=...): a MilvusBackend per gallery generation, synced as it is made,
    all sharing one client."""
    client = None

    def make(gallery: Gallery) -> MilvusBackend:
        nonlocal client
        if client is None:
            client = connect(uri, token, timeout)
        return MilvusBackend(gallery, uri, collection, token, timeout=timeout, client=client)

    return make
