"""Row vectors as the metrics and the search compare them: unit length, numpy only (the runtime, the gallery
and the export's parity check run without torch)."""
from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Each row of `x` [n, D] divided by its L2 norm, in `dtype`; an all-zero row stays zero (not NaN)."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12).astype(dtype)
