"""Exact verification from counts: the positives' keys, a coarse histogram of all keys, and full detail in
the few bins where the EER crossing, each FAR level's threshold and the top false accepts fall (pass 2);
and the in-memory reference it must match bit for bit."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from person.eval.metrics.results import FAR_LEVELS, OperatingPoint, ScoredPair, VerificationResult
from person.eval.metrics.scoring import (_BINS, _INF_KEY, _bin, _bin_into, _check_counts, _Columns, _edge, _key_floats,
                                         _PositivePairs)


def _negatives_in_bins(sub_all: np.ndarray, bins: np.ndarray, hist_all: np.ndarray,
                       pos: _PositiveSet) -> dict[int, np.ndarray]:
    """Pass 2's counts of every key in each resolved bin, less the positives: the negatives'."""
    if not np.array_equal(sub_all.sum(1), hist_all[bins]):
        raise RuntimeError("scores changed between the two passes (a non-deterministic matmul?); on cuda "
                           "set CUBLAS_WORKSPACE_CONFIG=:4096:8 or raise cache_bytes to keep pass-1 scores")
    for row, b in enumerate(bins):
        in_bin = pos.sorted[_bin(pos.sorted) == b]
        sub_all[row] -= np.bincount(in_bin & 0xFFFF, minlength=_BINS)
    return dict(zip(bins.tolist(), sub_all))


class _Pass2:
    """Pass 2 reads only the keys of a few coarse bins, found by one table lookup per key: the bins to
    resolve, counted key by key, and the top bins, which hold the top-k negatives."""

    def __init__(self, bins: np.ndarray, top_bin: int | None, top_k: int, cpid: torch.Tensor,
                 ipid: torch.Tensor) -> None:
        dev = ipid.device
        self.row = torch.full((_BINS,), -1, dtype=torch.int64, device=dev)  # bin -> row of the counts
        self.row[torch.from_numpy(bins).to(dev)] = torch.arange(len(bins), device=dev)
        self.wanted = self.row >= 0
        if top_bin is not None:
            self.wanted[top_bin:] = True
        self.top_edge = None if top_bin is None else int(_edge(top_bin))
        self.sub = torch.zeros(len(bins) * _BINS, dtype=torch.int64, device=dev)
        self.top = _TopNegatives(top_k, cpid, ipid)

    def update(self, keys: torch.Tensor, c0: int, work: torch.Tensor) -> None:
        """`keys`: a strip's keys, flat; `work`: an int32 buffer of the same length."""
        idx = self.wanted.index_select(0, _bin_into(keys, work)).nonzero().squeeze(1)
        found = keys[idx]
        row = self.row.index_select(0, _bin(found))
        counted = row >= 0
        at = row[counted] * _BINS + (found[counted] & 0xFFFF)
        self.sub.index_add_(0, at, torch.ones_like(at))
        if self.top_edge is not None:
            top = found >= self.top_edge
            self.top.update(found[top], idx[top], c0)

    def counts(self) -> np.ndarray:
        """[bins, 65536]: the count of every key in each resolved bin."""
        return self.sub.view(-1, _BINS).cpu().numpy()


@dataclass(frozen=True)
class _PositiveSet:
    keys: np.ndarray  # int64, in (caption, image) order
    caption: np.ndarray
    image: np.ndarray
    sorted: np.ndarray  # keys ascending



class _Positives:
    """The key of every positive pair, gathered strip by strip. Positives are few (a few per caption)."""

    def __init__(self, pairs: _PositivePairs) -> None:
        self.pairs = pairs
        self.columns = _Columns(len(pairs), 1)

    def update(self, keys: torch.Tensor, c0: int, c1: int) -> None:
        """`keys`: the flat keys of captions c0..c1-1."""
        rows, cols = self.pairs.in_strip(c0, c1)
        at = torch.from_numpy(rows * self.pairs.n_images + cols).to(keys.device)
        self.columns.add(keys.index_select(0, at).cpu().numpy())

    def result(self) -> _PositiveSet:
        keys = self.columns.data[0].astype(np.int64)
        return _PositiveSet(keys, self.pairs.caption, self.pairs.image, np.sort(keys))


class _TopNegatives:
    """The top-k negatives by (score desc, caption asc, image asc), merged strip after strip.

    Strips arrive in caption order and a strip's candidates in (caption, image) order, so a stable
    sort over [held, new] ranks equal keys by index.
    """

    def __init__(self, k: int, cpid: torch.Tensor, ipid: torch.Tensor) -> None:
        self.k, self.cpid, self.ipid = k, cpid, ipid
        self.keys = torch.empty(0, dtype=torch.int32, device=ipid.device)
        self.caption = self.image = torch.empty(0, dtype=torch.int64, device=ipid.device)

    def update(self, keys: torch.Tensor, idx: torch.Tensor, c0: int) -> None:
        """`keys` at flat positions `idx` (ascending) of the strip starting at caption c0."""
        caption, image = idx // len(self.ipid) + c0, idx % len(self.ipid)
        neg = self.cpid[caption] != self.ipid[image]
        keys = torch.cat([self.keys, keys[neg]])
        caption, image = torch.cat([self.caption, caption[neg]]), torch.cat([self.image, image[neg]])
        top = _top_stable(keys, self.k)
        self.keys, self.caption, self.image = keys[top], caption[top], image[top]

    def result(self) -> tuple[ScoredPair, ...]:
        scores = _key_floats(self.keys.cpu().numpy())
        return tuple(ScoredPair(int(c), int(i), float(s))
                     for c, i, s in zip(self.caption.tolist(), self.image.tolist(), scores))


def _top_stable(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k largest keys, largest first, equal keys in position order."""
    keep = torch.arange(len(keys), device=keys.device)
    if len(keys) > k:  # all above the k-th key, then the first of its ties (there may be millions)
        kth = torch.topk(keys, k).values[-1]
        above = (keys > kth).nonzero().squeeze(1)
        keep = torch.cat([above, (keys == kth).nonzero().squeeze(1)[:k - len(above)]]).sort().values
    return keep[torch.sort(keys[keep], descending=True, stable=True).indices]


class _CoarseCounts:
    """Exact negative counts from the coarse histogram plus full detail inside a few resolved bins."""

    def __init__(self, hist_neg: np.ndarray, pos_sorted: np.ndarray) -> None:
        self.hist = hist_neg
        self.above = np.concatenate([np.cumsum(hist_neg[::-1])[::-1], [0]])  # above[j] = #neg in bins >= j
        self.nonempty = np.flatnonzero(hist_neg)
        self.pos = pos_sorted
        self.n_neg, self.n_pos = int(self.above[0]), len(pos_sorted)
        self.sub: dict[int, np.ndarray] = {}

    def next_nonempty(self, b: int) -> int | None:
        i = np.searchsorted(self.nonempty, b, side="right")
        return int(self.nonempty[i]) if i < len(self.nonempty) else None

    def eer_bin(self) -> int:
        """The bin whose lower edge is the last with FAR - FRR >= 0: the crossing lies inside it."""
        edges = _edge(np.arange(_BINS))
        fn = np.searchsorted(self.pos, edges, side="left")
        diff = self.above[:_BINS] * self.n_pos - fn * self.n_neg
        return int(np.flatnonzero(diff >= 0)[-1])

    def kth_bin(self, k: int) -> int:
        """The bin holding the k-th highest negative (1-based)."""
        return int(np.flatnonzero(self.above[:_BINS] >= k)[-1])

    def bins_to_resolve(self, allowed: dict[str, int]) -> np.ndarray:
        wanted = {self.eer_bin()} | {self.kth_bin(k + 1) for k in allowed.values()}
        wanted |= {self.next_nonempty(b) for b in wanted}
        return np.array(sorted(b for b in wanted if b is not None), dtype=np.int64)

    def resolve(self, sub: dict[int, np.ndarray]) -> None:
        self.sub = sub

    def count_gt(self, x: int) -> int:
        """#negatives with key > x."""
        b, lo = int(_bin(x)), x & 0xFFFF
        if b >= _BINS:
            return 0
        if self.hist[b] == 0 or lo == 0xFFFF:
            return int(self.above[b + 1])
        return int(self.above[b + 1] + self.sub[b][lo + 1:].sum())

    def kth_largest(self, k: int) -> int:
        b = self.kth_bin(k)
        from_top = np.cumsum(self.sub[b][::-1])
        return int(_edge(b)) + _BINS - 1 - int(np.searchsorted(from_top, k - self.above[b + 1]))

    def min_above(self, x: int) -> int | None:
        """The lowest negative key > x."""
        b, lo = int(_bin(x)), x & 0xFFFF
        if self.hist[b] > 0:
            rest = np.flatnonzero(self.sub[b][lo + 1:])
            if len(rest):
                return x + 1 + int(rest[0])
        nb = self.next_nonempty(b)
        return None if nb is None else int(_edge(nb)) + int(np.flatnonzero(self.sub[nb])[0])

    def next_candidate(self, x: int) -> int:
        """The lowest score key > x among positives and negatives; _INF_KEY when none."""
        i = np.searchsorted(self.pos, x, side="right")
        found = [int(self.pos[i])] if i < self.n_pos else []
        neg = self.min_above(x)
        found += [] if neg is None else [neg]
        return min(found, default=_INF_KEY)

    def point_after(self, x: int) -> tuple[int, int, int]:
        """(threshold, fp, fn) at the candidate right after key x: it accepts exactly the scores > x."""
        fn = int(np.searchsorted(self.pos, x, side="right"))
        return self.next_candidate(x), self.count_gt(x), fn

    def eer(self) -> tuple[int, int, int]:
        b = self.eer_bin()
        lo_edge, hi_edge = int(_edge(b)), int(_edge(b + 1))
        sub = self.sub[b]
        pos_in = self.pos[(self.pos >= lo_edge) & (self.pos < hi_edge)]
        cand = np.union1d(lo_edge + np.flatnonzero(sub), pos_in)
        ge_in_bin = np.cumsum(sub[::-1])[::-1]  # ge_in_bin[lo] = #neg in bin b with low bits >= lo
        fp = self.above[b + 1] + ge_in_bin[cand - lo_edge]
        fn = np.searchsorted(self.pos, cand, side="left")
        a = int(np.flatnonzero(fp * self.n_pos - fn * self.n_neg >= 0)[-1])
        return _pick_eer((int(cand[a]), int(fp[a]), int(fn[a])), self.point_after(int(cand[a])),
                         self.n_pos, self.n_neg)

    def at_far(self, k: int) -> tuple[int, int, int]:
        return self.point_after(self.kth_largest(k + 1))


def _pick_eer(a: tuple[int, int, int], b: tuple[int, int, int], n_pos: int, n_neg: int):
    """Of the last candidate with FAR >= FRR and the next one up, the one with smaller |FAR - FRR|;
    on a tie the higher threshold."""
    da = abs(a[1] * n_pos - a[2] * n_neg)
    db = abs(b[1] * n_pos - b[2] * n_neg)
    return b if db <= da else a


def _far_allowed(n_neg: int, levels: Sequence[str] = FAR_LEVELS) -> dict[str, int]:
    """floor(f * negatives) false accepts for each FAR level, in exact arithmetic."""
    return {level: int(Fraction(level) * n_neg) for level in levels}


def _point(t: int, fp: int, fn: int, n_pos: int, n_neg: int) -> OperatingPoint:
    return OperatingPoint(float(_key_floats([t])[0]), fp, fn, fp / n_neg, fn / n_pos)


def _result(eer_p, far_p: dict[str, tuple[int, int, int]], roc: np.ndarray, pos: _PositiveSet,
            false_accepts: tuple[ScoredPair, ...], n_pos: int, n_neg: int, top_k: int) -> VerificationResult:
    """Shared assembly of both paths from exact (threshold key, fp, fn) triples."""
    eer_point = _point(*eer_p, n_pos, n_neg)
    at_far = {level: _point(*p, n_pos, n_neg) for level, p in far_p.items()}
    pts = np.concatenate([roc, np.array([eer_p, *far_p.values(), (_INF_KEY, 0, n_pos)], np.int64)])
    pts = pts[np.unique(pts[:, 0], return_index=True)[1]][::-1]
    order = np.lexsort((pos.image, pos.caption, pos.keys))[:top_k]
    scores = _key_floats(pos.keys[order])
    rejects = tuple(ScoredPair(int(pos.caption[i]), int(pos.image[i]), float(s)) for i, s in zip(order, scores))
    return VerificationResult(
        positives=n_pos, negatives=n_neg, eer=(eer_point.far + eer_point.frr) / 2, eer_point=eer_point,
        at_far=at_far, false_accepts_allowed=_far_allowed(n_neg, tuple(far_p)), roc_threshold=_key_floats(pts[:, 0]),
        roc_far=pts[:, 1] / n_neg, roc_frr=pts[:, 2] / n_pos, false_rejects=rejects,
        false_accepts=false_accepts)


def _finish_streamed(c: _CoarseCounts, hist_all: np.ndarray, pos: _PositiveSet,
                     false_accepts: tuple[ScoredPair, ...], top_k: int,
                     levels: Sequence[str] = FAR_LEVELS) -> VerificationResult:
    far_p = {level: c.at_far(k) for level, k in _far_allowed(c.n_neg, levels).items()}
    bins = np.flatnonzero(hist_all)
    edges = _edge(bins)
    roc = np.stack([edges, c.above[bins], np.searchsorted(c.pos, edges, side="left")], 1)
    return _result(c.eer(), far_p, roc, pos, false_accepts, c.n_pos, c.n_neg, top_k)


# ---------------------------------------------------------------- the in-memory reference

def _verification_in_memory(keys: np.ndarray, mask: np.ndarray, top_k: int,
                            levels: Sequence[str] = FAR_LEVELS) -> VerificationResult:
    """Every operating point from sorted arrays: the plain definition the strip-wise path must match."""
    pos_sorted = np.sort(keys[mask]).astype(np.int64)
    neg_sorted = np.sort(keys[~mask]).astype(np.int64)
    n_pos, n_neg = len(pos_sorted), len(neg_sorted)
    _check_counts(n_pos, n_neg)
    cand = np.append(np.unique(keys).astype(np.int64), _INF_KEY)
    fp = n_neg - np.searchsorted(neg_sorted, cand, side="left")
    fn = np.searchsorted(pos_sorted, cand, side="left")
    a = int(np.flatnonzero(fp * n_pos - fn * n_neg >= 0)[-1])
    eer_p = _pick_eer((cand[a], fp[a], fn[a]), (cand[a + 1], fp[a + 1], fn[a + 1]), n_pos, n_neg)
    far_p = {}
    for level, k in _far_allowed(n_neg, levels).items():
        i = int(np.flatnonzero(fp <= k)[0])
        far_p[level] = (int(cand[i]), int(fp[i]), int(fn[i]))
    edges = _edge(np.unique(_bin(keys)))
    roc = np.stack([edges, n_neg - np.searchsorted(neg_sorted, edges, side="left"),
                    np.searchsorted(pos_sorted, edges, side="left")], 1)
    caption, image = np.nonzero(mask)
    pos = _PositiveSet(keys[caption, image].astype(np.int64), caption, image, pos_sorted)
    neg_c, neg_i = np.nonzero(~mask)
    neg_k = keys[neg_c, neg_i].astype(np.int64)
    top = np.lexsort((neg_i, neg_c, -neg_k))[:top_k]
    false_accepts = tuple(ScoredPair(int(neg_c[j]), int(neg_i[j]), float(s))
                          for j, s in zip(top, _key_floats(neg_k[top])))
    return _result((int(eer_p[0]), int(eer_p[1]), int(eer_p[2])), far_p, roc, pos, false_accepts,
                   n_pos, n_neg, top_k)


# ---------------------------------------------------------------- retrieval
