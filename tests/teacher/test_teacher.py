"""Teachers: every kind loads offline through `load_teacher`, matches its raw transformers model called by
hand, pads person crops to square on request, and fails with messages that name the path and the fix."""
from __future__ import annotations

import json
import logging
import shutil
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer

from person.teacher.hf import KINDS, TeacherFormatError, TeacherNotFoundError, load_teacher, resolve_dtype
from tests.teacher.tiny_teachers import BUILDERS, build_tiny_siglip2_naflex

ENGLISH = ["a man in a red jacket and blue jeans", "she has long black hair and holds a phone"]
CHINESE = ["一个穿红色外套和蓝色牛仔裤的男人", "她留着黑色长发，手里拿着手机"]
TEXTS = ENGLISH + CHINESE
MAX_LENGTH = {"siglip": 64, "siglip2-naflex": 64, "mexma-siglip2": 128, "clip": 77}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: loading must stay local."""
    def refuse(*args, **kwargs):
        raise AssertionError("teacher code tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    return {kind: build(root / kind) for kind, build in BUILDERS.items()}


def person_crop(seed: int, width: int = 40, height: int = 90) -> Image.Image:
    """A tall person-like crop: background, coloured torso and legs, a head."""
    g = torch.Generator().manual_seed(seed)
    colour = lambda: tuple(int(c) for c in torch.randint(0, 256, (3,), generator=g))  # noqa: E731
    img = Image.new("RGB", (width, height), colour())
    draw = ImageDraw.Draw(img)
    draw.rectangle([width // 4, height // 5, 3 * width // 4, height // 2], fill=colour())
    draw.rectangle([width // 4, height // 2, 3 * width // 4, height - 4], fill=colour())
    draw.ellipse([width // 3, 2, 2 * width // 3, height // 5], fill=colour())
    return img


IMAGES = [person_crop(i) for i in range(3)]


def by_hand(kind: str, model_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of IMAGES and TEXTS the way each model's documentation calls it."""
    if kind == "mexma-siglip2":  # the author's usage: remote code, encode_*(normalize=True), 128 max_length
        model = AutoModel.from_pretrained(model_dir, trust_remote_code=True, local_files_only=True).eval()
        pixels = AutoImageProcessor.from_pretrained(model_dir)(images=IMAGES, return_tensors="pt")["pixel_values"]
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
        text = tok(TEXTS, padding="max_length", max_length=128, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return model.encode_images(pixels, normalize=True), model.encode_texts(normalize=True, **text)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    # The image processor itself: Siglip2Processor's call-time defaults (patch 16, 256 patches)
    # would override the tiny model's saved patch size 8.
    image_inputs = processor.image_processor(images=IMAGES, return_tensors="pt")
    if kind == "clip":
        text_inputs = dict(processor.tokenizer(TEXTS, padding=True, return_tensors="pt"))
    else:  # SigLIP: pad to 64 as trained; its towers were trained without an attention mask
        ids = processor.tokenizer(TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
        text_inputs = {"input_ids": ids["input_ids"]}
    with torch.no_grad():
        image = model.get_image_features(**image_inputs).pooler_output
        text = model.get_text_features(**text_inputs).pooler_output
    return torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)


@pytest.mark.parametrize("kind", KINDS)
def test_embeddings_are_unit_float32_cpu_and_deterministic(tiny, kind):
    teacher = load_teacher(str(tiny[kind]))
    assert teacher.kind == kind
    images, texts = teacher.encode_images(IMAGES), teacher.encode_texts(TEXTS)
    for emb, n in ((images, len(IMAGES)), (texts, len(TEXTS))):
        assert emb.shape == (n, teacher.dim) and emb.dtype == torch.float32 and emb.device.type == "cpu"
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(n))
    assert torch.equal(teacher.encode_images(IMAGES), images)
    assert torch.equal(teacher.encode_texts(TEXTS), texts)
    assert teacher.encode_images([]).shape == (0, teacher.dim)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_raw_model_called_by_hand(tiny, kind):
    teacher = load_teacher(str(tiny[kind]))
    ref_images, ref_texts = by_hand(kind, tiny[kind])
    torch.testing.assert_close(teacher.encode_images(IMAGES), ref_images, atol=1e-5, rtol=0)
    torch.testing.assert_close(teacher.encode_texts(TEXTS), ref_texts, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_chinese_text_gets_real_tokens_and_its_own_embedding(tiny, kind):
    teacher = load_teacher(str(tiny[kind]))
    ids = teacher.text_inputs(CHINESE)["input_ids"]
    assert teacher.tokenizer.unk_token_id not in ids[ids != teacher.tokenizer.pad_token_id].tolist()
    emb = teacher.encode_texts(TEXTS)
    assert torch.isfinite(emb).all()
    chinese, english = emb[2:], emb[:2]
    assert not torch.allclose(chinese[0], chinese[1]) and not torch.allclose(chinese[0], english[0])


@pytest.mark.parametrize("kind", KINDS)
def test_text_length_follows_the_family(tiny, kind):
    teacher = load_teacher(str(tiny[kind]))
    assert teacher.identity()["preprocessing"]["text_max_length"] == MAX_LENGTH[kind]
    inputs = teacher.text_inputs(["word " * 300, "short"])
    assert inputs["input_ids"].shape[1] == MAX_LENGTH[kind]  # truncated to the limit, never longer
    if kind.startswith("siglip"):  # fixed length, right padding, no mask: as SigLIP was trained
        assert set(inputs) == {"input_ids"}
        assert inputs["input_ids"][1, -1] == teacher.tokenizer.pad_token_id
    else:
        assert inputs["attention_mask"][1].sum() < MAX_LENGTH[kind]


def test_siglip_keeps_right_padding_when_the_tokenizer_says_left(tmp_path, caplog):
    right = load_teacher(str(build_tiny_siglip2_naflex(tmp_path / "right")))
    with caplog.at_level(logging.WARNING, logger="person.teacher.hf.teacher"):
        left = load_teacher(str(build_tiny_siglip2_naflex(tmp_path / "left", padding_side="left")))
    assert "pads on the left" in caplog.text
    assert left.identity()["preprocessing"]["text_padding_side"] == "right"
    torch.testing.assert_close(left.encode_texts(TEXTS), right.encode_texts(TEXTS), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["siglip", "mexma-siglip2", "clip"])
def test_pad_to_square_pads_with_the_mean_colour_instead_of_stretching(tiny, kind):
    stretched = load_teacher(str(tiny[kind]))
    padded = load_teacher(str(tiny[kind]), pad_to_square=True)
    red = Image.new("RGB", (40, 90), (255, 0, 0))
    plain = stretched.image_inputs([red])["pixel_values"][0]
    pad = padded.image_inputs([red])["pixel_values"][0]
    assert plain.shape == pad.shape == (3, 32, 32)
    red_value = (1.0 - padded.image_processor.image_mean[0]) / padded.image_processor.image_std[0]
    # Stretched (or centre-cropped): red everywhere. Padded: a 40-wide body in a 90-wide square,
    # so ~9 of 32 columns on each side are the mean colour, which normalises to ~0.
    torch.testing.assert_close(plain[0], torch.full((32, 32), red_value), atol=1e-3, rtol=0)
    for side in (pad[:, :, :6], pad[:, :, -6:]):
        assert side.abs().max() < 0.02
    torch.testing.assert_close(pad[0, :, 14:18], torch.full((32, 4), red_value), atol=1e-3, rtol=0)
    assert not torch.allclose(padded.encode_images(IMAGES), stretched.encode_images(IMAGES))
    assert padded.identity()["preprocessing"]["pad_to_square"] is True
    assert padded.identity()["config_hash"] == stretched.identity()["config_hash"]


def test_naflex_pad_to_square_makes_a_square_patch_grid(tiny):
    tall = load_teacher(str(tiny["siglip2-naflex"])).image_inputs([person_crop(0)])
    square = load_teacher(str(tiny["siglip2-naflex"]), pad_to_square=True).image_inputs([person_crop(0)])
    h, w = tall["spatial_shapes"][0].tolist()
    assert h > w  # NaFlex keeps the crop's aspect ...
    assert square["spatial_shapes"][0, 0] == square["spatial_shapes"][0, 1]  # ... so padding squares the grid


def test_identity_is_stable_across_loads_and_copies_and_differs_between_models(tiny, tmp_path):
    first = load_teacher(str(tiny["siglip"])).identity()
    assert first == load_teacher(str(tiny["siglip"])).identity()
    assert json.loads(json.dumps(first)) == first  # plain JSON, storable as attributes
    copy = shutil.copytree(tiny["siglip"], tmp_path / "copy")
    assert load_teacher(str(copy)).identity()["config_hash"] == first["config_hash"]
    hashes = {load_teacher(str(tiny[k])).identity()["config_hash"] for k in KINDS}
    assert len(hashes) == len(KINDS)
    assert set(first) == {"teacher", "kind", "config_hash", "dim", "dtype", "preprocessing"}
    assert first["teacher"] == str(tiny["siglip"]) and first["kind"] == "siglip" and first["dtype"] == "float32"


def fake_hf_cache(cache: Path, repo_id: str, files_from: Path, commit: str = "0123456789abcdef") -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(files_from, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_hub_id_loads_from_the_local_cache_only(tiny, tmp_path):
    fake_hf_cache(tmp_path / "hf", "local/tiny-siglip", tiny["siglip"])
    teacher = load_teacher("local/tiny-siglip", cache_dir=tmp_path / "hf")
    assert teacher.identity()["teacher"] == "local/tiny-siglip"
    assert teacher.identity()["config_hash"] == load_teacher(str(tiny["siglip"])).identity()["config_hash"]
    torch.testing.assert_close(teacher.encode_texts(TEXTS), load_teacher(str(tiny["siglip"])).encode_texts(TEXTS))


def test_missing_cache_id_says_how_to_get_it(tmp_path, monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE at import; the autouse socket guard is what proves no network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TeacherNotFoundError) as err:
        load_teacher("google/siglip2-so400m-patch16-512", cache_dir=tmp_path / "empty-cache")
    message = str(err.value)
    assert "download google/siglip2-so400m-patch16-512" in message
    assert str(tmp_path / "empty-cache") in message and "local directory" in message


def test_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "no-such-teacher"
    with pytest.raises(TeacherNotFoundError, match="does not exist") as err:
        load_teacher(str(missing))
    assert str(missing) in str(err.value)


@pytest.mark.parametrize("content, message", [
    ({}, "no config.json"),
    ({"config.json": {"model_type": "bert"}}, "'bert' is not a supported teacher"),
    ({"config.json": {"model_type": "siglip_vision_model"}}, "single tower"),
    ({"config.json": "{not json"}, "not valid JSON"),
    ({"notes.txt": "hello"}, "no config.json"),
])
def test_a_directory_that_is_not_a_teacher_is_a_clear_error(tmp_path, content, message):
    for name, value in content.items():
        (tmp_path / name).write_text(value if isinstance(value, str) else json.dumps(value))
    with pytest.raises(TeacherFormatError, match=message) as err:
        load_teacher(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_a_file_instead_of_a_directory_is_a_clear_error(tiny):
    with pytest.raises(TeacherFormatError, match="is a file"):
        load_teacher(str(tiny["siglip"] / "config.json"))


@pytest.mark.parametrize("remove, message", [
    ("model.safetensors", "model.safetensors"),
    ("processor_config.json", "preprocessor_config.json"),
])
def test_incomplete_model_directory_names_what_is_missing(tiny, tmp_path, remove, message):
    broken = shutil.copytree(tiny["siglip"], tmp_path / "broken")
    (broken / remove).unlink()
    with pytest.raises(TeacherFormatError, match=message):
        load_teacher(str(broken))


def test_missing_weights_are_an_error_not_random_init(tiny, tmp_path):
    from safetensors.torch import load_file, save_file
    broken = shutil.copytree(tiny["mexma-siglip2"], tmp_path / "broken")
    weights = load_file(broken / "model.safetensors")
    del weights["text_projector.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(TeacherFormatError, match=r"missing .*text_projector\.weight"):
        load_teacher(str(broken))


def test_mexma_towers_come_from_the_cached_repos_the_remote_code_names(tiny, tmp_path):
    """The real config.json has no tower configs: they come from facebook/MEXMA and the SigLIP2 repo."""
    own = json.loads((tiny["mexma-siglip2"] / "config.json").read_text())
    real_like = shutil.copytree(tiny["mexma-siglip2"], tmp_path / "mexma")
    (real_like / "config.json").write_text(json.dumps(
        {k: v for k, v in own.items() if k not in ("text_config", "vision_config")}))
    with pytest.raises(TeacherNotFoundError, match="facebook/MEXMA"):
        load_teacher(str(real_like), cache_dir=tmp_path / "hf")
    for repo_id, config in (("facebook/MEXMA", {"model_type": "xlm-roberta", **own["text_config"]}),
                            ("google/siglip2-so400m-patch16-512",
                             {"model_type": "siglip", "vision_config": own["vision_config"]})):
        (tmp_path / repo_id).mkdir(parents=True)
        (tmp_path / repo_id / "config.json").write_text(json.dumps(config))
        fake_hf_cache(tmp_path / "hf", repo_id, tmp_path / repo_id)
    teacher = load_teacher(str(real_like), cache_dir=tmp_path / "hf")
    reference = load_teacher(str(tiny["mexma-siglip2"]))
    torch.testing.assert_close(teacher.encode_images(IMAGES), reference.encode_images(IMAGES), atol=0, rtol=0)
    torch.testing.assert_close(teacher.encode_texts(TEXTS), reference.encode_texts(TEXTS), atol=0, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_builds_are_byte_identical(tmp_path, kind):
    a, b = BUILDERS[kind](tmp_path / "a"), BUILDERS[kind](tmp_path / "b")
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir()) and "model.safetensors" in files
    assert all((a / name).read_bytes() == (b / name).read_bytes() for name in files)


def test_teacher_is_frozen_in_eval_mode(tiny):
    teacher = load_teacher(str(tiny["clip"]))
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_bad_inputs_are_clear_errors(tiny):
    teacher = load_teacher(str(tiny["siglip"]))
    with pytest.raises(TypeError, match="item 1 is str"):
        teacher.encode_images([IMAGES[0], "person.jpg"])
    with pytest.raises(TypeError, match="item 0 is int"):
        teacher.encode_texts([3])


def test_dtype_auto_is_fp32_on_cpu_and_half_on_gpu(monkeypatch):
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="int8"):
        resolve_dtype("int8", torch.device("cpu"))


def test_half_precision_model_still_returns_unit_float32(tiny):
    full = load_teacher(str(tiny["siglip"]), dtype="float32")
    half = load_teacher(str(tiny["siglip"]), dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16 and half.identity()["dtype"] == "bfloat16"
    emb = half.encode_images(IMAGES)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(IMAGES)))
    assert torch.nn.functional.cosine_similarity(emb, full.encode_images(IMAGES)).min() > 0.98
