"""The two-pass exact scan (person.gallery.exact_scan) against brute force: the same rows in the same order and the
same scores, on embedding-like vectors, on rows the int8 pass cannot tell apart, under every kind of row mask, for
batches, and on a gallery's own files; masks of a few rows or a few runs read nothing else; odd shapes and bad
input."""
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from person.vectors import clustered
from person.gallery import exact_scan, filters, store
from person.gallery import index as gindex
from person.gallery.exact_scan import ExactScan
from person.gallery.manifest import GalleryError
from person.gallery.search import LocalBackend
from person.vectors import unit_rows


def brute_force(features, queries, k, allowed=None):
    """Every allowed row's float16 values as float32 times the query, summed by numpy row by row; best first, ties
    by position; padded with -inf / -1 to min(k, rows) (at least 1)."""
    rows = np.arange(len(features)) if allowed is None else np.flatnonzero(allowed)
    width = max(1, min(k, len(features)))
    scores, positions = np.full((len(queries), width), -np.inf, np.float32), np.full((len(queries), width), -1)
    x = np.asarray(features, np.float32)[rows]
    for i, q in enumerate(np.asarray(queries, np.float32)):
        s = (x * q).sum(axis=1)
        best = np.lexsort((rows, -s))[:width]
        scores[i, :len(best)], positions[i, :len(best)] = s[best], rows[best]
    return scores, positions


def assert_exact(scan, features, queries, k, allowed=None):
    scores, positions = scan.search(queries, k, allowed)
    want_scores, want_positions = brute_force(features, queries, k, allowed)
    np.testing.assert_array_equal(positions, want_positions)
    np.testing.assert_array_equal(scores, want_scores)  # the same float32 sums, bit for bit
    found = positions >= 0  # and those are the float64 inner products, to float32 rounding
    in_float64 = np.einsum("qkd,qd->qk", np.asarray(features, np.float64)[positions], queries.astype(np.float64))
    np.testing.assert_allclose(scores[found], in_float64[found], rtol=0, atol=1e-5)
    return scores, positions


@pytest.fixture(scope="module")
def embeddings():
    return clustered(20_000, 512, 24, seed=3)


@pytest.fixture(scope="module")
def scan(embeddings):
    return ExactScan(embeddings[0])


def near_duplicates(seed=0, dim=64, bases=40, copies=30):
    """Rows int8 cannot separate: each base row repeated exactly and with a few of its float16 values moved by
    one or two float16 steps (far below the int8 step), shuffled; queries near the bases."""
    rng = np.random.default_rng(seed)
    base = unit_rows(rng.standard_normal((bases, dim))).astype(np.float16)
    rows = np.repeat(base, copies, axis=0)
    moved = rng.random(len(rows)) < 0.5
    for r in np.flatnonzero(moved):
        cols = rng.choice(dim, 3, replace=False)
        steps = rng.choice([-2, -1, 1, 2], 3).astype(np.float16)
        rows[r, cols] = rows[r, cols] + steps * np.spacing(np.abs(rows[r, cols]))
    rows = rows[rng.permutation(len(rows))]
    queries = unit_rows(base[rng.integers(0, bases, 6)].astype(np.float32) + 0.01 * rng.standard_normal((6, dim)))
    return rows, queries


def rows_at_the_bound(n=6000, dim=64, seed=0):
    """Rows whose int8 error is as large as the bound allows, half of them up and half down, and the query that
    meets it: a sign vector s; each row is g (c + 0.48 s) or g (c - 0.48 s) for random integers c, so the row
    error is ||0.48 g s|| for every row and the query's int8 codes, +-127, are exact."""
    rng = np.random.default_rng(seed)
    g, sign = 2.0**-9, rng.choice([-1.0, 1.0], dim)
    codes = rng.integers(-20, 21, (n, dim))
    rows = (g * (codes + 0.48 * rng.choice([-1.0, 1.0], (n, 1)) * sign)).astype(np.float16)
    rows[0, 0] = np.float16(127 * g)  # sets the global scale to g
    return rows, (sign / np.sqrt(dim)).astype(np.float32)[None]


def int8_errors(scan, features, queries):
    """Per query: the largest gap between a row's exact score and its int8 one, and the bound on it."""
    codes, step, delta = scan.quantize(queries)
    approx = step[:, None] * torch._int_mm(codes, scan.codes.T).numpy()
    exact = np.stack([(np.asarray(features, np.float32) * q).sum(axis=1) for q in queries])
    return np.abs(exact - approx).max(axis=1), delta


def test_the_bound_holds_and_rows_can_reach_it(embeddings, scan):
    worst, delta = int8_errors(scan, embeddings[0], embeddings[1])
    assert (worst <= delta).all()
    for seed in range(3):
        rows, query = rows_at_the_bound(seed=seed)
        at_bound = ExactScan(rows)
        assert at_bound.scale == 2.0**-9
        worst, delta = int8_errors(at_bound, rows, query)
        assert 0.95 * delta[0] < worst[0] <= delta[0]  # the int8 scores are off by all the bound allows
        with mock.patch.object(exact_scan, "FIRST", 1):  # T from one row: the bound alone decides what is scored
            for k in (1, 10, 100):
                assert_exact(at_bound, rows, query, k)


def test_a_row_far_down_the_int8_order_is_found_when_the_bound_allows_it():
    """50 rows whose int8 scores are 1000 (in units of the query's step) but which score 1000 - 0.48 D, and one
    whose int8 score is 940 but which scores 940 + 0.48 D (D = 64: 969.3 against 970.7): the best row, 51st in
    the int8 order, only the bound's full width lets into the second pass."""
    dim, g = 64, 2.0**-9
    sign = np.random.default_rng(0).choice([-1.0, 1.0], dim)

    def row(dot, residual):  # integer codes c with <sign, c> = dot, plus residual * sign
        c = np.full(dim, dot // dim) + (np.arange(dim) < dot % dim)
        return g * (c + residual) * sign

    filler = g * (np.random.default_rng(1).integers(-3, 4, (2000, dim)) + 0.48 * sign)
    rows = np.vstack([[row(1000, -0.48)] * 50, filler, [row(940, 0.48)]]).astype(np.float16)
    rows[60, 0] = np.float16(127 * g)  # sets the global scale to g
    query = (sign / np.sqrt(dim)).astype(np.float32)[None]
    for k in (1, 10):
        _, positions = assert_exact(ExactScan(rows), rows, query, k)
        assert positions[0, 0] == len(rows) - 1


def test_the_build_s_scale_codes_and_maxima(embeddings, scan):
    x = embeddings[0].astype(np.float64)
    codes = scan.codes.numpy()[:, :scan.dim].astype(np.float64)
    assert np.abs(codes).max() <= 127 and scan.scale * 127 >= np.abs(x).max()
    assert scan.row_error >= np.linalg.norm(x - scan.scale * codes, axis=1).max()
    assert scan.max_norm >= np.linalg.norm(x, axis=1).max()
    # the residuals are exact in float32, as the bound's derivation says
    residual = torch.from_numpy(embeddings[0][:500]).float().sub_(scan.codes[:500].float(), alpha=scan.scale)
    np.testing.assert_array_equal(residual.double().numpy(), x[:500] - scan.scale * codes[:500])


@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_embedding_like_vectors_give_brute_force_s_answer(embeddings, scan, k):
    assert_exact(scan, *embeddings, k)


def test_rows_int8_cannot_separate_are_all_scored_and_ordered_by_score_then_position():
    rows, queries = near_duplicates()
    scan = ExactScan(rows)
    scored = []
    real = ExactScan.exact_pairs
    with mock.patch.object(ExactScan, "exact_pairs",
                           lambda self, r, w, q: scored.append(len(r)) or real(self, r, w, q)):
        for k in (1, 10, 45):
            assert_exact(scan, rows, queries, k)
    assert max(scored) >= 30  # the second pass ran: every near-copy of the best base row was a candidate
    same = np.repeat(rows[:1], 3000, axis=0)  # all rows equal: every score ties, the first positions win
    _, positions = assert_exact(ExactScan(same), same, queries, 10)
    assert (positions == np.arange(10)).all()


def test_masks_of_every_kind(embeddings, scan):
    features, queries = embeddings
    n, rng = len(features), np.random.default_rng(1)
    runs = np.zeros(n, bool)
    for a in (100, 5000, 12_000):
        runs[a:a + 1500] = True
    many_runs = np.ones(n, bool)
    many_runs[::997] = False  # a few deleted rows: too many runs to scan one by one
    few = np.zeros(n, bool)
    few[rng.choice(n, 7, replace=False)] = True
    masks = {"scattered 2/3": rng.random(n) < 2 / 3, "scattered 1/50": rng.random(n) < 0.02,
             "a contiguous third": np.arange(n) // (n // 3) == 1, "three runs": runs, "a few deleted": many_runs,
             "seven rows": few, "none": np.zeros(n, bool), "all": np.ones(n, bool)}
    for name, allowed in masks.items():
        for k in (1, 10, 50):
            scores, positions = assert_exact(scan, features, queries, k, allowed)
            kept = positions[positions >= 0]
            assert allowed[kept].all(), name
            assert (positions >= 0).sum(axis=1).tolist() == [min(k, allowed.sum())] * len(queries), name
            assert np.isneginf(scores[positions < 0]).all()


@pytest.mark.parametrize("batch", [1, 7, 33])
def test_a_batch_answers_as_its_queries_one_by_one(scan, embeddings, batch):
    features, some = embeddings
    queries = np.resize(some, (batch, some.shape[1])) + np.float32(0.01) * batch  # not unit length: any will do
    allowed = np.random.default_rng(2).random(len(features)) < 0.9
    together = assert_exact(scan, features, queries, 10, allowed)
    alone = [scan.search(q[None], 10, allowed) for q in queries]
    np.testing.assert_array_equal(together[1], np.concatenate([p for _, p in alone]))
    np.testing.assert_array_equal(together[0], np.concatenate([s for s, _ in alone]))


def recording(monkeypatch):
    """Which code rows the int8 pass reads and which float16 rows are read to be scored exactly (by exact_scores or
    exact_pairs alike), as lists the test reads after."""
    scanned, scored = [], []
    int_mm, wide = torch._int_mm, ExactScan._wide

    def spy_int_mm(queries, codes_t):
        first = codes_t.storage_offset() // codes_t.shape[0]
        scanned.append((first, first + codes_t.shape[1]))
        return int_mm(queries, codes_t)

    def spy_wide(self, rows):
        scored.append(np.asarray(rows))
        return wide(self, rows)

    monkeypatch.setattr(torch, "_int_mm", spy_int_mm)
    monkeypatch.setattr(ExactScan, "_wide", spy_wide)
    return scanned, scored


def read_on(spans):
    """The code rows a scan of `spans` reads: the last span on to the end of its last run of BLOCK columns (those
    rows' scores are set lowest; none is scored exactly)."""
    past = -sum(z - a for a, z in spans) % exact_scan.BLOCK
    return spans[:-1] + [(spans[-1][0], spans[-1][1] + past)]


def test_a_mask_of_a_few_runs_scans_only_them(embeddings, scan, monkeypatch):
    features, queries = embeddings
    scanned, scored = recording(monkeypatch)
    third = np.zeros(len(features), bool)
    third[6000:13_000] = True
    assert_exact(scan, features, queries, 10, third)
    assert scanned == read_on([(6000, 13_000)])
    assert all(((r >= 6000) & (r < 13_000)).all() for r in scored)
    scanned.clear()
    runs = np.zeros(len(features), bool)
    runs[[*range(0, 3000), *range(9000, 9500), *range(19_000, 20_000)]] = True
    assert_exact(scan, features, queries, 10, runs)
    assert scanned == read_on([(0, 3000), (9000, 9500), (19_000, 20_000)])


def test_a_mask_of_few_rows_reads_only_those_rows(embeddings, scan, monkeypatch):
    features, queries = embeddings
    scanned, scored = recording(monkeypatch)
    few = np.zeros(len(features), bool)
    few[np.random.default_rng(4).choice(len(features), 40, replace=False)] = True
    assert_exact(scan, features, queries, 10, few)
    assert scanned == [] and scored and all(few[r].all() for r in scored)
    scanned.clear()
    assert_exact(scan, features, queries[:1], 100, few)  # fewer than k allowed: padded
    assert scanned == []


def test_a_scattered_mask_scans_from_the_first_allowed_row_to_the_last(embeddings, scan, monkeypatch):
    features, queries = embeddings
    scanned, _ = recording(monkeypatch)
    middle = np.zeros(len(features), bool)
    middle[4000:16_000:3] = True
    assert_exact(scan, features, queries, 10, middle)
    assert scanned == read_on([(4000, 15_998)])


@pytest.mark.parametrize("dim", [1, 3, 96, 1152])
def test_other_widths(dim):
    rng = np.random.default_rng(dim)
    features = unit_rows(rng.standard_normal((3000, dim))).astype(np.float16)
    queries = unit_rows(rng.standard_normal((5, dim)))
    assert_exact(ExactScan(features), features, queries, 10)
    assert_exact(ExactScan(features), features, queries, 10, rng.random(3000) < 0.8)


def test_edge_cases():
    rng = np.random.default_rng(5)
    features = unit_rows(rng.standard_normal((300, 32))).astype(np.float16)
    scan = ExactScan(features)
    queries = unit_rows(rng.standard_normal((3, 32)))
    scores, positions = assert_exact(scan, features, queries, 5000)  # k past the rows: all of them, in order
    assert positions.shape == (3, 300)
    zero = np.zeros((1, 32), np.float32)  # every score is 0: the first rows
    scores, positions = assert_exact(scan, features, zero, 4)
    assert positions.tolist() == [[0, 1, 2, 3]] and not scores.any()
    near_one = np.eye(32, dtype=np.float16)[rng.integers(0, 32, 400)] * np.float16(0.9995)  # values near 1
    near_one[::2, 5] = np.float16(0.03)
    assert_exact(ExactScan(near_one), near_one, queries, 10)
    empty = ExactScan(np.zeros((0, 32), np.float16))
    scores, positions = empty.search(queries, 10)
    assert positions.tolist() == [[-1]] * 3 and np.isneginf(scores).all()
    assert scan.search(np.zeros((0, 32), np.float32), 10)[1].shape == (0, 10)


def test_bad_input_is_refused_by_name():
    features = unit_rows(np.random.default_rng(6).standard_normal((100, 16))).astype(np.float16)
    scan = ExactScan(features)
    with pytest.raises(GalleryError, match="query vectors of dimension 12 for a gallery of dimension 16"):
        scan.search(np.zeros((1, 12), np.float32), 5)
    with pytest.raises(GalleryError, match=r"queries must be an array \[queries, 16\], got shape \(16,\)"):
        scan.search(np.zeros(16, np.float32), 5)
    with pytest.raises(GalleryError, match="NaN or infinity"):
        scan.search(np.full((1, 16), np.nan, np.float32), 5)
    with pytest.raises(GalleryError, match="a row mask of shape \\(99,\\) for a gallery of 100 rows"):
        scan.search(np.ones((1, 16), np.float32), 5, np.ones(99, bool))
    for bad in (np.inf, np.nan):
        damaged = features.copy()
        damaged[7, 3] = bad
        with pytest.raises(GalleryError, match=r"features hold NaN or infinity \(rows 0 to 99\)"):
            ExactScan(damaged)
    hnsw = gindex.build(np.repeat(features, 10, axis=0), "hnsw", 0)  # the approximate indexes say the same
    with pytest.raises(GalleryError, match="query vectors of dimension 12 for a gallery of dimension 16"):
        hnsw.search(np.zeros((1, 12), np.float32), 5)


@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 300), dim=st.integers(1, 40), k=st.integers(1, 320), batch=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1), distinct=st.integers(1, 300), density=st.sampled_from([None, 0.02, 0.5, 1.0]),
       first=st.sampled_from([1, 4, 32]), direct=st.booleans(), block=st.sampled_from([1, 3, 64]))
def test_any_gallery_mask_and_query_give_brute_force_s_answer(n, dim, k, batch, seed, distinct, density, first,
                                                              direct, block):
    """Small galleries with repeated rows; both ways a mask is answered (scored directly, or scanned), first passes
    of every size, and runs of int8 scores of every length against the gallery's (a last run cut short)."""
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal((distinct, dim)) * rng.choice([1e-3, 0.1, 1.0])).astype(np.float16)
    features = pool[rng.integers(0, distinct, n)]
    queries = rng.standard_normal((batch, dim)).astype(np.float32)
    queries[0] *= rng.choice([0.0, 1.0])  # sometimes a zero query
    allowed = None if density is None else rng.random(n) < density
    with mock.patch.multiple(exact_scan, FIRST=first, DIRECT_ROWS=2048 if direct else 0,
                             DIRECT_RATIO=1 if direct else 10**9, BLOCK=block):
        assert_exact(ExactScan(features), features, queries, k, allowed)


def gallery_rows(n, seed, dim=24):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(20, dim))
    feats = unit_rows(centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float16)
    rows = store.Rows(np.zeros(n, np.int64), [f"{seed}-{i}.jpg" for i in range(n)],
                      np.full((n, 4), np.nan, np.float32), np.full(n, -1), np.zeros(n, np.int64),
                      np.zeros(n, np.int64), [{"camera": int(i % 3)} for i in range(n)])
    return feats, rows


def test_a_gallery_s_segments_deleted_rows_and_conditions(tmp_path):
    g = tmp_path / "g"
    store.create(g, {"kind": "made-up"}, {"kind": "siglip", "config_hash": "0" * 64, "dim": 24}, 24, tmp_path)
    for seed, n in ((1, 3000), (2, 200), (3, 5000)):
        store.append(g, *gallery_rows(n, seed))
    store.delete(g, np.arange(0, 8200, 7))
    gallery = store.Gallery.open(g)
    backend = LocalBackend(gallery, "exact")
    assert isinstance(backend.index.index, ExactScan)
    features = gallery.features()
    queries = unit_rows(np.asarray(features[[5, 3100, 8000]], np.float32) + 0.1)
    for conditions in ([], [filters.parse("camera=1")]):
        allowed = backend.allowed(conditions)
        scores, positions = backend.search(queries, 20, conditions)
        want_scores, want_positions = brute_force(features, queries, 20, allowed)
        np.testing.assert_array_equal(positions, want_positions)
        np.testing.assert_array_equal(scores, want_scores)
    store.compact(g)
    gallery = store.Gallery.open(g)
    exact = gindex.load_or_build(g, gallery.features(), "exact", gallery.manifest)
    assert not (g / "index").exists()  # nothing saved for exact search
    np.testing.assert_array_equal(exact.search(queries, 20)[1], brute_force(gallery.features(), queries, 20)[1])


@settings(max_examples=150, deadline=None)
@given(q=st.integers(1, 4), n=st.integers(1, 700), first=st.integers(1, 40), block=st.sampled_from([1, 2, 7, 64]),
       spread=st.sampled_from([3, 1000, 2**20]), masked=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_the_runs_of_largest_maxima_hold_the_top_int8_scores_and_the_runs_reaching_a_floor_every_row_above_it(
        q, n, first, block, spread, masked, seed):
    """Against a top-k and a comparison over every column: the same best scores (ties of any width, masked columns
    and the columns filling the last run at the lowest score), and exactly the columns at or above a floor."""
    rng = np.random.default_rng(seed)
    approx = torch.full((q, n + -n % block), exact_scan.LOWEST, dtype=torch.int32)
    approx[:, :n] = torch.from_numpy(rng.integers(-spread, spread, (q, n)).astype(np.int32))
    approx.masked_fill_(torch.from_numpy(rng.random(approx.shape) < masked), exact_scan.LOWEST)
    first = min(first, n)
    with mock.patch.object(exact_scan, "BLOCK", block):
        maxima = exact_scan._run_maxima(approx)
        values, cols = exact_scan._top_columns(approx, maxima, first)
        np.testing.assert_array_equal(values, torch.topk(approx, first, dim=1).values.numpy())
        real = values != exact_scan.LOWEST
        np.testing.assert_array_equal(approx.numpy()[np.nonzero(real)[0], cols[real]], values[real])
        assert all(len(set(c[r])) == r.sum() for c, r in zip(cols, real))  # no column twice
        queries = np.arange(q)[rng.random(q) < 0.7]
        floors = rng.integers(-spread, spread + 1, len(queries)).astype(np.int64)
        who, reached = exact_scan._columns_reaching(approx, maxima, queries, floors)
    want = [(i, c) for i, f in zip(queries, floors) for c in np.flatnonzero(approx.numpy()[i] >= f)]
    assert list(zip(who.tolist(), reached.tolist())) == want
