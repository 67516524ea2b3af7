"""A loaded, frozen teacher: images and captions in, L2-normalised float32 embeddings out.

`load_teacher` is the factory: it resolves the directory (person.teacher.hf.source), loads the model of
its kind (transformers' own SiglipModel / Siglip2Model / CLIPModel, or the rebuilt MEXMA-SigLIP2 of
person.teacher.hf.mexma) and the model's own image processor and tokenizer, and wraps them in a
`Teacher`. Every load is `local_files_only`; remote code is never executed.

Text follows how each family was trained:
- SigLIP / SigLIP2 towers attend to every position and pool the last one, and were trained on text
  right-padded to a fixed length (64) without an attention mask (big_vision; open_clip does the
  same). So captions are padded to that length on the right and no mask is passed.
- CLIP (causal, pools the EOS token) and MEXMA (XLM-R, pools CLS, masked) ignore padding, so
  captions are padded to the longest in the batch and the mask is passed: same vectors, less work.
The length comes from the tokenizer's declared maximum when it has a real one, capped by the text
tower's position table (and 128 for MEXMA, what its users tokenise to).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from person.teacher.hf import mexma
from person.teacher.hf.preprocess import describe_image_processor, mean_colour, pad_to_square
from person.teacher.hf.source import TeacherFormatError, config_hash, detect_kind, read_config, resolve_model_dir
from person.teacher.hf.weights import load_strict

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
_SANE_MAX_LENGTH = 100_000  # tokenizers without a limit declare ~1e30


@dataclass(frozen=True)
class TextPolicy:
    padding: str             # "max_length" (fixed length, as trained) or "longest"
    attention_mask: bool     # whether the text tower is given the mask
    padding_side: str | None  # forced side, or None to keep the tokenizer's
    max_length_cap: int | None = None


_TEXT = {
    "siglip": TextPolicy("max_length", attention_mask=False, padding_side="right"),
    "siglip2-naflex": TextPolicy("max_length", attention_mask=False, padding_side="right"),
    "clip": TextPolicy("longest", attention_mask=True, padding_side=None),
    "mexma-siglip2": TextPolicy("longest", attention_mask=True, padding_side=None,
                                max_length_cap=mexma.TEXT_MAX_LENGTH),
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto': bf16 on a GPU that supports it, else fp16 on GPU; fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"teacher dtype {dtype!r}: use auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput from get_*_features (the embedding is pooler_output)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _text_tower_positions(kind: str, model: torch.nn.Module) -> int:
    text = model.config.text_config
    if kind == "mexma-siglip2":  # XLM-R numbers positions after the padding index
        return text.max_position_embeddings - text.pad_token_id - 1
    return text.max_position_embeddings


def text_max_length(kind: str, model: torch.nn.Module, tokenizer: Any) -> int:
    length = _text_tower_positions(kind, model)
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < _SANE_MAX_LENGTH:
        length = min(length, declared)
    cap = _TEXT[kind].max_length_cap
    return min(length, cap) if cap else length


def _embedding_dim(kind: str, model: torch.nn.Module) -> int:
    if kind == "clip":
        return model.config.projection_dim
    return model.config.vision_config.hidden_size


class Teacher:
    """A frozen, eval-mode teacher. Not an nn.Module: a trainer's .train() never reaches it."""

    def __init__(self, name: str, kind: str, model: torch.nn.Module, image_processor: Any, tokenizer: Any,
                 *, device: torch.device, dtype: torch.dtype, pad_to_square: bool, config_hash: str,
                 model_dir: Path) -> None:
        self.name, self.kind, self.model_dir = name, kind, model_dir
        self.model = model.eval().requires_grad_(False)
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.device, self.dtype = device, dtype
        self.pad_to_square = pad_to_square
        self.text_policy = _TEXT[kind]
        self.text_max_length = text_max_length(kind, model, tokenizer)
        self.dim = _embedding_dim(kind, model)
        self._config_hash = config_hash
        self._fill = mean_colour(image_processor)

    def identity(self) -> dict[str, Any]:
        """What a feature store records to tell this teacher (and its preprocessing) from another."""
        policy = self.text_policy
        preprocessing = describe_image_processor(self.image_processor, self.pad_to_square)
        preprocessing.update({
            "image_backend": "pil",
            "tokenizer": type(self.tokenizer).__name__,
            "text_max_length": self.text_max_length,
            "text_padding": policy.padding,
            "text_padding_side": self.tokenizer.padding_side,
            "text_attention_mask": policy.attention_mask,
        })
        return {"teacher": self.name, "kind": self.kind, "config_hash": self._config_hash, "dim": self.dim,
                "dtype": str(self.dtype).removeprefix("torch."), "preprocessing": preprocessing}

    def image_inputs(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The model's inputs for `images` (its processor's output), on the teacher's device and dtype."""
        prepared = []
        for i, img in enumerate(images):
            if not isinstance(img, Image.Image):
                raise TypeError(f"encode_images: item {i} is {type(img).__name__}, expected a PIL image")
            img = img.convert("RGB")
            prepared.append(pad_to_square(img, self._fill) if self.pad_to_square else img)
        batch = self.image_processor(images=prepared, return_tensors="pt")
        return {k: v.to(self.device, self.dtype if v.is_floating_point() else None) for k, v in batch.items()}

    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids (and the mask where the family uses one), on the teacher's device."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"encode_texts: item {i} is {type(text).__name__}, expected str")
        policy = self.text_policy
        batch = self.tokenizer(list(texts), padding=policy.padding, max_length=self.text_max_length,
                               truncation=True, return_tensors="pt")
        out = {"input_ids": batch["input_ids"].to(self.device)}
        if policy.attention_mask:
            out["attention_mask"] = batch["attention_mask"].to(self.device)
        return out

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """[B, dim] float32, L2-normalised, on CPU."""
        if len(images) == 0:
            return torch.empty(0, self.dim)
        features = _pooled(self.model.get_image_features(**self.image_inputs(images)))
        return F.normalize(features.float(), dim=-1).cpu()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """[B, dim] float32, L2-normalised, on CPU."""
        if len(texts) == 0:
            return torch.empty(0, self.dim)
        features = _pooled(self.model.get_text_features(**self.text_inputs(texts)))
        return F.normalize(features.float(), dim=-1).cpu()

    def __repr__(self) -> str:
        return f"Teacher({self.name!r}, kind={self.kind}, dim={self.dim}, {self.dtype}, {self.device})"


def _load_processors(model_dir: Path, kind: str, model: torch.nn.Module) -> tuple[Any, Any]:
    # PIL backend pinned: the torchvision backend resizes slightly differently, and a store must not
    # depend on whether torchvision happens to be installed. The model's config is handed to the
    # tokenizer so a custom-code config.json (MEXMA) is never executed to find the tokenizer class.
    try:
        image_processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True, backend="pil",
                                                             trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False,
                                                  config=model.config)
    except (OSError, ValueError) as e:
        raise TeacherFormatError(f"{model_dir}: cannot load the {kind} image processor / tokenizer ({e}); the "
                                 f"directory must hold preprocessor_config.json (or processor_config.json) and "
                                 f"the tokenizer files of the model") from None
    policy = _TEXT[kind]
    if policy.padding_side and tokenizer.padding_side != policy.padding_side:
        log.warning("%s: tokenizer pads on the %s; using %s padding as the %s text tower was trained", model_dir,
                    tokenizer.padding_side, policy.padding_side, kind)
        tokenizer.padding_side = policy.padding_side
    return image_processor, tokenizer


def _load_model(model_dir: Path, kind: str, config: dict[str, Any], dtype: torch.dtype,
                cache_dir: str | Path | None) -> torch.nn.Module:
    if kind == "mexma-siglip2":
        return mexma.load_mexma(model_dir, config, dtype, cache_dir)
    return load_strict(AutoModel, model_dir, kind, dtype)


def load_teacher(id_or_path: str | Path, *, device: str | torch.device | None = None, dtype: str | torch.dtype = "auto",
                 pad_to_square: bool = False, cache_dir: str | Path | None = None) -> Teacher:
    """Load a teacher from a local directory or a Hugging Face id in the local cache (never downloads).

    `pad_to_square` pads each crop to a square of the processor's mean colour before the processor
    resizes it, so tall person crops are not stretched. `cache_dir` overrides the HF cache location.
    """
    model_dir = resolve_model_dir(id_or_path, cache_dir)
    config = read_config(model_dir)
    kind = detect_kind(config, model_dir)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    model = _load_model(model_dir, kind, config, torch_dtype, cache_dir).to(device)
    image_processor, tokenizer = _load_processors(model_dir, kind, model)
    teacher = Teacher(str(id_or_path), kind, model, image_processor, tokenizer, device=device, dtype=torch_dtype,
                      pad_to_square=pad_to_square, config_hash=config_hash(model_dir), model_dir=model_dir)
    log.info("teacher %s loaded from %s", teacher, model_dir)
    return teacher
