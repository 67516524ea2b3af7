"""Checkpoints are atomic and complete; options round-trip; the lr schedule is a pure function."""
import argparse
import dataclasses
import os

import pytest
import torch

from person.checkpoint import last_checkpoint, load_checkpoint, run_dir, save_checkpoint
from person.options import add_options, from_dict, from_namespace, option, to_dict
from person.schedule import warmup_cosine


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
