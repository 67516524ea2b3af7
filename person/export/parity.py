"""How close an exported graph is to the PyTorch students, on the same inputs: per-row cosine and max |diff|.

The float32 export must give every row a cosine of at least PARITY_COSINE with PyTorch's output (both
L2-normalised first, so a graph that leaves normalisation to the caller is compared on the same terms), or the
export fails with the figures. fp16 and int8 variants are measured the same way and reported, not gated.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from person.vectors import unit_rows

PARITY_COSINE = 0.99999


@dataclass(frozen=True)
class Parity:
    """One graph against PyTorch over `rows` embeddings."""

    graph: str
    variant: str
    rows: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float

    @property
    def passes(self) -> bool:
        return self.min_cosine >= PARITY_COSINE

    def line(self) -> str:
        return (f"{self.graph} {self.variant}: {self.rows} rows, cosine min {self.min_cosine:.7f} mean "
                f"{self.mean_cosine:.7f}, max |diff| {self.max_abs_diff:.2e}")

    def to_dict(self) -> dict:
        return asdict(self)


def compare(graph: str, variant: str, got: np.ndarray, want: np.ndarray) -> Parity:
    """`got` (ONNX) against `want` (PyTorch), both [n, D]."""
    if got.shape != want.shape:
        raise ValueError(f"{graph} {variant}: ONNX gave {got.shape}, PyTorch {want.shape}")
    cos = (unit_rows(got, np.float64) * unit_rows(want, np.float64)).sum(axis=1)
    return Parity(graph, variant, len(got), float(cos.min()), float(cos.mean()),
                  float(np.abs(got.astype(np.float64) - want).max()))
