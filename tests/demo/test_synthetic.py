"""The synthetic demo set: formats and layout, determinism, identities, and captions that tell the truth."""
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from person.demo.synthetic import ATTRIBUTE_KEYS, GROUPS, make_caption, render_person, sample_identities, write_dataset
from person.demo.synthetic.attributes import vocabulary
from person.demo.synthetic.captions import (attribute_string, is_chinese, keyed_caption, keyed_image_captions,
                                            make_image_captions, mentionable, prompt_caption, tokenize)
from person.demo.synthetic.words import GROUP_WORDS
from person.demo.synthetic.writer import _roughen, assign_splits
from person.cli import make_demo_data

PART_GROUPS = ("hair", "hat", "upper", "lower", "shoes", "bag")
GROUPS_OF = {k: g for g, keys in GROUPS.items() for k in keys}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mentions(text: str, group: str) -> list[str]:
    """Nouns of `group` found in a caption (en: whole words, zh: substrings)."""
    if is_chinese(text):
        if group == "lower":
            text = text.replace("连衣裙", "")  # a dress, not a skirt
        return [w for w in GROUP_WORDS["zh"][group] if w in text]
    low = text.lower()
    return [w for w in GROUP_WORDS["en"][group] if re.search(rf"\b{re.escape(w.lower())}s?\b", low)]


def _hidden_groups(attrs: dict, visible: dict) -> list[str]:
    """Groups whose every present attribute is hidden (a group with some visible key may be named)."""
    out = []
    for g in PART_GROUPS:
        present = [k for k in GROUPS[g] if attrs[k] is not None]
        if present and not any(visible[k] for k in present):
            out.append(g)
    return out


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {fmt: write_dataset(root / fmt, 6, 2, seed=3, fmt=fmt, chinese=0.3, workers=1)
            for fmt in ("synthpedes", "cuhk-pedes", "icfg-pedes", "rstpreid")}


def _check_images(root: Path, paths: list[str]) -> None:
    assert len(set(paths)) == len(paths)
    for rel in paths:
        with Image.open(root / rel) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            img.load()
            w, h = img.size
            assert 110 <= w <= 145 and 200 <= h <= 320 and h > 1.8 * w


def test_synthpedes_layout(tiny_sets):
    path = tiny_sets["synthpedes"]
    assert path.name == "synthpedes-dataset.json"
    recs = json.loads(path.read_text(encoding="utf-8"))
    assert len(recs) == 12
    for r in recs:
        assert set(r) == {"id", "file_path", "captions", "prompt_caption", "attributes"}
        assert isinstance(r["id"], int) and re.fullmatch(rf"Part1/{r['id']}/[12]\.jpg", r["file_path"])
        assert len(r["captions"]) == 2 and all(isinstance(c, str) and c.strip() for c in r["captions"])
        assert len(r["prompt_caption"]) == 1 and r["prompt_caption"][0].startswith("The ")
        assert len(r["attributes"]) == 1 and len(r["attributes"][0].split(",")) == 7
    assert sorted({r["id"] for r in recs}) == list(range(6))
    _check_images(path.parent, [r["file_path"] for r in recs])


def test_cuhk_layout(tiny_sets):
    path = tiny_sets["cuhk-pedes"]
    assert path.name == "reid_raw.json"
    recs = json.loads(path.read_text(encoding="utf-8"))
    splits = {}
    for r in recs:
        assert list(r) == ["split", "captions", "file_path", "processed_tokens", "id"]
        assert len(r["captions"]) == 2 and len(r["processed_tokens"]) == 2
        for cap, toks in zip(r["captions"], r["processed_tokens"]):
            assert toks == tokenize(cap) and all(t == t.lower() for t in toks)
        assert splits.setdefault(r["id"], r["split"]) == r["split"]  # whole identities per split
    assert sorted(splits) == list(range(1, 7))
    assert sorted(splits.values()) == ["test", "train", "train", "train", "train", "val"]
    _check_images(path.parent / "imgs", [r["file_path"] for r in recs])


def test_icfg_layout(tiny_sets):
    path = tiny_sets["icfg-pedes"]
    assert path.name == "ICFG-PEDES.json"
    recs = json.loads(path.read_text(encoding="utf-8"))
    for r in recs:
        assert set(r) == {"split", "captions", "file_path", "processed_tokens", "id"}
        assert r["split"] in ("train", "test") and len(r["captions"]) == 1 and len(r["processed_tokens"]) == 1
        assert r["file_path"].startswith(f"{r['split']}/{r['id']:04d}/{r['id']:04d}_")
    assert {r["split"] for r in recs} == {"train", "test"}
    _check_images(path.parent / "imgs", [r["file_path"] for r in recs])


def test_rstpreid_layout(tiny_sets):
    path = tiny_sets["rstpreid"]
    assert path.name == "data_captions.json"
    recs = json.loads(path.read_text(encoding="utf-8"))
    for r in recs:
        assert set(r) == {"id", "img_path", "captions", "split"}
        assert re.fullmatch(rf"{r['id']:04d}_c\d+_000[12]\.jpg", r["img_path"]) and len(r["captions"]) == 2
    assert sorted({r["id"] for r in recs}) == list(range(6))
    assert {r["split"] for r in recs} == {"train", "val", "test"}
    _check_images(path.parent / "imgs", [r["img_path"] for r in recs])


@pytest.mark.parametrize("fmt", ["synthpedes", "cuhk-pedes", "icfg-pedes", "rstpreid"])
def test_truth_matches_dataset(tiny_sets, fmt):
    path = tiny_sets[fmt]
    recs = json.loads(path.read_text(encoding="utf-8"))
    truth = json.loads((path.parent / "demo_truth.json").read_text(encoding="utf-8"))
    assert truth["json"] == path.name and truth["format"] == fmt and truth["attribute_keys"] == list(ATTRIBUTE_KEYS)
    assert len(truth["identities"]) == 6 and len(truth["images"]) == len(recs)
    key = "img_path" if fmt == "rstpreid" else "file_path"
    vocab = truth["vocabulary"]
    for r, im in zip(recs, truth["images"]):
        assert im["path"] == r[key] and im["id"] == r["id"]
        assert (path.parent / truth["image_root"] / im["path"]).is_file()
        assert im["split"] == r.get("split")
        assert [" ".join(c.split()) for c in r["captions"]] == im["captions"]  # only whitespace roughened
        ident = truth["identities"][im["identity"]]
        assert im["attributes"] == {k: ident[k] for k in ATTRIBUTE_KEYS}
        assert set(im["visible"]) == set(ATTRIBUTE_KEYS)
        assert all(v in vocab[k] for k, v in im["attributes"].items())
        assert not any(im["visible"][k] for k, v in im["attributes"].items() if v is None)


def test_truth_records_the_keys_each_caption_names(tiny_sets):
    for path in tiny_sets.values():
        truth = json.loads((path.parent / "demo_truth.json").read_text(encoding="utf-8"))
        for im in truth["images"]:
            assert len(im["caption_keys"]) == len(im["captions"])
            shown = mentionable(im["attributes"], im["visible"])
            for keys in im["caption_keys"]:
                assert keys and set(keys) <= set(shown)  # only what the image shows
                assert keys == [k for k in ATTRIBUTE_KEYS if k in keys]
                assert "gender" in keys  # a default caption always says man / woman


def test_keyed_captions_are_the_plain_captions_with_their_keys():
    a = _full_identity(np.random.default_rng(4))
    text, keys = keyed_caption(a, None, np.random.default_rng(3), "en", subset=["bag_color", "gender", "lower_color"])
    assert keys == ["gender", "lower_color", "bag_color"]  # ATTRIBUTE_KEYS order
    assert make_caption(a, None, np.random.default_rng(3), "en",
                        subset=["bag_color", "gender", "lower_color"]) == text
    keyed = keyed_image_captions(a, None, np.random.default_rng(5), 3, 0.5)
    assert [t for t, _ in keyed] == make_image_captions(a, None, np.random.default_rng(5), 3, 0.5)
    hidden = {k: k != "bag_color" for k in ATTRIBUTE_KEYS}
    assert keyed_caption(a, hidden, np.random.default_rng(0), "zh", subset=["bag_color", "gender"])[1] == ["gender"]


def test_same_seed_same_bytes_any_workers(tmp_path):
    a = write_dataset(tmp_path / "a", 8, 4, seed=11, workers=1)
    b = write_dataset(tmp_path / "b", 8, 4, seed=11, workers=2)  # 32 images: the process pool path
    c = write_dataset(tmp_path / "c", 8, 4, seed=12, workers=1)
    fa, fb, fc = _files(a.parent), _files(b.parent), _files(c.parent)
    assert fa == fb
    assert fa.keys() == fc.keys()
    assert fa["synthpedes-dataset.json"] != fc["synthpedes-dataset.json"]
    assert fa["Part1/0/1.jpg"] != fc["Part1/0/1.jpg"]


def test_odd_paths(tmp_path):
    path = write_dataset(tmp_path / "odd dir", 3, 3, seed=0, fmt="rstpreid", odd_paths=True, workers=1)
    recs = json.loads(path.read_text(encoding="utf-8"))
    names = [r["img_path"] for r in recs]
    assert any(" " in n for n in names) and any(not n.isascii() for n in names)
    _check_images(path.parent / "imgs", names)


def test_identities_distinct_overlapping_and_consistent():
    ids = sample_identities(400, np.random.default_rng(0))
    keys = [tuple(a[k] for k in ATTRIBUTE_KEYS) for a in ids]
    assert len(set(keys)) == 400
    near = sum(1 for x, y in itertools.combinations(keys, 2) if sum(u != v for u, v in zip(x, y)) <= 2)
    assert near >= 200  # many identities differ in only one or two attributes
    vocab = vocabulary()
    for a in ids:
        assert all(a[k] in vocab[k] for k in ATTRIBUTE_KEYS)
        if a["gender"] == "man":
            assert a["upper_type"] != "dress" and a["lower_type"] != "skirt"
        assert (a["upper_type"] == "dress") == (a["lower_type"] is None)
        assert (a["bag_type"] is None) == (a["bag_color"] is None)
        assert (a["hat_type"] is None) == (a["hat_color"] is None)
        assert not (a["upper_type"] == "coat" and a["lower_type"] == "shorts")
    assert ids == sample_identities(400, np.random.default_rng(0))


def test_render_person_size_and_visibility():
    a = sample_identities(1, np.random.default_rng(5))[0]
    img, visible = render_person(a, np.random.default_rng(1), (120, 250))
    assert img.size == (120, 250) and img.mode == "RGB"
    assert set(visible) == set(ATTRIBUTE_KEYS)
    seen = [render_person(a, np.random.default_rng(i), (64, 128))[1] for i in range(60)]
    assert all(v["gender"] and v["upper_color"] for v in seen)
    assert not all(v["shoes_color"] for v in seen)  # occluders and crops hide the feet sometimes
    with pytest.raises(ValueError, match="too small"):
        render_person(a, np.random.default_rng(0), (8, 8))


def test_chinese_share():
    ids = sample_identities(50, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    for share in (0.0, 0.2, 0.5, 1.0):
        caps = [c for i in range(1000) for c in make_image_captions(ids[i % 50], None, rng, 2, share)]
        got = sum(is_chinese(c) for c in caps) / len(caps)
        assert abs(got - share) < 0.03, (share, got)


def test_written_captions_never_name_hidden_parts(tiny_sets):
    for path in tiny_sets.values():
        truth = json.loads((path.parent / "demo_truth.json").read_text(encoding="utf-8"))
        for im in truth["images"]:
            for g in _hidden_groups(im["attributes"], im["visible"]):
                for cap in im["captions"]:
                    assert not _mentions(cap, g), (g, cap)


# Distinct colours per part, so a colour word in a caption tells which part it describes.
_COLOURED = {"hat_color": "orange", "upper_color": "red", "lower_color": "green", "shoes_color": "white",
             "bag_color": "purple", "hair_color": "blond"}
_COLOUR_WORDS = {"en": {"hat": ["orange"], "upper": ["red"], "lower": ["green"], "shoes": ["white"],
                        "bag": ["purple", "violet"], "hair": ["blond", "blonde", "fair"]},
                 "zh": {"hat": ["橙", "橘"], "upper": ["红"], "lower": ["绿"], "shoes": ["白"], "bag": ["紫"],
                        "hair": ["金"]}}


def _full_identity(rng: np.random.Generator) -> dict:
    a = dict(sample_identities(1, rng)[0])
    a.update(hat_type="cap", bag_type="backpack", **_COLOURED)
    if a["lower_type"] is None:
        a.update(upper_type="jacket", lower_type="jeans", sleeve="long")
    return a


def _words(text: str, group: str, lang: str) -> list[str]:
    found = _mentions(text, group)
    if lang == "zh":
        return found + [w for w in _COLOUR_WORDS["zh"][group] if w in text]
    return found + [w for w in _COLOUR_WORDS["en"][group] if re.search(rf"\b{w}\b", text.lower())]


def test_captions_skip_invisible_attributes():
    rng = np.random.default_rng(7)
    for i in range(600):
        a = _full_identity(rng)
        visible = {k: bool(rng.random() < 0.6) for k in ATTRIBUTE_KEYS}
        lang = "zh" if i % 3 == 0 else "en"
        text = make_caption(a, visible, rng, lang)
        for g in _hidden_groups(a, visible):
            assert not _words(text, g, lang), (g, visible, text)
        for key in _COLOURED:  # a hidden colour is not named even when its garment is
            if not visible[key]:
                words = _COLOUR_WORDS[lang][GROUPS_OF[key]]
                assert not any((w in text) if lang == "zh" else re.search(rf"\b{w}\b", text.lower())
                               for w in words), (key, text)


@pytest.mark.parametrize("subset", [["upper_color"], ["shoes_type"], ["lower_color", "bag_type"],
                                    ["gender", "hair_length"], ["hat_color", "upper_type", "shoes_color"]])
def test_partial_captions_name_only_the_subset(subset):
    rng = np.random.default_rng(len(subset))
    named = {GROUPS_OF[k] for k in subset}
    for i in range(120):
        a = _full_identity(rng)
        lang = "zh" if i % 2 else "en"
        text = make_caption(a, None, rng, lang, subset=subset)
        for g in PART_GROUPS:
            if g not in named:
                assert not _words(text, g, lang), (subset, g, text)
        for k in subset:
            if k.endswith("_color"):
                assert _words(text, GROUPS_OF[k], lang), (k, text)
        gendered = re.search(r"\b(man|woman|guy|lady|gentleman|male|female|he|she)\b", text.lower()) \
            or re.search("[男女他她]", text)
        assert bool(gendered) == ("gender" in subset), text


def test_subset_with_unknown_key_is_an_error():
    a = sample_identities(1, np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="unknown attributes"):
        make_caption(a, None, np.random.default_rng(0), "en", subset=["shoe_colour"])
    with pytest.raises(ValueError, match="language"):
        make_caption(a, None, np.random.default_rng(0), "fr")


_SHIRT_MAN = {"gender": "man", "build": "average", "hair_color": "black", "hair_length": "short", "hat_type": None,
              "hat_color": None, "upper_type": "shirt", "upper_color": "white", "upper_pattern": "plain",
              "sleeve": "short", "lower_type": "trousers", "lower_color": "black", "shoes_type": "leather shoes",
              "shoes_color": "black", "bag_type": None, "bag_color": None}


def test_attribute_string_and_prompt_caption():
    assert attribute_string(_SHIRT_MAN, None) == ("man,black hair,short hair,white shirt,short sleeve,"
                                                  "black trousers,unknown")
    assert prompt_caption(_SHIRT_MAN, None) == ("The man has short black hair and wears a short-sleeved white shirt, "
                                                "black trousers and black leather shoes.")
    hidden = {k: k not in ("hair_color", "hair_length", "lower_type") for k in ATTRIBUTE_KEYS}
    assert attribute_string(_SHIRT_MAN, hidden) == "man,unknown,unknown,white shirt,short sleeve,unknown,unknown"
    assert prompt_caption(_SHIRT_MAN, hidden) == ("The man wears a short-sleeved white shirt, black bottoms "
                                                  "and black leather shoes.")


def test_tokenize_and_roughen():
    assert tokenize("A woman in a red T-shirt, carrying a bag.") == ["a", "woman", "in", "a", "red", "t-shirt",
                                                                       "carrying", "a", "bag"]
    assert tokenize("一位女子，穿着T恤。") == list("一位女子穿着t恤")
    rng = np.random.default_rng(0)
    rough = {_roughen("a red coat", rng) for _ in range(2000)}
    assert rough == {"a red coat", " a red coat", "a red coat ", "a  red coat", "a red  coat"}


def test_splits_whole_identities():
    s = assign_splits(100, "cuhk-pedes", seed=0)
    assert [s.count(x) for x in ("train", "val", "test")] == [80, 10, 10]
    assert s == assign_splits(100, "cuhk-pedes", seed=0) != assign_splits(100, "cuhk-pedes", seed=1)
    assert assign_splits(3, "synthpedes", seed=0) == [None, None, None]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown format"):
        write_dataset("/nonexistent", 3, 1, 0, fmt="market")
    with pytest.raises(ValueError, match="at least 3 identities"):
        write_dataset("/nonexistent", 2, 1, 0, fmt="cuhk-pedes")
    with pytest.raises(ValueError, match="--chinese"):
        write_dataset("/nonexistent", 3, 1, 0, chinese=1.5)


def test_command_prints_summary(tmp_path, capsys):
    assert make_demo_data.main(["--out", str(tmp_path / "d"), "--ids", "3", "--images-per-id", "2",
                                "--seed", "1", "--format", "icfg-pedes", "--chinese", "0"]) == 0
    out = capsys.readouterr().out
    assert "3 ids, 6 images, 6 captions (0.0% Chinese)" in out and "ICFG-PEDES.json" in out
    assert make_demo_data.main(["--out", str(tmp_path / "e"), "--ids", "1", "--format", "rstpreid"]) == 2
    assert "at least 3 identities" in capsys.readouterr().err
