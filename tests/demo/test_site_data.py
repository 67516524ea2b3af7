"""The second-site benchmark's inputs (person.demo.site_data), on a small draw of the second site (12 identities x 4
images, 2 held out) and of the demo set (10 x 2, 1 held out): the crops and captions files hold exactly the site's
training images and captions, the labelled mix has the right splits and ids and the site's own eval images, and
the unlabeled stores open with their rows."""
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from person.data.records import load_records
from person.data.unlabeled import captions_file, detections_file
from person.demo.prepare import unlabeled_store
from person.demo.site_data import labelled_mix, second_site, site_captions, site_crops
from person.demo.synthetic import write_dataset
from person.demo.synthetic.writer import JSON_NAME
from person.demo.teacher import DEMO_TEACHER
from person.teacher.hf import load_teacher
from person.teacher.store import open_unlabeled

VAL_IDS = 3


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    return {"site": write_dataset(root / "site", n_ids=12, images_per_id=4, seed=7, workers=1, site="second"),
            "demo": write_dataset(root / "demo", 10, 2, seed=0, workers=1)}


@pytest.fixture(scope="module")
def site(sets):
    return load_records(sets["site"])


@pytest.fixture(scope="module")
def mixes(sets, tmp_path_factory) -> dict[int | None, Path]:
    root = tmp_path_factory.mktemp("mixes")
    return {n: labelled_mix(sets["demo"], sets["site"], root / str(n), n, val_ids=VAL_IDS) for n in (2, None)}


def test_the_draws_split_as_the_tests_assume(site, sets):
    assert site.split_counts()["train"]["ids"] == 10 and site.split_counts()["test"]["ids"] == 2
    assert load_records(sets["demo"]).split_counts()["train"]["ids"] == 9


def test_second_site_is_skipped_when_its_json_is_there(tmp_path, capsys):
    json_path = tmp_path / JSON_NAME["synthpedes"]
    json_path.write_text("[]")
    assert second_site(tmp_path) == json_path
    assert capsys.readouterr().out == f"[data] {json_path} is there; skipped\n"
    assert [p.name for p in tmp_path.iterdir()] == [json_path.name]  # nothing drawn


@pytest.mark.parametrize("tracks", [False, True])
def test_crops_are_the_training_images_whole(sets, site, tmp_path, tracks):
    out = site_crops(sets["site"], tmp_path / "crops.jsonl", tracks)
    train = site.split_indices("train")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["image"] for line in lines] == [site.paths[i] for i in train]
    source = detections_file(out, site.image_root)
    assert not source.skips.counts and len(source) == len(train) == 40
    for path, box in zip(source.paths, source.boxes):
        with Image.open(site.image_root / path) as img:
            assert box.tolist() == [0, 0, *img.size]
    if not tracks:
        assert all("track" not in line for line in lines) and source.tracks == [""] * 40
        return
    images_of, ids_of = defaultdict(int), defaultdict(set)
    for line, i in zip(lines, train):
        images_of[line["track"]] += 1
        ids_of[line["track"]].add(int(site.orig_ids[i]))
    assert all(len(ids) == 1 for ids in ids_of.values())  # no track spans two identities
    assert len(ids_of) == 20 and set(images_of.values()) == {2}  # two tracks of two images per identity


def test_captions_are_the_training_captions(sets, site, tmp_path):
    out = site_captions(sets["site"], tmp_path / "captions.txt")
    expected = [c for i in site.split_indices("train") for c in site.captions[i]]
    assert len(set(expected)) == len(expected) == 80
    assert out.read_text(encoding="utf-8").splitlines() == expected
    source = captions_file(out)
    assert source.texts == expected and not source.skips.counts


def test_captions_collapse_newlines_and_write_a_repeat_once(sets, site, tmp_path):
    records = json.loads(sets["site"].read_text(encoding="utf-8"))
    first, second = site.split_indices("train")[:2]
    records[first]["captions"][0] = "a red\ncoat\r\n  here"
    records[second]["captions"][0] = records[first]["captions"][1]
    edited = tmp_path / "set" / sets["site"].name
    edited.parent.mkdir()
    edited.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    lines = site_captions(edited, tmp_path / "captions.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 79 and lines[0] == "a red coat here"
    assert lines.count(" ".join(records[first]["captions"][1].split())) == 1


@pytest.mark.parametrize("site_ids, train_ids", [(2, 2), (None, 10 - VAL_IDS)])
def test_the_mix_splits(sets, site, mixes, site_ids, train_ids):
    mix = load_records(mixes[site_ids])
    assert mix.format == "cuhk-pedes" and mix.image_root == mixes[site_ids].parent / "imgs"
    demo = load_records(sets["demo"])
    counts = mix.split_counts()
    assert (counts["train"]["ids"], counts["val"]["ids"], counts["test"]["ids"]) == (9 + train_ids, VAL_IDS, 2)
    assert (counts["train"]["images"], counts["val"]["images"]) == (18 + 4 * train_ids, 4 * VAL_IDS)
    assert [p for p in mix.paths if p.startswith("demo/")] == ["demo/" + demo.paths[i]
                                                               for i in demo.split_indices("train")]
    test = mix.split_indices("test")
    assert [mix.paths[i] for i in test] == ["site/" + site.paths[i] for i in site.split_indices("eval")]
    assert all(mix.image_path(i).read_bytes() == site.image_path(j).read_bytes()
               for i, j in zip(test, site.split_indices("eval")))
    assert all(mix.image_path(i).is_file() for i in range(len(mix)))
    demo_ids = {int(mix.orig_ids[i]) for i, p in enumerate(mix.paths) if p.startswith("demo/")}
    site_ids_ = {int(mix.orig_ids[i]) for i, p in enumerate(mix.paths) if p.startswith("site/")}
    assert not demo_ids & site_ids_ and mix.num_ids == 9 + train_ids + VAL_IDS + 2


def test_the_mix_keeps_the_val_ids_and_the_captions(sets, mixes):
    val = [{m.paths[i] for i in m.split_indices("val")} for m in map(load_records, mixes.values())]
    assert len(val[0]) == 4 * VAL_IDS and val[0] == val[1]
    written = {r["file_path"]: r for r in json.loads(mixes[2].read_text(encoding="utf-8"))}
    for r in json.loads(sets["site"].read_text(encoding="utf-8")):
        if "site/" + r["file_path"] in written:
            mixed = written["site/" + r["file_path"]]
            assert (mixed["captions"], mixed["prompt_caption"]) == (r["captions"], r["prompt_caption"])


def test_the_mix_is_skipped_or_refused_when_there(sets, mixes, capsys):
    out_dir = mixes[2].parent
    assert labelled_mix(sets["demo"], sets["site"], out_dir, 2, val_ids=VAL_IDS) == mixes[2]
    assert capsys.readouterr().out == f"[data] {mixes[2]} is there; skipped\n"
    with pytest.raises(ValueError, match="made with other arguments"):
        labelled_mix(sets["demo"], sets["site"], out_dir, 3, val_ids=VAL_IDS)
    with pytest.raises(ValueError, match="10 training identities"):
        labelled_mix(sets["demo"], sets["site"], out_dir.parent / "big", 8, val_ids=VAL_IDS)


def test_the_mix_works_from_a_moved_workdir(sets, tmp_path):
    workdir = tmp_path / "workdir"
    shutil.copytree(sets["site"].parent.parent, workdir)
    mix_json = labelled_mix(workdir / "demo" / sets["demo"].name, workdir / "site" / sets["site"].name,
                            workdir / "mix", 2, val_ids=VAL_IDS)
    moved = workdir.rename(tmp_path / "moved")  # the links are relative: absolute ones would point at workdir
    mix = load_records(moved / "mix" / mix_json.name)
    assert len(mix) == 18 + 4 * (2 + VAL_IDS + 2)
    assert all(mix.image_path(i).resolve().is_relative_to(moved.resolve()) and mix.image_path(i).is_file()
               for i in range(len(mix)))


def test_unlabeled_stores_hold_the_sources(sets, site, tmp_path, capsys):
    crops = detections_file(site_crops(sets["site"], tmp_path / "crops.jsonl", tracks=True), site.image_root)
    captions = captions_file(site_captions(sets["site"], tmp_path / "captions.txt"))
    images = unlabeled_store(tmp_path / "embeddings", crops, DEMO_TEACHER)
    texts = unlabeled_store(tmp_path / "embeddings", captions, DEMO_TEACHER)
    assert images.name.startswith("detections-") and texts.name.startswith("captions-")
    teacher = load_teacher(DEMO_TEACHER)
    with open_unlabeled(images, teacher) as store:
        assert (store.num_images, store.num_captions) == (40, 0)
        assert store.image_tracks == [json.loads(t) for t in crops.tracks] and len(store.readable_rows()) == 40
    with open_unlabeled(texts, teacher) as store:
        assert (store.num_images, store.num_captions) == (0, 80)
        assert store.all_caption_texts() == captions.texts
    capsys.readouterr()
    assert unlabeled_store(tmp_path / "embeddings", crops, DEMO_TEACHER) == images
    assert capsys.readouterr().out == f"[extract] {images} is there; skipped\n"
