"""Dataset readers: every format, normalisation, the split rule, each bad-input error, paths that name one file
or leave the image root, and the image caps the dataset options carry."""
import argparse
import json
import os
import subprocess
import sys
import types

import ijson
import numpy as np
import pytest

from person.data import formats as formats_module
from person.data.formats import find_dataset_json, image_path_key, normalise_caption
from person.data.limits import ImageLimits
from person.data.records import SPLITS, DatasetOptions, RecordError, default_eval_ids, load_records
from person.errors import PersonError
from person.options import add_options, from_namespace


def write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def synth(n_ids=10, per_id=2):
    return [{"id": 100 + i, "file_path": f"Part1/{100 + i}/{j}.jpg", "captions": [f"person {i} view {j}", "x"],
             "prompt_caption": [f"prompt {i}"], "attributes": ["man,black hair"]}
            for i in range(n_ids) for j in range(per_id)]


def test_synthpedes_reads_and_remaps_ids(tmp_path):
    rs = load_records(write(tmp_path / "synthpedes-dataset.json", synth()))
    assert rs.format == "synthpedes" and len(rs) == 20 and rs.num_ids == 10
    assert rs.pids.tolist() == [i for i in range(10) for _ in range(2)]
    assert rs.orig_ids[:3].tolist() == [100, 100, 101]
    assert rs.paths[2] == "Part1/101/0.jpg"
    assert rs.captions[2] == ("person 1 view 0", "x") and rs.prompt_captions[2] == ("prompt 1",)
    assert rs.image_root == tmp_path  # images next to the JSON (no imgs/ folder)


def test_cuhk_pedes_uses_file_split_and_one_based_ids(tmp_path):
    recs = [{"split": s, "captions": ["A woman ..."], "file_path": f"CUHK01/{i:07d}.png",
             "processed_tokens": [["a", "woman"]], "id": i + 1}
            for i, s in enumerate(["train", "train", "val", "test"])]
    (tmp_path / "imgs").mkdir()
    rs = load_records(write(tmp_path / "reid_raw.json", recs))
    assert rs.format == "cuhk-pedes" and rs.pids.tolist() == [0, 1, 2, 3] and rs.orig_ids.tolist() == [1, 2, 3, 4]
    assert [SPLITS[s] for s in rs.splits] == ["train", "train", "val", "test"]
    assert rs.split_indices("eval").tolist() == [3] and rs.split_rule == "file"
    assert rs.image_root == tmp_path / "imgs"


def test_icfg_detected_by_file_name_and_rstpreid_by_img_path(tmp_path):
    rec = {"split": "test", "captions": ["c"], "file_path": "test/0001/0001_a.jpg", "processed_tokens": [], "id": 1}
    assert load_records(write(tmp_path / "i" / "ICFG_PEDES.json", [rec])).format == "icfg-pedes"
    rst = [{"id": 0, "img_path": "3903_c14_0007.jpg", "captions": ["a", "b"], "split": "train"}]
    rs = load_records(write(tmp_path / "r" / "data_captions.json", rst))
    assert rs.format == "rstpreid" and rs.paths == ["3903_c14_0007.jpg"]


def test_folder_finds_either_spelling(tmp_path):
    write(tmp_path / "synthpedes_dataset.json", synth(2, 1))
    assert find_dataset_json(tmp_path) == tmp_path / "synthpedes_dataset.json"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no dataset JSON in"):
        find_dataset_json(tmp_path / "empty")


def test_image_root_prefers_folder_that_holds_the_images(tmp_path):
    recs = synth(2, 1)
    (tmp_path / "imgs" / "Part1" / "100").mkdir(parents=True)
    (tmp_path / "imgs" / "Part1" / "100" / "0.jpg").write_bytes(b"")
    assert load_records(write(tmp_path / "synthpedes-dataset.json", recs)).image_root == tmp_path / "imgs"
    assert load_records(tmp_path / "synthpedes-dataset.json", image_root="/data/x").image_root.as_posix() == "/data/x"


def test_whitespace_is_normalised_text_kept(tmp_path):
    recs = synth(2, 1)
    recs[0]["captions"] = ["  A man\r\nin  red.  ", "一个 穿红衣服的人\u3000"]
    rs = load_records(write(tmp_path / "synthpedes-dataset.json", recs))
    assert rs.captions[0] == ("A man in red.", "一个 穿红衣服的人")
    assert normalise_caption("\tx \n y ") == "x y"


def test_paths_with_spaces_and_non_ascii(tmp_path):
    recs = synth(2, 1)
    recs[0]["file_path"] = "Part 1/行人 ä.jpg"
    rs = load_records(write(tmp_path / "synthpedes-dataset.json", recs))
    assert rs.image_path(0) == tmp_path / "Part 1" / "行人 ä.jpg"


def test_identity_holdout_is_deterministic_and_disjoint(tmp_path):
    path = write(tmp_path / "synthpedes-dataset.json", synth(50, 3))
    a = load_records(path, eval_ids=7, seed=3)
    b = load_records(path, eval_ids=7, seed=3)
    c = load_records(path, eval_ids=7, seed=4)
    assert np.array_equal(a.splits, b.splits) and not np.array_equal(a.splits, c.splits)
    train_ids = set(a.pids[a.split_indices("train")].tolist())
    eval_ids = set(a.pids[a.split_indices("eval")].tolist())
    assert len(eval_ids) == 7 and not train_ids & eval_ids and len(train_ids | eval_ids) == 50
    assert a.split_rule == "ids-7-seed-3"
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_default_eval_ids_rule():
    assert default_eval_ids(1000, 4000) == 100            # small set: 10% of identities
    assert default_eval_ids(312_000, 4_790_000) == 326    # SYNTH-PEDES scale: ~5000 images
    assert default_eval_ids(3, 3) == 1


def test_first_records_holdout_is_explicit(tmp_path):
    rs = load_records(write(tmp_path / "synthpedes-dataset.json", synth(10, 2)), eval_first_records=5)
    assert rs.split_indices("eval").tolist() == [0, 1, 2, 3, 4]


def test_holdout_options_refused_when_file_has_split(tmp_path):
    rec = [{"id": 0, "img_path": "a.jpg", "captions": ["a"], "split": "train"}]
    with pytest.raises(ValueError, match="has its own split field"):
        load_records(write(tmp_path / "data_captions.json", rec), eval_ids=1)


def test_eval_ids_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="must be between 1 and 9"):
        load_records(write(tmp_path / "synthpedes-dataset.json", synth(10, 1)), eval_ids=10)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.__setitem__(1, "not a record"), r"record 1: is a str, not an object"),
    (lambda r: r[1].pop("captions"), r"record 1: missing key 'captions'"),
    (lambda r: r[1].pop("id"), r"record 1: missing key 'id'"),
    (lambda r: r[1].__setitem__("captions", []), r"record 1: 'captions' is empty"),
    (lambda r: r[1].__setitem__("captions", "one caption"), r"record 1: 'captions' must be a list of strings"),
    (lambda r: r[1].__setitem__("captions", ["ok", 7]), r"record 1: 'captions'\[1\] is a int, not a string"),
    (lambda r: r[1].__setitem__("captions", ["ok", "   "]), r"record 1: 'captions'\[1\] is empty"),
    (lambda r: r[1].__setitem__("id", "7"), r"record 1: 'id' must be an integer, got '7'"),
    (lambda r: r[1].__setitem__("id", 7.5), r"record 1: 'id' must be an integer"),
    (lambda r: r[1].__setitem__("id", True), r"record 1: 'id' must be an integer"),
    (lambda r: r[1].__setitem__("file_path", r[0]["file_path"]), r"record 1: duplicate 'file_path'.*also record 0"),
    (lambda r: r[1].__setitem__("file_path", ""), r"record 1: 'file_path' must be a non-empty string"),
    (lambda r: r[1].__setitem__("prompt_caption", [None]), r"record 1: 'prompt_caption'\[0\] is a NoneType"),
])
def test_bad_records_name_file_record_and_field(tmp_path, mutate, message):
    recs = synth(3, 1)
    mutate(recs)
    path = write(tmp_path / "synthpedes-dataset.json", recs)
    with pytest.raises(RecordError, match=message) as e:
        load_records(path)
    assert str(path) in str(e.value)


def test_bad_split_value(tmp_path):
    rec = [{"id": 0, "img_path": "a.jpg", "captions": ["a"], "split": "testing"}]
    with pytest.raises(RecordError, match=r"record 0: 'split' is 'testing'"):
        load_records(write(tmp_path / "data_captions.json", rec))


def test_missing_split_in_split_format(tmp_path):
    recs = [{"id": 0, "img_path": "a.jpg", "captions": ["a"], "split": "train"},
            {"id": 1, "img_path": "b.jpg", "captions": ["b"]}]
    with pytest.raises(RecordError, match=r"record 1: missing key 'split'"):
        load_records(write(tmp_path / "data_captions.json", recs))


@pytest.mark.parametrize("text, message", [
    ('{"id": 1}', "top level must be a JSON list"),
    ("[]", "list of records is empty"),
    ('[{"id": 1, "file_path": "a", "captions": ["x"]}, {"id": ', "not valid JSON"),
    ('[{"id": 1, "path": "a", "captions": ["x"]}]', "neither 'file_path' nor 'img_path'"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "data.json"
    path.write_text(text)
    with pytest.raises(RecordError, match=message):
        load_records(path)


def test_missing_dataset_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_records(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="unknown dataset format 'pedes'"):
        load_records(write(tmp_path / "synthpedes-dataset.json", synth(2, 1)), format="pedes")


def test_check_image_root_names_the_fix(tmp_path):
    rs = load_records(write(tmp_path / "synthpedes-dataset.json", synth(2, 1)))
    with pytest.raises(FileNotFoundError, match="pass --image-root"):
        rs.check_image_root()


@pytest.mark.parametrize("first, second", [
    ("a/1.jpg", "./a/1.jpg"), ("./a/1.jpg", "a/1.jpg"), ("a/1.jpg", "a//1.jpg"), ("a/1.jpg", "a/./1.jpg"),
    ("a/1.jpg", "a/b/../1.jpg"), ("a/1.jpg", "a\\1.jpg"),
])
def test_duplicates_are_found_by_the_normalised_path(tmp_path, first, second):
    recs = synth(3, 1)
    recs[0]["file_path"], recs[2]["file_path"] = first, second
    path = write(tmp_path / "synthpedes-dataset.json", recs)
    with pytest.raises(RecordError) as e:
        load_records(path)
    assert str(e.value) == (f"{path} record 2: duplicate 'file_path' {second!r} (also record 0, written {first!r}; "
                            f"both name 'a/1.jpg'); each image must appear once")


@pytest.mark.parametrize("rel, reason", [
    ("/etc/passwd", "is an absolute path"), ("C:\\x.jpg", "is an absolute path"), ("c:x.jpg", "is an absolute path"),
    ("\\\\server\\x", "is an absolute path"), ("//server/x", "is an absolute path"),
    ("../../x.jpg", "leaves the image root (it normalises to '../../x.jpg')"),
    ("a/../../x.jpg", "leaves the image root (it normalises to '../x.jpg')"),
    ("..\\x.jpg", "leaves the image root (it normalises to '../x.jpg')"), ("..", "leaves the image root"),
    ("a/..", "names the image root itself"), ("./", "names the image root itself"),
    ("a/\x00.jpg", "holds a NUL character"),
])
def test_paths_that_leave_the_image_root_are_refused(tmp_path, rel, reason):
    recs = synth(3, 1)
    recs[1]["file_path"] = rel
    path = write(tmp_path / "synthpedes-dataset.json", recs)
    with pytest.raises(RecordError) as e:
        load_records(path)
    assert str(e.value).startswith(f"{path} record 1: 'file_path' {rel!r} {reason}")
    rst = [{"id": 0, "img_path": rel, "captions": ["a"], "split": "train"}]
    with pytest.raises(RecordError, match=r"record 0: 'img_path' "):  # the field as the format names it
        load_records(write(tmp_path / "r" / "data_captions.json", rst))


def test_paths_are_kept_as_written_and_the_fingerprint_as_before(tmp_path):
    recs = [{"id": 100 + i, "file_path": f"Part1/{100 + i}/{j}.jpg", "captions": [f"person {i} view {j}", "x"],
             "prompt_caption": [f"prompt {i}"], "attributes": ["man,black hair"]} for i in range(3) for j in range(2)]
    recs[0]["captions"] = ["一个 穿红衣服的人", "  A man\r\nin  red.  "]
    recs[1]["file_path"] = "Part 1/./行人 ä.jpg"
    rs = load_records(write(tmp_path / "synthpedes-dataset.json", recs), eval_ids=1)
    assert rs.paths[1] == "Part 1/./行人 ä.jpg" and image_path_key(rs.paths[1]) == "Part 1/行人 ä.jpg"
    # The value the code before normalised paths gave: stores extracted then still match.
    assert rs.fingerprint() == "c2b530060481d7e153cee3595695cccb3a3c24f643c39acf5054f9501cca29f4"


def test_image_path_key_leaves_normal_paths_alone():
    for rel in ("a/1.jpg", "Part1/..x/1.jpg", "a/.hidden.jpg", "a b/c:d.jpg", "...jpg"):
        assert image_path_key(rel) is rel


def test_record_errors_are_person_errors(tmp_path):
    assert issubclass(RecordError, PersonError) and issubclass(RecordError, ValueError)


def test_ids_must_fit_in_64_bits(tmp_path, monkeypatch):
    text = '[{"id": 9223372036854775807, "file_path": "a.jpg", "captions": ["x"]}, ' \
           '{"id": -9223372036854775807, "file_path": "b.jpg", "captions": ["y"]}]'
    (tmp_path / "synthpedes-dataset.json").write_text(text)
    rs = load_records(tmp_path / "synthpedes-dataset.json")
    assert rs.orig_ids.tolist() == [2 ** 63 - 1, -(2 ** 63 - 1)]
    (tmp_path / "synthpedes-dataset.json").write_text(text.replace("807", "808", 1))
    with pytest.raises(RecordError, match="integer overflow"):  # the C parser's own words
        load_records(tmp_path / "synthpedes-dataset.json")
    # ijson's pure-Python backend (used where the C one is missing) reads any int: the record check refuses it.
    monkeypatch.setattr(formats_module, "ijson", types.SimpleNamespace(items=ijson.get_backend("python").items,
                                                                       JSONError=ijson.JSONError))
    with pytest.raises(RecordError, match=r"record 0: 'id' 9223372036854775808 does not fit in 64 bits"):
        load_records(tmp_path / "synthpedes-dataset.json")


def test_one_identity_cannot_be_held_out(tmp_path):
    path = write(tmp_path / "synthpedes-dataset.json", [synth(1, 2)[0], synth(1, 2)[1]])
    with pytest.raises(RecordError, match=r"every record has identity 100; holding identities out .* at least 2"):
        load_records(path)
    assert len(load_records(path, eval_first_records=1)) == 2


def test_dataset_options_carry_the_image_caps():
    opts = DatasetOptions()
    assert (opts.max_image_bytes, opts.max_image_pixels) == (64 * 1024 * 1024, 50_000_000)
    assert opts.image_limits() == ImageLimits(64 * 1024 * 1024, 50_000_000)
    parser = argparse.ArgumentParser()
    add_options(parser, DatasetOptions)
    ns = parser.parse_args(["--max_image_pixels", "1000", "--max-image-bytes", "2048"])
    assert from_namespace(DatasetOptions, ns).image_limits() == ImageLimits(max_bytes=2048, max_pixels=1000)
    with pytest.raises(ValueError, match="--max_image_pixels 0"):
        DatasetOptions(max_image_pixels=0).image_limits()


def test_records_import_neither_torch_nor_opencv():
    code = "import sys, person.data.records; print(sorted({'torch', 'cv2'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_dataset_that_is_not_a_regular_file_is_refused(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    os.mkfifo(tmp_path / "data.json")
    with pytest.raises(RecordError, match="is not a regular file"):
        load_records(tmp_path / "data.json")
