"""Hostile inputs around what the project writes and how it is told what to do: outputs are never lost or left
half-written (atomic files, refused run-folder reuse, full and read-only disks), options out of range are
refused by name, checkpoints that do not fit are a message, not a traceback."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from person.cli import train as main_cmd
from person import files
from person.errors import PersonError
from person.eval import metrics, report
from person.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, students_from_checkpoint
from person.options import OptionError
from person.train.runs import RunExistsError
from tests.train.distill_fixtures import DIM, make_setup

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SMALL = ["--backbone", "backbone.tiny.TinyNet", "--tbackbone", "tbackbone.char.L1", "--text_width", "32",
         "--image_size", "64x32", "--max_seq_length", "48", "--p", "4", "--k", "2", "--num_workers", "0",
         "--warmup_iters", "1", "--max_iters", "2", "--eval_every", "0", "--save_every", "2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("hostile"))


def train_args(setup, log_dir, *extra):
    json_path, store, _ = setup
    return ["--embedding_path", str(store), "--log_dir", str(log_dir), "--run_name", "r", *SMALL, *extra]


def run_command(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- atomic files

def test_a_failed_write_leaves_the_previous_file_and_no_temp(tmp_path):
    path = files.write_json(tmp_path / "report.json", {"eer": 0.1})
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_file(path, "w") as f:
            f.write('{"eer": 0.')
            raise RuntimeError("boom")
    assert json.loads(path.read_text()) == {"eer": 0.1}
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        report.write_json({"eer": float("nan")}, path)
    assert json.loads(path.read_text()) == {"eer": 0.1} and os.listdir(tmp_path) == ["report.json"]


def test_stale_temps_of_killed_writes_are_cleaned_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".report.json.{int(dead.stdout)}.tmp"
    live = tmp_path / f".report.json.{os.getppid()}.tmp"  # a running process's write in progress
    other = tmp_path / ".notes.txt.1.tmp.keep"
    for p in (stale, live, other):
        p.write_text("partial")
    files.write_json(tmp_path / "report.json", {"ok": True})
    assert not stale.exists() and live.exists() and other.exists()


def test_temp_names_that_are_not_a_writer_s_are_left_and_odd_pids_are_not_alive(tmp_path):
    assert not files.process_alive(0) and not files.process_alive(-1) and not files.process_alive(2 ** 70)
    assert files.process_alive(os.getpid())
    odd = [tmp_path / ".report.json.\u00b2.tmp", tmp_path / f".report.json.{'9' * 30}.tmp"]
    for p in odd:
        p.write_text("not a temp of ours")
    files.write_json(tmp_path / "report.json", {"ok": True})
    assert all(p.exists() for p in odd)


def test_a_replaced_folder_is_the_new_one_whole_or_the_previous_one(tmp_path):
    out = tmp_path / "out"
    with files.atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_dir(out) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["out"] and (out / "a").read_text() == "1"
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    os.replace(out, tmp_path / f".out.{dead}-7.old")  # a replacement killed between its two renames
    (tmp_path / f".out.{dead}-7.tmp").mkdir()
    with files.atomic_dir(out) as tmp:
        assert (out / "a").read_text() == "1"  # put back first: the previous one, never nothing
        (tmp / "a").write_text("3")
    assert os.listdir(tmp_path) == ["out"] and (out / "a").read_text() == "3"
    with files.atomic_dir(tmp_path / "store.h5", make=False) as tmp:  # a library that makes the file itself
        assert not tmp.exists()
        tmp.write_bytes(b"h5")
    assert sorted(os.listdir(tmp_path)) == ["out", "store.h5"]


def test_a_full_disk_keeps_the_old_report_and_says_so(tmpfs):
    mount, _ = tmpfs
    disk = mount(64)
    old = report.write_json({"eer": 0.25}, disk / "r.json")
    (disk / "filler").write_bytes(b"\0" * (disk_free(disk) - 1024))
    big = {"worst": ["x" * 1000] * 200}
    with pytest.raises(files.OutputError, match=r"cannot write .*r.json: No space left on device; free space"):
        report.write_json(big, old)
    assert json.loads(old.read_text()) == {"eer": 0.25}
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "r.json"]


def test_a_read_only_disk_and_a_file_in_the_way_are_one_line_errors(tmpfs, tmp_path):
    mount, _ = tmpfs
    ro = mount(64, readonly=True)
    with pytest.raises(files.OutputError, match="cannot write .*x.json: Read-only file system; the disk is read-only: write somewhere else"):
        files.write_json(ro / "x.json", {})
    (tmp_path / "logs").write_text("a file")
    with pytest.raises(files.OutputError, match="cannot create the folder .*logs/run"):
        files.make_folder(tmp_path / "logs" / "run")


def test_checkpoints_are_written_through_the_atomic_writer(tmpfs):
    mount, _ = tmpfs
    disk = mount(256)
    save_checkpoint({"iteration": 1, "w": torch.zeros(10)}, disk / "1.pt")
    with pytest.raises(files.OutputError, match="1.pt: No space left on device"):
        save_checkpoint({"iteration": 1, "w": torch.zeros(200_000)}, disk / "1.pt")
    assert load_checkpoint(disk / "1.pt")["w"].shape == (10,)


def disk_free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------- training outputs

def test_a_reused_run_name_is_refused_and_overwrite_starts_over(setup, tmp_path):
    first = main_cmd.main(train_args(setup, tmp_path))
    options = (first.run_dir / "options.json").read_text()
    best_before = (first.run_dir / "2.pt").stat().st_mtime_ns
    with pytest.raises(RunExistsError, match=r"already holds a run \(2.pt, best.pt\): continue it with --resume "
                                             r".*r, start a new one with another --run_name, or replace it with "
                                             r"--overwrite"):
        main_cmd.main(train_args(setup, tmp_path, "--lr", "0.5"))
    assert (first.run_dir / "options.json").read_text() == options  # nothing of the finished run was touched
    assert (first.run_dir / "2.pt").stat().st_mtime_ns == best_before
    again = main_cmd.main(train_args(setup, tmp_path, "--lr", "0.5", "--overwrite", "--max_iters", "1",
                                     "--save_every", "1"))
    assert sorted(p.name for p in again.run_dir.glob("*.pt")) == ["1.pt", "best.pt"]  # the old run's 2.pt is gone
    assert load_checkpoint(again.run_dir / "best.pt")["iteration"] == 1
    assert json.loads((again.run_dir / "options.json").read_text())["lr"] == 0.5


def test_a_log_dir_that_is_a_file_is_one_line(setup, tmp_path):
    (tmp_path / "logs").write_text("not a folder")
    done = run_command("main.py", *train_args(setup, tmp_path / "logs"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("main.py: error: cannot create the folder") and "logs" in done.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--min_lr_ratio", "-5", "--min_lr_ratio must be >= 0 and <= 1, got -5.0"),
    ("--weight_decay", "nan", "--weight_decay must be a finite number, got nan"),
    ("--lr", "inf", "--lr must be a finite number, got inf"),
    ("--lr", "0", "--lr must be > 0, got 0.0"),
    ("--feature_dim", "0", "--feature_dim must be >= 1 and <= 16384, got 0"),
    ("--p", "0", "--p must be >= 1 and <= 4096, got 0"),
    ("--id_margin", "2", "--id_margin must be >= -1 and <= 1, got 2.0"),
    ("--dist_img_weight", "-1", "--dist_img_weight must be >= 0, got -1.0"),
    ("--rel_temperature", "-0.1", "--rel_temperature must be > 0, got -0.1"),
    ("--image_size", "100000x50000", "--image_size 100000x50000: sides above 2048 pixels"),
])
def test_options_out_of_range_are_refused_by_name(setup, tmp_path, flag, value, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        main_cmd.main(train_args(setup, tmp_path, flag, value))
    assert not (tmp_path / f"expModel-backbone.tiny.TinyNet-64x32-{DIM}").exists()


def test_evaluation_command_numbers_are_checked_by_argparse(tmp_path):
    done = run_command("evaluation_model.py", str(tmp_path / "x.pt"), "--top-k", "-1")
    assert done.returncode == 2 and "argument --top-k: >= 0, got -1" in done.stderr


# ---------------------------------------------------------------- checkpoints

def test_a_checkpoint_whose_weights_do_not_fit_is_named(tmp_path):
    state = load_checkpoint(FIXTURES / "checkpoint_v1.pt")
    state["model"]["image.head.embed.layer.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="its weights do not fit the students its options describe"):
        students_from_checkpoint(state)
    state = load_checkpoint(FIXTURES / "checkpoint_v1.pt")
    state["options"]["image_size"] = "tall"
    with pytest.raises(CheckpointError, match="its options do not describe the students"):
        students_from_checkpoint(state)
    state = load_checkpoint(FIXTURES / "checkpoint_v1.pt")
    state["options"]["backbone"] = "torch.nn.Identity"  # a file must not decide what code is imported
    with pytest.raises(PersonError, match="outside the project: a name read from a file is imported only"):
        students_from_checkpoint(state)


def test_files_that_are_not_checkpoints_end_the_command_with_a_message(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02junk")
    torch.save({"version": 7}, tmp_path / "other.pt")
    for name, message in (("junk.pt", "is not a readable checkpoint"), ("other.pt", "not a checkpoint of this "
                                                                                    "project (version 7")):
        done = run_command("evaluation_model.py", str(tmp_path / name))
        assert done.returncode == 1 and "Traceback" not in done.stderr and message in done.stderr, done.stderr


def test_a_malicious_pickle_in_a_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))
    torch.save({"version": 1, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_person_error_is_every_bad_input_error():
    assert issubclass(metrics.MetricInputError, PersonError) and issubclass(files.OutputError, OSError)
    assert files.output_error("x", OSError(errno.ENOSPC, "No space left on device")).errno == errno.ENOSPC
