"""bench/frontier.py's library (person.demo.frontier): cells, the probe's step time, equal-minute runs, the table."""
from __future__ import annotations

from pathlib import Path

import pytest

from person.demo import frontier
from person.demo.recipe import DEMO_TRAINING
from person.teacher.store import open_store
from tests.conftest import train_tiny


def test_a_cell_is_a_backbone_at_a_size_and_a_bad_one_says_how_to_write_it():
    cell = frontier.parse_cell("backbone.mf3.ANet2_relu@224x112")
    assert cell == frontier.Cell("backbone.mf3.ANet2_relu", (224, 112))
    assert cell.key == "backbone.mf3.ANet2_relu@224x112"
    for bad in ("backbone.mf3.ANet2", "backbone.mf3.ANet2@224", "backbone.mf3.ANet2@axb"):
        with pytest.raises(ValueError, match="write BACKBONE@HxW"):
            frontier.parse_cell(bad)


def test_the_probe_times_a_step_from_its_logged_steps_leaving_out_the_first(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(tmp_path / "tb"))
    # The first logged step carries the start-up (30 s); then 2 steps every 1.5 s.
    for step, wall in ((2, 1030.0), (4, 1033.0), (6, 1036.0), (8, 1039.0)):
        writer.add_scalar("train/total", 1.0, step, walltime=wall)
    writer.close()
    assert frontier.step_seconds(tmp_path) == pytest.approx(1.5)
    short = tmp_path / "short"
    writer = SummaryWriter(str(short / "tb"))
    writer.add_scalar("train/total", 1.0, 2, walltime=1.0)
    writer.add_scalar("train/total", 1.0, 4, walltime=2.0)
    writer.close()
    with pytest.raises(ValueError, match="at least 3 logged steps, found 2"):
        frontier.step_seconds(short)


def test_equal_minutes_give_a_cheaper_cell_more_iterations_and_a_warm_up_in_proportion(tmp_path):
    cell = frontier.Cell("backbone.mf3.ANet2_w050", (96, 48))
    long = frontier._options(cell, Path("s.h5"), tmp_path, 2600, 1, "frontier")
    assert long["max_iters"] == 2600 and long["warmup_iters"] == DEMO_TRAINING["warmup_iters"]
    assert long["train"] == "image" and long["image_size"] == "96x48" and long["seed"] == 1
    assert long["backbone"] == "backbone.mf3.ANet2_w050" and long["run_name"] == f"frontier-{cell.key}-s1"
    short = frontier._options(cell, Path("s.h5"), tmp_path, 130, 0, "frontier")
    assert short["warmup_iters"] == 10  # the recipe's 100 of 1300
    assert frontier._options(cell, Path("s.h5"), tmp_path, 12, 0, "probe")["log_every"] == 2


def _measured(eer: float, ms: float) -> dict:
    scores = {"eer": eer, "rank1": 0.5, "mAP": 0.4}
    return {"fp32": scores, "int8": scores | {"eer": eer + 0.001}, "params": 1_234_567, "macs": 456_000_000,
            "int8_ms": ms, "int8_kib": 1510.4, "iterations": 180, "minutes": 10.0}


def test_the_table_averages_seeds_and_takes_the_median_time():
    cell = frontier.Cell("backbone.mf3.ANet2_relu", (224, 112))
    text = frontier.table([cell], {cell.key: [_measured(0.10, 3.0), _measured(0.12, 5.0), _measured(0.14, 3.5)]},
                          {cell.key: 3.3333}, {"eer": 0.0603, "rank1": 0.7075, "mAP": 0.6997})
    lines = text.splitlines()
    assert lines[2] == "| teacher (its own embeddings) | | 6.03 | 70.75 | 69.97 | | | | | |"
    assert lines[3] == ("| `backbone.mf3.ANet2_relu` | 224x112 | 12.00 / 12.10 | 50.00 | 40.00 | 1.23M | 456 | 3.50 | "
                        "1,510 KiB | 180 (3.33) |")


def test_a_cell_is_exported_scored_in_fp32_and_int8_and_timed(trained_setup, tmp_path):
    checkpoint = train_tiny(trained_setup, tmp_path / "logs", "--train", "image")
    cell = frontier.Cell("backbone.mf3.ANet2_w050", (64, 32))
    with open_store(trained_setup[1]) as s:
        dim = s.dim
    out = frontier.measure(cell, {"checkpoint_path": str(checkpoint), "minutes": 0.5}, tmp_path, dim, calibration=16)
    assert out["iterations"] == 60 and out["minutes"] == 0.5
    assert (tmp_path / "exports" / f"{checkpoint.parent.name}-60" / "model_image.int8.onnx").is_file()
    assert set(out["fp32"]) == set(out["int8"]) == {"eer", "rank1", "mAP"}
    assert 0 <= out["int8"]["eer"] <= 1 and out["int8_ms"] > 0 and out["int8_kib"] > 0
    assert out["macs"] > 0 and 0.2e6 < out["params"] < 0.6e6
    frontier.plot([cell], {cell.key: [out]}, {"eer": 0.1, "rank1": 0.5}, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
