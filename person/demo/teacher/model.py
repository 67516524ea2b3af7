"""The shipped demo teacher's model: a small transformers SigLIP, its SentencePiece tokenizer and processor.

Nothing real can be downloaded, yet the quick start must run end to end, so the project ships a teacher
it trained itself (person/demo/teacher/demo_teacher/, made by tools/train_demo_teacher.py). It is a transformers
`SiglipModel` with a SentencePiece `SiglipTokenizer` trained on the training captions and a
`SiglipImageProcessor`, saved as a normal Hugging Face directory that `person.teacher.hf.load_teacher`
loads like any user's checkpoint. How it is trained (the recipe, above training and evaluation in the
pipeline) is `person.demo.teacher.recipe`.
"""
from __future__ import annotations

import copy
import io
import math
import re
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import sentencepiece as spm
import torch
import torch.nn.functional as F
from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipTokenizer

from person import files
from person.demo.synthetic.captions import DEFAULT_CHINESE_SHARE
from person.options import option

SPIECE = "spiece.model"
# write_dataset arguments: the README's demo set, which the report scores, and the validation set
# that training reports on; the teacher's own draw must use another seed.
DEMO_SET = {"n_ids": 1000, "images_per_id": 4, "seed": 0}
VALIDATION_SET = {"n_ids": 200, "images_per_id": 4, "seed": 2}
RESERVED_SEEDS = {DEMO_SET["seed"]: "demo", VALIDATION_SET["seed"]: "validation"}
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class DemoTeacherConfig:
    """Everything that decides the trained teacher; saved beside it (training_config.json)."""

    image_size: int = option(64, "square side the processor resizes (stretches) every crop to")
    patch_size: int = option(8, "vision patch side")
    vision_width: int = option(96, "vision width, also the embedding dimension (the text head projects to it)")
    vision_layers: int = option(3, "vision transformer layers")
    text_width: int = option(128, "text width")
    # 2 text layers beat 1: validation Rank-1 26.6% vs 20.5% after 2000 steps
    text_layers: int = option(2, "text transformer layers")
    head_dim: int = option(32, "attention head width")
    vocab_size: int = option(512, "SentencePiece BPE pieces, trained on the training captions")
    text_length: int = option(72, "caption tokens (Chinese, one a character, runs to ~68); right-padded, as SigLIP "
                                  "was trained")
    batch_size: int = option(64, "image-caption pairs a step")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.1, "AdamW weight decay (matrices only)")
    warmup_steps: int = option(300, "linear warm-up steps before the cosine")
    steps: int = option(14000, "training steps (the shipped teacher's: 54 minutes on 2 shared cores)")
    partial_share: float = option(0.5, "share of rows whose caption names only 1..partial_max_keys attributes")
    partial_max_keys: int = option(3, "most attributes a partial caption names")
    chinese: float = option(DEFAULT_CHINESE_SHARE, "language share of the partial captions")
    flip: bool = option(True, "horizontal flips (no caption says left or right)")
    ids: int = option(20000, "identities of the teacher's own draw (seeded by --seed)")
    images_per_id: int = option(2, "images per identity of the teacher's own draw")
    seed: int = option(1, "of the draw, the model's initialisation and the batches")

    def check(self) -> None:
        for name in ("image_size", "patch_size", "vision_width", "vision_layers", "text_width", "text_layers",
                     "head_dim", "vocab_size", "text_length", "batch_size", "steps", "ids", "images_per_id"):
            if getattr(self, name) < 1:
                raise ValueError(f"demo teacher {name}={getattr(self, name)}: must be >= 1")
        if self.image_size % self.patch_size:
            raise ValueError(f"demo teacher image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}: pick sizes the patches tile")
        for name in ("vision_width", "text_width"):
            if getattr(self, name) % self.head_dim:
                raise ValueError(f"demo teacher {name}={getattr(self, name)} is not a multiple of "
                                 f"head_dim={self.head_dim}")
        if self.batch_size < 2:
            raise ValueError(f"demo teacher batch_size={self.batch_size}: a contrastive batch needs >= 2 rows")
        if not (0.0 <= self.partial_share <= 1.0 and 0.0 <= self.chinese <= 1.0):
            raise ValueError(f"demo teacher partial_share={self.partial_share}, chinese={self.chinese}: "
                             f"both are shares between 0 and 1")
        if self.seed in RESERVED_SEEDS:
            raise ValueError(f"demo teacher seed={self.seed} draws the same people as the "
                             f"{RESERVED_SEEDS[self.seed]} set; use another seed (default 1)")
        if self.lr <= 0 or self.warmup_steps < 0 or self.partial_max_keys < 1:
            raise ValueError(f"demo teacher lr={self.lr}, warmup_steps={self.warmup_steps}, partial_max_keys="
                             f"{self.partial_max_keys}: lr > 0, warm-up >= 0, at least one key per partial caption")


def image_processor(config: DemoTeacherConfig) -> SiglipImageProcessorPil:
    """SigLIP's processor at the demo size (stretch to a square, mean/std 0.5): what load_teacher will use."""
    return SiglipImageProcessorPil(size={"height": config.image_size, "width": config.image_size})


def encode_captions(tokenizer: SiglipTokenizer, texts: list[str], length: int) -> torch.Tensor:
    """Token ids right-padded to `length`, no mask: how load_teacher feeds a SigLIP text tower."""
    return tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                     return_tensors="pt")["input_ids"]


def _canonical(text: str) -> str:
    """What SiglipTokenizer hands SentencePiece: lower case, ASCII punctuation dropped, spaces collapsed."""
    return " ".join(text.lower().translate(_NO_PUNCTUATION).split())


def train_tokenizer(captions: Sequence[str], out_dir: str | Path, config: DemoTeacherConfig) -> SiglipTokenizer:
    """A SentencePiece BPE model on `captions` (one thread: deterministic), as SiglipTokenizer, in out_dir.

    Every Chinese character is a piece of its own: otherwise pieces span whole Chinese clauses
    ("她留着乌黑长发"), tying together attributes that held-out captions combine differently. BPE, not
    unigram: unigram left even "blue" in letters here ("▁bl u e")."""
    text = [_canonical(c) for c in captions]
    cjk = sorted({ch for t in text for ch in t if _CJK.match(ch)})
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buf, user_defined_symbols=cjk,
        vocab_size=config.vocab_size, model_type="bpe", character_coverage=1.0, hard_vocab_limit=False,
        num_threads=1, minloglevel=2,
        # SigLIP's layout: <pad>=0, </s>=1 (also what the tokenizer pads with), <unk>=2, no <s>.
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SPIECE).write_bytes(buf.getvalue())
    return SiglipTokenizer(str(out_dir / SPIECE), model_max_length=config.text_length)


def build_model(config: DemoTeacherConfig, tokenizer: SiglipTokenizer) -> SiglipModel:
    """A fresh SiglipModel (seeded by config.seed, the caller's RNG untouched), logit scale/bias at log 10, -10."""
    def tower(width: int, layers: int) -> dict:
        return {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers,
                "num_attention_heads": width // config.head_dim}

    siglip = SiglipConfig(
        text_config={**tower(config.text_width, config.text_layers), "vocab_size": tokenizer.vocab_size,
                     "max_position_embeddings": config.text_length, "projection_size": config.vision_width,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={**tower(config.vision_width, config.vision_layers), "image_size": config.image_size,
                       "patch_size": config.patch_size})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SiglipModel(siglip)
    with torch.no_grad():  # transformers starts both at 0: every pair at p=0.5, a slow start
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model


def embed(model: SiglipModel, pixels: torch.Tensor | None = None,
          input_ids: torch.Tensor | None = None) -> torch.Tensor:
    """L2-normalised image (from pixels) or caption (from ids) embeddings, as Teacher.encode_* makes them."""
    out = model.get_image_features(pixel_values=pixels) if pixels is not None \
        else model.get_text_features(input_ids=input_ids)
    return F.normalize(out.pooler_output, dim=-1)


def save_teacher(model: SiglipModel, tokenizer: SiglipTokenizer, processor: SiglipImageProcessorPil,
                 config: DemoTeacherConfig, out_dir: str | Path) -> Path:
    """A Hugging Face model directory: config + float16 safetensors + processor + tokenizer + training config."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to(torch.float16).save_pretrained(out_dir)
    processor.save_pretrained(out_dir)  # preprocessor_config.json, as the google/siglip* repos ship it
    tokenizer.save_pretrained(out_dir)
    files.write_json(out_dir / "training_config.json", asdict(config))
    return out_dir

