"""Detection tracks as weak identities (`main.py --unlabeled STORE --unlabeled_tracks`): the pool numbers the tracks
of its stores globally, the picker deals a track's crops together, the image student's identity term and the
memory take them as identities below every labelled one, and a run that cannot use them is refused."""
import numpy as np
import pytest
import torch

from person.options import OptionError
from person.train.classifier import IdentityClassifier
from person.train.losses import IDENTITY_TERMS, DistillLoss, LossWeights
from person.train.unlabeled import UnlabeledPicker, track_identities
from tests.train.distill_fixtures import DIM, make_setup, make_unlabeled
from tests.train.test_unlabeled_training import _unit, trainer, with_unlabeled


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("distill"))


@pytest.fixture(scope="module")
def unlabeled(setup, tmp_path_factory):
    """(crops store, captions store): 24 crops, each two a track (ids 0..11), and 10 captions."""
    return make_unlabeled(tmp_path_factory.mktemp("unlabeled"), setup[0])


def test_pseudo_identities_sit_below_every_labelled_identity():
    assert track_identities(np.array([-1, 0, 1, 5])).tolist() == [-1, -2, -3, -7]


def test_the_pool_numbers_tracks_globally_and_keeps_two_stores_tracks_apart(setup, unlabeled, tmp_path):
    # The same track ids again in a second store (another camera's file): other people, other tracks.
    other = make_unlabeled(tmp_path / "other", setup[0], seed=7)[0]
    t = trainer(with_unlabeled(setup, (unlabeled[0], other), tmp_path / "run", "--unlabeled_tracks",
                               "--id_img_weight", "0.1"))
    assert t.pool.tracks().tolist() == [r // 2 for r in range(24)] + [12 + r // 2 for r in range(24)]
    assert t.picker.tracks.tolist() == t.pool.tracks().tolist()


def test_the_picker_deals_a_track_k_crops_at_a_time_in_a_pure_function_of_the_seed():
    tracks = np.array([0, 0, 0, 0, 0, 1, 1, -1, -1, 2, 2, 2])
    picker = UnlabeledPicker(12, 0, images=4, captions=0, seed=3, tracks=tracks, k=2)
    order = picker._permutation("image", 0)
    assert sorted(order.tolist()) == list(range(12))  # every crop once an epoch
    # Cut into its units: runs of one track, at most k long; untracked crops alone.
    runs, start = [], 0
    for i in range(1, 13):
        if i == 12 or tracks[order[i]] != tracks[order[start]] or i - start == 2 or tracks[order[start]] < 0:
            runs.append(tracks[order[start:i]].tolist())
            start = i
    assert sorted(map(tuple, runs)) == sorted([(0, 0), (0, 0), (0,), (1, 1), (-1,), (-1,), (2, 2), (2,)])
    again = UnlabeledPicker(12, 0, images=4, captions=0, seed=3, tracks=tracks, k=2)
    assert [again.batch(n) for n in range(6)] == [picker.batch(n) for n in range(6)]
    assert UnlabeledPicker(12, 0, images=4, captions=0, seed=4, tracks=tracks, k=2)._permutation(
        "image", 0).tolist() != order.tolist()
    with pytest.raises(ValueError, match="11 track numbers for 12 image rows"):
        UnlabeledPicker(12, 0, images=4, captions=0, tracks=tracks[:11])


def test_id_img_takes_tracked_crops_as_identities_and_no_other_term_does():
    rng = np.random.default_rng(0)
    n_img, n_cap = 6, 6
    pid = torch.tensor([0, 0, 1, 1, 2, 2])
    track_pid = torch.tensor([-2, -1, -2, -3, -3])  # five crops: tracks 0, 1 twice, one untracked
    t_img, t_cap = _unit(rng, n_img + 5), _unit(rng, n_cap)
    s_img = _unit(rng, n_img + 5).requires_grad_()
    s_cap = _unit(rng, n_cap)
    weights = LossWeights(**{t: 1.0 for t in IDENTITY_TERMS})
    loss = DistillLoss(weights, 0.1, 0.2, classifier=IdentityClassifier(3, DIM))
    out = loss(s_img, s_cap, t_img, t_cap, pid, labelled=(n_img, n_cap), track_pid=track_pid)
    kept = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]  # the labelled images, then the tracked crops
    alone = DistillLoss(LossWeights(id_img=1.0), 0.1, 0.2)(s_img[kept], s_cap, t_img[kept], t_cap,
                                                          torch.cat([pid, track_pid[[0, 2, 3, 4]]]), cap_pid=pid)
    assert torch.equal(out["id_img"], alone["id_img"])
    without = loss(s_img, s_cap, t_img, t_cap, pid, labelled=(n_img, n_cap))
    assert not torch.equal(out["id_img"], without["id_img"])
    for term in set(IDENTITY_TERMS) - {"id_img"}:  # the pairs' terms: the labelled rows only, as before
        assert torch.equal(out[term], without[term]), term
    out["id_img"].backward()
    assert s_img.grad[n_img + 1].abs().sum() == 0  # the untracked crop
    assert (s_img.grad[[n_img, n_img + 2, n_img + 3, n_img + 4]].abs().sum(dim=1) > 0).all()


def test_the_memory_holds_tracked_crops_under_their_pseudo_identities(setup, unlabeled, tmp_path):
    t = trainer(with_unlabeled(setup, unlabeled, tmp_path, "--unlabeled_tracks", "--id_img_weight", "0.1",
                               "--memory_warmup", "0", "--unlabeled_share", "1"))
    batch = next(iter(t.loader()))
    assert t.train_step(batch) is not None
    crops = batch["u_rows"].numpy()
    expected = t.records.pids[batch["rows"].numpy()].tolist() + (-2 - t.pool.tracks()[crops]).tolist()
    assert t.memory.image.get()[1].tolist() == expected
    assert t.memory.text.get()[1].tolist() == t.records.pids[batch["rows"].numpy()][
        batch["caption_owner"].numpy()].tolist()
    # A batch deals whole tracks: each crop's track partner is beside it, unless the batch's edge cut the pair.
    tracks = t.pool.tracks()[crops].tolist()
    assert sum(a == b for a, b in zip(tracks[::2], tracks[1::2])) >= len(tracks) // 2 - 1


def test_a_run_that_cannot_use_tracks_is_refused(setup, unlabeled, tmp_path):
    with pytest.raises(OptionError, match="give --unlabeled STORE and --id_img_weight > 0"):
        trainer(with_unlabeled(setup, unlabeled, tmp_path / "a", "--unlabeled_tracks"))
    untracked = make_unlabeled(tmp_path / "untracked", setup[0], tracks=False)
    with pytest.raises(ValueError, match="has a track .extract detections whose lines carry \"track\""):
        trainer(with_unlabeled(setup, untracked, tmp_path / "b", "--unlabeled_tracks", "--id_img_weight", "0.1"))
