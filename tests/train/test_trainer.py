"""main.py and the trainer: a run logs every active term and checkpoints; resume after a kill continues
exactly; two torchrun ranks stay in step and share one memory; bad runs stop with clear messages."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from person.cli import evaluate as evaluation_model
from person.cli import train as main_cmd
from person.eval.evaluate import evaluate_checkpoint
from person.models.checkpoint import load_checkpoint
from person.teacher.store import StoreMismatchError
from person.train.options import TrainOptions
from person.train.schedule import warmup_cosine
from person.train.trainer import NonFiniteLossError, Trainer
from tests.train.distill_fixtures import DIM, make_setup

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--backbone", "backbone.tiny.TinyNet", "--tbackbone", "tbackbone.char.L1", "--text_width", "32",
         "--image_size", "64x32", "--max_seq_length", "48", "--p", "4", "--k", "2", "--num_workers", "0",
         "--warmup_iters", "2", "--lr", "0.003"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    return make_setup(root, broken=True)


def args(setup, run_dir, *extra):
    json_path, store, _ = setup
    return ["--data", str(json_path), "--embedding_path", str(store), "--log_dir", str(run_dir), "--run_name", "r",
            *SMALL, *extra]


def run_folder(log_dir: Path) -> Path:
    return log_dir / f"expModel-backbone.tiny.TinyNet-64x32-{DIM}" / "r"


def test_run_logs_every_active_term_checkpoints_and_evaluates(setup, tmp_path):
    result = main_cmd.main(args(setup, tmp_path, "--max_iters", "4", "--log_every", "1", "--save_every", "2",
                                "--eval_every", "2", "--rkda_weight", "0.5", "--id_img_weight", "0.1",
                                "--memory_warmup", "1"))
    folder = run_folder(tmp_path)
    assert result.run_dir == folder and result.iteration == 4
    assert sorted(p.name for p in folder.glob("*.pt")) == ["2.pt", "4.pt", "best.pt"]
    log = (folder / "train.log").read_text()
    line = re.compile(r"Iter:3\| dist_img: [\d.]+ [\d.]+\| dist_cap: [\d.]+ [\d.]+\| dist_rel: [\d.]+ [\d.]+\| "
                      r"rkda: [\d.]+ [\d.]+\| id_img: [\d.]+ [\d.]+\| total: [\d.]+ [\d.]+\| lr: [\d.]+\| [\d.]+ img/s")
    assert line.search(log), log
    assert list((folder / "tb").iterdir())  # TensorBoard events
    saved = json.loads((folder / "options.json").read_text())
    assert saved["max_iters"] == 4 and saved["rkda_weight"] == 0.5
    state = load_checkpoint(folder / "4.pt")
    assert state["iteration"] == 4 and state["feature_dim"] == DIM and state["options"] == saved
    assert state["students"] == {"feature_dim": DIM, "backbone": saved["backbone"], "tbackbone": saved["tbackbone"],
                                 "image_size": [int(v) for v in saved["image_size"].split("x")], "resize": "stretch",
                                 "max_seq_length": saved["max_seq_length"], "text_width": saved["text_width"],
                                 "text_stride": saved["text_stride"]}
    assert state["memory"]["image"]["filled"] == 3 * 8  # warm-up 1: filled by iterations 2, 3, 4
    assert set(result.final) == {"student", "teacher", "student_text_teacher_image", "teacher_text_student_image"}
    for summary in result.final.values():
        assert 0.0 <= summary["eer"] <= 1.0 and summary["positives"] > 0


def test_store_alone_names_its_dataset_and_split(setup, tmp_path):
    json_path, store, broken = setup
    trainer = Trainer(TrainOptions(embedding_path=str(store), log_dir=str(tmp_path)))
    assert trainer.records.source == json_path and trainer.records.split_rule == "ids-2-seed-0"
    assert trainer.records.splits[broken] == 0  # a training image...
    assert broken not in trainer.train_rows and len(trainer.train_rows) > 0  # ...left out: it is unreadable


def _python(argv, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


# main.py's run in a process that SIGKILLs itself and its process group (its loader workers) as soon as 3.pt is
# written: a kill at a known point, with nothing of the run after it saved.
KILLED_AT_3 = """
import os, signal, sys
from person.cli import train as main_cmd
from person.options import from_namespace, given_options
from person.train.options import TrainOptions
from person.train.trainer import Trainer

def kill_at_3(path):
    if path.name == "3.pt":
        os.killpg(os.getpid(), signal.SIGKILL)

parser, argv = main_cmd.build_parser(), sys.argv[1:]
opts = from_namespace(TrainOptions, parser.parse_args(argv))
Trainer(opts, given_options(parser, argv), on_checkpoint=kill_at_3).fit()
"""


def test_resume_after_kill_continues_exactly(setup, tmp_path):
    common = ["--max_iters", "6", "--save_every", "3", "--eval_every", "0", "--keep_last", "0",
              "--id_cap_weight", "0.2", "--memory_warmup", "0"]
    straight = _python(args(setup, tmp_path / "a", *common))
    assert straight.wait(300) == 0, straight.stdout.read()

    killed = subprocess.run([sys.executable, "-c", KILLED_AT_3, *args(setup, tmp_path / "b", *common)], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                            start_new_session=True, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert (run_folder(tmp_path / "b") / "3.pt").exists() and not (run_folder(tmp_path / "b") / "6.pt").exists()

    resumed = _python(["--resume", str(run_folder(tmp_path / "b"))])
    out = resumed.stdout.read()
    assert resumed.wait(300) == 0, out
    assert "resumed" in out and "at iteration 3" in out
    a = load_checkpoint(run_folder(tmp_path / "a") / "6.pt")
    b = load_checkpoint(run_folder(tmp_path / "b") / "6.pt")
    assert a["iteration"] == b["iteration"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for ring in ("image", "text"):
        assert torch.equal(a["memory"][ring]["emb"], b["memory"][ring]["emb"])
        assert a["memory"][ring]["ptr"] == b["memory"][ring]["ptr"]
    lr_a = [g["lr"] for g in a["optimizer"]["param_groups"]]
    assert lr_a == [g["lr"] for g in b["optimizer"]["param_groups"]]
    assert lr_a[0] == warmup_cosine(5, 0.003, 6, 2, 0.01)  # the last step's rate


def test_resume_refuses_changed_options_and_allows_longer_runs(setup, tmp_path):
    main_cmd.main(args(setup, tmp_path, "--max_iters", "2", "--eval_every", "0"))
    folder = run_folder(tmp_path)
    with pytest.raises(ValueError, match=r"--lr 0.1 \(run: 0.003\) differ"):
        main_cmd.main(["--resume", str(folder), "--lr", "0.1"])
    result = main_cmd.main(["--resume", str(folder / "2.pt"), "--max_iters", "3", "--eval_every", "0"])
    assert result.iteration == 3 and (folder / "3.pt").exists()


def test_train_text_only_reads_no_image(setup, tmp_path, monkeypatch):
    def no_image(*_):
        raise AssertionError("a text-only run opened an image")
    monkeypatch.setattr("person.data.datasets.load_pixels", no_image)
    monkeypatch.setattr("person.data.datasets.load_image", no_image)
    monkeypatch.setattr("person.eval.evaluate.embed_images", no_image)
    result = main_cmd.main(args(setup, tmp_path, "--train", "text", "--max_iters", "2", "--eval_every", "0"))
    state = load_checkpoint(result.last_checkpoint)
    assert state["model"] and all(k.startswith("text.") for k in state["model"])
    assert set(result.final) == {"teacher", "student_text_teacher_image"}


def test_train_image_only(setup, tmp_path):
    result = main_cmd.main(args(setup, tmp_path, "--train", "image", "--max_iters", "2", "--eval_every", "0"))
    state = load_checkpoint(result.last_checkpoint)
    assert all(k.startswith("image.") for k in state["model"])
    assert set(result.final) == {"teacher", "teacher_text_student_image"}


def test_non_finite_losses_skip_steps_then_stop(setup, tmp_path, monkeypatch):
    opts = main_cmd.build_parser().parse_args(args(setup, tmp_path, "--max_nonfinite", "3"))
    trainer = Trainer(TrainOptions(**vars(opts)))
    batches = iter(trainer.loader())
    before = {k: v.clone() for k, v in trainer.students.state_dict().items()}
    monkeypatch.setattr(trainer.store, "images", lambda rows: torch.full((len(rows), DIM), float("nan")).numpy())
    assert trainer.train_step(next(batches)) is None and trainer.train_step(next(batches)) is None
    assert trainer.skipped_steps == 2 and trainer.iteration == 2
    for key, value in trainer.students.state_dict().items():
        assert torch.equal(value, before[key]), key  # a skipped step changes nothing
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row at iteration 3"):
        trainer.train_step(next(batches))


def test_bad_options_are_clear_errors(setup, tmp_path):
    with pytest.raises(ValueError, match="--feature_dim 8 differs from the teacher's 16"):
        main_cmd.main(args(setup, tmp_path, "--feature_dim", "8"))
    with pytest.raises(ValueError, match="is a folder: pass --data"):
        main_cmd.main(["--embedding_path", str(setup[1].parent), "--log_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="works only with --train both and relation terms alone"):
        main_cmd.main(args(setup, tmp_path, "--feature_dim", "8", "--train", "image", "--dist_img_weight", "0"))
    with pytest.raises(ValueError, match="--mix_rel_weight 0"):  # mix_rel meets the teacher's embeddings too
        main_cmd.main(args(setup, tmp_path, "--feature_dim", "8", "--dist_img_weight", "0", "--dist_cap_weight", "0",
                           "--mix_rel_weight", "1"))
    with pytest.raises(ValueError, match="no active loss term trains the text student"):
        main_cmd.main(args(setup, tmp_path, "--dist_cap_weight", "0", "--dist_rel_weight", "0"))
    with pytest.raises(ValueError, match="--save_every must be >= 1, got 0"):
        main_cmd.main(args(setup, tmp_path, "--save_every", "0"))
    with pytest.raises(StoreMismatchError, match="another dataset"):
        main_cmd.main(args(setup, tmp_path, "--eval_ids", "3"))
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA GPU"):
        main_cmd.main(args(setup, tmp_path, "--amp", "fp16", "--device", "cpu"))


def test_bf16_autocast_on_cpu_trains_in_bfloat16(setup, tmp_path):
    opts = main_cmd.build_parser().parse_args(args(setup, tmp_path, "--amp", "bf16", "--max_iters", "2",
                                                   "--eval_every", "0", "--device", "cpu"))
    trainer = Trainer(TrainOptions(**vars(opts)))
    assert trainer.autocast_dtype == torch.bfloat16
    seen = []  # (training?, output dtype) of each student's first layer, at every forward
    for student in (trainer.students.image, trainer.students.text):
        first = next(m for m in student.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        first.register_forward_hook(lambda module, _, out: seen.append((module.training, out.dtype)))
    result = trainer.fit()
    assert result.iteration == 2 and result.skipped_steps == 0
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}  # the training forwards
    assert sum(training for training, _ in seen) == 2 * 2  # both students, both steps


def test_evaluation_model_reports_every_case(setup, tmp_path, capsys):
    result = main_cmd.main(args(setup, tmp_path, "--max_iters", "2", "--eval_every", "0"))
    capsys.readouterr()
    out = evaluation_model.main([str(result.last_checkpoint), "--json", str(tmp_path / "rep.json")])
    printed = capsys.readouterr().out
    assert "== student" in printed and "== teacher_text_student_image" in printed
    assert "        EER      FAR=1e-3" in printed and re.search(r"Top-\d+ false rejects", printed)
    saved = json.loads((tmp_path / "rep.json").read_text())
    assert saved == json.loads(json.dumps(out)) and saved["case"] == "student"
    assert set(saved["cases"]) == {"teacher", "student_text_teacher_image", "teacher_text_student_image"}
    # The evaluation of the last checkpoint is the one the run printed at its end.
    assert saved["eer"] == result.final["student"]["eer"]
    assert (tmp_path / "rep_roc.png").stat().st_size > 0


def test_two_ranks_stay_in_step_and_share_one_memory(setup, tmp_path):
    report = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "train" / "ddp_steps.py"), str(report), *args(setup, tmp_path, "--id_img_weight", "0.1",
                                                                    "--id_img_cap_weight", "0.1", "--memory_warmup", "0")]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = json.loads(report.read_text())
    assert len(steps) == 3
    for step in steps:
        # Parameters agree after every step. (BatchNorm running statistics are per-rank after a CPU
        # forward; DDP overwrites them with rank 0's at the next one, and rank 0 writes checkpoints.)
        assert step["same_parameters"]
        assert step["batches_differ"]  # each rank trained on its own identities
        assert step["memory_labels"][-16:] == step["rank_pids"][0] + step["rank_pids"][1]  # both ranks, rank order
    assert steps[-1]["memory_filled"] == 3 * 16


def test_gradient_clipping_is_really_applied(setup, tmp_path):
    def step_norm(clip: str) -> float:
        opts = main_cmd.build_parser().parse_args(args(setup, tmp_path, "--optimizer", "sgd", "--lr", "1.0",
                                                       "--warmup_iters", "0", "--weight_decay", "0",
                                                       "--clip_grad", clip))
        trainer = Trainer(TrainOptions(**vars(opts)))
        before = torch.cat([p.detach().flatten().clone() for p in trainer.students.parameters()])
        assert trainer.train_step(next(iter(trainer.loader()))) is not None
        after = torch.cat([p.detach().flatten() for p in trainer.students.parameters()])
        return float((after - before).norm())

    # SGD's first step with Nesterov momentum 0.9 moves every parameter by lr * 1.9 * grad: with the
    # gradient's global norm clipped to 1e-3 the move's norm is 1.9e-3 at most; unclipped it is far larger.
    clipped, free = step_norm("0.001"), step_norm("0")
    assert clipped == pytest.approx(1.9e-3, rel=1e-3)
    assert free > 100 * clipped


def test_batches_without_a_readable_image_are_skipped_then_stop(setup, tmp_path):
    from person.train.batches import DistillCollate
    opts = main_cmd.build_parser().parse_args(args(setup, tmp_path, "--max_nonfinite", "2"))
    trainer = Trainer(TrainOptions(**vars(opts)))
    unreadable = DistillCollate(48)([{"row": 0, "error": "x.jpg: corrupt image", "captions": [0], "texts": ["a man"]}])
    assert trainer.train_step(unreadable) is None and trainer.skipped_steps == 1 and trainer.iteration == 1
    with pytest.raises(RuntimeError, match="2 batches in a row without one readable image"):
        trainer.train_step(unreadable)


def test_keep_last_prunes_old_checkpoints(setup, tmp_path):
    main_cmd.main(args(setup, tmp_path, "--max_iters", "4", "--save_every", "1", "--keep_last", "2",
                       "--eval_every", "0"))
    assert sorted(p.name for p in run_folder(tmp_path).glob("*.pt")) == ["3.pt", "4.pt", "best.pt"]


def test_best_is_chosen_on_val_and_the_final_report_is_on_test(tmp_path):
    json_path, store, _ = make_setup(tmp_path / "cuhk", ids=30, fmt="cuhk-pedes")
    result = main_cmd.main(["--embedding_path", str(store), "--log_dir", str(tmp_path), "--run_name", "r", *SMALL,
                            "--max_iters", "2", "--eval_every", "1"])
    assert result.best["split"] == "val"
    _, on_test = evaluate_checkpoint(result.last_checkpoint, top_k=0)
    _, on_val = evaluate_checkpoint(result.last_checkpoint, split="val", top_k=0)
    assert on_test.summaries()["student"]["eer"] == result.final["student"]["eer"]  # the final report: test
    assert not set(on_test.split.rows) & set(on_val.split.rows)


def test_evaluating_a_case_the_checkpoint_cannot_run_is_a_clear_error(setup, tmp_path):
    result = main_cmd.main(args(setup, tmp_path, "--train", "image", "--max_iters", "1", "--eval_every", "0"))
    with pytest.raises(ValueError, match="need a student this checkpoint does not have .it has the image student"):
        evaluation_model.main([str(result.last_checkpoint), "--cases", "student"])


def test_several_captions_per_image_train_the_text_student_on_all_of_them(setup, tmp_path):
    opts = main_cmd.build_parser().parse_args(args(setup, tmp_path, "--captions_per_image", "3", "--id_cap_weight", "1",
                                                   "--d_pos_weight", "1", "--memory_warmup", "0"))
    trainer = Trainer(TrainOptions(**vars(opts)))
    batch = next(iter(trainer.loader()))
    owner = batch["caption_owner"]
    assert len(batch["captions"]) == len(owner) > len(batch["rows"])  # every demo record has 2 or more captions
    store = trainer.store
    assert (torch.from_numpy(store.caption_image[batch["captions"].numpy()]) == batch["rows"][owner]).all()
    values = trainer.train_step(batch)
    assert values is not None and {"dist_cap", "id_cap", "d_pos"} <= set(values)
    # The memory holds one row per caption, labelled with its image's identity.
    emb, labels = trainer.memory.text.get()
    assert len(emb) == len(owner) and trainer.memory.image.filled == len(batch["rows"])
    assert labels.tolist() == trainer.records.pids[batch["rows"][owner].numpy()].tolist()
    with pytest.raises(ValueError, match="--captions_per_image must be >= 1 and <= 64, got 0"):
        TrainOptions(**(vars(opts) | {"captions_per_image": 0})).validate()


def test_channels_last_trains_the_same_image_student(setup, tmp_path):
    def trainer(*extra: str) -> Trainer:
        # SGD: Adam's first step is lr * sign(gradient), which rounding flips where a gradient is ~0
        sgd = ("--optimizer", "sgd", "--lr", "0.1", "--weight_decay", "0", "--warmup_iters", "0")
        return Trainer(TrainOptions(**vars(main_cmd.build_parser().parse_args(args(setup, tmp_path, *sgd, *extra)))))

    plain, fast = trainer(), trainer("--channels_last")
    convs = [p for p in fast.students.image.parameters() if p.dim() == 4]
    # (1x1 and one-channel depthwise kernels are both layouts at once; the 3x3 ones tell them apart)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(not p.is_contiguous() for p in convs)
    before = torch.cat([p.detach().flatten() for p in plain.students.parameters()])
    batch = next(iter(plain.loader()))
    a, b = plain.train_step(batch), fast.train_step(batch)
    assert a.keys() == b.keys() and all(b[k] == pytest.approx(a[k], rel=1e-4) for k in a)
    # The same step up to float rounding, which BatchNorm's backward (sums of many cancelling terms) and
    # this untrained run's large first gradients amplify to ~0.2% of the update; a misread layout moves
    # the weights somewhere else entirely.
    moved = [torch.cat([p.detach().flatten() for p in t.students.parameters()]) - before for t in (plain, fast)]
    assert float((moved[1] - moved[0]).norm() / moved[0].norm()) < 1e-2
