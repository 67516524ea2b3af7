"""The Milvus backend on Milvus Lite files: the same top-k as the local exact search (with and without
conditions, through the Searcher with group_by), conditions meaning what filters.mask means, syncing after
deletes and compaction, quoted values that cannot inject, reopening in another process, and one-line errors."""
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from person.gallery import filters, milvus, store
from person.gallery.manifest import GalleryError
from person.gallery.milvus import MilvusBackend, backend_factory, expression, quote
from person.gallery.search import LocalBackend, Searcher

ROOT = Path(__file__).resolve().parents[2]
DIM, ROWS = 32, 2000
SPACE = {"kind": "siglip", "teacher": "made-up", "config_hash": "0" * 64, "dim": DIM}
ODD = ['x" or true or "', "back\\slash", "it's", "tab\there", "line\nbreak", "日本 😀", "\\\"", "end\\"]


def clustered(rng, n, dim=DIM, centres=40):
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def metadata(i):
    """Detections-like fields, with the awkward cases filters.mask has rules for."""
    meta = {"camera": 1 + i % 4, "time": f"2026-11-01T10:{i % 60:02d}:00", "track": i // 3}
    if i % 50 == 7:
        meta["camera"] = str(meta["camera"])      # a number stored as text
    if i % 97 == 0:
        del meta["camera"]                        # a row without the field
    if i % 13 == 0:
        meta["flag"] = bool(i % 2)                # a bool is no number
    if i % 11 == 0:
        meta["score"] = 0.5 + (i % 7) / 10        # floats
    if i < len(ODD):
        meta["name"] = ODD[i]                     # values that would break a naively quoted expression
    return meta


def make_gallery(folder, rng, n=ROWS, dim=DIM, parts=2, mtime=0):
    store.create(folder, {"kind": "made-up"}, {**SPACE, "dim": dim}, dim, folder.parent)
    feats = clustered(rng, n, dim)
    for part in np.array_split(np.arange(n), parts):
        rows = store.Rows(np.zeros(len(part), np.int64), [f"cam/{i:05d}.jpg" for i in part],
                          np.full((len(part), 4), np.nan, np.float32),
                          np.array([-1 if i % 9 == 0 else i % 25 for i in part]), np.zeros(len(part), np.int64),
                          np.full(len(part), mtime, np.int64), [metadata(int(i)) for i in part])
        store.append(folder, feats[part], rows)
    return store.Gallery.open(folder)


def queries(gallery, rng, n=16):
    picks = rng.choice(len(gallery.rows), n, replace=False)
    q = gallery.features()[picks].astype(np.float32) + rng.normal(0, 0.1, (n, gallery.dim))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One gallery, its local exact backend and its Milvus backend (one Milvus Lite file for the module)."""
    tmp = tmp_path_factory.mktemp("milvus")
    gallery = make_gallery(tmp / "g", np.random.default_rng(0))
    milvus = MilvusBackend(gallery, str(tmp / "milvus.db"))
    return SimpleNamespace(tmp=tmp, gallery=gallery, milvus=milvus, local=LocalBackend(gallery, "exact"),
                           q=queries(gallery, np.random.default_rng(1)))


def assert_same(milvus, local, q, k, conditions=()):
    ms, mp = milvus.search(q, k, list(conditions))
    ls, lp = local.search(q, k, list(conditions))
    np.testing.assert_array_equal(mp, lp)
    np.testing.assert_allclose(ms[mp >= 0], ls[lp >= 0], atol=1e-5)
    return mp


def test_flat_search_returns_the_local_exact_top_k(shared):
    assert shared.milvus.last_sync.inserted == ROWS and not shared.milvus.last_sync.skipped
    index = shared.milvus.client.describe_index(shared.milvus.collection, "vector")
    assert (index["index_type"], index["metric_type"]) == ("FLAT", "IP")  # exact, not a background-built HNSW
    positions = assert_same(shared.milvus, shared.local, shared.q, 10)
    assert positions.shape == (16, 10) and (positions >= 0).all()


CONDITIONS = [
    ["camera=2"], ["camera!=2"], ["camera=3"], ["camera>=3"], ["camera<2.5"], ["time>=2026-11-01T10:50:00"],
    ["time<2026-11-01T10:05:00", "camera!=1"], ["identity=5"], ["identity!=5"], ["identity>20"], ["identity<1a"],
    ["path=cam/00007.jpg"], ["path>=cam/01990.jpg"], ["path=3"], ["path!=3"], ["path>3"], ["flag=True"], ["flag!=1"],
    ["flag=1"], ["score>0.9"], ["score=0.7"], ["track=abc"], ["track>=660"], ["camera<abc"], ["camera=4", "track<100"],
]


@pytest.mark.parametrize("where", CONDITIONS, ids=["&".join(w) for w in CONDITIONS])
def test_conditions_select_the_rows_filters_mask_selects(shared, where):
    conditions = [filters.parse(w) for w in where]
    want = np.flatnonzero(shared.gallery.live & filters.mask(shared.gallery.rows, conditions))
    _, got = shared.milvus.search(shared.q[:1], ROWS, conditions)  # every matching row, inside the Milvus search
    assert sorted(got[0][got[0] >= 0]) == sorted(want), expression(conditions)
    if len(want) >= 10:  # and the filtered top 10 is the local one, 10 rows long
        assert (assert_same(shared.milvus, shared.local, shared.q, 10, conditions) >= 0).all()


def test_searcher_with_the_milvus_backend_answers_as_the_local_one(shared):
    encoder = SimpleNamespace(space=SPACE, has_text=True)
    local = Searcher(shared.gallery.folder, encoder, index="exact")
    milvus = Searcher(shared.gallery.folder, encoder, backend_factory=backend_factory(str(shared.tmp / "milvus.db")))
    assert milvus.backend.last_sync.skipped  # the module's backend synced this generation already
    labels = [f"q{i}" for i in range(4)]
    for kwargs in ({"k": 10}, {"k": 5, "where": ["camera=2"], "group_by": "track"}, {"k": 7, "group_by": "identity"},
                   {"k": 3, "where": ["time>=2026-11-01T10:30:00", "identity!=3"], "group_by": "camera"}):
        want = local.search_vectors(shared.q[:4], labels, **kwargs)
        got = milvus.search_vectors(shared.q[:4], labels, **kwargs)
        for w, g in zip(want, got):
            assert [h.uid for h in g.hits] == [h.uid for h in w.hits] and len(g.hits) == kwargs["k"]
            np.testing.assert_allclose([h.score for h in g.hits], [h.score for h in w.hits], atol=1e-5)


def test_quoted_values_match_themselves_and_cannot_inject(shared):
    assert quote('x" or true or "') == r'"x\" or true or \""'
    injected = filters.parse('name=x" or true or "')
    assert injected.value == 'x" or true or "'
    _, got = shared.milvus.search(shared.q[:1], 100, [filters.Condition("name", "=", 'y" or true or "')])
    assert (got < 0).all()  # matches nothing, not everything
    for i, value in enumerate(ODD):  # each odd value finds exactly its own row
        _, got = shared.milvus.search(shared.q[:1], 100, [filters.Condition("name", "=", value)])
        assert list(got[0][got[0] >= 0]) == [shared.gallery.position(i)], repr(value)
    _, got = shared.milvus.search(shared.q[:1], 100, [filters.Condition("path", "=", '" or path != "')])
    assert (got < 0).all()
    with pytest.raises(GalleryError, match="a field name is letters, digits"):
        expression([filters.Condition('name"] == 1 or meta["x', "=", 1)])
    with pytest.raises(GalleryError, match="not a finite number"):
        expression([filters.parse("camera=NaN")])


def test_deletes_appends_and_compaction_sync_and_a_second_sync_does_nothing(tmp_path):
    rng = np.random.default_rng(2)
    gallery = make_gallery(tmp_path / "g", rng, n=400, parts=1)
    uri = str(tmp_path / "m.db")
    searcher = Searcher(tmp_path / "g", SimpleNamespace(space=SPACE, has_text=True),
                        backend_factory=backend_factory(uri))
    assert searcher.backend.last_sync.inserted == 400
    gone = np.arange(0, 400, 7)
    store.delete(tmp_path / "g", gone)
    assert searcher.refresh()
    assert (searcher.backend.last_sync.inserted, searcher.backend.last_sync.deleted) == (0, len(gone))
    again = MilvusBackend(searcher.gallery, uri)
    assert again.last_sync.skipped and again.sync(searcher.gallery).skipped
    vectors = gallery.features()[gone].astype(np.float32)  # the deleted rows' own vectors as queries
    for result in searcher.search_vectors(vectors, [str(u) for u in gone], k=20):
        assert not {h.uid for h in result.hits} & set(gone.tolist()) and len(result.hits) == 20
    assert_same(searcher.backend, LocalBackend(searcher.gallery, "exact"), vectors, 10)

    # deleted, then compacted away before any sync saw the tombstone; and new rows appended
    store.delete(tmp_path / "g", np.array([1, 2, 3]))
    store.compact(tmp_path / "g")
    new = clustered(rng, 50)
    store.append(tmp_path / "g", new, store.Rows(np.zeros(50, np.int64), [f"new/{i}.jpg" for i in range(50)],
                                                 np.full((50, 4), np.nan, np.float32), np.full(50, -1),
                                                 np.zeros(50, np.int64), np.zeros(50, np.int64), [{}] * 50))
    assert searcher.refresh()
    assert (searcher.backend.last_sync.inserted, searcher.backend.last_sync.deleted) == (50, 3)
    live = searcher.gallery.rows.uid[searcher.gallery.live]
    assert sorted(searcher.backend.held(10 ** 6)[0]) == sorted(live)
    assert_same(searcher.backend, LocalBackend(searcher.gallery, "exact"), new[:8].astype(np.float32), 10)


def test_a_gallery_made_again_in_the_same_folder_replaces_the_rows_it_reuses_the_uids_of(tmp_path, monkeypatch):
    monkeypatch.setattr(milvus, "MAX_TOPK", 50)  # uid windows of 50: 250..299 lie beyond the last one
    uri = str(tmp_path / "m.db")
    MilvusBackend(make_gallery(tmp_path / "g", np.random.default_rng(7), n=300, parts=1), uri)
    shutil.rmtree(tmp_path / "g")  # the same manifest (paths, counts, generation); other files, other features
    again = make_gallery(tmp_path / "g", np.random.default_rng(8), n=300, parts=1, mtime=1)
    assert MilvusBackend(again, uri).last_sync.replaced == 300
    shutil.rmtree(tmp_path / "g")  # and a smaller one
    smaller = make_gallery(tmp_path / "g", np.random.default_rng(9), n=250, parts=1, mtime=2)
    backend = MilvusBackend(smaller, uri)
    assert (backend.last_sync.inserted, backend.last_sync.replaced, backend.last_sync.deleted) == (0, 250, 50)
    assert sorted(backend.held(10 ** 4)[0]) == list(range(250))
    assert_same(backend, LocalBackend(smaller, "exact"), queries(smaller, np.random.default_rng(10)), 10)


REOPEN = """
import sys
import numpy as np
from person.gallery import store
from person.gallery.milvus import MilvusBackend
b = MilvusBackend(store.Gallery.open(sys.argv[1]), sys.argv[2], "made_elsewhere")
assert b.last_sync.inserted == 300, b.last_sync
"""


def test_a_collection_made_by_another_process_is_loaded_and_not_synced_again(tmp_path):
    gallery = make_gallery(tmp_path / "g", np.random.default_rng(3), n=300, parts=1)
    uri = str(tmp_path / "m.db")
    done = subprocess.run([sys.executable, "-c", REOPEN, str(tmp_path / "g"), uri], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    reopened = MilvusBackend(gallery, uri, "made_elsewhere")  # unloaded after the reopen: search needs a load
    assert reopened.last_sync.skipped
    assert_same(reopened, LocalBackend(gallery, "exact"), queries(gallery, np.random.default_rng(4)), 10)


def test_bad_uris_and_collections_are_one_line_errors(shared, tmp_path):
    for uri, message in (("http://127.0.0.1:1", "start the server or fix the address"),
                         (str(tmp_path / "no" / "such" / "m.db"), "its folder must exist"),
                         ("ftp://somewhere", "start the server or fix the address")):
        with pytest.raises(GalleryError, match="Milvus at .*: cannot connect") as e:
            MilvusBackend(shared.gallery, uri)
        assert uri in str(e.value) and message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(GalleryError, match=r"queries of shape \(2, 16\), the gallery holds vectors of dimension 32"):
        shared.milvus.search(np.zeros((2, 16), np.float32), 5, [])
    uri = str(shared.tmp / "milvus.db")
    other = make_gallery(tmp_path / "other", np.random.default_rng(5), n=20, dim=16, parts=1)
    with pytest.raises(GalleryError, match=r"collection .*: holds vectors of dimension 32, the gallery .*other has 16; "
                                           r"give another collection name"):
        MilvusBackend(other, uri, shared.milvus.collection)
    same_dim = make_gallery(tmp_path / "copy", np.random.default_rng(6), n=20, parts=1)
    with pytest.raises(GalleryError, match=r"holds the gallery .*/g, not .*/copy; give another collection name"):
        MilvusBackend(same_dim, uri, shared.milvus.collection)
