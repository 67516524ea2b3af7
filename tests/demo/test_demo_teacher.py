"""The demo teacher: trained on drawn pedestrians it saves a directory load_teacher reads like any user's;
training sees exactly what the loaded teacher sees; the label-matrix loss, partial-caption positives and
the attribute oracle give the hand-computed values; the shipped teacher embeds English and Chinese."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from person.data.records import load_records
from person.demo.synthetic import ATTRIBUTE_KEYS, write_dataset
from person.demo.synthetic.oracle import TruthError, attribute_codes, key_mask, match_scores, oracle_scores, read_truth
from person.demo.teacher import DEMO_TEACHER
from person.demo.teacher.data import (load_training_set, make_batch, partial_caption, positives,
                                      reserved_combinations)
from person.demo.teacher.evaluation import held_out_report
from person.demo.teacher.loss import label_sigmoid_loss
from person.demo.teacher.model import (DemoTeacherConfig, build_model, embed, encode_captions, image_processor,
                                       save_teacher, train_tokenizer)
from person.demo.teacher.training import train
from person.eval.metrics import evaluate_from_scores
from person.options import from_namespace
from person.teacher.hf import load_teacher
from person.cli import train_demo_teacher

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = DEMO_TEACHER
TINY = DemoTeacherConfig(image_size=16, patch_size=8, vision_width=32, vision_layers=1, text_width=32,
                         text_layers=1, head_dim=16, vocab_size=300, batch_size=8, warmup_steps=1, steps=3,
                         ids=20, images_per_id=2, seed=5)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("draw") / "set", 20, 2, seed=5, workers=1)  # 2 held out


@pytest.fixture(scope="module")
def trained(drawn, tmp_path_factory):
    """Three steps of a tiny teacher on the drawn set, saved."""
    torch.manual_seed(0)
    data = load_training_set(drawn, image_processor(TINY))
    out = tmp_path_factory.mktemp("teacher")
    tokenizer = train_tokenizer([c for caps in data.captions for c, _ in caps], out / "tok", TINY)
    model = build_model(TINY, tokenizer)
    history = train(model, tokenizer, data, TINY, log_every=1)
    save_teacher(model, tokenizer, image_processor(TINY), TINY, out / "teacher")
    return {"dir": out / "teacher", "model": model, "tokenizer": tokenizer, "data": data, "history": history}


def _images(drawn: Path, n: int) -> list[Image.Image]:
    truth = read_truth(drawn.parent / "demo_truth.json")
    return [Image.open(drawn.parent / im["path"]).convert("RGB") for im in truth["images"][:n]]


def test_trained_directory_loads_like_a_users_checkpoint(trained, drawn):
    assert [row["step"] for row in trained["history"]] == [1, 2, 3]
    assert all(math.isfinite(row["loss"]) for row in trained["history"])
    files = {p.name for p in trained["dir"].iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "spiece.model",
            "tokenizer_config.json", "training_config.json"} <= files
    teacher = load_teacher(trained["dir"], device="cpu")
    assert teacher.kind == "siglip" and teacher.dim == TINY.vision_width
    assert teacher.text_max_length == TINY.text_length
    img = teacher.encode_images(_images(drawn, 3))
    txt = teacher.encode_texts(["a man in a red shirt", "一位穿着红色衬衫的男子"])
    assert img.shape == (3, TINY.vision_width) and txt.shape == (2, TINY.vision_width)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_held_out_report_scores_the_loaded_teacher_beside_the_oracle(trained, drawn):
    report = held_out_report(trained["dir"], drawn)
    records = load_records(drawn)
    rows = records.split_indices("eval")
    assert report["images"] == len(rows) and report["captions"] == 2 * len(rows)
    assert report["short_captions"]["captions"] + report["long_captions"]["captions"] == report["captions"]
    for part in (report, report["short_captions"], report["long_captions"]):
        if part["captions"]:
            assert all(0.0 <= v <= 1.0 for who in ("model", "oracle") for v in part[who].values())


def test_training_sees_what_the_loaded_teacher_sees(trained, drawn):
    teacher = load_teacher(trained["dir"], device="cpu")
    images = _images(drawn, 4)
    pixels = teacher.image_inputs(images)["pixel_values"]
    assert torch.allclose(trained["data"].pixels[:4].float(), pixels, atol=2e-3)  # stored as float16
    texts = [c for caps in trained["data"].captions[:3] for c, _ in caps]
    assert torch.equal(encode_captions(trained["tokenizer"], texts, TINY.text_length),
                       teacher.text_inputs(texts)["input_ids"])
    with torch.no_grad():  # the saved weights are float16: equal to that rounding
        mine = embed(trained["model"], input_ids=teacher.text_inputs(texts)["input_ids"])
    assert torch.allclose(mine, teacher.encode_texts(texts), atol=2e-2)


def test_tokenizer_is_deterministic_and_reads_chinese_by_character(tmp_path):
    captions = ["A man in a red shirt.", "一位穿着红色衬衫的男子。", "The woman wears blue jeans."] * 20
    a = train_tokenizer(captions, tmp_path / "a", TINY)
    train_tokenizer(captions, tmp_path / "b", TINY)
    assert (tmp_path / "a" / "spiece.model").read_bytes() == (tmp_path / "b" / "spiece.model").read_bytes()
    pieces = [p.lstrip("▁") for p in a.tokenize("红色衬衫") if p.lstrip("▁")]
    assert pieces == list("红色衬衫")
    assert a.tokenize("a red shirt") == ["▁a", "▁red", "▁shirt"]


def _nll(x: float) -> float:
    return math.log1p(math.exp(-x))  # -log sigmoid(x)


def test_label_sigmoid_loss_exact():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[True, False, True], [False, True, False]])
    row0 = 0.5 * _nll(2.0) + 0.5 * _nll(0.5) + _nll(1.0)   # two positives, each weighted 1/2
    row1 = _nll(0.0) + _nll(3.0) + _nll(2.0)
    assert label_sigmoid_loss(logits, labels).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


@pytest.mark.parametrize("p", [1, 2, 5])
def test_positives_weigh_one_per_row_however_many(p):
    logits = torch.tensor([[1.5] * p + [-0.5]])
    labels = torch.tensor([[True] * p + [False]])
    assert label_sigmoid_loss(logits, labels).item() == pytest.approx(_nll(1.5) + _nll(0.5), rel=1e-6)


def test_label_sigmoid_loss_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same"):
        label_sigmoid_loss(torch.zeros(2, 3), torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"rows \[1\] have no positive"):
        label_sigmoid_loss(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))


_A = {k: None for k in ATTRIBUTE_KEYS} | {"gender": "man", "upper_type": "shirt", "upper_color": "red",
                                          "lower_type": "jeans", "lower_color": "blue", "bag_type": None}
_B = _A | {"upper_color": "white"}
_C = _A | {"gender": "woman", "bag_type": "backpack", "bag_color": "black"}


def test_partial_caption_positives_are_images_with_every_named_attribute():
    codes = attribute_codes([_A, _B, _C])
    named = key_mask([["upper_color"], ["gender", "upper_color"], [], ["bag_type"]])
    described = codes[[0, 0, 1, 2]]  # caption i describes an image of identity A, A, B, C
    assert positives(described, named, codes).tolist() == [
        [True, False, True],    # red upper: A and C
        [True, False, False],   # man in red: A only
        [True, True, True],     # names nothing: everyone
        [False, False, True],   # a backpack: C; A and B have no bag at all
    ]


def test_batches_label_exactly_the_matching_images(trained):
    data = trained["data"]
    cfg = replace(TINY, partial_share=1.0, batch_size=len(data))
    rows = np.arange(len(data))
    batch = make_batch(data, rows, trained["tokenizer"], cfg, np.random.default_rng(0))
    # the same rng stream, replayed, gives the captions' named keys
    rng = np.random.default_rng(0)
    for i, r in enumerate(rows):
        assert rng.random() < cfg.partial_share  # make_batch's draw: partial or the row's own caption
        _, keys = partial_caption(data.attrs[data.identity[r]], data.visible[r], rng, cfg.partial_max_keys,
                                  cfg.chinese)
        assert 1 <= len(keys) <= cfg.partial_max_keys
        mine = data.attrs[data.identity[r]]
        want = [all(data.attrs[data.identity[j]][k] == mine[k] for k in keys) for j in rows]
        assert batch.labels[i].tolist() == want
    assert batch.pixels.shape == (len(data), 3, TINY.image_size, TINY.image_size)
    assert batch.input_ids.shape == (len(data), TINY.text_length)


def _truth() -> dict:
    def image(identity: int, attrs: dict, keys: list[list[str]]) -> dict:
        return {"identity": identity, "attributes": attrs, "captions": ["c"] * len(keys), "caption_keys": keys}
    return {"images": [image(0, _A, [["gender", "upper_color"]]), image(0, _A, [["upper_color", "lower_color"]]),
                       image(1, _B, [["upper_color"]]), image(2, _C, [["bag_type", "gender"]])]}


def test_oracle_scores_share_of_named_attributes():
    truth = _truth()
    codes = attribute_codes([im["attributes"] for im in truth["images"]])
    named = key_mask([["gender", "upper_color"], ["upper_color"], ["bag_type", "gender"], []])
    scores = match_scores(codes[[0, 2, 3, 0]], named, codes)
    np.testing.assert_array_equal(scores, np.array([
        [1.0, 1.0, 0.5, 0.5],   # man in red: A's two images; B is a man, C is in red
        [0.0, 0.0, 1.0, 0.0],   # white upper: B only
        [0.0, 0.0, 0.0, 1.0],   # woman with a backpack: C only
        [1.0, 1.0, 1.0, 1.0],   # names nothing
    ], dtype=np.float32))
    oracle, image_pid, caption_pid, _ = oracle_scores(truth, [0, 1, 2, 3])
    ev = evaluate_from_scores(oracle, image_pid, caption_pid)
    assert ev.retrieval.cmc[1] == 1.0  # each caption's top image is its own identity's (ties: gallery order)
    # at threshold 1: FRR 0, FAR 1/10 (C too wears red over blue: caption 2 cannot tell C from A)
    assert ev.verification.eer == pytest.approx(0.05)


def test_oracle_refuses_truth_without_caption_keys(tmp_path):
    old = tmp_path / "demo_truth.json"
    old.write_text(json.dumps({"version": 1, "images": [{"captions": ["x"]}]}))
    with pytest.raises(TruthError, match="caption_keys.*make_demo_data"):
        read_truth(old)
    with pytest.raises(TruthError, match="not found"):
        read_truth(tmp_path / "missing.json")
    with pytest.raises(TruthError, match="not attributes"):
        key_mask([["shoe_colour"]])


def test_reserved_combinations_drop_training_identities(drawn):
    proc = image_processor(TINY)
    truth = drawn.parent / "demo_truth.json"
    everything = load_training_set(drawn, proc)
    assert everything.dropped_identities == 0 and len(everything) == 40
    with pytest.raises(ValueError, match="no training image left"):
        load_training_set(drawn, proc, reserved_combinations([truth]))


@pytest.mark.parametrize("change, message", [
    ({"image_size": 60}, "not a multiple of patch_size"),
    ({"vision_width": 40}, "not a multiple of head_dim"),
    ({"batch_size": 1}, "batch needs >= 2"),
    ({"partial_share": 1.5}, "shares between 0 and 1"),
    ({"seed": 0}, "demo set; use another seed"),
    ({"steps": 0}, "steps=0: must be >= 1"),
])
def test_bad_config_is_a_clear_error(change, message):
    with pytest.raises(ValueError, match=message):
        replace(TINY, **change).check()


def test_too_few_images_for_a_batch(trained):
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(trained["model"], trained["tokenizer"], trained["data"], replace(TINY, batch_size=64))


def test_command_rejects_bad_arguments(tmp_path, capsys):
    assert train_demo_teacher.main(["--out", str(tmp_path / "t"), "--seed", "0"]) == 2
    assert "use another seed" in capsys.readouterr().err
    assert train_demo_teacher.main(["--out", str(tmp_path / "t"), "--steps", "5", "--minutes", "1"]) == 2
    assert "--steps or --minutes" in capsys.readouterr().err


def test_command_options_are_the_config_fields_in_both_spellings(tmp_path):
    parser = train_demo_teacher.build_parser()
    args = parser.parse_args(["--out", str(tmp_path), "--image-size", "32", "--batch_size", "8", "--no-flip",
                              "--partial-share", "0.25", "--steps", "7"])
    assert from_namespace(DemoTeacherConfig, args) == replace(DemoTeacherConfig(), image_size=32, batch_size=8,
                                                              flip=False, partial_share=0.25, steps=7)
    assert from_namespace(DemoTeacherConfig, parser.parse_args(["--out", str(tmp_path)])) == DemoTeacherConfig()


def test_shipped_demo_teacher_embeds_english_chinese_and_images():
    teacher = load_teacher(SHIPPED, device="cpu")
    config = json.loads((SHIPPED / "config.json").read_text())
    assert teacher.kind == "siglip" and teacher.dim == config["vision_config"]["hidden_size"]
    text = teacher.encode_texts(["a woman in a red coat carrying a black backpack",
                                 "一位穿着红色大衣、背着黑色双肩包的女子。"])
    crop = Image.new("RGB", (64, 128), (120, 120, 120))
    image = teacher.encode_images([crop])
    for emb, n in ((text, 2), (image, 1)):
        assert emb.shape == (n, teacher.dim)
        assert torch.allclose(emb.norm(dim=-1), torch.ones(n), atol=1e-5)
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) <= 20 * 2 ** 20
