"""The identity classifier (`--id_cls_weight`, IRRA's ID loss): its cross-entropy by hand, which rows and students it
sees, its place beside the students (trained, checkpointed, resumed, kept out of the students' weights) and its
gradients averaged over two torchrun ranks."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from person.cli import train as main_cmd
from person.models.checkpoint import load_checkpoint
from person.train.classifier import IdentityClassifier
from person.train.losses import DistillLoss, LossWeights
from tests.train.distill_fixtures import DIM, make_setup
from tests.train.test_trainer import ROOT, args, run_folder
from tests.train.test_unlabeled_training import trainer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("distill"))


def test_the_cross_entropy_of_cosine_logits_by_hand():
    head = IdentityClassifier(2, 2, temperature=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # normalised away: the rows' directions count
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    cap = torch.tensor([[0.0, 1.0]])
    pid, cap_pid = torch.tensor([0, 1]), torch.tensor([0])
    # logits = cos / 0.5: image 0 -> [2, 0] (right), image 1 -> [1.2, 1.6] (right), caption -> [0, 2] (wrong)
    images = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-0.4))) / 2
    caption = math.log(1 + math.exp(2))
    assert head.loss(img, cap, pid, cap_pid, {"image"}).item() == pytest.approx(images, rel=1e-6)
    assert head.loss(img, cap, pid, cap_pid, {"image", "text"}).item() == pytest.approx((images + caption) / 2,
                                                                                       rel=1e-6)
    assert head.loss(img, cap, pid, cap_pid, {"text"}).item() == pytest.approx(caption, rel=1e-6)
    with pytest.raises(ValueError, match="2 identities or more and a temperature > 0, got 1 and 0.5"):
        IdentityClassifier(1, 2, temperature=0.5)


def test_the_term_needs_its_classifier_and_not_the_memory():
    with pytest.raises(ValueError, match="the id_cls term needs an identity classifier"):
        DistillLoss(LossWeights(id_cls=1.0))
    loss = DistillLoss(LossWeights(id_cls=1.0), classifier=IdentityClassifier(3, DIM))
    assert loss.terms[-1] == "id_cls" and not loss.uses_memory
    assert DistillLoss(LossWeights(id_cls=1.0, dist_img=0, dist_cap=0, dist_rel=0), train="text",
                       classifier=IdentityClassifier(3, DIM)).students_used == {"text"}


def test_a_run_trains_checkpoints_and_resumes_the_classifier_outside_the_students(setup, tmp_path):
    common = ("--id_cls_weight", "0.5", "--save_every", "2", "--eval_every", "0")
    main_cmd.main(args(setup, tmp_path, "--max_iters", "2", *common))
    state = load_checkpoint(run_folder(tmp_path) / "2.pt")
    identities = state["head"]["weight"].shape[0]
    start = IdentityClassifier(identities, DIM, seed=0).weight.detach()  # the run's seed: its first weights
    assert start.shape == (identities, DIM) and not torch.equal(state["head"]["weight"], start)  # trained
    assert not any(k.startswith("head") for k in state["model"])  # the students' weights, as export reads them
    assert "id_cls" in (run_folder(tmp_path) / "train.log").read_text()
    # Resumed: the classifier goes on from its saved weights (a new one would start from `start` again).
    resumed = trainer(args(setup, tmp_path, "--max_iters", "3", *common, "--resume", str(run_folder(tmp_path) / "2.pt")))
    assert torch.equal(resumed.head.weight.detach(), state["head"]["weight"])


def test_two_ranks_hold_one_classifier(setup, tmp_path):
    report = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "train" / "ddp_steps.py"), str(report), *args(setup, tmp_path, "--id_cls_weight", "1")]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = json.loads(report.read_text())
    assert all(step["same_parameters"] and step["batches_differ"] for step in steps)
