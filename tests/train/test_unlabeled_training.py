"""Training with unlabeled stores (`main.py --unlabeled`) and from an earlier run (`--init`): what a batch holds,
which loss terms see which rows, the picker's epochs and ranks, a foreign teacher or a labelled store refused,
unreadable crops counted, resume after a kill and two torchrun ranks with unlabeled rows."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from person.cli import train as main_cmd
from person.models.checkpoint import CheckpointError, load_checkpoint
from person.errors import PersonError
from person.options import OptionError, given_options
from person.teacher.space import SpaceMismatchError
from person.teacher.store import StoreKindError, StoreMismatchError, open_unlabeled
from person.train.classifier import IdentityClassifier
from person.train.losses import IDENTITY_TERMS, TERMS, DistillLoss, LossWeights, cosine_distill
from person.train.options import TrainOptions
from person.train.trainer import Trainer, UnreadableBatchesError
from person.train.unlabeled import UnlabeledItem, UnlabeledPicker, unlabeled_counts
from tests.train.distill_fixtures import DIM, IDENTITY, make_setup, make_unlabeled
from tests.train.test_trainer import KILLED_AT_3, ROOT, _python, args, run_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("distill"), broken=True)


@pytest.fixture(scope="module")
def unlabeled(setup, tmp_path_factory):
    """(crops store, captions store) over the setup's images: 24 boxes (one on the broken image), 10 captions."""
    return make_unlabeled(tmp_path_factory.mktemp("unlabeled"), setup[0])


def with_unlabeled(setup, unlabeled, folder, *extra):
    return args(setup, folder, "--unlabeled", *map(str, unlabeled), *extra)


def trainer(argv):
    parser = main_cmd.build_parser()
    return Trainer(TrainOptions(**vars(parser.parse_args(argv))), given_options(parser, argv))


def test_a_batch_holds_the_labelled_part_then_its_share_of_unlabeled_rows(setup, unlabeled, tmp_path):
    t = trainer(with_unlabeled(setup, unlabeled, tmp_path, "--unlabeled_share", "0.5", "--captions_per_image", "2"))
    assert (t.pool.num_images, t.pool.num_captions) == (24, 10)
    assert unlabeled_counts(0.5, 4, 2, 2) == (4, 8)
    batches = iter(t.loader())
    batch = next(batches)
    n_img, n_cap = len(batch["rows"]), len(batch["captions"])
    assert n_img == 8 and n_cap == 16  # P x K labelled images with two captions each (none of them broken here)
    u_img = batch["u_rows"].tolist() + [row for row, _ in batch["u_skipped"]]
    assert len(u_img) == 4 and len(set(u_img)) == 4 and len(batch["u_captions"]) == 8
    assert batch["images"].shape[0] == n_img + len(batch["u_rows"])
    assert batch["chars"].shape[0] == n_cap + 8
    # The unlabeled captions' bytes are their texts, after the labelled captions'.
    files = t.pool.files()
    texts = [bytes(row[row > 0].tolist()).decode() for row in batch["chars"][n_cap:].numpy().astype(np.uint8)]
    assert texts == [files.texts[r] for r in batch["u_captions"].tolist()]
    # The teacher's rows: labelled from the store, unlabeled from their own stores, in the batch's order.
    from person.train.batches import teacher_targets
    t_img, t_cap = teacher_targets(t.store, batch, t.pool)
    crops, captions = (open_unlabeled(p) for p in unlabeled)
    assert torch.equal(t_img[n_img:], torch.from_numpy(crops.images(t.pool._image_row[batch["u_rows"].numpy()])))
    assert torch.equal(t_cap[n_cap:], torch.from_numpy(captions.captions(batch["u_captions"].numpy())))
    assert torch.equal(t_img[:n_img], torch.from_numpy(t.store.images(batch["rows"].numpy())))


def test_the_picker_deals_epochs_without_repeats_and_ranks_never_share_a_row():
    one = UnlabeledPicker(10, 7, images=3, captions=2, seed=5)  # 3 batches an epoch, one row left over
    for epoch in range(4):
        rows = np.concatenate([one.rows("image", 3 * epoch + b) for b in range(3)])
        assert len(set(rows.tolist())) == 9 and set(rows.tolist()) <= set(range(10))
    assert one.batch(4) == UnlabeledPicker(10, 7, images=3, captions=2, seed=5).batch(4)  # a pure function
    assert one.batch(4) != UnlabeledPicker(10, 7, images=3, captions=2, seed=6).batch(4)
    ranks = [UnlabeledPicker(11, 7, images=3, captions=2, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for n in range(12):  # 11 rows, 2 ranks x 3: one batch an epoch each, never a shared or repeated row
        a, b = (p.rows("image", n).tolist() for p in ranks)
        assert len(set(a)) == len(set(b)) == 3 and not set(a) & set(b), n
    capped = UnlabeledPicker(5, 7, images=8, captions=2, world_size=2)
    assert len(capped.rows("image", 0)) == 2  # at most a rank's share of the pool
    items = one.batch(0)
    assert [i.kind for i in items] == ["image"] * 3 + ["caption"] * 2
    assert all(isinstance(i, UnlabeledItem) for i in items)
    assert [i.kind for i in UnlabeledPicker(0, 7, images=3, captions=2).batch(0)] == ["caption"] * 2
    with pytest.raises(ValueError, match="1 unlabeled image rows cannot give each of 2 ranks one"):
        UnlabeledPicker(1, 7, images=3, captions=2, world_size=2)


def _unit(rng, n):
    x = torch.from_numpy(rng.normal(size=(n, DIM))).float()
    return torch.nn.functional.normalize(x, dim=1)


def test_identity_terms_see_only_the_labelled_rows_and_the_others_see_all():
    rng = np.random.default_rng(0)
    n_img, n_cap, u_img, u_cap = 6, 6, 4, 5
    t_img, t_cap = _unit(rng, n_img + u_img), _unit(rng, n_cap + u_cap)
    pid = torch.tensor([0, 0, 1, 1, 2, 2])
    for term in TERMS:
        s_img = _unit(rng, n_img + u_img).requires_grad_()
        s_cap = _unit(rng, n_cap + u_cap).requires_grad_()
        loss = DistillLoss(LossWeights(**{t: float(t == term) for t in TERMS}), 0.1, 0.2,
                           classifier=IdentityClassifier(3, DIM) if term == "id_cls" else None)
        out = loss(s_img, s_cap, t_img, t_cap, pid, labelled=(n_img, n_cap))
        out["total"].backward()
        grads = {m: torch.zeros(len(x)) if x.grad is None else x.grad.abs().sum(dim=1)
                 for m, x in (("image", s_img), ("text", s_cap))}
        unlabeled_grad = grads["image"][n_img:].sum() + grads["text"][n_cap:].sum()
        if term in IDENTITY_TERMS:
            assert unlabeled_grad == 0, term
            alone = loss(s_img[:n_img], s_cap[:n_cap], t_img[:n_img], t_cap[:n_cap], pid)
            assert torch.allclose(out[term], alone[term]), term  # exactly the labelled part's value
        else:
            assert unlabeled_grad > 0, term
    s_img, s_cap = _unit(rng, n_img + u_img), _unit(rng, n_cap + u_cap)
    out = DistillLoss(LossWeights())(s_img, s_cap, t_img, t_cap, pid, labelled=(n_img, n_cap))
    assert torch.allclose(out["dist_img"], cosine_distill(s_img, t_img))  # over all ten images
    with pytest.raises(ValueError, match="6 labelled images with 5 identities"):
        DistillLoss(LossWeights())(s_img, s_cap, t_img, t_cap, pid[:5], labelled=(n_img, n_cap))


def test_the_memory_holds_only_labelled_rows(setup, unlabeled, tmp_path):
    t = trainer(with_unlabeled(setup, unlabeled, tmp_path, "--id_img_weight", "0.1", "--memory_warmup", "0",
                               "--unlabeled_share", "1"))
    batch = next(iter(t.loader()))
    assert t.train_step(batch) is not None
    labels = t.memory.image.get()[1]
    assert labels.tolist() == t.records.pids[batch["rows"].numpy()].tolist()
    assert len(batch["u_rows"]) > 0 and t.memory.image.filled == len(batch["rows"])


def test_a_store_of_another_teacher_is_refused_naming_both(setup, tmp_path):
    other = dict(IDENTITY, teacher="other-teacher", config_hash="1" * 64)
    crops, _ = make_unlabeled(tmp_path / "other", setup[0], identity=other)
    with pytest.raises(StoreMismatchError) as e:
        trainer(args(setup, tmp_path, "--unlabeled", str(crops)))
    message = str(e.value)
    assert "by teacher other-teacher" in message and "by teacher made-up" in message
    assert str(crops) in message and str(setup[1]) in message and "config_hash" in message


def test_a_labelled_store_is_not_an_unlabeled_one(setup, tmp_path):
    with pytest.raises(StoreKindError, match="is a labelled store"):
        trainer(args(setup, tmp_path, "--unlabeled", str(setup[1])))


def test_unreadable_crops_are_counted_then_stop_the_run_when_none_is_left(setup, unlabeled, tmp_path):
    t = trainer(with_unlabeled(setup, unlabeled, tmp_path, "--unlabeled_share", "3", "--max_nonfinite", "2"))
    batches = iter(t.loader())
    for _ in range(3):  # 24 rows, 24 a batch: one epoch each, the broken image's crop among them
        assert t.train_step(next(batches)) is not None
    assert len(t.skipped_unlabeled) == 1 and "row" in t.skipped_unlabeled.summary()
    t.pool.stores[0].dataset_info["image_root"] = str(tmp_path / "gone")  # the images moved away
    t2_batches = iter(t.loader())
    with pytest.raises(UnreadableBatchesError, match=r"2 batches in a row without one readable unlabeled image \(on "
                                                     r"this rank or another\): are the images still under "
                                                     f"{tmp_path / 'gone'}"):
        for _ in range(3):
            t.train_step(next(t2_batches))


def test_a_text_only_run_reads_no_crop(setup, unlabeled, tmp_path, monkeypatch):
    import person.train.batches as batches_module
    monkeypatch.setattr(batches_module, "load_crop", lambda *a, **k: pytest.fail("a crop was decoded"))
    result = main_cmd.main(with_unlabeled(setup, unlabeled, tmp_path, "--train", "text", "--max_iters", "2",
                                          "--eval_every", "0"))
    assert result.iteration == 2 and result.skipped_steps == 0


def test_resume_after_kill_with_unlabeled_stores_continues_exactly(setup, unlabeled, tmp_path):
    common = ["--max_iters", "6", "--save_every", "3", "--eval_every", "0", "--keep_last", "0", "--rel_img_weight",
              "0.5", "--rel_cap_weight", "0.5", "--unlabeled_share", "0.75"]
    straight = _python(with_unlabeled(setup, unlabeled, tmp_path / "a", *common))
    assert straight.wait(300) == 0, straight.stdout.read()
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_3, *with_unlabeled(setup, unlabeled, tmp_path / "b",
                                                                               *common)],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                            start_new_session=True, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    resumed = _python(["--resume", str(run_folder(tmp_path / "b"))])
    out = resumed.stdout.read()
    assert resumed.wait(300) == 0, out
    assert "unlabeled: 24 readable images and 10 captions from 2 unlabeled store(s)" in out
    a, b = (load_checkpoint(run_folder(tmp_path / d) / "6.pt") for d in ("a", "b"))
    assert b["options"]["unlabeled"] == [str(p) for p in unlabeled]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_two_ranks_draw_their_own_unlabeled_rows_and_stay_in_step(setup, unlabeled, tmp_path):
    report = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "train" / "ddp_steps.py"), str(report),
           *with_unlabeled(setup, unlabeled, tmp_path, "--unlabeled_share", "0.5", "--rel_img_weight", "0.5")]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in json.loads(report.read_text()):
        assert step["same_parameters"]
        rows = step["unlabeled_rows"]
        assert len(rows[0]) == len(rows[1]) == 4 and not set(rows[0]) & set(rows[1])


def test_init_starts_from_the_checkpoints_students_with_its_options(setup, tmp_path):
    first = main_cmd.main(args(setup, tmp_path / "a", "--max_iters", "2", "--eval_every", "0"))
    t = trainer(["--embedding_path", str(setup[1]), "--init", str(first.last_checkpoint), "--log_dir",
                 str(tmp_path / "b"), "--run_name", "r", "--num_workers", "0", "--p", "4"])
    assert (t.opts.backbone, t.opts.tbackbone, t.opts.image_size, t.opts.text_width) == (
        "backbone.tiny.TinyNet", "tbackbone.char.L1", "64x32", 32)
    saved = load_checkpoint(first.last_checkpoint)["model"]
    for key, value in t.students.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert t.iteration == 0 and t.memory is None
    image_only = trainer([*args(setup, tmp_path / "c"), "--init", str(first.last_checkpoint), "--train", "image"])
    assert image_only.students.text is None
    for key, value in image_only.students.state_dict().items():  # the image half of a pair
        assert torch.equal(value, saved[key]), key


def test_init_joins_two_runs_that_trained_one_student_each(setup, tmp_path):
    image = main_cmd.main(args(setup, tmp_path / "a", "--max_iters", "1", "--eval_every", "0", "--train", "image"))
    text = main_cmd.main(args(setup, tmp_path / "b", "--max_iters", "1", "--eval_every", "0", "--train", "text",
                              "--seed", "3"))
    t = trainer([*args(setup, tmp_path / "c"), "--init", str(image.last_checkpoint), str(text.last_checkpoint)])
    for name, run in (("image", image), ("text", text)):
        saved = load_checkpoint(run.last_checkpoint)["model"]
        for key, value in getattr(t.students, name).state_dict().items():
            assert torch.equal(value, saved[f"{name}.{key}"]), key
    with pytest.raises(OptionError, match=r"has no text student \(.*a.*--train image\)"):
        trainer([*args(setup, tmp_path / "d"), "--init", str(image.last_checkpoint)])
    state = load_checkpoint(text.last_checkpoint)  # a text student of another dimension
    state["students"] = dict(state["students"], feature_dim=8)
    torch.save({k: v for k, v in state.items() if k != "path"}, tmp_path / "other.pt")
    with pytest.raises(OptionError, match="other feature dimensions"):
        trainer([*args(setup, tmp_path / "f"), "--init", str(image.last_checkpoint), str(tmp_path / "other.pt")])


def test_init_refuses_other_students_a_missing_one_and_another_teacher(setup, tmp_path):
    first = main_cmd.main(args(setup, tmp_path / "a", "--max_iters", "1", "--eval_every", "0", "--train", "image"))
    ckpt = str(first.last_checkpoint)
    with pytest.raises(OptionError, match=r"--backbone 'backbone.mf3.ANet2_w050' \(checkpoint: "
                                          r"'backbone.tiny.TinyNet'\)"):
        trainer([*args(setup, tmp_path / "b"), "--init", ckpt, "--backbone", "backbone.mf3.ANet2_w050",
                 "--train", "image"])
    with pytest.raises(OptionError, match="has no text student .*--train image"):
        trainer([*args(setup, tmp_path / "b"), "--init", ckpt])
    state = load_checkpoint(ckpt)
    state["teacher"] = dict(state["teacher"], config_hash="2" * 64)
    torch.save({k: v for k, v in state.items() if k != "path"}, tmp_path / "foreign.pt")
    with pytest.raises(SpaceMismatchError, match=r"--init .*foreign.pt lives in the space of made-up .* but "
                                                 r"--embedding_path .*store.h5 in that of made-up .*\(config_hash differ\)"):
        trainer([*args(setup, tmp_path / "b"), "--init", str(tmp_path / "foreign.pt"), "--train", "image"])
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        trainer([*args(setup, tmp_path / "b"), "--init", str(tmp_path / "junk.pt")])


def _graph_nodes(tensor):
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(n for n, _ in node.next_functions)
    return {type(n).__name__ for n in seen}


def test_without_unlabeled_rows_the_identity_terms_take_the_batch_unsliced():
    """A slice's backward adds the gradients in another order (the demo's students came out a few 1e-7 apart after
    one step, and its figures would move): with every row labelled the identity terms see the batch itself."""
    rng = np.random.default_rng(3)
    pid = torch.tensor([0, 0, 1, 1, 2, 2])
    s_img, s_cap = _unit(rng, 6).requires_grad_(), _unit(rng, 6).requires_grad_()
    t_img, t_cap = _unit(rng, 6), _unit(rng, 6)
    loss = DistillLoss(LossWeights(id_img=0.3, d_pos=0.1, sdm=0.1), margin=0.2)
    whole = loss(s_img, s_cap, t_img, t_cap, pid, labelled=(6, 6))
    assert not any(name.startswith("SliceBackward") for name in _graph_nodes(whole["total"]))
    extra_s, extra_t = _unit(rng, 2).requires_grad_(), _unit(rng, 2)  # two unlabeled images
    mixed = loss(torch.cat([s_img, extra_s]), s_cap, torch.cat([t_img, extra_t]), t_cap, pid, labelled=(6, 6))
    assert any(name.startswith("SliceBackward") for name in _graph_nodes(mixed["id_img"]))
    assert torch.equal(whole["id_img"], mixed["id_img"])


def test_pool_rows_map_to_their_stores_past_unreadable_rows(setup, tmp_path):
    from person.data.unlabeled import detections_file
    from tests.train.distill_fixtures import write_unlabeled
    crops, _ = make_unlabeled(tmp_path / "a", setup[0])
    source = detections_file(tmp_path / "a" / "boxes.jsonl", setup[0].parent)
    second = write_unlabeled(tmp_path / "b.h5", source, IDENTITY, seed=9, unreadable=(0, 5))
    t = trainer(args(setup, tmp_path, "--unlabeled", str(crops), str(second)))
    assert t.pool.num_images == 24 + 22
    a, b = open_unlabeled(crops), open_unlabeled(second)
    rows = np.array([0, 23, 24, 25, 28, 45])  # first store's 0 and 23; the second's readable rows 1, 2, 6, 23
    expected = np.concatenate([a.images([0, 23]), b.images([1, 2, 6, 23])])
    assert np.array_equal(t.pool.images(rows), expected)
    files = t.pool.files()
    assert [str(p) for p in files.image_paths[24:26]] == [str(source.image_path(1)), str(source.image_path(2))]


def test_a_batch_with_unreadable_images_keeps_each_part_in_its_place():
    from person.train.batches import DistillCollate
    image = np.zeros((3, 4, 2), np.uint8)
    batch = DistillCollate(8)([
        {"row": 3, "image": image, "captions": [6, 7], "texts": ["a", "b"]},
        {"row": 4, "error": "4.jpg: corrupt", "captions": [8], "texts": ["c"]},
        {"row": 5, "image": image + 1, "captions": [9], "texts": ["d"]},
        {"unlabeled": "image", "row": 11, "error": "crop outside"},
        {"unlabeled": "image", "row": 12, "image": image + 2},
        {"unlabeled": "caption", "row": 30, "text": "e"},
        {"unlabeled": "caption", "row": 31, "text": "f"}])
    assert batch["rows"].tolist() == [3, 5] and batch["captions"].tolist() == [6, 7, 9]
    assert batch["caption_owner"].tolist() == [0, 0, 1]
    assert batch["images"][:, 0, 0, 0].tolist() == [0, 1, 2]  # labelled readable images, then the crop
    assert batch["u_rows"].tolist() == [12] and batch["u_captions"].tolist() == [30, 31]
    assert batch["skipped"] == [(4, "4.jpg: corrupt")] and batch["u_skipped"] == [(11, "crop outside")]
    assert [chr(row[0]) for row in batch["chars"][:, 0, :1].tolist()] == ["a", "b", "d", "e", "f"]


def test_init_then_resume_continues_the_run_not_the_checkpoint(setup, tmp_path):
    first = main_cmd.main(args(setup, tmp_path / "a", "--max_iters", "2", "--eval_every", "0"))
    run = main_cmd.main([*args(setup, tmp_path / "b", "--max_iters", "2", "--eval_every", "0"),
                         "--init", str(first.last_checkpoint)])
    more = main_cmd.main(["--resume", str(run.run_dir), "--max_iters", "3", "--eval_every", "0"])
    assert more.iteration == 3 and load_checkpoint(more.last_checkpoint)["options"]["init"] == [str(
        first.last_checkpoint)]
    with pytest.raises(ValueError, match="--init .* differ"):
        main_cmd.main(["--resume", str(run.run_dir), "--init", str(run.last_checkpoint)])


def test_init_imports_no_module_its_checkpoint_names(setup, tmp_path):
    first = main_cmd.main(args(setup, tmp_path / "a", "--max_iters", "1", "--eval_every", "0"))
    state = load_checkpoint(first.last_checkpoint)
    state["students"]["backbone"] = state["options"]["backbone"] = "torch.nn.Identity"
    torch.save({k: v for k, v in state.items() if k != "path"}, tmp_path / "named.pt")
    with pytest.raises(PersonError, match="outside the project: a name read from a file is imported only"):
        trainer(["--embedding_path", str(setup[1]), "--log_dir", str(tmp_path / "b"), "--num_workers", "0", "--p", "4",
                 "--init", str(tmp_path / "named.pt")])
