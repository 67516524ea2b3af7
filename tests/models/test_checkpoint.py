"""Checkpoints are atomic and complete; options round-trip; the lr schedule is a pure function."""
import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from person.models.checkpoint import last_checkpoint, load_checkpoint, save_checkpoint, students_from_checkpoint
from person.models.students import StudentSpec
from person.options import add_options, from_dict, from_namespace, option, to_dict
from person.train.runs import run_dir
from person.train.schedule import warmup_cosine


def test_save_load_round_trip_and_last(tmp_path):
    for it in (10, 200, 30):
        save_checkpoint({"iteration": it, "w": torch.arange(3)}, tmp_path / f"{it}.pt")
    (tmp_path / "best.pt").write_bytes(b"")  # not an <iter>.pt
    assert last_checkpoint(tmp_path) == tmp_path / "200.pt"
    state = load_checkpoint(tmp_path)
    assert state["iteration"] == 200 and state["w"].tolist() == [0, 1, 2]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_failed_write_leaves_no_partial_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")
    with pytest.raises(Exception):
        save_checkpoint({"x": Boom()}, tmp_path / "5.pt")
    assert list(tmp_path.iterdir()) == []


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "1.pt")
    with pytest.raises(FileNotFoundError, match="no <iter>.pt checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "3.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "3.pt")
    torch.save({"state_dict": {}}, tmp_path / "4.pt")
    with pytest.raises(ValueError, match="not a checkpoint of this project"):
        load_checkpoint(tmp_path / "4.pt")


def test_run_dir_layout(tmp_path):
    assert run_dir("logs", "backbone.mf3.ANet2", (224, 112), 1152, "r1").as_posix() == \
        "logs/expModel-backbone.mf3.ANet2-224x112-1152/r1"


@dataclasses.dataclass
class Opts:
    feature_dim: int | None = option(None, "output dimension")
    lr: float = option(1e-3, "learning rate")
    train: str = option("both", "which student", choices=("image", "text", "both"))
    compile: bool = option(False, "torch.compile")


def test_options_parse_both_spellings_and_round_trip():
    p = argparse.ArgumentParser()
    add_options(p, Opts)
    a = from_namespace(Opts, p.parse_args(["--feature_dim", "64", "--lr", "0.5", "--compile"]))
    b = from_namespace(Opts, p.parse_args(["--feature-dim", "64", "--lr", "0.5", "--compile"]))
    assert a == b == Opts(64, 0.5, "both", True)
    assert from_dict(Opts, to_dict(a)) == a
    with pytest.raises(SystemExit):
        p.parse_args(["--train", "neither"])
    with pytest.raises(ValueError, match="fields this version does not know: zzz"):
        from_dict(Opts, {"zzz": 1})


def test_warmup_cosine_values():
    lrs = [warmup_cosine(i, 1.0, max_iters=10, warmup_iters=2, min_lr_ratio=0.0) for i in range(11)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0
    assert lrs[6] == pytest.approx(0.5) and lrs[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_checkpoint_from_before_the_layout_move_still_loads():
    """Written by the old flat `person` package: its dotted names (`backbone.tiny.TinyNet`) resolve in the new
    tree, its students are rebuilt from the saved options, and they give the outputs they gave then."""
    state = load_checkpoint(FIXTURES / "checkpoint_v1.pt")
    assert "students" not in state and state["options"]["backbone"] == "backbone.tiny.TinyNet"
    spec, students = students_from_checkpoint(state)
    assert spec == StudentSpec(16, "backbone.tiny.TinyNet", "tbackbone.char.L1", (32, 16), "stretch", 128, 32, 2)
    assert spec.trained == "both"
    expected = np.load(FIXTURES / "checkpoint_v1_outputs.npz")
    with torch.no_grad():
        out = students(torch.from_numpy(expected["images"]), torch.from_numpy(expected["chars"]),
                       torch.from_numpy(expected["mask"]))
    np.testing.assert_allclose(out["image"].numpy(), expected["image"], atol=1e-6)
    np.testing.assert_allclose(out["text"].numpy(), expected["text"], atol=1e-6)


def test_student_spec_round_trips_and_names_what_is_wrong():
    spec = StudentSpec(8, None, "tbackbone.char.L2", (96, 48), max_seq_length=64, text_width=64)
    assert StudentSpec.from_dict(spec.to_dict()) == spec and spec.trained == "text"
    assert spec.to_dict()["image_size"] == [96, 48]
    with pytest.raises(ValueError, match="fields this version does not know: colour"):
        StudentSpec.from_dict({**spec.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="needs an image student"):
        StudentSpec(8)
    with pytest.raises(ValueError, match="resize 'crop'"):
        StudentSpec(8, "backbone.tiny.TinyNet", resize="crop")
    torch.manual_seed(0)
    students = spec.build()
    assert students.image is None and students.text.max_seq_length == 64 and students.text.width == 64
