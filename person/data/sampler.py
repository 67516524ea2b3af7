"""Identity-balanced batches (P identities x K items), reproducible and split across torchrun ranks.

Every batch is a pure function of (seed, global batch number): a run resumed at batch n gets the
batches an uninterrupted run gets, whatever the loader prefetched before the kill. An epoch is one
seeded permutation of the identities cut into batches of P, each identity at most once; the identities
left over when the count is not a multiple of P x ranks wait for a later epoch's permutation. Its
global batches are dealt round-robin to ranks (rank r takes r, r+W, ...), so ranks never share a batch.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

Item = tuple[int, int]  # (record row, augmentation seed)


class IdentityBatchSampler:
    """Yields lists of P*K `(row, aug_seed)` items from batch `start` onwards, forever (training is
    iteration-based). An identity with fewer than K rows is drawn with replacement."""

    def __init__(self, pids: np.ndarray, rows: np.ndarray | None = None, p: int = 32, k: int = 2,
                 seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        pids = np.asarray(pids)
        rows = np.arange(len(pids)) if rows is None else np.asarray(rows)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if p < 1 or k < 1:
            raise ValueError(f"P={p} and K={k} must both be >= 1")
        order = np.argsort(pids[rows], kind="stable")
        sorted_rows, sorted_pids = rows[order], pids[rows][order]
        self.ids, first = np.unique(sorted_pids, return_index=True)
        self._groups = np.split(sorted_rows, first[1:])
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = (len(self.ids) // p) // world_size  # per rank
        if self.batches_per_epoch == 0:
            raise ValueError(f"{len(self.ids)} identities cannot fill one batch of P={p} identities on each of "
                             f"{world_size} rank(s): lower --p (identities per batch) or use fewer ranks")
        self.start = start
        self._epoch_cache: tuple[int, list[list[Item]]] | None = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def epoch_batches(self, epoch: int) -> list[list[Item]]:
        """This rank's batches of one epoch."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        id_order = rng.permutation(len(self.ids))
        n_global = self.batches_per_epoch * self.world_size
        batches = []
        for b in range(n_global):
            items: list[Item] = []
            for g in id_order[b * self.p:(b + 1) * self.p]:
                group = self._groups[g]
                picks = rng.choice(group, size=self.k, replace=len(group) < self.k)
                items.extend(zip(picks.tolist(), rng.integers(0, 2**63 - 1, size=self.k).tolist()))
            if b % self.world_size == self.rank:
                batches.append(items)
        self._epoch_cache = (epoch, batches)
        return batches

    def batch(self, n: int) -> list[Item]:
        """This rank's n-th batch since the start of training."""
        epoch, i = divmod(n, self.batches_per_epoch)
        return self.epoch_batches(epoch)[i]

    def __iter__(self) -> Iterator[list[Item]]:
        n = self.start
        while True:
            yield self.batch(n)
            n += 1
