"""person.eval.metrics: exact verification (EER, FAR levels) and IRRA retrieval, strip-wise = in-memory."""
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from person.eval import metrics as M
from person.eval.metrics import passes, ranking, scoring

LEVELS = M.FAR_LEVELS


# ---------------------------------------------------------------- independent references

def brute_force(scores, image_pid, caption_pid):
    """Every candidate threshold checked by direct comparison (tiny inputs only)."""
    mask = caption_pid[:, None] == image_pid[None, :]
    pos, neg = scores[mask], scores[~mask]
    n_pos, n_neg = len(pos), len(neg)
    cands = sorted(set(scores.ravel().tolist())) + [math.inf]
    rows = [(t, int((neg >= t).sum()), int((pos < t).sum())) for t in cands]
    t, fp, fn = min(rows, key=lambda r: (abs(r[1] * n_pos - r[2] * n_neg), -r[0]))  # tie: higher t
    far = {}
    for level in LEVELS:
        k = math.floor(Fraction(level) * n_neg)
        far[level] = min((r for r in rows if r[1] <= k), key=lambda r: r[0])
    return {"eer": (fp / n_neg + fn / n_pos) / 2, "eer_threshold": t,
            "far": {lv: (r[0], r[2] / n_pos) for lv, r in far.items()}}


def sklearn_reference(scores, image_pid, caption_pid):
    """The same definitions read off sklearn's ROC (counts recovered from its rates)."""
    mask = (caption_pid[:, None] == image_pid[None, :]).ravel()
    fpr, tpr, thr = roc_curve(mask, scores.ravel(), drop_intermediate=False)  # thresholds descending
    n_pos = int(mask.sum())
    n_neg = mask.size - n_pos
    fp = np.rint(fpr * n_neg).astype(np.int64)
    fn = n_pos - np.rint(tpr * n_pos).astype(np.int64)
    d = fp * n_pos - fn * n_neg  # increases along sklearn's order
    a = int(np.flatnonzero(d >= 0)[0])
    i = a - 1 if abs(d[a - 1]) <= abs(d[a]) else a
    far = {}
    for level in LEVELS:
        j = int(np.flatnonzero(fp <= math.floor(Fraction(level) * n_neg))[-1])
        far[level] = (float(thr[j]), fn[j] / n_pos)
    return {"eer": (fp[i] / n_neg + fn[i] / n_pos) / 2, "eer_threshold": float(thr[i]), "far": far}


def check_against(result, ref):
    assert result.eer == ref["eer"]
    assert result.eer_threshold == ref["eer_threshold"]
    for level in LEVELS:
        assert (result.threshold_at_far[level], result.frr_at_far[level]) == ref["far"][level], level


def assert_identical(a, b):
    """Every field, bit for bit."""
    for name in ("positives", "negatives", "eer", "eer_point", "at_far", "false_accepts_allowed",
                 "false_rejects", "false_accepts"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("roc_threshold", "roc_far", "roc_frr"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def identity_embeddings(rng, n_images, n_captions, n_ids, dim=16, signal=1.5):
    centres = unit(rng.standard_normal((n_ids, dim)))
    image_pid = rng.integers(0, n_ids, n_images)
    caption_pid = rng.integers(0, n_ids, n_captions)
    images = unit(signal * centres[image_pid] + rng.standard_normal((n_images, dim)))
    captions = unit(signal * centres[caption_pid] + rng.standard_normal((n_captions, dim)))
    return images, image_pid, captions, caption_pid


def from_keys(keys):
    k = np.asarray(keys, np.int32)
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).view(np.float32)


def tied_scores(rng, shape):
    return np.round(rng.normal(0.2, 0.15, shape), 2).astype(np.float32)


def one_bin_scores(rng, shape, centre=0.1):
    """Thousands of distinct adjacent float32 values, nearly all in one or two coarse bins."""
    base = int(np.float32(centre).view(np.int32))
    return from_keys(base + rng.integers(-3000, 3000, shape))


# ---------------------------------------------------------------- verification: exactness

SCORE_CASES = {
    "random": lambda rng, s: rng.normal(0.1, 0.2, s).astype(np.float32),
    "ties": tied_scores,
    "one_bin": one_bin_scores,
    "negative_one_bin": lambda rng, s: one_bin_scores(rng, s, centre=-0.3),
    "signed_zeros": lambda rng, s: rng.choice(np.float32([-0.0, 0.0, 0.25, -0.25]), s),
    "few_values": lambda rng, s: rng.choice(np.float32([0.1, 0.2, 0.3]), s),
}


@pytest.mark.parametrize("case", sorted(SCORE_CASES))
def test_matches_brute_force_and_sklearn_on_small_inputs(case):
    rng = np.random.default_rng(1)
    scores = SCORE_CASES[case](rng, (24, 30))
    image_pid, caption_pid = rng.integers(0, 5, 30), rng.integers(0, 5, 24)
    result = M.verification_from_scores(scores, image_pid, caption_pid)
    check_against(result, brute_force(scores, image_pid, caption_pid))
    check_against(result, sklearn_reference(scores + np.float32(0), image_pid, caption_pid))


@pytest.mark.parametrize("case", sorted(SCORE_CASES))
@pytest.mark.parametrize("block_pairs", [1, 97, 1000, 10**9])
@pytest.mark.parametrize("cache_bytes", [0, M.DEFAULT_CACHE_BYTES])  # pass 2 remakes or reads the keys
def test_strip_wise_path_is_bit_identical_to_in_memory(case, block_pairs, cache_bytes):
    rng = np.random.default_rng(2)
    scores = SCORE_CASES[case](rng, (120, 150))  # 18000 pairs: FAR 1e-3 and 1e-4 allow 17 and 1
    image_pid, caption_pid = rng.integers(0, 20, 150), rng.integers(0, 20, 120)
    reference = M.verification_from_scores(scores, image_pid, caption_pid, top_k=7)
    streamed = M.verification_from_scores(scores, image_pid, caption_pid, top_k=7, block_pairs=block_pairs,
                                          cache_bytes=cache_bytes)
    assert_identical(streamed, reference)
    check_against(reference, sklearn_reference(scores + np.float32(0), image_pid, caption_pid))


@pytest.mark.parametrize("top_k", [0, 1, 5, 40])
def test_top_errors_when_k_is_zero_or_exceeds_the_negatives(top_k):
    rng = np.random.default_rng(13)
    scores = tied_scores(rng, (6, 7))
    image_pid, caption_pid = np.array([0, 0, 0, 1, 0, 0, 0]), np.array([0, 0, 0, 1, 0, 0])  # 11 negatives
    reference = M.verification_from_scores(scores, image_pid, caption_pid, top_k=top_k)
    assert len(reference.false_accepts) == min(top_k, 11)
    for bp in (1, 8, 100):
        assert_identical(M.verification_from_scores(scores, image_pid, caption_pid, top_k=top_k,
                                                    block_pairs=bp), reference)


def test_larger_random_scores_match_sklearn_at_every_far_level():
    rng = np.random.default_rng(3)
    images, image_pid, captions, caption_pid = identity_embeddings(rng, 500, 420, 60)
    scores = M.cosine_scores(images, captions, block_pairs=5000)  # 210000 pairs: FAR 1e-5 allows 2
    result = M.verification(images, image_pid, captions, caption_pid, block_pairs=5000)
    check_against(result, sklearn_reference(scores, image_pid, caption_pid))
    assert_identical(result, M.verification_from_scores(scores, image_pid, caption_pid))
    assert result.false_accepts_allowed == {
        lv: math.floor(Fraction(lv) * result.negatives) for lv in LEVELS}
    for level, point in result.at_far.items():
        assert point.false_accepts <= result.false_accepts_allowed[level]


@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])
def test_embedding_path_equals_scores_path_bit_for_bit(cache_bytes):
    rng = np.random.default_rng(4)
    images, image_pid, captions, caption_pid = identity_embeddings(rng, 90, 70, 12)
    streamed = M.verification(images, image_pid, captions, caption_pid, block_pairs=400,
                              cache_bytes=cache_bytes, device="cpu")
    scores = M.cosine_scores(images, captions, block_pairs=400, device="cpu")
    assert_identical(streamed, M.verification_from_scores(scores, image_pid, caption_pid))
    assert streamed.positives + streamed.negatives == 90 * 70


def test_eer_tie_goes_to_the_higher_threshold():
    # Candidates 0.2 (FAR 1, FRR 0), 0.4 (FAR 1, FRR 1/2), 0.6 (FAR 0, FRR 1/2): |FAR-FRR| ties at
    # 0.4 and 0.6 (fp*P - fn*N = +1 and -1); the higher threshold wins: EER (0 + 1/2) / 2.
    scores = np.float32([[0.2, 0.4, 0.6]])
    for bp in (None, 1):
        result = M.verification_from_scores(scores, [0, 1, 0], [0], block_pairs=bp)
        assert result.eer == 0.25
        assert result.eer_threshold == float(np.float32(0.6))
        assert (result.eer_point.false_accepts, result.eer_point.false_rejects) == (0, 1)


def test_all_equal_scores_give_eer_one_half_and_reject_everything_at_far():
    scores = np.full((6, 8), 0.3, np.float32)
    rng = np.random.default_rng(5)
    for bp in (None, 5):
        result = M.verification_from_scores(scores, rng.integers(0, 3, 8), rng.integers(0, 3, 6), block_pairs=bp)
        assert result.eer == 0.5
        assert result.eer_threshold == math.inf  # tie between 0.3 and +inf: the higher one
        assert all(p.threshold == math.inf and p.frr == 1.0 for p in result.at_far.values())


def test_separable_scores_give_zero_eer_at_the_lowest_positive():
    caption_pid, image_pid = np.arange(4), np.arange(4)
    scores = np.full((4, 4), -0.2, np.float32)
    np.fill_diagonal(scores, [0.5, 0.6, 0.7, 0.8])
    result = M.verification_from_scores(scores, image_pid, caption_pid, block_pairs=3)
    assert result.eer == 0.0
    assert result.eer_threshold == float(np.float32(0.5))
    assert result.threshold_at_far["0"] == float(np.float32(0.5))
    assert result.frr_at_far["0"] == 0.0


def test_far_zero_is_above_the_highest_negative():
    scores = np.float32([[0.9, 0.3, 0.5], [0.2, 0.7, 0.6]])
    result = M.verification_from_scores(scores, [0, 1, 2], [0, 1])
    # negatives 0.3 0.5 0.2 0.6 -> highest 0.6; the next candidate up is the positive 0.7
    assert result.threshold_at_far["0"] == float(np.float32(0.7))
    assert result.frr_at_far["0"] == 0.0
    assert result.at_far["0"].false_accepts == 0


def test_signed_zero_scores_are_one_value():
    scores = np.float32([[-0.0, 0.0, 0.0]])
    result = M.verification_from_scores(scores, [0, 1, 2], [0], block_pairs=1)
    assert result.eer_threshold == math.inf and result.eer == 0.5
    assert len(set(result.roc_threshold.tolist())) == 2  # 0.0 and +inf


def test_top_errors_are_the_extreme_pairs_with_index_tie_breaks():
    rng = np.random.default_rng(6)
    scores = rng.choice(np.float32([0.1, 0.2, 0.3]), (30, 40))
    image_pid, caption_pid = rng.integers(0, 6, 40), rng.integers(0, 6, 30)
    mask = caption_pid[:, None] == image_pid[None, :]
    pairs = [(float(scores[c, i]), c, i) for c in range(30) for i in range(40)]
    want_fa = sorted((p for p in pairs if not mask[p[1], p[2]]), key=lambda p: (-p[0], p[1], p[2]))[:15]
    want_fr = sorted(p for p in pairs if mask[p[1], p[2]])[:15]
    for bp in (None, 1, 50, 10**6):
        result = M.verification_from_scores(scores, image_pid, caption_pid, block_pairs=bp)
        assert [(p.score, p.caption, p.image) for p in result.false_accepts] == want_fa
        assert [(p.score, p.caption, p.image) for p in result.false_rejects] == want_fr


def test_roc_points_are_exact_and_ordered():
    rng = np.random.default_rng(7)
    scores = tied_scores(rng, (40, 50))
    image_pid, caption_pid = rng.integers(0, 8, 50), rng.integers(0, 8, 40)
    result = M.verification_from_scores(scores, image_pid, caption_pid, block_pairs=333)
    mask = caption_pid[:, None] == image_pid[None, :]
    pos, neg = scores[mask], scores[~mask]
    assert np.all(np.diff(result.roc_threshold) < 0) and np.all(np.diff(result.roc_far) >= 0)
    for t, far, frr in zip(result.roc_threshold, result.roc_far, result.roc_frr):
        assert far == (neg >= t).sum() / len(neg) and frr == (pos < t).sum() / len(pos)
    assert result.eer_threshold in result.roc_threshold


def test_keys_preserve_float_order():
    values = np.float32([-np.inf, -1.0, -1e-30, -0.0, 0.0, 1e-45, 0.3, 1.0, 1.0000001, np.inf])
    keys = scoring._keys_np(values)
    assert np.all(np.diff(keys[[0, 1, 2, 4, 5, 6, 7, 8, 9]]) > 0)
    assert keys[3] == keys[4]  # -0.0 and 0.0 are one value
    assert np.array_equal(scoring._key_floats(keys), values.astype(np.float64))
    assert np.array_equal(scoring._keys(torch.from_numpy(values.copy())).numpy(), keys)


# ---------------------------------------------------------------- verification: bad input

def test_one_identity_means_no_negatives_and_a_clear_error():
    scores = np.zeros((3, 4), np.float32)
    for bp in (None, 2):
        with pytest.raises(M.MetricInputError, match="no negative pairs.*at least two identities"):
            M.verification_from_scores(scores, [7, 7, 7, 7], [7, 7, 7], block_pairs=bp)


def test_disjoint_identities_mean_no_positives():
    with pytest.raises(M.MetricInputError, match="no positive pairs"):
        M.verification_from_scores(np.zeros((2, 2), np.float32), [0, 1], [2, 3], block_pairs=2)


def test_unnormalised_or_broken_embeddings_are_named():
    rng = np.random.default_rng(8)
    images, image_pid, captions, caption_pid = identity_embeddings(rng, 5, 4, 2)
    bad = captions.copy()
    bad[3] *= 2
    with pytest.raises(M.MetricInputError, match=r"caption_emb row 3 has L2 norm 2.*L2-normalised"):
        M.verification(images, image_pid, bad, caption_pid)
    bad = images.copy()
    bad[1, 0] = np.nan
    with pytest.raises(M.MetricInputError, match="image_emb row 1"):
        M.verification(bad, image_pid, captions, caption_pid)
    with pytest.raises(M.MetricInputError, match="dimension 16 but caption_emb 8"):
        M.verification(images, image_pid, unit(captions[:, :8]), caption_pid)
    with pytest.raises(M.MetricInputError, match="image_pid must be a 1-D array with one label per row"):
        M.verification(images, image_pid[:3], captions, caption_pid)
    with pytest.raises(M.MetricInputError, match="float32 matrix"):
        M.verification_from_scores(np.zeros((2, 2)), [0, 1], [0, 1])


def test_half_precision_embeddings_are_scored_in_float32():
    rng = np.random.default_rng(9)
    images, image_pid, captions, caption_pid = identity_embeddings(rng, 30, 20, 4)
    half = M.verification(images.astype(np.float16), image_pid, captions.astype(np.float16), caption_pid)
    scores = M.cosine_scores(images.astype(np.float16).astype(np.float32),
                             captions.astype(np.float16).astype(np.float32))
    assert_identical(half, M.verification_from_scores(scores, image_pid, caption_pid))


# ---------------------------------------------------------------- retrieval

def irra_rank(similarity, q_pids, g_pids, max_rank=10):
    """IRRA utils/metrics.py rank(), with a stable sort so that ties are ordered as ours."""
    indices = torch.argsort(similarity, dim=1, descending=True, stable=True)
    matches = g_pids[indices].eq(q_pids.view(-1, 1))
    all_cmc = matches[:, :max_rank].cumsum(1)
    all_cmc[all_cmc > 1] = 1
    all_cmc = all_cmc.float().mean(0) * 100
    num_rel = matches.sum(1)
    tmp_cmc = matches.cumsum(1)
    inp = [tmp_cmc[i][row.nonzero()[-1]] / (row.nonzero()[-1] + 1.0) for i, row in enumerate(matches)]
    minp = torch.cat(inp).mean() * 100
    tmp_cmc = torch.stack([tmp_cmc[:, i] / (i + 1.0) for i in range(tmp_cmc.shape[1])], 1) * matches
    ap = tmp_cmc.sum(1) / num_rel
    return all_cmc, ap.mean() * 100, minp


HAND_SCORES = np.float32([
    [0.9, 0.8, 0.3, 0.5, 0.1],  # query pid 0: order g0 g1 g3 g2 g4, positives g0, g2 at ranks 1, 4
    [0.2, 0.4, 0.6, 0.7, 0.5],  # query pid 1: order g3 g2 g4 g1 g0, positives g4, g1 at ranks 3, 4
    [0.5, 0.5, 0.5, 0.5, 0.5],  # query pid 2: all tied, gallery order kept, positive g3 at rank 4
])
HAND_GALLERY_PID = np.array([0, 1, 0, 2, 1])
HAND_QUERY_PID = np.array([0, 1, 2])


def test_retrieval_hand_computed_example():
    # AP: q0 (1/1 + 2/4)/2 = 3/4, q1 (1/3 + 2/4)/2 = 5/12, q2 1/4 -> mAP = (9 + 5 + 3)/12/3 = 17/36
    # INP: q0 2/4, q1 2/4, q2 1/4 -> mINP = 5/12.  First hits at ranks 1, 3, 4.
    for bp in (1, 5, 100):
        r = M.retrieval_from_scores(HAND_SCORES, HAND_QUERY_PID, HAND_GALLERY_PID, ks=(1, 3, 5), block_pairs=bp)
        assert r.cmc == {1: 1 / 3, 3: 2 / 3, 5: 1.0}
        assert r.mAP == pytest.approx(17 / 36, rel=1e-15)
        assert r.mINP == pytest.approx(5 / 12, rel=1e-15)
        assert (r.queries, r.queries_without_positive) == (3, 0)


def test_queries_without_a_positive_are_left_out_and_counted():
    scores = np.vstack([HAND_SCORES, np.float32([[0.1, 0.2, 0.3, 0.4, 0.5]])])
    r = M.retrieval_from_scores(scores, np.append(HAND_QUERY_PID, 9), HAND_GALLERY_PID, ks=(1, 3, 5))
    assert r.mAP == pytest.approx(17 / 36, rel=1e-15) and r.cmc[3] == 2 / 3
    assert (r.queries, r.queries_without_positive) == (3, 1)


def test_retrieval_matches_irra_and_is_strip_invariant():
    rng = np.random.default_rng(10)
    images, image_pid, captions, caption_pid = identity_embeddings(rng, 80, 60, 15, signal=1.0)
    caption_pid[caption_pid == 14] = 13  # every query has at least one image of its identity...
    image_pid[:14] = np.arange(14)  # ...guaranteed here
    scores = M.cosine_scores(images, captions, block_pairs=800)
    scores[:, ::7] = np.round(scores[:, ::7], 1)  # and some ties
    cmc, mAP, mINP = irra_rank(torch.from_numpy(scores), torch.from_numpy(caption_pid), torch.from_numpy(image_pid))
    ours = M.retrieval_from_scores(scores, caption_pid, image_pid, block_pairs=800)
    assert [ours.cmc[k] for k in (1, 5, 10)] == pytest.approx([float(cmc[k - 1]) / 100 for k in (1, 5, 10)])
    assert ours.mAP == pytest.approx(float(mAP) / 100, rel=1e-6)
    assert ours.mINP == pytest.approx(float(mINP) / 100, rel=1e-6)
    for bp in (1, 79, 10**6):
        assert M.retrieval_from_scores(scores, caption_pid, image_pid, block_pairs=bp) == ours
    scores = M.cosine_scores(images, captions, block_pairs=800)
    assert (M.retrieval(captions, caption_pid, images, image_pid, block_pairs=800)
            == M.retrieval_from_scores(scores, caption_pid, image_pid, block_pairs=800))


@pytest.mark.parametrize("n_ids", [3, 40])  # many positives per query, then few
def test_counted_and_sorted_ranks_agree_and_match_irra(monkeypatch, n_ids):
    rng = np.random.default_rng(14)
    images, image_pid, captions, caption_pid = identity_embeddings(rng, 120, 90, n_ids, signal=1.0)
    caption_pid[:3] = n_ids  # queries without a positive, left out either way
    scores = M.cosine_scores(images, captions)
    scores[:, ::3] = np.round(scores[:, ::3], 1)  # ties within a row, across positives and negatives
    scores[5] = 0.25  # one query with every gallery score tied
    results = []
    for up_to in (0, 10**9):  # always sort, always count
        monkeypatch.setattr(ranking, "_COUNT_RANKS_UP_TO", up_to)
        results.append([M.retrieval_from_scores(scores, caption_pid, image_pid, block_pairs=bp)
                        for bp in (1, 700, 10**6)])
    assert all(r == results[0][0] for rs in results for r in rs)
    has_positive = np.isin(caption_pid, image_pid)
    cmc, mAP, mINP = irra_rank(torch.from_numpy(scores[has_positive]), torch.from_numpy(caption_pid[has_positive]),
                               torch.from_numpy(image_pid))
    ours = results[0][0]
    assert [ours.cmc[k] for k in (1, 5, 10)] == pytest.approx([float(cmc[k - 1]) / 100 for k in (1, 5, 10)])
    assert ours.mAP == pytest.approx(float(mAP) / 100, rel=1e-6)
    assert ours.mINP == pytest.approx(float(mINP) / 100, rel=1e-6)
    assert ours.queries_without_positive == np.sum(~has_positive) >= 3


# ---------------------------------------------------------------- the combined report

def test_evaluate_gives_the_json_report_as_fractions():
    rng = np.random.default_rng(11)
    images, image_pid, captions, caption_pid = identity_embeddings(rng, 60, 50, 8)
    evaluation = M.evaluate(images, image_pid, captions, caption_pid, block_pairs=300)
    report = evaluation.to_dict()
    for key in ("eer", "eer_threshold", "frr_at_far", "threshold_at_far", "rank1", "rank5", "rank10",
                "mAP", "mINP", "positives", "negatives"):
        assert key in report, key
    assert list(report["frr_at_far"]) == ["1e-3", "1e-4", "1e-5", "1e-6", "0"]
    assert list(report["threshold_at_far"]) == list(report["frr_at_far"])
    assert 0 <= report["eer"] <= 1 and 0 <= report["rank1"] <= report["rank5"] <= report["rank10"] <= 1
    assert report["positives"] + report["negatives"] == 60 * 50
    assert json.loads(json.dumps(report)) == report
    alone = M.verification(images, image_pid, captions, caption_pid, block_pairs=300)
    assert_identical(evaluation.verification, alone)
    assert evaluation.retrieval == M.retrieval(captions, caption_pid, images, image_pid, block_pairs=300)


def test_the_callers_torch_thread_count_is_restored():
    rng = np.random.default_rng(15)
    images, image_pid, captions, caption_pid = identity_embeddings(rng, 40, 30, 5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        M.evaluate(images, image_pid, captions, caption_pid, block_pairs=200, device="cpu")
        assert torch.get_num_threads() == 2
        with pytest.raises(M.MetricInputError):
            M.verification(images, np.zeros(40, int), captions, np.zeros(30, int), device="cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_infinite_thresholds_become_null_in_the_report():
    result = M.verification_from_scores(np.full((2, 3), 0.5, np.float32), [0, 1, 1], [0, 1])
    report = M.summary(result)
    assert report["eer_threshold"] is None and report["threshold_at_far"]["0"] is None


def test_scores_that_change_between_passes_are_caught():
    rng = np.random.default_rng(12)
    scores = rng.normal(0.1, 0.2, (20, 30)).astype(np.float32)
    calls = []

    def drifting(c0, c1):  # the second pass sees other values, as a non-deterministic matmul would
        calls.append(c0)
        return torch.from_numpy(scores[c0:c1] + np.float32(0.01 * (len(calls) > 4)))

    strips = scoring._strips(20, 30, 150)
    pid = torch.from_numpy(rng.integers(0, 4, 30)), torch.from_numpy(rng.integers(0, 4, 20))
    with pytest.raises(RuntimeError, match="scores changed between the two passes"):
        passes._evaluate_strips(drifting, strips, pid[1], pid[0], (), 15, cache=False, progress=False)
    with pytest.raises(M.MetricInputError, match="block_pairs must be between 1 and"):
        M.verification_from_scores(scores, pid[0], pid[1], block_pairs=0)
