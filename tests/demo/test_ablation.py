"""bench/ablation.py's library (person.demo.ablation, person.demo.curve): rows trained once each (a rerun trains
only what is missing or changed), figures that are the checkpoint's own, the table's averaging, and the curve read
back from a run's events."""
import json
import os

import pytest

from person.cli import train as main_cmd
from person.demo import ablation, curve
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
    assert set(results) == {"current/recipe/s0/3", "current/no-mix_rel/s0/3"}
    assert results["current/no-mix_rel/s0/3"]["options"]["mix_rel_weight"] == 0.0
    assert results["current/recipe/s0/3"]["options"]["mix_rel_weight"] == 1.0
    assert results["current/recipe/s0/3"]["threads"] == max(1, (os.cpu_count() or 2) // 2)
    # A row's figures are its last checkpoint's own evaluation (here on this process's thread count).
    run = next((tmp_path / "logs").glob("*/current-recipe-s0"))
    _, scored = evaluate_checkpoint(last_checkpoint(run), num_workers=0)
    for case, _ in ablation.CASES:
        expected = scored.summaries()[case]["eer"]
        assert results["current/recipe/s0/3"]["cases"][case]["eer"] == pytest.approx(expected, abs=2e-3)
    assert json.loads((tmp_path / "ablation.json").read_text()) == results
    capsys.readouterr()

    assert ablation.run_rows(tasks, store, tmp_path, iters=3, jobs=2) == results
    assert ablation.run_rows(tasks, store, tmp_path, iters=3, jobs=1) == results  # another --jobs: kept, not retrained
    assert "started" not in capsys.readouterr().out
    monkeypatch.setitem(ablation.ROWS, "no-mix_rel", ("changed", dict(mix_rel_weight=0.0, dist_cap_weight=0.5)))
    again = ablation.run_rows(tasks, store, tmp_path, iters=3, jobs=2)
    started = [line for line in capsys.readouterr().out.splitlines() if "started" in line]
    assert len(started) == 1 and "current/no-mix_rel/s0/3" in started[0]
    assert again["current/no-mix_rel/s0/3"]["options"]["dist_cap_weight"] == 0.5
    assert again["current/recipe/s0/3"] == results["current/recipe/s0/3"]

    # The other base recipe is its own row (trained for it, kept beside); only the asked rows return.
    capsys.readouterr()
    previous = ablation.run_rows([("recipe", 0)], store, tmp_path, iters=3, jobs=2, base="previous")
    assert list(previous) == ["previous/recipe/s0/3"] and previous["previous/recipe/s0/3"]["options"]["lr"] == 2e-3
    assert previous["previous/recipe/s0/3"]["options"]["text_stride"] == 2
    assert "previous/recipe/s0/3: started" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "ablation.json").read_text())) == set(again) | set(previous)


def test_a_failed_row_is_named_after_the_others_are_kept(tmp_path, trained_setup, monkeypatch):
    monkeypatch.setattr(ablation, "DEMO_TRAINING", TINY)
    monkeypatch.setitem(ablation.ROWS, "broken", ("no such student", dict(backbone="backbone.nowhere.Net")))
    failed = r"1 row\(s\) failed: current/broken/s0/2 \(exit 1, log .*current_broken_s0_2.log\)"
    with pytest.raises(RuntimeError, match=failed):
        ablation.run_rows([("broken", 0), ("recipe", 0)], trained_setup[1], tmp_path, iters=2, jobs=2)
    kept = json.loads((tmp_path / "ablation.json").read_text())
    assert list(kept) == ["current/recipe/s0/2"]
    assert "backbone.nowhere" in (tmp_path / "rows" / "current_broken_s0_2.log").read_text()


def _result(eer: float, rank1: float, minutes: float) -> dict:
    case = {"eer": eer, "rank1": rank1, "mAP": 0.5}
    return {"minutes": minutes, "cases": {c: case for c, _ in ablation.CASES}}


def test_the_table_averages_seeds_and_shows_half_their_range():
    results = {"current/recipe/s0/500": _result(0.07, 0.68, 10.0), "current/recipe/s1/500": _result(0.072, 0.66, 11.0),
               "current/no-mix_rel/s0/500": _result(0.09, 0.6, 9.0)}
    teacher = {"eer": 0.0603, "rank1": 0.7075, "mAP": 0.6997}
    lines = ablation.ablation_table(results, ["recipe", "no-mix_rel", "with-rkda"], teacher).splitlines()
    assert lines[2] == "| teacher (demo teacher's own embeddings) | 6.03 | 70.75 | 69.97 | | | | |"
    assert lines[3] == ("| the base recipe (--base) | 7.10 ±0.10 | 67.00 ±1.00 | "
                        "50.00 ±0.00 | 7.10 ±0.10 / 67.00 ±1.00 | 7.10 ±0.10 / 67.00 ±1.00 | 10.50 ±0.50 | 2 |")
    assert lines[4] == "| without mix_rel | 9.00 | 60.00 | 50.00 | 9.00 / 60.00 | 9.00 / 60.00 | 9.00 | 1 |"
    assert len(lines) == 5  # a row without results is left out


def test_curve_options_take_the_rows_changes_the_length_and_a_name_of_both():
    wide = curve.curve_options("current", ["image-ANet2", "with-id"], 3400, 425)
    assert wide["backbone"] == "backbone.mf3.ANet2" and wide["id_img_cap_weight"] == 0.1
    assert wide["memory_size"] == 1024 and wide["text_stride"] == DEMO_TRAINING["text_stride"]
    assert (wide["max_iters"], wide["eval_every"], wide["save_every"]) == (3400, 425, 425)
    assert wide["run_name"] == "curve-current-image-ANet2-with-id-3400"
    plain = curve.curve_options("previous", [], None, 260)
    assert plain["max_iters"] == DEMO_TRAINING["max_iters"] and plain["lr"] == ablation.PREVIOUS["lr"]
    assert plain["run_name"] == f"curve-previous-{DEMO_TRAINING['max_iters']}"


def test_curve_minutes_count_from_iteration_zero(tmp_path):
    """The first log line came 20 iterations of 8 images at 16 images/s (10 s) after the start."""
    from torch.utils.tensorboard import SummaryWriter
    (tmp_path / "options.json").write_text(json.dumps({"p": 4, "k": 2}))
    writer = SummaryWriter(str(tmp_path / "tb"))
    writer.add_scalar("train/total", 1.0, 20, walltime=1000.0)
    writer.add_scalar("train/images_per_s", 16.0, 20, walltime=1000.0)
    for step, wall, eer in ((40, 1050.0, 0.3), (80, 1120.0, 0.2)):
        writer.add_scalar("train/total", 1.0, step, walltime=wall - 1)
        writer.add_scalar("eval/eer", eer, step, walltime=wall)
        writer.add_scalar("eval/rank1", 1 - eer, step, walltime=wall)
    writer.close()
    points = curve.curve_points(tmp_path)
    assert [p["iteration"] for p in points] == [40, 80]
    assert [p["minutes"] for p in points] == pytest.approx([60 / 60, 130 / 60])
    assert [p["eer"] for p in points] == pytest.approx([0.3, 0.2]) and points[1]["rank1"] == pytest.approx(0.8)


def test_a_run_without_evaluations_has_no_curve_and_says_so(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    (tmp_path / "options.json").write_text(json.dumps({"p": 4, "k": 2}))
    writer = SummaryWriter(str(tmp_path / "tb"))
    writer.add_scalar("train/total", 1.0, 20, walltime=1000.0)
    writer.close()
    assert curve.curve_points(tmp_path) == []
    with pytest.raises(ValueError, match="logged no evaluation"):
        curve.run_curve(tmp_path, tmp_path, "a row")
    assert curve.slug("+ d_pos/s_neg 0.3, 3400 its") == "d_pos_s_neg_0.3_3400_its"


def test_curve_points_are_the_runs_evaluations_once_each_after_a_resume(tmp_path, trained_setup):
    from tests.conftest import TRAINED_STUDENTS
    result = main_cmd.main(["--embedding_path", str(trained_setup[1]), "--log_dir", str(tmp_path), "--run_name",
                            "c", *TRAINED_STUDENTS[:-6], "--max_iters", "6", "--eval_every", "2", "--save_every", "2",
                            "--log_every", "1"])
    points = curve.curve_points(result.run_dir)
    assert [p["iteration"] for p in points] == [2, 4, 6]
    assert points[-1]["eer"] == pytest.approx(result.final["student"]["eer"], abs=1e-6)  # float32 events
    assert points[-1]["rank1"] == pytest.approx(result.final["student"]["rank1"], abs=1e-6)
    minutes = [p["minutes"] for p in points]
    assert 0 < minutes[0] <= minutes[1] <= minutes[2]
    # Resumed from iteration 2 (as after a kill): the steps logged after it are replaced, not repeated.
    main_cmd.main(["--resume", str(result.run_dir / "2.pt"), "--max_iters", "6"])
    assert [p["iteration"] for p in curve.curve_points(result.run_dir)] == [2, 4, 6]
