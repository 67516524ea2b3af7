"""bench/ablation.py: rows trained once each (a rerun trains only what is missing or changed), figures that are
the checkpoint's own, the table's averaging, and the curve read back from a run's events."""
import json

import pytest

import main as main_cmd
from bench import ablation
from person.demo.recipe import DEMO_TRAINING
from person.eval.evaluate import evaluate_checkpoint
from person.models.checkpoint import last_checkpoint

# The demo recipe on students small enough for the tests' set (16 identities, 64x32, 24 characters).
TINY = DEMO_TRAINING | dict(tbackbone="tbackbone.char.L1", text_width=32, image_size="64x32", max_seq_length=24,
                            p=4, k=2, captions_per_image=1)


def test_rows_are_trained_once_and_retrained_when_their_settings_change(tmp_path, trained_setup, monkeypatch,
                                                                        capsys):
    monkeypatch.setattr(ablation, "DEMO_TRAINING", TINY)
    store, tasks = trained_setup[1], [("recipe", 0), ("no-mix_rel", 0)]
    results = ablation.run_rows(tasks, store, tmp_path, iters=3, jobs=2)
    assert set(results) == {"recipe/s0/3", "no-mix_rel/s0/3"}
    assert results["no-mix_rel/s0/3"]["options"]["mix_rel_weight"] == 0.0
    assert results["recipe/s0/3"]["options"]["mix_rel_weight"] == 1.0 and results["recipe/s0/3"]["threads"] == 1
    # A row's figures are its last checkpoint's own evaluation.
    run = next((tmp_path / "logs").glob("*/recipe-s0"))
    _, scored = evaluate_checkpoint(last_checkpoint(run), num_workers=0)
    for case, _ in ablation.CASES:
        assert results["recipe/s0/3"]["cases"][case]["eer"] == scored.summaries()[case]["eer"]
    assert json.loads((tmp_path / "ablation.json").read_text()) == results
    capsys.readouterr()

    assert ablation.run_rows(tasks, store, tmp_path, iters=3, jobs=2) == results
    assert "started" not in capsys.readouterr().out
    monkeypatch.setitem(ablation.ROWS, "no-mix_rel", ("changed", dict(mix_rel_weight=0.0, dist_cap_weight=0.5)))
    again = ablation.run_rows(tasks, store, tmp_path, iters=3, jobs=2)
    started = [line for line in capsys.readouterr().out.splitlines() if "started" in line]
    assert len(started) == 1 and "no-mix_rel/s0/3" in started[0]
    assert again["no-mix_rel/s0/3"]["options"]["dist_cap_weight"] == 0.5
    assert again["recipe/s0/3"] == results["recipe/s0/3"]


def _result(eer: float, rank1: float, minutes: float) -> dict:
    case = {"eer": eer, "rank1": rank1, "mAP": 0.5}
    return {"minutes": minutes, "cases": {c: case for c, _ in ablation.CASES}}


def test_the_table_averages_seeds_and_shows_half_their_range():
    results = {"recipe/s0/500": _result(0.07, 0.68, 10.0), "recipe/s1/500": _result(0.072, 0.66, 11.0),
               "no-mix_rel/s0/500": _result(0.09, 0.6, 9.0), "no-mix_rel/s0/700": _result(0.01, 0.9, 1.0)}
    teacher = {"eer": 0.0603, "rank1": 0.7075, "mAP": 0.6997}
    lines = ablation.ablation_table(results, ["recipe", "no-mix_rel", "with-rkda"], 500, teacher).splitlines()
    assert lines[2] == "| teacher (demo teacher's own embeddings) | 6.03 | 70.75 | 69.97 | | | | |"
    assert lines[3] == ("| the demo recipe: dist_img + dist_cap + mix_rel | 7.10 ±0.10 | 67.00 ±1.00 | 50.00 ±0.00 | "
                        "7.10 ±0.10 / 67.00 ±1.00 | 7.10 ±0.10 / 67.00 ±1.00 | 10.50 ±0.50 | 2 |")
    assert lines[4] == "| without mix_rel | 9.00 | 60.00 | 50.00 | 9.00 / 60.00 | 9.00 / 60.00 | 9.00 | 1 |"
    assert len(lines) == 5  # a row without results at this length is left out


def test_curve_points_are_the_runs_evaluations(tmp_path, trained_setup):
    from tests.conftest import TRAINED_STUDENTS
    result = main_cmd.main(["--embedding_path", str(trained_setup[1]), "--log_dir", str(tmp_path), "--run_name",
                            "c", *TRAINED_STUDENTS[:-6], "--max_iters", "6", "--eval_every", "2", "--save_every", "6",
                            "--log_every", "1"])
    points = ablation.curve_points(result.run_dir)
    assert [p["iteration"] for p in points] == [2, 4, 6]
    assert points[-1]["eer"] == pytest.approx(result.final["student"]["eer"], abs=1e-6)  # float32 events
    assert points[-1]["rank1"] == pytest.approx(result.final["student"]["rank1"], abs=1e-6)
    minutes = [p["minutes"] for p in points]
    assert 0 < minutes[0] <= minutes[1] <= minutes[2]
