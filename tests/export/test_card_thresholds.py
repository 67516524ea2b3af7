"""The card's `operating_points`: written at export for every variant, measured with that variant's graphs through
person.runtime, per direction and encoder pair, refused (with the count) where the held-out split has too few
impostor pairs; the card's other keys as they were; and person-calibrate's separate file for a user's own store."""
import json

import numpy as np
import pytest

from person.cli import calibrate as calibrate_cmd
from person.data.records import DatasetOptions, load_records
from person.eval import operating_points as op
from person.eval.evaluate import eval_split
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
from person.files import sha256_file
from person.runtime import ExportedModels
from person.teacher.space import check_same_space
from person.teacher.store import open_store
from tests.train.distill_fixtures import make_setup

CARD_KEYS = {"format", "version", "created", "target", "opset", "static_shapes", "feature_dim", "normalized",
             "output", "space", "image", "text", "checkpoint", "parity", "tools", "files", "operating_points"}
TEXT_PAIRS = {"student", "student_text_teacher_image", "teacher_text_student_image"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A bigger set of the tiny run's made-up teacher: 25 held-out identities, 4,800 impostor caption-image pairs."""
    return make_setup(tmp_path_factory.mktemp("site"), ids=250, seed=1)


@pytest.fixture(scope="module")
def measured(trained_checkpoint, site, tmp_path_factory):
    """The tiny students exported with int8 variants, their thresholds measured on the bigger set's held-out split."""
    out = tmp_path_factory.mktemp("measured") / "export"
    export_checkpoint(trained_checkpoint, out, ExportOptions(int8=True, calibration=16), DatasetOptions(data=str(
        site[0])), str(site[1]))
    return out


def test_the_card_adds_operating_points_and_keeps_every_other_key(plain_export):
    card = json.loads((plain_export / "model.json").read_text())
    assert set(card) == CARD_KEYS
    points = card["operating_points"]
    assert points["split"] == "eval" and points["fars"] == ["1e-2", "1e-3", "1e-4"]
    check_same_space(points["space"], card["space"], "the thresholds", "the card")
    assert set(points["text_to_image"]) == TEXT_PAIRS and set(points["image_to_image"]) == {"student"}
    entry = points["text_to_image"]["student"]["fp32"]
    # The tiny held-out split: 2 identities x 2 images, 8 captions -> 16 genuine and 16 impostor pairs; too few.
    assert (entry["genuine"], entry["impostor"], entry["images"]) == (16, 16, 4)
    assert all(p == {"refused": op.refusal(far, 16)} for far, p in entry["at_far"].items())
    assert points["image_to_image"]["student"]["fp32"]["impostor"] == 4


def test_each_variant_is_measured_with_its_own_graphs(measured, site):
    points = json.loads((measured / "model.json").read_text())["operating_points"]
    assert set(points["text_to_image"]["student"]) == {"fp32", "int8"}
    with open_store(site[1]) as store:
        split = eval_split(store, "eval")
        teacher_images = store.images(split.rows)
    records = load_records(site[0])
    for variant in ("fp32", "int8"):
        models = ExportedModels(measured, variant)
        images = models.embed_images([records.image_path(int(r)) for r in split.rows]).astype(np.float16)
        texts = models.embed_texts(split.caption_texts)
        want = op.text_to_image(images, split.pids, texts, split.caption_pids)
        assert points["text_to_image"]["student"][variant] == want
        assert points["text_to_image"]["student_text_teacher_image"][variant] == op.text_to_image(
            teacher_images, split.pids, texts, split.caption_pids)
        assert points["image_to_image"]["student"][variant] == op.image_to_image(images, split.pids)
    fp32, int8 = (points["text_to_image"]["student"][v]["at_far"] for v in ("fp32", "int8"))
    assert fp32["1e-2"]["threshold"] != int8["1e-2"]["threshold"]
    assert fp32["1e-2"]["false_accepts"] <= fp32["1e-2"]["allowed"] == 48  # floor(1e-2 x 4,800)
    assert "only 4,800 impostor pairs" in fp32["1e-3"]["refused"]


def test_calibrate_records_a_site_s_thresholds_in_a_file_of_its_own(measured, site, tmp_path, capsys):
    card_before = (measured / "model.json").read_bytes()
    out = tmp_path / "calibration.json"
    document = calibrate_cmd.main(["--embedding_path", str(site[1]), "--model", str(measured), "--out", str(out)])
    assert (measured / "model.json").read_bytes() == card_before  # galleries pin the card's sha256
    data = json.loads(out.read_text())
    assert data["format"] == "person-calibration" and data["version"] == 1
    assert data["export"] == {"path": str(measured.resolve()), "card_sha256": sha256_file(measured / "model.json")}
    assert data["operating_points"] == document
    card_points = json.loads(card_before)["operating_points"]
    assert document["text_to_image"]["student"] == card_points["text_to_image"]["student"]  # the same split here
    assert set(document["text_to_image"]["teacher"]) == {"teacher"}
    assert "text_to_image student int8" in capsys.readouterr().out
    teacher_only = calibrate_cmd.main(["--embedding_path", str(site[1]), "--out", str(tmp_path / "t.json")])
    assert set(teacher_only["text_to_image"]) == {"teacher"}
    assert op.read_calibration(tmp_path / "t.json")[1] is None
