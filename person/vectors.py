"""Row vectors as the metrics and the search compare them: unit length, numpy only (the runtime, the gallery
and the export's parity check run without torch)."""
from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Each row of `x` [n, D] divided by its L2 norm, in `dtype`; an all-zero row stays zero (not NaN)."""
    # Computed in at least float32: float16's smallest step would turn the floor into 0.
    work = np.asarray(x, dtype=np.promote_types(dtype, np.float32))
    return (work / np.maximum(np.linalg.norm(work, axis=1, keepdims=True), 1e-12)).astype(dtype)
