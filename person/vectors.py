"""Row vectors as the metrics and the search compare them: unit length, numpy only (the runtime, the gallery
and the export's parity check run without torch); and vectors with the structure of person embeddings, for the
search benchmark and the tests of the exact scan."""
from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Each row of `x` [n, D] divided by its L2 norm, in `dtype`; an all-zero row stays zero (not NaN)."""
    # Computed in at least float32: float16's smallest step would turn the floor into 0.
    work = np.asarray(x, dtype=np.promote_types(dtype, np.float32))
    return (work / np.maximum(np.linalg.norm(work, axis=1, keepdims=True), 1e-12)).astype(dtype)


def clustered(rows: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float16 rows and float32 queries, L2-normalised, with the structure of person embeddings: an identity is
    the sum of its attributes' vectors (12 attributes of 8 values each, as the demo's people are combinations of
    colours and garments), so identities that share attributes lie near each other; 4 rows per identity with
    image noise; a query is its identity's vector with more noise (a caption says less than a picture)."""
    rng = np.random.default_rng(seed)
    ids = max(1, rows // 4)
    values = rng.standard_normal((12, 8, dim), dtype=np.float32)
    picks = rng.integers(0, 8, (ids, 12))
    identity = np.empty((ids, dim), np.float32)
    for a in range(0, ids, 65536):
        block = picks[a:a + 65536]
        identity[a:a + len(block)] = unit_rows(values[np.arange(12), block].sum(axis=1)
                                               + 0.8 * rng.standard_normal((len(block), dim), dtype=np.float32))
    out = np.empty((rows, dim), np.float16)
    for a in range(0, rows, 65536):
        who = np.arange(a, min(a + 65536, rows)) % ids
        out[a:a + len(who)] = unit_rows(identity[who] + 0.02 * rng.standard_normal((len(who), dim), dtype=np.float32))
    q = identity[rng.integers(0, ids, queries)] + 0.04 * rng.standard_normal((queries, dim), dtype=np.float32)
    return out, unit_rows(q)
