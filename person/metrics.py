"""Verification and retrieval metrics over image x caption cosine scores, exact at any size.

Scores. A pair's score is the float32 dot product of an L2-normalised caption embedding and an
L2-normalised image embedding (-0.0 is read as 0.0). Inputs must already be normalised (checked,
tolerance 1e-2). Pairs of the same identity are positives, every other pair is a negative.

Verification. A pair is accepted when score >= threshold.
    FAR(t) = #{negatives with score >= t} / #negatives
    FRR(t) = #{positives with score <  t} / #positives
The candidate thresholds are every distinct score plus +inf (accept nothing): exactly the thresholds
of `sklearn.metrics.roc_curve(drop_intermediate=False)`, so every operating point is one of them.
- EER: the candidate minimising |FAR - FRR|, compared exactly in integers (|fp*P - fn*N|). Along
  increasing candidates FAR - FRR strictly decreases, so at most two candidates tie (one each side of
  the crossing); the tie goes to the higher threshold (fewer false accepts). EER = (FAR + FRR) / 2 there.
- FAR=f for f in 1e-3..1e-6: k = floor(f * #negatives), computed exactly; the threshold is the smallest
  candidate that lets at most k negatives through, and FRR is read there. FAR=0 is k = 0: the smallest
  candidate above the highest negative (+inf when no positive scores above it).

Retrieval (as IRRA's `utils/metrics.py`): captions are queries, images the gallery, ranked by score
descending; equal scores keep gallery order (a stable sort). Rank-k (CMC) is the share of queries whose
first positive is within the top k, AP the mean over a query's positives of (positives so far / rank),
INP = positives / rank of the last positive. Queries without any positive in the gallery are left out
(IRRA would divide by zero) and counted.

How it stays exact without the score matrix. Scores are made in strips (a few captions x all images)
and each float32 score becomes an order-preserving int32 key. Positive pairs are known from the labels
alone, so no strip-sized mask is made. Pass 1 keeps every positive's key and a 65536-bin histogram of
all keys by their top 16 bits. The histogram locates the bin where the EER crossing falls, the bin
holding each FAR level's (k+1)-th highest negative, and the top bins, which hold the top-k negatives
reported as false accepts. Pass 2 goes over the same strips (the pass-1 keys when they fit in
`cache_bytes`, else scored again), picks with one table lookup per key the few keys in those bins, and
counts every distinct key in the resolved ones (a bin holds at most 65536 distinct float32 values).
Counts are integers, so the result is bit-identical to sorting everything (`verification_from_scores`),
whatever the strip size and however tied the scores. A positive's retrieval rank is 1 + #(higher
scores in its query's row) + #(equal scores earlier in the gallery), counted directly when queries have
few positives (the usual case) and read off a stable sort of each row otherwise: the same integers.

Threads. On the cpu only the matmul runs on the caller's torch threads; the per-strip bookkeeping (short,
memory-bound ops) runs on one, and the caller's setting is restored.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

FAR_LEVELS = ("1e-3", "1e-4", "1e-5", "1e-6", "0")  # JSON keys, as the report prints them
NORM_TOLERANCE = 1e-2
DEFAULT_BLOCK_PAIRS = 1 << 22  # scores per strip: 16 MB of float32, a few of these live at once
DEFAULT_CACHE_BYTES = 1 << 28  # keep pass-1 keys (4 bytes a pair) for pass 2 up to this size

_BINS = 1 << 16  # coarse histogram: top 16 bits of the key (sign, exponent, 7 mantissa bits)
_INF_KEY = 1 << 31  # stands for the +inf threshold: above every float32 key


class MetricInputError(ValueError):
    """Embeddings, labels or scores that cannot be scored; the message names the array and the fix."""


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold (accept when score >= threshold; inf accepts nothing) and its error counts."""

    threshold: float
    false_accepts: int
    false_rejects: int
    far: float
    frr: float


@dataclass(frozen=True)
class ScoredPair:
    """A (caption, image) pair by index, with its score."""

    caption: int
    image: int
    score: float


@dataclass(frozen=True, eq=False)
class VerificationResult:
    """Exact verification figures (see the module docstring for every definition).

    `false_accepts_allowed[level]` is floor(level * negatives): at 1e-6 only a handful of pairs decide
    the threshold. `roc_*` are exact operating points (thresholds descending, FAR ascending): one per
    non-empty histogram bin plus the EER and FAR points. `false_rejects` are the lowest-scoring positives,
    `false_accepts` the highest-scoring negatives (ties by caption index, then image index).
    """

    positives: int
    negatives: int
    eer: float
    eer_point: OperatingPoint
    at_far: dict[str, OperatingPoint]
    false_accepts_allowed: dict[str, int]
    roc_threshold: np.ndarray
    roc_far: np.ndarray
    roc_frr: np.ndarray
    false_rejects: tuple[ScoredPair, ...]
    false_accepts: tuple[ScoredPair, ...]

    @property
    def eer_threshold(self) -> float:
        return self.eer_point.threshold

    @property
    def frr_at_far(self) -> dict[str, float]:
        return {level: p.frr for level, p in self.at_far.items()}

    @property
    def threshold_at_far(self) -> dict[str, float]:
        return {level: p.threshold for level, p in self.at_far.items()}


@dataclass(frozen=True)
class RetrievalResult:
    """Text-to-image retrieval as fractions: `cmc[k]` is Rank-k; queries lacking a positive are left out."""

    cmc: dict[int, float]
    mAP: float
    mINP: float
    queries: int
    queries_without_positive: int


@dataclass(frozen=True)
class Evaluation:
    verification: VerificationResult
    retrieval: RetrievalResult | None

    def to_dict(self) -> dict:
        return summary(self.verification, self.retrieval)


# ---------------------------------------------------------------- public entry points

def verification(image_emb, image_pid, caption_emb, caption_pid, *, top_k: int = 15,
                 block_pairs: int = DEFAULT_BLOCK_PAIRS, device: str | torch.device | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, progress: bool = False) -> VerificationResult:
    """Verification over every image x caption pair, computed strip by strip (see module docstring)."""
    return evaluate(image_emb, image_pid, caption_emb, caption_pid, ks=(), top_k=top_k,
                    block_pairs=block_pairs, device=device, cache_bytes=cache_bytes,
                    progress=progress).verification


def retrieval(caption_emb, caption_pid, image_emb, image_pid, *, ks: Sequence[int] = (1, 5, 10),
              block_pairs: int = DEFAULT_BLOCK_PAIRS, device: str | torch.device | None = None,
              progress: bool = False) -> RetrievalResult:
    """Rank-k, mAP and mINP of caption queries against the image gallery, strip by strip."""
    img, ipid, cap, cpid = _check_embeddings(image_emb, image_pid, caption_emb, caption_pid, _device(device))
    ranks = _Ranks(_PositivePairs(cpid.cpu().numpy(), ipid.cpu().numpy()))
    for c0, c1 in _progress(_strips(len(cpid), len(ipid), block_pairs), progress, "retrieval"):
        s = _cosine_strip(cap, img, c0, c1)  # on the caller's threads, the rest on one (see _StripKeys)
        with _cpu_threads(1, img.device):
            ranks.update(_keys(s), c0)
    return ranks.result(len(cpid), ks)


def evaluate(image_emb, image_pid, caption_emb, caption_pid, *, ks: Sequence[int] = (1, 5, 10),
             top_k: int = 15, block_pairs: int = DEFAULT_BLOCK_PAIRS,
             device: str | torch.device | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
             progress: bool = False) -> Evaluation:
    """Verification and (when `ks` is not empty) retrieval from one pass of score strips.

    `image_emb` [Ni, D], `caption_emb` [Nc, D]: L2-normalised, any float dtype (scored in float32);
    `image_pid` [Ni], `caption_pid` [Nc]: integer identities. Runs on `device` (default: cuda when
    available); peak memory is a few strips of `block_pairs` scores plus the positives, whatever Ni x Nc.
    """
    img, ipid, cap, cpid = _check_embeddings(image_emb, image_pid, caption_emb, caption_pid, _device(device))
    strips = _strips(len(cpid), len(ipid), block_pairs)
    cache = len(cpid) * len(ipid) * 4 <= cache_bytes

    def score(c0: int, c1: int) -> torch.Tensor:
        return _cosine_strip(cap, img, c0, c1)

    return _evaluate_strips(score, strips, cpid, ipid, ks, top_k, cache, progress)


def verification_from_scores(scores, image_pid, caption_pid, *, top_k: int = 15,
                             block_pairs: int | None = None,
                             cache_bytes: int = DEFAULT_CACHE_BYTES) -> VerificationResult:
    """Verification of a given score matrix `scores[caption, image]` (float32, [Nc, Ni]).

    `block_pairs=None` sorts everything in memory: the plain reference. An integer runs the strip-wise
    algorithm that `verification` uses over slices of the matrix (pass 2 reads the pass-1 keys when they
    fit in `cache_bytes`, else remakes them from the matrix); all give bit-identical results.
    """
    s, ipid, cpid = _check_scores(scores, image_pid, caption_pid)
    if block_pairs is not None:
        return _scores_verification(s, ipid, cpid, top_k, block_pairs, cache_bytes)
    keys = _keys_np(s)
    mask = cpid[:, None] == ipid[None, :]
    return _verification_in_memory(keys, mask, top_k)


def retrieval_from_scores(scores, caption_pid, image_pid, *, ks: Sequence[int] = (1, 5, 10),
                          block_pairs: int = DEFAULT_BLOCK_PAIRS) -> RetrievalResult:
    """Retrieval of a given score matrix `scores[caption, image]` (float32, [Nc, Ni]), strip by strip."""
    s, ipid, cpid = _check_scores(scores, image_pid, caption_pid)
    keys, ranks = _keys_np(s), _Ranks(_PositivePairs(cpid, ipid))
    for c0, c1 in _strips(len(cpid), len(ipid), block_pairs):
        ranks.update(torch.from_numpy(keys[c0:c1]), c0)
    return ranks.result(len(cpid), ks)


def cosine_scores(image_emb, caption_emb, *, block_pairs: int = DEFAULT_BLOCK_PAIRS,
                  device: str | torch.device | None = None) -> np.ndarray:
    """The full score matrix [Nc, Ni] made from the same strips `evaluate` scores (same bits)."""
    img, cap = _pair_embeddings(image_emb, caption_emb, _device(device))
    strips = _strips(len(cap), len(img), block_pairs)
    return np.concatenate([_cosine_strip(cap, img, c0, c1).add_(0.0).cpu().numpy() for c0, c1 in strips])


def summary(ver: VerificationResult, ret: RetrievalResult | None = None) -> dict:
    """The report as a JSON-ready dict of fractions; a threshold of +inf (accept nothing) is None."""
    def thr(x: float) -> float | None:
        return None if np.isinf(x) else x

    out = {
        "eer": ver.eer,
        "eer_threshold": thr(ver.eer_threshold),
        "frr_at_far": ver.frr_at_far,
        "threshold_at_far": {k: thr(v) for k, v in ver.threshold_at_far.items()},
        "false_accepts_allowed": dict(ver.false_accepts_allowed),
        "positives": ver.positives,
        "negatives": ver.negatives,
    }
    if ret is not None:
        out.update({f"rank{k}": v for k, v in ret.cmc.items()})
        out.update({"mAP": ret.mAP, "mINP": ret.mINP, "queries": ret.queries,
                    "queries_without_positive": ret.queries_without_positive})
    return out


# ---------------------------------------------------------------- input checks

def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _labels(pid, name: str, n: int) -> np.ndarray:
    a = pid.cpu().numpy() if isinstance(pid, torch.Tensor) else np.asarray(pid)
    if a.ndim != 1 or len(a) != n:
        raise MetricInputError(f"{name} must be a 1-D array with one label per row ({n}); got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise MetricInputError(f"{name} must hold integer identities; got dtype {a.dtype}")
    return a.astype(np.int64)


def _embeddings(emb, name: str, dev: torch.device) -> torch.Tensor:
    t = emb if isinstance(emb, torch.Tensor) else torch.from_numpy(np.asarray(emb))
    if t.ndim != 2 or not t.is_floating_point() or len(t) == 0:
        raise MetricInputError(f"{name} must be a non-empty 2-D float array [N, D]; got {tuple(t.shape)} {t.dtype}")
    t = t.to(dev, torch.float32)
    with _cpu_threads(1, dev):  # a short memory-bound reduction (see _StripKeys)
        norms = torch.linalg.vector_norm(t, dim=1)
    bad = ~((norms - 1).abs() <= NORM_TOLERANCE)  # NaN counts as bad
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise MetricInputError(
            f"{name} row {row} has L2 norm {float(norms[row]):.6g}: embeddings must be L2-normalised "
            f"(x / ||x||, tolerance {NORM_TOLERANCE}) and finite; normalise them before scoring")
    return t


def _pair_embeddings(image_emb, caption_emb, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    img = _embeddings(image_emb, "image_emb", dev)
    cap = _embeddings(caption_emb, "caption_emb", dev)
    if img.shape[1] != cap.shape[1]:
        raise MetricInputError(f"image_emb has dimension {img.shape[1]} but caption_emb {cap.shape[1]}: "
                               "both must come from the same embedding space")
    return img, cap


def _check_embeddings(image_emb, image_pid, caption_emb, caption_pid, dev: torch.device):
    img, cap = _pair_embeddings(image_emb, caption_emb, dev)
    ipid = torch.from_numpy(_labels(image_pid, "image_pid", len(img))).to(dev)
    cpid = torch.from_numpy(_labels(caption_pid, "caption_pid", len(cap))).to(dev)
    return img, ipid, cap, cpid


def _check_scores(scores, image_pid, caption_pid):
    s = scores.cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if s.ndim != 2 or s.dtype != np.float32 or 0 in s.shape:
        raise MetricInputError(f"scores must be a float32 matrix [captions, images]; got {s.shape} {s.dtype}")
    if not np.isfinite(s).all():
        raise MetricInputError("scores hold NaN or inf: score finite, normalised embeddings")
    cpid = _labels(caption_pid, "caption_pid (one per scores row)", s.shape[0])
    ipid = _labels(image_pid, "image_pid (one per scores column)", s.shape[1])
    return s, ipid, cpid


def _check_counts(n_pos: int, n_neg: int) -> None:
    if n_pos == 0:
        raise MetricInputError("no positive pairs: no caption shares an identity with any image; "
                               "check that caption_pid and image_pid use the same identity numbering")
    if n_neg == 0:
        raise MetricInputError("no negative pairs: every caption has the identity of every image (one "
                               "identity?); verification needs images and captions of at least two identities")
    if n_pos * n_neg >= 1 << 62:
        raise MetricInputError(f"{n_pos} positives x {n_neg} negatives overflow the exact int64 comparison")


# ---------------------------------------------------------------- keys and strips

def _keys(scores: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
    """Order-preserving int32 keys of float32 scores (a < b exactly when key(a) < key(b); -0.0 and 0.0
    share one), made in place: the caller hands over a score tensor it owns. `work` (int32, same shape)
    takes the temporary: a fresh 16 MB buffer costs more in page faults than the op itself."""
    scores.add_(0.0)  # -0.0 + 0.0 is 0.0
    bits = scores.view(torch.int32)
    flip = torch.bitwise_right_shift(bits, 31, out=work)
    flip &= 0x7FFFFFFF
    bits ^= flip
    return bits


def _keys_np(scores: np.ndarray) -> np.ndarray:
    bits = (scores + np.float32(0.0)).view(np.int32)  # -0.0 + 0.0 is 0.0
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _key_floats(keys) -> np.ndarray:
    """Scores (float64 of the float32 values) of int64 keys; _INF_KEY gives +inf."""
    k = np.asarray(keys, np.int64)
    inf = k == _INF_KEY
    k32 = np.where(inf, 0, k).astype(np.int32)
    out = (k32 ^ ((k32 >> 31) & 0x7FFFFFFF)).view(np.float32).astype(np.float64)
    out[inf] = np.inf
    return out


def _bin(keys):
    """Coarse histogram bin (0..65535) of int32 keys: their top 16 bits, shifted to be non-negative."""
    b = keys >> 16
    b += _BINS // 2
    return b


def _bin_into(keys: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """_bin of a strip's keys, written into a reused int32 buffer."""
    torch.bitwise_right_shift(keys, 16, out=out)
    out += _BINS // 2
    return out


def _edge(b):
    """Lowest key of bin `b`; bin 65536's edge is _INF_KEY."""
    return (np.asarray(b, np.int64) - _BINS // 2) << 16


def _strips(n_captions: int, n_images: int, block_pairs: int) -> list[tuple[int, int]]:
    if not 1 <= block_pairs < 1 << 31:
        raise MetricInputError(f"block_pairs must be between 1 and 2**31 - 1; got {block_pairs}")
    per = max(1, block_pairs // max(1, n_images))
    return [(c0, min(c0 + per, n_captions)) for c0 in range(0, n_captions, per)]


def _cosine_strip(cap: torch.Tensor, img: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
    """The float32 scores of captions c0..c1-1, as the matmul gives them (-0.0 included)."""
    return cap[c0:c1] @ img.T


def _progress(strips, on: bool, what: str):
    return tqdm(strips, desc=what, unit="strip", disable=not on, leave=False)


@contextmanager
def _cpu_threads(n: int, dev: torch.device) -> Iterator[None]:
    """Run the block on `n` torch cpu threads, then restore the caller's setting (off the cpu: as is)."""
    threads = torch.get_num_threads()
    if dev.type != "cpu" or threads == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _scores_verification(s: np.ndarray, ipid: np.ndarray, cpid: np.ndarray, top_k: int,
                         block_pairs: int, cache_bytes: int) -> VerificationResult:
    """The strip-wise path over slices of a score matrix already in memory (on the cpu)."""
    def score(c0: int, c1: int) -> torch.Tensor:
        return torch.from_numpy(s[c0:c1].copy())  # _keys works in place

    strips = _strips(s.shape[0], s.shape[1], block_pairs)
    return _evaluate_strips(score, strips, torch.from_numpy(cpid), torch.from_numpy(ipid), (), top_k,
                            cache=s.size * 4 <= cache_bytes, progress=False).verification


# ---------------------------------------------------------------- the strip-wise path

def _evaluate_strips(score: Callable[[int, int], torch.Tensor], strips: list[tuple[int, int]],
                     cpid: torch.Tensor, ipid: torch.Tensor, ks: Sequence[int], top_k: int,
                     cache: bool, progress: bool) -> Evaluation:
    """Both passes (see the module docstring); pass 2 reads the pass-1 keys when `cache`, else scores again."""
    n_pos = _count_positives(cpid, ipid)
    _check_counts(n_pos, len(cpid) * len(ipid) - n_pos)  # before sizing anything by n_pos
    strip_keys = _StripKeys(score, strips, len(ipid), ipid.device)
    with _cpu_threads(1, ipid.device):
        hist_all, pos, ret, cached = _pass1(strip_keys, strips, cpid, ipid, ks, cache, progress)
        counter = _CoarseCounts(hist_all - np.bincount(_bin(pos.keys), minlength=_BINS), pos.sorted)
        bins = counter.bins_to_resolve(_far_allowed(counter.n_neg))
        top_bin = counter.kth_bin(min(top_k, counter.n_neg)) if top_k else None
        pass2 = _Pass2(bins, top_bin, top_k, cpid, ipid)
        for i, (c0, c1) in enumerate(_progress(strips, progress and not cache, "scores (pass 2)")):
            keys = cached[i] if cache else strip_keys(c0, c1)
            pass2.update(keys, c0, strip_keys.work_for(keys))
    counter.resolve(_negatives_in_bins(pass2.counts(), bins, hist_all, pos))
    return Evaluation(_finish_streamed(counter, hist_all, pos, pass2.top.result(), top_k), ret)


class _StripKeys:
    """A strip's keys, flat. Only the scoring runs on the caller's torch threads (the matmul gains from
    them); the bookkeeping runs on one cpu thread: short memory-bound ops, where a second thread gains
    little and, on a shared machine, each op waits for a descheduled one (5-20x slower per op, measured
    on a loaded 2-core box). The temporaries go to one reused buffer: a fresh 16 MB tensor per op costs
    more in page faults than the op itself."""

    def __init__(self, score: Callable[[int, int], torch.Tensor], strips: list[tuple[int, int]],
                 n_images: int, dev: torch.device) -> None:
        self.score, self.threads, self.dev = score, torch.get_num_threads(), dev
        self.work = torch.empty(max(c1 - c0 for c0, c1 in strips) * n_images, dtype=torch.int32, device=dev)

    def __call__(self, c0: int, c1: int) -> torch.Tensor:
        with _cpu_threads(self.threads, self.dev):
            s = self.score(c0, c1)
        return _keys(s.view(-1), self.work_for(s))

    def work_for(self, keys: torch.Tensor) -> torch.Tensor:
        """The int32 buffer, cut to the size of `keys`."""
        return self.work[:keys.numel()]


def _pass1(strip_keys: _StripKeys, strips: list[tuple[int, int]], cpid: torch.Tensor, ipid: torch.Tensor,
           ks: Sequence[int], cache: bool,
           progress: bool) -> tuple[np.ndarray, _PositiveSet, RetrievalResult | None, list[torch.Tensor]]:
    """(histogram of all keys, the positives, retrieval or None, the strips' keys when `cache`)."""
    pairs = _PositivePairs(cpid.cpu().numpy(), ipid.cpu().numpy())
    positives = _Positives(pairs)
    ranks = _Ranks(pairs) if ks else None
    hist = torch.zeros(_BINS, dtype=torch.int64, device=ipid.device)
    cached: list[torch.Tensor] = []
    for c0, c1 in _progress(strips, progress, "scores (pass 1)"):
        keys = strip_keys(c0, c1)
        if ranks is not None:
            ranks.update(keys.view(c1 - c0, len(ipid)), c0)
        hist += torch.bincount(_bin_into(keys, strip_keys.work_for(keys)), minlength=_BINS)
        positives.update(keys, c0, c1)
        if cache:
            cached.append(keys)
    ret = ranks.result(len(cpid), ks) if ranks is not None else None
    return hist.cpu().numpy(), positives.result(), ret, cached


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


def _count_positives(cpid: torch.Tensor, ipid: torch.Tensor) -> int:
    """Same-identity pairs, from the label counts alone."""
    ids_c, n_c = np.unique(cpid.cpu().numpy(), return_counts=True)
    ids_i, n_i = np.unique(ipid.cpu().numpy(), return_counts=True)
    _, at_c, at_i = np.intersect1d(ids_c, ids_i, assume_unique=True, return_indices=True)
    return int((n_c[at_c] * n_i[at_i]).sum())


class _PositivePairs:
    """Every same-identity (caption, image) pair, in (caption, image) order, found from the labels alone:
    no strip-sized mask is ever made."""

    def __init__(self, cpid: np.ndarray, ipid: np.ndarray) -> None:
        order = np.argsort(ipid, kind="stable")  # the images of an identity, in index order
        lo = np.searchsorted(ipid[order], cpid, side="left")
        n = np.searchsorted(ipid[order], cpid, side="right") - lo
        self.start = np.concatenate([[0], np.cumsum(n)])  # caption c's pairs: start[c]..start[c + 1] - 1
        self.caption = np.repeat(np.arange(len(cpid)), n)
        self.image = order[np.arange(self.start[-1]) + np.repeat(lo - self.start[:-1], n)]
        self.n_images = len(ipid)

    def __len__(self) -> int:
        return len(self.image)

    def in_strip(self, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """(row within the strip, image) of the pairs of captions c0..c1-1."""
        lo, hi = self.start[c0], self.start[c1]
        return self.caption[lo:hi] - c0, self.image[lo:hi]


class _Columns:
    """Integer columns of a known length, filled strip by strip.

    Sized up front on purpose: small arrays kept from every strip, between the strips' big freed
    buffers, fragment the heap (RSS grew ~20 MB a strip on 400M pairs); one allocation does not.
    """

    def __init__(self, n_rows: int, n_columns: int) -> None:
        self.data = np.empty((n_columns, n_rows), np.int32)  # keys, indexes and ranks all fit
        self.end = 0

    def add(self, *columns: np.ndarray) -> None:
        n = len(columns[0])
        for row, col in zip(self.data, columns):
            row[self.end:self.end + n] = col
        self.end += n


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


def _far_allowed(n_neg: int) -> dict[str, int]:
    """floor(f * negatives) false accepts for each FAR level, in exact arithmetic."""
    return {level: int(Fraction(level) * n_neg) for level in FAR_LEVELS}


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
        at_far=at_far, false_accepts_allowed=_far_allowed(n_neg), roc_threshold=_key_floats(pts[:, 0]),
        roc_far=pts[:, 1] / n_neg, roc_frr=pts[:, 2] / n_pos, false_rejects=rejects,
        false_accepts=false_accepts)


def _finish_streamed(c: _CoarseCounts, hist_all: np.ndarray, pos: _PositiveSet,
                     false_accepts: tuple[ScoredPair, ...], top_k: int) -> VerificationResult:
    far_p = {level: c.at_far(k) for level, k in _far_allowed(c.n_neg).items()}
    bins = np.flatnonzero(hist_all)
    edges = _edge(bins)
    roc = np.stack([edges, c.above[bins], np.searchsorted(c.pos, edges, side="left")], 1)
    return _result(c.eer(), far_p, roc, pos, false_accepts, c.n_pos, c.n_neg, top_k)


# ---------------------------------------------------------------- the in-memory reference

def _verification_in_memory(keys: np.ndarray, mask: np.ndarray, top_k: int) -> VerificationResult:
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
    for level, k in _far_allowed(n_neg).items():
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

_COUNT_RANKS_UP_TO = 16  # positives per query (strip average) up to which ranks are counted, not sorted


class _Ranks:
    """The 1-based rank of every positive in its query's gallery ordering, strip after strip:
    1 + #(higher scores) + #(equal scores earlier in the gallery). Counted directly when queries have
    few positives (the usual case: two passes over the query's row per positive); with many, a stable
    sort of every row is cheaper (on the cpu one costs about 40 such passes)."""

    def __init__(self, pairs: _PositivePairs) -> None:
        self.pairs = pairs
        self.columns = _Columns(len(pairs), 2)

    def update(self, keys: torch.Tensor, c0: int) -> None:
        """`keys`: [c1 - c0, images], the keys of captions c0..c1-1."""
        rows, cols = self.pairs.in_strip(c0, c0 + len(keys))
        if len(rows) > _COUNT_RANKS_UP_TO * len(keys):
            query, rank = _sorted_ranks(keys, rows, cols)
        else:
            query, rank = _counted_ranks(keys, rows, cols)
        self.columns.add(query + c0, rank)

    def result(self, n_queries: int, ks: Sequence[int]) -> RetrievalResult:
        query, rank = self.columns.data
        return _rank_metrics(query, rank.astype(np.float64), n_queries, ks)


def _sorted_ranks(keys: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, rank) of a strip's positives, by query then rank, from a stable sort of every row."""
    mask = torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
    mask[torch.from_numpy(rows).to(keys.device), torch.from_numpy(cols).to(keys.device)] = True
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices
    query, col = mask.gather(1, order).nonzero(as_tuple=True)  # row-major: by query, rank ascending
    return query.cpu().numpy(), col.cpu().numpy() + 1


def _counted_ranks(keys: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, rank) of a strip's positives, by query then rank, by counting. Positives go by slot (a
    query's n-th positive), so one slot compares each of its rows with one key, and no row is copied
    when every query has that slot."""
    dev = keys.device
    rows_t, cols_t = torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)
    key = keys[rows_t, cols_t]
    slot = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    rank = torch.empty(len(rows), dtype=torch.int32, device=dev)
    for n in range(int(slot.max()) + 1 if len(rows) else 0):
        at = torch.from_numpy(np.flatnonzero(slot == n)).to(dev)
        block = keys if len(at) == len(keys) else keys.index_select(0, rows_t[at])
        k = key[at, None]
        tied = (block == k).sum(1, dtype=torch.int32)  # the positive itself included; int32: 4x faster
        rank[at] = 1 + (block > k).sum(1, dtype=torch.int32) + _ties_before(block, k, cols_t[at], tied)
    rank = rank.cpu().numpy()
    order = np.lexsort((rank, rows))
    return rows[order], rank[order]


def _ties_before(block: torch.Tensor, k: torch.Tensor, col: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """Per row of `block`, the keys equal to k that come before column `col` (rows without ties: 0)."""
    out = torch.zeros_like(tied)
    t = (tied > 1).nonzero().squeeze(1)
    if len(t):
        before = torch.arange(block.shape[1], device=block.device) < col[t, None]
        out[t] = ((block[t] == k[t]) & before).sum(1, dtype=torch.int32)
    return out


def _rank_metrics(query: np.ndarray, rank: np.ndarray, n_queries: int, ks: Sequence[int]) -> RetrievalResult:
    """CMC, mAP, mINP from the positives' ranks (sorted by query, then rank), as IRRA defines them."""
    m = np.bincount(query, minlength=n_queries)
    found = m[m > 0]
    if len(found) == 0:
        raise MetricInputError("no caption query has a positive image in the gallery: check that "
                               "caption_pid and image_pid use the same identity numbering")
    missing = n_queries - len(found)
    if missing:
        log.warning("%d of %d caption queries have no image of their identity; left out of retrieval",
                    missing, n_queries)
    starts = np.concatenate([[0], np.cumsum(found)[:-1]])
    nth = np.arange(len(query)) - np.repeat(starts, found) + 1  # 1..m within each query
    ap = np.add.reduceat(nth / rank, starts) / found
    first, last = rank[starts], rank[starts + found - 1]
    return RetrievalResult(cmc={k: float(np.mean(first <= k)) for k in ks}, mAP=float(np.mean(ap)),
                           mINP=float(np.mean(found / last)), queries=len(found),
                           queries_without_positive=missing)
