"""The public entry points and the two passes over score strips that make verification and retrieval at
once, exact at any size (the package docstring has every definition)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from person.eval.metrics.operating_points import (_CoarseCounts, _far_allowed, _finish_streamed, _negatives_in_bins,
                                                  _Pass2, _Positives, _PositiveSet, _verification_in_memory)
from person.eval.metrics.ranking import _Ranks, retrieval_from_scores
from person.eval.metrics.results import FAR_LEVELS, Evaluation, RetrievalResult, VerificationResult
from person.eval.metrics.scoring import (_BINS, DEFAULT_BLOCK_PAIRS, DEFAULT_CACHE_BYTES, _bin, _bin_into,
                                         _check_counts, _check_embeddings, _check_scores, _cosine_strip,
                                         _count_positives, _cpu_threads, _device, _keys, _keys_np, _pair_embeddings,
                                         _PositivePairs, _progress, _strips)


def verification(image_emb, image_pid, caption_emb, caption_pid, *, top_k: int = 15,
                 block_pairs: int = DEFAULT_BLOCK_PAIRS, device: str | torch.device | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, progress: bool = False,
                 far_levels: Sequence[str] = FAR_LEVELS) -> VerificationResult:
    """Verification over every image x caption pair, computed strip by strip (see module docstring)."""
    return evaluate(image_emb, image_pid, caption_emb, caption_pid, ks=(), top_k=top_k,
                    block_pairs=block_pairs, device=device, cache_bytes=cache_bytes,
                    progress=progress, far_levels=far_levels).verification



def evaluate(image_emb, image_pid, caption_emb, caption_pid, *, ks: Sequence[int] = (1, 5, 10),
             top_k: int = 15, block_pairs: int = DEFAULT_BLOCK_PAIRS,
             device: str | torch.device | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
             progress: bool = False, far_levels: Sequence[str] = FAR_LEVELS) -> Evaluation:
    """Verification and (when `ks` is not empty) retrieval from one pass of score strips.

    `image_emb` [Ni, D], `caption_emb` [Nc, D]: L2-normalised, any float dtype (scored in float32);
    `image_pid` [Ni], `caption_pid` [Nc]: integer identities. Runs on `device` (default: cuda when
    available); peak memory is a few strips of `block_pairs` scores plus the positives, whatever Ni x Nc.
    `far_levels`: the FAR levels (exact decimal strings, e.g. "1e-2") whose operating points are found.
    """
    img, ipid, cap, cpid = _check_embeddings(image_emb, image_pid, caption_emb, caption_pid, _device(device))
    strips = _strips(len(cpid), len(ipid), block_pairs)
    cache = len(cpid) * len(ipid) * 4 <= cache_bytes

    def score(c0: int, c1: int) -> torch.Tensor:
        return _cosine_strip(cap, img, c0, c1)

    return _evaluate_strips(score, strips, cpid, ipid, ks, top_k, cache, progress, far_levels)


def verification_from_scores(scores, image_pid, caption_pid, *, top_k: int = 15,
                             block_pairs: int | None = None,
                             cache_bytes: int = DEFAULT_CACHE_BYTES,
                             far_levels: Sequence[str] = FAR_LEVELS) -> VerificationResult:
    """Verification of a given score matrix `scores[caption, image]` (float32, [Nc, Ni]).

    `block_pairs=None` sorts everything in memory: the plain reference. An integer runs the strip-wise
    algorithm that `verification` uses over slices of the matrix (pass 2 reads the pass-1 keys when they
    fit in `cache_bytes`, else remakes them from the matrix); all give bit-identical results.
    """
    s, ipid, cpid = _check_scores(scores, image_pid, caption_pid)
    if block_pairs is not None:
        return _scores_verification(s, ipid, cpid, top_k, block_pairs, cache_bytes, far_levels)
    keys = _keys_np(s)
    mask = cpid[:, None] == ipid[None, :]
    return _verification_in_memory(keys, mask, top_k, far_levels)



def cosine_scores(image_emb, caption_emb, *, block_pairs: int = DEFAULT_BLOCK_PAIRS,
                  device: str | torch.device | None = None) -> np.ndarray:
    """The full score matrix [Nc, Ni] made from the same strips `evaluate` scores (same bits)."""
    img, cap = _pair_embeddings(image_emb, caption_emb, _device(device))
    strips = _strips(len(cap), len(img), block_pairs)
    return np.concatenate([_cosine_strip(cap, img, c0, c1).add_(0.0).cpu().numpy() for c0, c1 in strips])



def evaluate_from_scores(scores, image_pid, caption_pid, *, ks: Sequence[int] = (1, 5, 10),
                         top_k: int = 15) -> Evaluation:
    """Verification and retrieval of a given score matrix `scores[caption, image]` (float32, [Nc, Ni])."""
    return Evaluation(verification_from_scores(scores, image_pid, caption_pid, top_k=top_k),
                      retrieval_from_scores(scores, caption_pid, image_pid, ks=ks))


def _scores_verification(s: np.ndarray, ipid: np.ndarray, cpid: np.ndarray, top_k: int,
                         block_pairs: int, cache_bytes: int, far_levels: Sequence[str]) -> VerificationResult:
    """The strip-wise path over slices of a score matrix already in memory (on the cpu)."""
    def score(c0: int, c1: int) -> torch.Tensor:
        return torch.from_numpy(s[c0:c1].copy())  # _keys works in place

    strips = _strips(s.shape[0], s.shape[1], block_pairs)
    return _evaluate_strips(score, strips, torch.from_numpy(cpid), torch.from_numpy(ipid), (), top_k,
                            cache=s.size * 4 <= cache_bytes, progress=False, far_levels=far_levels).verification


# ---------------------------------------------------------------- the strip-wise path

def _evaluate_strips(score: Callable[[int, int], torch.Tensor], strips: list[tuple[int, int]],
                     cpid: torch.Tensor, ipid: torch.Tensor, ks: Sequence[int], top_k: int,
                     cache: bool, progress: bool, far_levels: Sequence[str] = FAR_LEVELS) -> Evaluation:
    """Both passes (see the module docstring); pass 2 reads the pass-1 keys when `cache`, else scores again."""
    n_pos = _count_positives(cpid, ipid)
    _check_counts(n_pos, len(cpid) * len(ipid) - n_pos)  # before sizing anything by n_pos
    strip_keys = _StripKeys(score, strips, len(ipid), ipid.device)
    with _cpu_threads(1, ipid.device):
        hist_all, pos, ret, cached = _pass1(strip_keys, strips, cpid, ipid, ks, cache, progress)
        counter = _CoarseCounts(hist_all - np.bincount(_bin(pos.keys), minlength=_BINS), pos.sorted)
        bins = counter.bins_to_resolve(_far_allowed(counter.n_neg, far_levels))
        top_bin = counter.kth_bin(min(top_k, counter.n_neg)) if top_k else None
        pass2 = _Pass2(bins, top_bin, top_k, cpid, ipid)
        for i, (c0, c1) in enumerate(_progress(strips, progress and not cache, "scores (pass 2)")):
            keys = cached[i] if cache else strip_keys(c0, c1)
            pass2.update(keys, c0, strip_keys.work_for(keys))
    counter.resolve(_negatives_in_bins(pass2.counts(), bins, hist_all, pos))
    return Evaluation(_finish_streamed(counter, hist_all, pos, pass2.top.result(), top_k, far_levels), ret)


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

