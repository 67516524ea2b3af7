"""Retrieval (IRRA's Rank-k, mAP, mINP): each positive's rank in its caption's ordering of the gallery,
counted strip by strip; equal scores keep gallery order."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from person.eval.metrics.results import MetricInputError, RetrievalResult
from person.eval.metrics.scoring import (DEFAULT_BLOCK_PAIRS, _check_embeddings, _check_scores, _Columns, _cosine_strip,
                                         _cpu_threads, _device, _keys, _keys_np, _PositivePairs, _progress, _strips)

log = logging.getLogger(__name__)


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


def retrieval_from_scores(scores, caption_pid, image_pid, *, ks: Sequence[int] = (1, 5, 10),
                          block_pairs: int = DEFAULT_BLOCK_PAIRS) -> RetrievalResult:
    """Retrieval of a given score matrix `scores[caption, image]` (float32, [Nc, Ni]), strip by strip."""
    s, ipid, cpid = _check_scores(scores, image_pid, caption_pid)
    keys, ranks = _keys_np(s), _Ranks(_PositivePairs(cpid, ipid))
    for c0, c1 in _strips(len(cpid), len(ipid), block_pairs):
        ranks.update(torch.from_numpy(keys[c0:c1]), c0)
    return ranks.result(len(cpid), ks)


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
