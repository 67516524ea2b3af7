"""Exact search over a gallery's float16 rows in two passes: an int8 scan bounds every row's score, and only the
rows the bound cannot rule out of the top k are scored exactly. Exact by construction: near-ties (duplicates,
rows closer than int8 resolves) only make the second pass larger, never the answer different.

Built in memory when the gallery is opened, as the FAISS fp16 index it replaces was: nothing is written to disk,
so compaction and erasure, which rewrite the segments, have no other copy of a row to remove. The build keeps
one global scale g (max|x| / 127, rounded up to 16 significant bits so that the residuals x - g c are exact in
float32), the codes c = round(x / g) (int8 [n, D]: half the float16 rows' bytes), E >= the largest row error
||x_j - g c_j|| and N >= the largest row norm. The float16 rows themselves (gallery.features(), memory-mapped)
stay where they are and are read back for the exact scores.

A query q gets its own scale gq = max|q| / 127 and codes cq; a_j = gq g <cq, c_j> comes from one int8 matrix
product for the whole batch of queries. Since <q, x_j> - a_j = <q - gq cq, x_j> + gq <cq, x_j - g c_j>,
    |<q, x_j> - a_j| <= ||q - gq cq|| N + gq ||cq|| E                                  (Cauchy-Schwarz).
The top FIRST (or k) rows by a_j are scored exactly; T, the k-th best of those, is at most the true k-th best
score. A row with a_j + delta < T scores less than T, so is not in the top k (ties included); every other row
is scored exactly too, and the top k of those is the answer: score descending, then position ascending.

The exact score is what FAISS's fp16 scan computed: the float16 row as float32 times the float32 query, summed in
float32. delta is the bound above plus that sum's rounding, |fl(sum) - sum| <= gamma_D sum |q_i x_i| <=
gamma_D ||q|| N with gamma_D = D u / (1 - D u), u = 2^-24, whatever the order of the sum (Higham, "Accuracy and
Stability of Numerical Algorithms", 3.1), plus 1e-9 of ||q|| N for the float64 arithmetic of the bound itself and
1e-30 for underflow. Each row's sum is numpy's pairwise sum of that row alone: a row gets the same bits in
whichever set it is scored (a BLAS matrix-vector product does not promise that), so equal rows tie exactly.

Both passes read the int8 scores through the largest of each run of BLOCK columns: the top FIRST (or k) rows lie in
as many runs of largest maxima, and the rows the bound keeps in the runs whose maximum reaches it, so neither a
top-k nor a comparison goes over every column for each query.

Row masks (deleted rows, --where conditions): a mask keeping few rows has them scored exactly, and nothing else is
read; one keeping a few runs of rows (a segment, a time range) has only those runs scanned; any other has the span
from its first allowed row to its last scanned, the others given the lowest int8 score before the top-k.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from person.gallery.manifest import GalleryError

FIRST = 32            # rows scored exactly before the bound is applied: on real embeddings the top k of the int8
                      # scores holds the exact top k and the bound rules out the rest, without a second look
BLOCK_ROWS = 4096     # rows converted to float32 at a time by the build: bounds its temporary memory
SCORE_ROWS = 1024     # rows scored exactly at a time
BLOCK = 64            # int8 scores summarised by their largest: over 100k columns a run's maximum costs ~1/10 of a
                      # top-k (measured for 8 queries on one thread: 0.09 ms against 0.96 ms)
MAX_SPANS = 8         # a mask of at most this many runs of allowed rows is scanned run by run, unmasked
# A mask keeping at most n / DIRECT_RATIO rows per query (or DIRECT_ROWS) has them scored exactly, with no int8
# pass: measured at 100k x 512 on one core, scoring a row exactly for one query costs ~6 rows of the int8 scan
# (0.5 us against 0.09 us), and a batch shares the scan but not the scores.
DIRECT_RATIO = 8
DIRECT_ROWS = 2048
LOWEST = torch.iinfo(torch.int32).min  # a masked row's int8 score: below any row's, |<cq, c>| <= 127^2 D < 2^31
MAX_DIM = (2**31 - 1) // 127**2        # dimensions whose int8 products still sum exactly in int32


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """The queries as contiguous float32 [q, dim]; GalleryError naming both dimensions when they are another
    model's."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2:
        raise GalleryError(f"queries must be an array [queries, {dim}], got shape {q.shape}")
    if q.shape[1] != dim:
        raise GalleryError(f"query vectors of dimension {q.shape[1]} for a gallery of dimension {dim}: embed the "
                           f"queries with a model of the gallery's space")
    if not np.isfinite(q).all():
        raise GalleryError("a query vector holds NaN or infinity")
    return np.ascontiguousarray(q)


def _float16(rows: np.ndarray) -> torch.Tensor:
    """A copy of float16 rows as a tensor: torch converts them to float32 ~20x faster than numpy, and wants
    writable memory (the gallery's rows are a read-only memory map)."""
    return torch.from_numpy(np.array(rows, dtype=np.float16))


def _gamma(terms: int) -> float:
    """Higham's gamma_n: the relative error bound of a float32 sum of n products (or squares)."""
    return terms * 2.0**-24 / (1 - terms * 2.0**-24)


def _scale(peak: float) -> float:
    """peak / 127 rounded up to 16 significant bits, so that g c (c <= 127: 7 bits) and x - g c are exact in float32:
    x is float16 and |x - g c| < g, so the residual needs at most 12 bits past x's or g's lowest bit."""
    if peak == 0:
        return 1.0
    mantissa, exponent = math.frexp(peak / 127)
    return math.ldexp(math.ceil(mantissa * 2**16), exponent - 16)


class ExactScan:
    """The exact top-k scan over float16 rows [n, D] (the rows are kept by reference, not copied)."""

    def __init__(self, features: np.ndarray) -> None:
        n, dim = features.shape
        if dim > MAX_DIM:
            raise GalleryError(f"features of dimension {dim}: the exact scan handles up to {MAX_DIM}")
        self.features, self.dim = features, dim
        peak = 0.0
        for a in range(0, n, BLOCK_ROWS):
            low, high = (float(v) for v in torch.aminmax(_float16(features[a:a + BLOCK_ROWS])))  # NaN if any is
            if not (math.isfinite(low) and math.isfinite(high)):
                raise GalleryError(f"the gallery's features hold NaN or infinity (rows {a} to "
                                   f"{min(a + BLOCK_ROWS, n) - 1}): the gallery is damaged; enrol them again")
            peak = max(peak, -low, high)
        self.scale = _scale(peak)
        # torch 2.13's CPU _int_mm returns zeros for an inner dimension of 1: a zero column keeps it at 2. BLOCK rows
        # of zeros past the last let a scan read on to the end of its last run (their scores are set lowest).
        self._padded = torch.zeros((n + BLOCK, max(dim, 2)), dtype=torch.int8)
        self.codes = self._padded[:n]
        error = norm = 0.0
        for a in range(0, n, BLOCK_ROWS):
            x = _float16(features[a:a + BLOCK_ROWS]).float()
            c = torch.div(x, self.scale).round_().clamp_(-127, 127)
            self.codes[a:a + len(x), :dim] = c
            norm = max(norm, float(torch.linalg.vector_norm(x, dim=1).max()))
            error = max(error, float(torch.linalg.vector_norm(x.sub_(c, alpha=self.scale), dim=1).max()))
        # The residuals are exact (_scale); their float32 norms are within a factor 1 + 2 gamma_D of the truth.
        self.row_error, self.max_norm = (v * (1 + 2 * _gamma(dim)) for v in (error, norm))

    def __len__(self) -> int:
        return len(self.codes)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [q, w], row positions int64 [q, w]), w = min(k, rows) but at least 1, best first (ties
        by position); -1 and -inf where fewer than w rows are allowed. `allowed`: bool [rows], or None for all."""
        q = check_queries(queries, self.dim)
        n = len(self)
        width = max(1, min(k, n))
        scores = np.full((len(q), width), -np.inf, np.float32)
        positions = np.full((len(q), width), -1, np.int64)
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (n,):
                raise GalleryError(f"a row mask of shape {allowed.shape} for a gallery of {n} rows")
        if not len(q) or not n:
            return scores, positions
        if allowed is None:
            self._two_pass(q, width, [(0, n)], None, scores, positions)
        elif np.count_nonzero(allowed) * len(q) <= max(DIRECT_ROWS, n // DIRECT_RATIO):
            rows = np.flatnonzero(allowed)  # few rows: scored exactly, the int8 codes of the others never read
            for i, exact in enumerate(self.exact_scores(rows, q)):
                _put(exact, rows, scores[i], positions[i])
        else:
            self._two_pass(q, width, *_spans(allowed), scores, positions)
        return scores, positions

    def exact_scores(self, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """float32 [q, len(rows)]: the rows' float16 values as float32 times each query, summed row by row (numpy's
        pairwise sum of one row: the same bits whichever other rows are scored with it). Each row is read once for
        all the queries."""
        out = np.empty((len(queries), len(rows)), np.float32)
        product = torch.empty((max(1, min(len(rows), SCORE_ROWS)), self.dim))
        for a, wide in self._wide(rows):
            for i, q in enumerate(torch.from_numpy(queries)):
                torch.mul(wide, q, out=product[:len(wide)])
                product[:len(wide)].numpy().sum(axis=1, out=out[i, a:a + len(wide)])
        return out

    def exact_pairs(self, rows: np.ndarray, which: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """float32 [len(rows)]: row rows[j] scored as exact_scores scores it against query which[j] (the same bits)."""
        out = np.empty(len(rows), np.float32)
        chosen = torch.empty((max(1, min(len(rows), SCORE_ROWS)), self.dim))
        qs, which = torch.from_numpy(queries), torch.from_numpy(np.asarray(which, np.int64))
        for a, wide in self._wide(rows):
            torch.index_select(qs, 0, which[a:a + len(wide)], out=chosen[:len(wide)])
            wide.mul_(chosen[:len(wide)]).numpy().sum(axis=1, out=out[a:a + len(wide)])
        return out

    def _wide(self, rows: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, float32 [m, D]) for each block of up to SCORE_ROWS of `rows`, read from the float16 rows into one
        buffer reused block after block (no fresh pages to fault): a block is overwritten by the next."""
        block = max(1, min(len(rows), SCORE_ROWS))
        half, wide = np.empty((block, self.dim), np.float16), torch.empty((block, self.dim))
        for a in range(0, len(rows), block):
            m = len(rows[a:a + block])
            np.take(self.features, rows[a:a + block], axis=0, out=half[:m], mode="clip")  # "raise" would buffer
            wide[:m].copy_(torch.from_numpy(half[:m]))
            yield a, wide[:m]

    def quantize(self, queries: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """(int8 codes [q, D'], step [q], delta [q]) of float32 queries: a row's approximate score is step times its
        int8 score, and its exact score is within delta of that."""
        q64 = queries.astype(np.float64)
        gq = np.abs(q64).max(axis=1) / 127
        gq[gq == 0] = 1.0  # a zero query: codes 0, a bound of 0, every score 0
        cq = np.clip(np.rint(q64 / gq[:, None]), -127, 127)
        delta = (np.linalg.norm(q64 - gq[:, None] * cq, axis=1) * self.max_norm
                 + gq * np.linalg.norm(cq, axis=1) * self.row_error
                 + (_gamma(self.dim) + 1e-9) * np.linalg.norm(q64, axis=1) * self.max_norm + 1e-30)
        codes = torch.zeros((len(queries), self.codes.shape[1]), dtype=torch.int8)
        codes[:, :self.dim] = torch.from_numpy(cq.astype(np.int8))
        return codes, gq * self.scale, delta

    def _two_pass(self, q: np.ndarray, width: int, spans: list[tuple[int, int]], mask: np.ndarray | None,
                  scores: np.ndarray, positions: np.ndarray) -> None:
        """The top `width` rows of `spans` for each query into scores and positions; `mask`: the rows of the one
        span to leave out."""
        codes, step, delta = self.quantize(q)
        # torch._int_mm: private, but the one int8 x int8 -> int32 product torch has on CPU (oneDNN's VNNI kernels;
        # torch is pinned at 2.13). One call scans the whole batch: over 100k x 512 rows, 2.9 ms for one query on 2
        # threads (5.9 on 1) and 6.8 ms for 16, against 4.6 ms for torch's fp16 matmul of one; FAISS's 8-bit direct
        # quantizer takes 2.7 ms for one query but scans again for each query of a batch (48 ms for 16).
        n = sum(z - a for a, z in spans)
        past = -n % BLOCK  # the last span is read on to fill its last run of columns: rows past it, or the zeros
        read_to = [z for _, z in spans[:-1]] + [spans[-1][1] + past]
        parts = [torch._int_mm(codes, self._padded[a:z].T) for (a, _), z in zip(spans, read_to)]
        approx = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if past:
            approx[:, n:] = LOWEST
        if mask is not None:
            approx[:, :n].masked_fill_(torch.from_numpy(mask), LOWEST)
        first = min(max(width, FIRST), n)
        maxima = _run_maxima(approx)
        top_values, top_cols = _top_columns(approx, maxima, first)
        found = top_values != LOWEST
        exact = np.full((len(q), first), -np.inf, np.float32)
        exact[found] = self.exact_pairs(_positions(top_cols[found], spans), np.nonzero(found)[0], q)
        again, floor = np.zeros(0, np.int64), np.zeros(len(q))
        if first < n:  # (then first >= width) rows past the first may still reach the top `width` where all `first`
            # were allowed, unless the bound rules them out: T, the width-th best of the first, is at most the true
            # width-th best
            kth = np.partition(exact, first - width, axis=1)[:, first - width]
            floor = np.maximum(np.floor((kth - delta) / step), LOWEST + 1)
            again = np.flatnonzero(found.all(axis=1) & (top_values[:, -1] >= floor))
        counts = np.zeros(len(q), np.int64)
        if len(again):
            who, cols = _columns_reaching(approx, maxima, again, floor[again].astype(np.int64))
            rows = _positions(cols, spans)
            scored = self.exact_pairs(rows, who, q)
            counts = np.bincount(who, minlength=len(q))
        ends = np.cumsum(counts)
        for i in range(len(q)):
            if counts[i]:  # every row the bound lets in (the first ones among them)
                _put(scored[ends[i] - counts[i]:ends[i]], rows[ends[i] - counts[i]:ends[i]], scores[i], positions[i])
            else:
                _put(exact[i][found[i]], _positions(top_cols[i][found[i]], spans), scores[i], positions[i])


def _run_maxima(approx: torch.Tensor) -> torch.Tensor:
    """int32 [q, columns / BLOCK]: the largest int8 score of each run of BLOCK columns."""
    return approx.view(len(approx), -1, BLOCK).amax(dim=2)


def _run_columns(runs: np.ndarray) -> np.ndarray:
    """The columns of runs [..., m] as [..., m * BLOCK]."""
    return (runs[..., None] * BLOCK + np.arange(BLOCK)).reshape(*runs.shape[:-1], -1)


def _top_columns(approx: torch.Tensor, maxima: torch.Tensor, first: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 scores, columns) [q, first] of each query's `first` best columns, best first. Looked for in the `first`
    runs of largest maxima: every score above the first-th best v lies in a run whose maximum is above v (fewer than
    `first` such runs); either every run reaching v is chosen, or each chosen run past those holds a score equal to
    v, so the runs chosen hold `first` scores at least v. Index arithmetic in numpy: each torch call lets go of the
    GIL, which requests searched side by side then wait to take back."""
    cols = _run_columns(torch.topk(maxima, min(first, maxima.shape[1]), dim=1).indices.numpy())
    best, at = torch.topk(approx.gather(1, torch.from_numpy(cols)), first, dim=1)
    return best.numpy(), np.take_along_axis(cols, at.numpy(), axis=1)


def _columns_reaching(approx: torch.Tensor, maxima: torch.Tensor, queries: np.ndarray, floors: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(query, column) of the given queries' int8 scores at or above each one's floor, in the order of `queries` (as
    given: ascending from _two_pass), then by column: only the runs whose maximum reaches the floor are read. In
    numpy: a handful of rows, where torch's per-call cost would dominate."""
    who, runs = np.nonzero(maxima.numpy()[queries] >= floors[:, None])
    cols, who = _run_columns(runs), np.repeat(who, BLOCK)
    keep = approx.numpy()[queries[who], cols] >= floors[who]
    return queries[who[keep]], cols[keep]


def _positions(cols: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """The row positions of columns of the spans' int8 scores laid side by side."""
    if len(spans) == 1:
        return cols + spans[0][0]
    lengths = np.array([z - a for a, z in spans], np.int64)
    ends = np.cumsum(lengths)
    span = np.searchsorted(ends, cols, side="right")
    return np.array([a for a, _ in spans], np.int64)[span] + cols - (ends - lengths)[span]


def _put(exact: np.ndarray, rows: np.ndarray, scores: np.ndarray, positions: np.ndarray) -> None:
    """The best of `rows` by exact score (then position) into one query's scores and positions."""
    best = np.lexsort((rows, -exact))[:len(scores)]
    scores[:len(best)], positions[:len(best)] = exact[best], rows[best]


def _spans(allowed: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray | None]:
    """The row ranges to scan for a mask, and the rows in them to give the lowest score (None: all allowed)."""
    changes = int(np.count_nonzero(allowed[1:] != allowed[:-1]))  # runs <= (changes + 2) / 2
    if changes <= 2 * MAX_SPANS - 2:  # few runs: scan them alone
        edges = np.flatnonzero(np.diff(allowed, prepend=False, append=False))
        return [(int(a), int(z)) for a, z in zip(edges[::2], edges[1::2])], None
    first, last = np.flatnonzero(allowed)[[0, -1]]
    return [(int(first), int(last) + 1)], ~allowed[first:last + 1]
