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

Modules: `results` (the figures), `scoring` (checks, keys, strips), `operating_points` (verification's exact counts),
`ranking` (retrieval), `passes` (the entry points below, and the two passes that feed both).
"""
from person.eval.metrics.passes import (cosine_scores, evaluate, evaluate_from_scores, verification,
                                        verification_from_scores)
from person.eval.metrics.ranking import retrieval, retrieval_from_scores
from person.eval.metrics.results import (FAR_LEVELS, Evaluation, MetricInputError, OperatingPoint, RetrievalResult,
                                         ScoredPair, VerificationResult, summary)
from person.eval.metrics.scoring import DEFAULT_BLOCK_PAIRS, DEFAULT_CACHE_BYTES, NORM_TOLERANCE

__all__ = ["DEFAULT_BLOCK_PAIRS", "DEFAULT_CACHE_BYTES", "FAR_LEVELS", "NORM_TOLERANCE", "Evaluation",
           "MetricInputError", "OperatingPoint", "RetrievalResult", "ScoredPair", "VerificationResult",
           "cosine_scores", "evaluate", "evaluate_from_scores", "retrieval", "retrieval_from_scores", "summary",
           "verification", "verification_from_scores"]
