"""What verification and retrieval share: input checks, order-preserving integer keys of float32 scores,
coarse bins, score strips, and the positive pairs found from the labels alone."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from person.eval.metrics.results import MetricInputError

NORM_TOLERANCE = 1e-2
DEFAULT_BLOCK_PAIRS = 1 << 22  # scores per strip: 16 MB of float32, a few of these live at once
DEFAULT_CACHE_BYTES = 1 << 28  # keep pass-1 keys (4 bytes a pair) for pass 2 up to this size

_BINS = 1 << 16  # coarse histogram: top 16 bits of the key (sign, exponent, 7 mantissa bits)
_INF_KEY = 1 << 31  # stands for the +inf threshold: above every float32 key


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

