"""Tiny local teachers of every supported kind, saved the way a real checkpoint is.

Each builder writes a complete Hugging Face model directory (config, safetensors weights, image
processor, tokenizer) into `path` and returns it, so tests load it through exactly the code a
user's real checkpoint takes. Weights come from a fixed seed and the tokenizers are trained here
on a few dozen captions, so a build is deterministic, offline and takes well under a second.

- `build_tiny_siglip`: `SiglipModel` (model_type "siglip", the FixRes SigLIP / SigLIP2 layout) with a
  SentencePiece unigram `SiglipTokenizer` (spiece.model), text length 64.
- `build_tiny_siglip2_naflex`: `Siglip2Model` (model_type "siglip2", NaFlex patches) with a Gemma-style
  byte-fallback BPE tokenizer saved as `GemmaTokenizer`, as the google/siglip2-*-naflex repos do.
- `build_tiny_mexma_siglip2`: a custom-code model that mimics visheratin/mexma-siglip2 (see the
  teacher package's mexma module for what was inferred): XLM-R text tower + SigLIP vision tower,
  `encode_images` / `encode_texts`, XLM-R (unigram) tokenizer, SigLIP image processor.
- `build_tiny_clip`: `CLIPModel` with a byte-level BPE `CLIPTokenizer` ('</w>' word ends, as CLIP's
  vocab.json + merges.txt; transformers 5 saves it as tokenizer.json).
"""
from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from tokenizers import pre_tokenizers

# English and Chinese person captions: the tokenizers' training text (so Chinese gets real pieces).
CAPTIONS = [
    "a man in a red jacket and blue jeans",
    "a woman wearing a white dress and black shoes",
    "the person carries a black backpack on the back",
    "a young man with short hair in a grey t-shirt",
    "she has long black hair and holds a phone",
    "he wears dark trousers and white sneakers",
    "a child in a yellow shirt walking with an adult",
    "a pedestrian with a green umbrella",
    "an old woman with a brown handbag",
    "a man riding a bicycle, wearing a helmet",
    "the woman is wearing a pink coat and a long skirt",
    "a tall man in a black suit with a tie",
    "a girl with a ponytail in a blue school uniform",
    "a person in an orange vest carrying a bag",
    "a man wearing glasses and a striped shirt",
    "a woman in a beige trench coat and boots",
    "一个穿红色外套和蓝色牛仔裤的男人",
    "一个穿白色连衣裙和黑色鞋子的女人",
    "这个人背着一个黑色的背包",
    "一个短发的年轻男子穿着灰色T恤",
    "她留着黑色长发，手里拿着手机",
    "他穿着深色裤子和白色运动鞋",
    "一个穿黄色衬衫的孩子",
    "一个拿着绿色雨伞的行人",
    "一位提着棕色手提包的老太太",
    "一个骑自行车戴头盔的男人",
    "穿粉色大衣和长裙的女人",
    "穿黑色西装打领带的高个子男人",
    "扎马尾穿蓝色校服的女孩",
    "穿橙色背心拿着包的人",
    "戴眼镜穿条纹衬衫的男人",
    "穿米色风衣和靴子的女人",
]

SEED = 0
_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def _seeded_model(cls, config, seed: int = SEED):
    """Build `cls(config)` from a fixed seed without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config).eval()


def _train_sentencepiece(vocab_size: int, **specials) -> bytes:
    """A unigram SentencePiece model trained on CAPTIONS (single thread, so deterministic)."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2, **specials)
    return buf.getvalue()


def _learn_bpe(words: list[list[str]], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE: repeatedly merge the most frequent adjacent pair, ties broken by the pair itself.

    Written out here because the `tokenizers` trainer breaks ties in hash order, so its vocabulary
    changes from run to run; this one is the same on every build.
    """
    counts = Counter(tuple(w) for w in words)
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for word, n in counts.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged: Counter = Counter()
        for word, n in counts.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        counts = merged
    return merges


def _bpe_vocab(head: list[str], symbols: list[list[str]], merges: list[tuple[str, str]]) -> dict[str, int]:
    """head tokens, then every base symbol seen, then each merge's product, in that order."""
    tokens = list(head)
    for token in sorted({c for w in symbols for c in w}) + [a + b for a, b in merges]:
        if token not in tokens:
            tokens.append(token)
    return {t: i for i, t in enumerate(tokens)}


def build_tiny_siglip(path: str | Path, seed: int = SEED) -> Path:
    """SiglipModel + SiglipTokenizer (SentencePiece) + SiglipImageProcessor, 32x32 images, dim 32."""
    from transformers import (SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor,
                              SiglipTokenizer)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # SigLIP's own layout: <pad>=0, </s>=1 (also used as pad by the tokenizer), <unk>=2.
    spiece = path / "spiece.model"
    spiece.write_bytes(_train_sentencepiece(
        160, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>"))
    tokenizer = SiglipTokenizer(str(spiece), model_max_length=64)
    config = SiglipConfig(
        text_config={**_TOWER, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 64,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={**_TOWER, "image_size": 32, "patch_size": 8})
    _seeded_model(SiglipModel, config, seed).save_pretrained(path)
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def _gemma_style_tokenizer(padding_side: str = "right"):
    """Byte-fallback BPE over '▁'-joined text (Gemma's scheme), wrapped as GemmaTokenizer."""
    from transformers import GemmaTokenizer
    head = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{i:02X}>" for i in range(256)]
    # Gemma has no pre-tokeniser; merges are learned within '▁word' chunks so none spans two words.
    chunks = [list(chunk) for text in CAPTIONS for chunk in re.findall(r"▁?[^▁]+", text.replace(" ", "▁"))]
    merges = _learn_bpe(chunks, 200)
    return GemmaTokenizer(vocab=_bpe_vocab(head, chunks, merges), merges=merges, model_max_length=64,
                          padding_side=padding_side)


def build_tiny_siglip2_naflex(path: str | Path, seed: int = SEED, padding_side: str = "right") -> Path:
    """Siglip2Model (NaFlex) + Gemma-style BPE tokenizer + Siglip2ImageProcessor, patch 8, <=16 patches.

    `padding_side` is what the saved tokenizer declares; tests use "left" to check the loader keeps
    SigLIP's right padding (the model pools the last position).
    """
    from transformers import Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model, Siglip2Processor
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _gemma_style_tokenizer(padding_side)
    config = Siglip2Config(
        text_config={**_TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 64,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={**_TOWER, "num_patches": 16, "patch_size": 8})
    _seeded_model(Siglip2Model, config, seed).save_pretrained(path)
    image_processor = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16)
    Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


# The remote code of the MEXMA-SigLIP2 mimic: the real repo's code as far as it could be inferred
# (person/teacher/hf/mexma.py says from where): MexmaSigLIP(PreTrainedModel) with text_model (XLM-R,
# no pooler, CLS token), text_projector (no bias) into the vision width, vision_model (SigLIP vision
# transformer pooled by its attention head), logit_scale / logit_bias, encode_images(pixel_values,
# normalize) and encode_texts(input_ids, attention_mask, normalize). Deliberate differences: the
# real code fetches its tower configs by hub id (facebook/MEXMA, google/siglip2-so400m-patch16-512)
# where the mimic keeps tiny ones in config.json; and the mimic runs on transformers 5 (it uses
# `SiglipVisionModel(...)` itself, not its removed `.vision_model`, and calls post_init()) so tests
# can run it by hand, via AutoModel + trust_remote_code, as the reference the loader must match.
_MEXMA_CONFIGURATION = '''\
from transformers import PretrainedConfig, SiglipVisionConfig, XLMRobertaConfig


class MexmaSigLIPConfig(PretrainedConfig):
    model_type = "mexma-siglip"
    sub_configs = {"text_config": XLMRobertaConfig, "vision_config": SiglipVisionConfig}

    def __init__(self, optimized=False, text_config=None, vision_config=None, **kwargs):
        self.optimized = optimized
        self.text_config = XLMRobertaConfig(**text_config) if isinstance(text_config, dict) else text_config
        self.vision_config = (SiglipVisionConfig(**vision_config) if isinstance(vision_config, dict)
                              else vision_config)
        super().__init__(**kwargs)
'''

_MEXMA_MODELING = '''\
import math

import torch
from torch import nn
from transformers import PreTrainedModel, SiglipVisionModel, XLMRobertaModel

from .configuration_mexma_siglip import MexmaSigLIPConfig


class MexmaSigLIP(PreTrainedModel):
    config_class = MexmaSigLIPConfig

    def __init__(self, config):
        super().__init__(config)
        self.config = config
        text_config, vision_config = config.text_config, config.vision_config
        self.text_model = XLMRobertaModel(text_config, add_pooling_layer=False)
        self.vision_model = SiglipVisionModel(vision_config)
        self.text_projector = nn.Linear(text_config.hidden_size, vision_config.hidden_size, bias=False)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.logit_bias = nn.Parameter(torch.ones([]) * -10)
        self.post_init()

    def forward(self, image_inputs, input_ids, attention_mask, normalize=False):
        text_features = self.encode_texts(input_ids, attention_mask, normalize)
        image_features = self.encode_images(image_inputs, normalize)
        return {"image_features": image_features, "text_features": text_features,
                "logit_scale": self.logit_scale, "logit_bias": self.logit_bias}

    def encode_images(self, pixel_values, normalize=False):
        features = self.vision_model(pixel_values).pooler_output
        if normalize:
            features = features / features.norm(p=2, dim=-1, keepdim=True)
        return features

    def encode_texts(self, input_ids, attention_mask, normalize=False):
        features = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        features = self.text_projector(features)
        if normalize:
            features = features / features.norm(p=2, dim=-1, keepdim=True)
        return features
'''


def _xlmr_style_tokenizer():
    """XLM-R layout (<s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask>) over a unigram SentencePiece vocabulary,
    with SentencePiece's NFKC normaliser (so full-width punctuation maps to the trained pieces)."""
    from sentencepiece import sentencepiece_model_pb2
    from transformers import XLMRobertaTokenizer
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(_train_sentencepiece(150, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1))
    pieces = [(p.piece, p.score) for p in proto.pieces if p.type == p.NORMAL]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + pieces + [("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=vocab, model_max_length=512,
                               _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap)


def build_tiny_mexma_siglip2(path: str | Path, seed: int = SEED) -> Path:
    """Custom-code MexmaSigLIP mimic: XLM-R text tower (CLS -> projector), SigLIP vision, dim 32."""
    from transformers import SiglipImageProcessorPil
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "configuration_mexma_siglip.py").write_text(_MEXMA_CONFIGURATION)
    (path / "modeling_mexma_siglip.py").write_text(_MEXMA_MODELING)
    tokenizer = _xlmr_style_tokenizer()
    tokenizer.save_pretrained(path)
    config_json = {
        "architectures": ["MexmaSigLIP"],
        "auto_map": {"AutoConfig": "configuration_mexma_siglip.MexmaSigLIPConfig",
                     "AutoModel": "modeling_mexma_siglip.MexmaSigLIP"},
        "model_type": "mexma-siglip",
        "optimized": False,
        # XLM-R positions start after the padding index, so 130 positions hold 128 tokens.
        "text_config": {**_TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 130,
                        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": 0, "eos_token_id": 2,
                        "type_vocab_size": 1, "layer_norm_eps": 1e-5},
        "vision_config": {**_TOWER, "image_size": 32, "patch_size": 8},
    }
    (path / "config.json").write_text(json.dumps(config_json, indent=2))
    # Instantiate through the dynamic-module machinery, as AutoModel would, then save the weights.
    model_cls = get_class_from_dynamic_module("modeling_mexma_siglip.MexmaSigLIP", str(path), local_files_only=True)
    config_cls = get_class_from_dynamic_module("configuration_mexma_siglip.MexmaSigLIPConfig", str(path),
                                               local_files_only=True)
    config = config_cls.from_pretrained(path)
    model = _seeded_model(model_cls, config, seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def _clip_tokenizer():
    """Byte-level BPE with CLIP's '</w>' word ends, learned here, wrapped as CLIPTokenizer."""
    from transformers import CLIPTokenizer
    backend = CLIPTokenizer().backend_tokenizer  # CLIP's normaliser and pre-tokeniser (lowercase, bytes)
    words = [piece for text in CAPTIONS
             for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))]
    symbols = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges = _learn_bpe(symbols, 300)
    # Every byte, alone and as a word end, as in CLIP's own vocabulary: no text maps to <unk>.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    head = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [ch + "</w>" for ch in alphabet]
    return CLIPTokenizer(vocab=_bpe_vocab(head, symbols, merges), merges=merges, model_max_length=77)


def build_tiny_clip(path: str | Path, seed: int = SEED) -> Path:
    """CLIPModel + byte-level BPE CLIPTokenizer + CLIPImageProcessor (shortest edge 32, crop 32), dim 24."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _clip_tokenizer()
    config = CLIPConfig(
        text_config={**_TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**_TOWER, "image_size": 32, "patch_size": 8},
        projection_dim=24)
    _seeded_model(CLIPModel, config, seed).save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


BUILDERS = {
    "siglip": build_tiny_siglip,
    "siglip2-naflex": build_tiny_siglip2_naflex,
    "mexma-siglip2": build_tiny_mexma_siglip2,
    "clip": build_tiny_clip,
}
