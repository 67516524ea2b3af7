"""bench/domain.py's library (person.demo.domain, person.demo.rows): each row's training options and where it is
scored, a row scored on other stores than its own at the checkpoint it names, and the table."""
import pytest

from person.demo import domain
from person.demo.recipe import DEMO_TRAINING
from person.demo.rows import CASES, Row, _with_stages, run_rows
from person.eval.evaluate import evaluate_checkpoint
from person.models.checkpoint import load_checkpoint
from person.train.options import TrainOptions
from tests.demo.test_ablation import TINY
from tests.train.distill_fixtures import make_unlabeled


def inputs(tmp_path):
    return domain.Inputs(tmp_path / "demo.h5", tmp_path / "site.h5", tmp_path / "demo.pt",
                         {"crops": tmp_path / "crops.h5", "captions": tmp_path / "captions.h5"},
                         {50: tmp_path / "mix50.h5", 200: tmp_path / "mix200.h5", None: tmp_path / "mixall.h5"})


def test_unlabeled_rows_train_on_the_demo_set_and_are_scored_at_their_last_checkpoint(tmp_path):
    row = domain.domain_row("crops-captions", 1, inputs(tmp_path), tmp_path, 300)
    o = row.options
    assert row.key == "crops-captions/s1/300" and row.checkpoint == "last"
    assert o["embedding_path"] == str(tmp_path / "demo.h5") and o["init"] == [str(tmp_path / "demo.pt")]
    assert o["unlabeled"] == [str(tmp_path / "crops.h5"), str(tmp_path / "captions.h5")]
    assert o["max_iters"] == 300 and o["seed"] == 1 and o["eval_every"] == 0 and "id_img_weight" not in o
    assert row.score == {"site": str(tmp_path / "site.h5"), "demo": str(tmp_path / "demo.h5")}
    assert {k: o[k] for k in ("lr", "p", "k", "mix_rel_weight")} == {k: DEMO_TRAINING[k] for k in
                                                                     ("lr", "p", "k", "mix_rel_weight")}
    TrainOptions(**o).validate()
    assert domain.domain_row("crops", 0, inputs(tmp_path), tmp_path, 300).options["unlabeled"] == [
        str(tmp_path / "crops.h5")]
    control = domain.domain_row("demo-longer", 0, inputs(tmp_path), tmp_path, 300).options
    assert control["unlabeled"] is None and control["embedding_path"] == str(tmp_path / "demo.h5")


def test_the_staged_row_trains_each_student_alone_then_both_from_their_checkpoints(tmp_path):
    row = domain.domain_row("labels-all-sdm-staged", 0, inputs(tmp_path), tmp_path, 600)
    image, text = row.stages
    assert (image["train"], text["train"], row.options.get("train", "both")) == ("image", "text", "both")
    assert image["init"] == text["init"] == [str(tmp_path / "demo.pt")]
    assert row.options["init"] == ["{stage0}", "{stage1}"] and row.checkpoint == "best"
    assert image["max_iters"] + text["max_iters"] + row.options["max_iters"] == 600
    assert len({image["run_name"], text["run_name"], row.options["run_name"]}) == 3
    assert row.settings()["stages"] == [image, text]
    assert "stages" not in domain.domain_row("labels-all", 0, inputs(tmp_path), tmp_path, 600).settings()
    assert _with_stages(row.options, ["a.pt", "b.pt"])["init"] == ["a.pt", "b.pt"]


def test_label_rows_train_on_their_mix_with_the_label_terms_and_choose_on_validation(tmp_path):
    for name, store in (("labels-50", "mix50.h5"), ("labels-all", "mixall.h5")):
        row = domain.domain_row(name, 0, inputs(tmp_path), tmp_path, 600)
        assert row.options["embedding_path"] == str(tmp_path / store) and row.checkpoint == "best"
        assert row.options["eval_every"] == 150 and "unlabeled" not in row.options
        for key, value in domain.LABEL_TERMS.items():
            assert row.options[key] == value
        TrainOptions(**row.options).validate()


def test_a_row_is_scored_on_the_stores_it_names_at_its_checkpoint(tmp_path, trained_setup, monkeypatch):
    store = trained_setup[1]
    crops, _ = make_unlabeled(tmp_path / "u", trained_setup[0])
    options = TINY | dict(embedding_path=str(store), unlabeled=[str(crops)], max_iters=3, eval_every=0,
                          save_every=3, num_workers=0, warmup_iters=1, log_dir=str(tmp_path / "logs"),
                          run_name="r", overwrite=True)
    row = Row("r/s0/3", options, {"again": str(store)}, checkpoint="best")
    result = run_rows([row], tmp_path / "results.json", jobs=1)["r/s0/3"]
    assert result["checkpoint_path"].endswith("best.pt") and result["best"]["iteration"] == 3
    assert load_checkpoint(result["checkpoint_path"])["iteration"] == 3
    for case, _ in CASES:  # best.pt is the last step's students here: scored in the child as the run scored them
        for metric in ("eer", "rank1", "mAP"):
            assert result["scores"]["again"][case][metric] == pytest.approx(result["cases"][case][metric], abs=1e-9)
    _, scored = evaluate_checkpoint(result["checkpoint_path"], embedding_path=str(store), num_workers=0)
    for case, _ in CASES:  # and in this process, whose thread count may round sums otherwise
        assert result["scores"]["again"][case]["eer"] == pytest.approx(scored.summaries()[case]["eer"], abs=2e-3)


def _run(eer, rank1, minutes):
    case = {"eer": eer, "rank1": rank1, "mAP": 0.3}
    return {"minutes": minutes, "threads": 2, "scores": {"site": {c: case for c, _ in CASES},
                                           "demo": {c: {"eer": 0.07, "rank1": 0.7, "mAP": 0.7} for c, _ in CASES}}}


def test_the_table_gives_ratios_to_the_teacher_and_the_demo_sets_figures():
    teacher = {"site": {"eer": 0.25, "rank1": 0.25, "mAP": 0.2}, "demo": {"eer": 0.06, "rank1": 0.7, "mAP": 0.7}}
    students = {label: {c: {"eer": 0.28, "rank1": 0.2, "mAP": 0.2} for c, _ in CASES} for label in ("site", "demo")}
    results = {"crops-captions/s0/600": _run(0.24, 0.30, 9.0), "crops-captions/s1/600": _run(0.26, 0.28, 11.0),
               "crops-captions/s0/2000": _run(0.2, 0.35, 30.0)}
    lines = domain.domain_table(results, ["crops", "crops-captions"], teacher, students).splitlines()
    assert lines[2].startswith("| the teacher | — | | 25.00 | 25.00 | 20.00 | 1.00x / 1.00x |")
    assert lines[3].startswith("| demo-set students | the demo set only (the demo's run) |  | 28.00 | 20.00 | 20.00 | "
                               "1.12x / 0.80x |")
    assert lines[4] == ("| + crops and captions | + the site's unlabeled captions | 600 | 25.00 ±1.00 | 29.00 ±1.00 | "
                        "30.00 ±0.00 | 1.00x / 1.16x | 25.00 ±1.00 / 29.00 ±1.00 | 25.00 ±1.00 / 29.00 ±1.00 | 7.00 "
                        "±0.00 / 70.00 ±0.00 | 10.00 ±1.00 (2 thr.) | 2 |")
    assert lines[5].startswith("| + crops and captions | + the site's unlabeled captions | 2000 | 20.00 | 35.00 |")
    assert len(lines) == 6  # no crops row: none was run
