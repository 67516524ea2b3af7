"""The metrics' results: operating points, verification and retrieval figures, and their JSON summary."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from person.errors import PersonError

FAR_LEVELS = ("1e-3", "1e-4", "1e-5", "1e-6", "0")  # JSON keys, as the report prints them


class MetricInputError(PersonError, ValueError):
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

