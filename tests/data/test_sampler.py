"""Identity-balanced P x K batches: composition, reproducibility, resume and torchrun rank split."""
import numpy as np
import pytest

from person.data.sampler import IdentityBatchSampler


def pids_fixture():
    # 12 identities with 1..4 images each (identity 0 has one image: drawn with replacement)
    return np.repeat(np.arange(12), [1, 2, 3, 4] * 3)


def test_batches_have_p_identities_and_k_items_each():
    pids = pids_fixture()
    s = IdentityBatchSampler(pids, p=4, k=2, seed=0)
    assert len(s) == 3
    for n in range(6):
        rows = [r for r, _ in s.batch(n)]
        assert len(rows) == 8
        ids = pids[rows]
        assert len(set(ids.tolist())) == 4 and all((ids == i).sum() == 2 for i in set(ids.tolist()))


def test_epoch_visits_every_identity_once():
    pids = pids_fixture()
    s = IdentityBatchSampler(pids, p=4, k=2, seed=1)
    ids = [pids[r] for n in range(3) for r, _ in s.batch(n)]
    assert sorted(set(int(i) for i in ids)) == list(range(12))


def test_reproducible_and_resumable():
    pids = pids_fixture()
    a = IdentityBatchSampler(pids, p=4, k=2, seed=5)
    it = iter(a)
    run = [next(it) for _ in range(7)]
    resumed = iter(IdentityBatchSampler(pids, p=4, k=2, seed=5, start=4))
    assert [next(resumed) for _ in range(3)] == run[4:]
    other = IdentityBatchSampler(pids, p=4, k=2, seed=6)
    assert other.batch(0) != run[0]


def test_augmentation_seeds_differ_per_item():
    s = IdentityBatchSampler(pids_fixture(), p=4, k=2, seed=0)
    seeds = [sd for n in range(3) for _, sd in s.batch(n)]
    assert len(set(seeds)) == len(seeds)


def test_two_ranks_get_disjoint_batches_of_the_same_epoch():
    pids = pids_fixture()
    r0 = IdentityBatchSampler(pids, p=2, k=2, seed=3, rank=0, world_size=2)
    r1 = IdentityBatchSampler(pids, p=2, k=2, seed=3, rank=1, world_size=2)
    single = IdentityBatchSampler(pids, p=2, k=2, seed=3)
    assert len(r0) == len(r1) == 3 and len(single) == 6
    # ranks deal the single-process epoch round-robin: together they cover it exactly once
    assert [r0.batch(i) for i in range(3)] == [single.batch(i) for i in (0, 2, 4)]
    assert [r1.batch(i) for i in range(3)] == [single.batch(i) for i in (1, 3, 5)]
    ids0 = {int(pids[r]) for i in range(3) for r, _ in r0.batch(i)}
    ids1 = {int(pids[r]) for i in range(3) for r, _ in r1.batch(i)}
    assert not ids0 & ids1


def test_rows_subset_only():
    pids = pids_fixture()
    rows = np.flatnonzero(pids < 6)
    s = IdentityBatchSampler(pids, rows=rows, p=3, k=1, seed=0)
    assert all(r in set(rows.tolist()) for n in range(4) for r, _ in s.batch(n))


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot fill one batch"):
        IdentityBatchSampler(np.arange(3), p=4, k=1)
    with pytest.raises(ValueError, match="rank 2 is outside"):
        IdentityBatchSampler(np.arange(8), p=2, k=1, rank=2, world_size=2)
