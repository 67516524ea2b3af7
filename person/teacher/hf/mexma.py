"""MEXMA-SigLIP2 (`visheratin/mexma-siglip2`) rebuilt from transformers' own towers, no remote code run.

What the checkpoint is. Nothing could be downloaded here, so this was inferred from public code that
uses the model (found by searching for `visheratin/mexma-siglip2` / `encode_texts`) and from the
installed transformers:
- Users load it with `AutoModel.from_pretrained(id, trust_remote_code=True)`, the tokenizer with
  `AutoTokenizer` and the images with `AutoImageProcessor` from the same repo, call
  `model.encode_images(pixel_values, normalize=True)` and
  `model.encode_texts(input_ids, attention_mask, normalize=True)`, and tokenise with
  `padding="max_length", max_length=128, truncation=True`; `forward(image_inputs, input_ids,
  attention_mask)` returns image_features, text_features, logit_scale and logit_bias.
- The remote class is `MexmaSigLIP(PreTrainedModel)`. At construction it fetches the configs of
  `facebook/MEXMA` (an XLM-RoBERTa-large encoder whose sentence vector is the CLS token; its pooler
  was never trained) and `google/siglip2-so400m-patch16-512` (users are told to keep both repos
  locally). It holds `text_model` (XLMRobertaModel without pooler), `text_projector` (Linear 1024 ->
  1152, no bias), `vision_model` (the SigLIP vision transformer, pooled by its attention head),
  `logit_scale` and `logit_bias`.
- That remote code cannot run on transformers 5: it takes `SiglipVisionModel(config).vision_model`,
  an attribute transformers 5 removed (the vision model is now flat), and it never calls
  `post_init()`, which transformers 5 needs (`all_tied_weights_keys` missing at load time); both
  failures are reported by people who tried. The checkpoint's weight names do not depend on that
  code, so this module rebuilds the same modules with the same names and loads the weights
  strictly (person.teacher.hf.weights): a missing weight is an error, never a random stand-in.

Tower configs come from config.json's `text_config` / `vision_config` when present (a self-contained
export; the test mimic), otherwise from the two repos above in the local HF cache (only their
config.json is needed, not their weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (PretrainedConfig, PreTrainedModel, SiglipVisionConfig, SiglipVisionModel,
                          XLMRobertaConfig, XLMRobertaModel)

from person.teacher.hf.source import cached_hub_file, read_json
from person.teacher.hf.weights import load_strict

TEXT_TOWER_ID = "facebook/MEXMA"
VISION_TOWER_ID = "google/siglip2-so400m-patch16-512"
TEXT_MAX_LENGTH = 128  # what the model's users tokenise to


class MexmaSiglip2Config(PretrainedConfig):
    model_type = "person-mexma-siglip2"
    sub_configs = {"text_config": XLMRobertaConfig, "vision_config": SiglipVisionConfig}

    def __init__(self, text_config: dict | XLMRobertaConfig | None = None,
                 vision_config: dict | SiglipVisionConfig | None = None, **kwargs: Any) -> None:
        self.text_config = XLMRobertaConfig(**text_config) if isinstance(text_config, dict) else text_config
        self.vision_config = (SiglipVisionConfig(**vision_config) if isinstance(vision_config, dict)
                              else vision_config)
        super().__init__(**kwargs)


class MexmaSiglip2(PreTrainedModel):
    """XLM-R text tower (CLS -> projector) + SigLIP vision tower (attention-pool head), one space."""

    config_class = MexmaSiglip2Config
    base_model_prefix = "mexma"  # matches no checkpoint key, so weight names are used as they are
    _supports_sdpa = True

    def __init__(self, config: MexmaSiglip2Config) -> None:
        super().__init__(config)
        text, vision = config.text_config, config.vision_config
        self.text_model = XLMRobertaModel(text, add_pooling_layer=False)
        self.text_projector = nn.Linear(text.hidden_size, vision.hidden_size, bias=False)
        self.vision_model = SiglipVisionModel(vision)
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.logit_bias = nn.Parameter(torch.zeros([]))
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values=pixel_values).pooler_output

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_projector(hidden[:, 0])

    # The remote code's names, so code written against the real model reads the same.
    def encode_images(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.get_image_features(pixel_values)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     normalize: bool = False) -> torch.Tensor:
        features = self.get_text_features(input_ids, attention_mask)
        return nn.functional.normalize(features, dim=-1) if normalize else features


def tower_configs(model_dir: Path, config: dict[str, Any], cache_dir: str | Path | None) -> MexmaSiglip2Config:
    """The two tower configs: inline in config.json, or config.json of the repos the remote code names."""
    text, vision = config.get("text_config"), config.get("vision_config")
    needed_by = f"{model_dir} (MEXMA-SigLIP2 builds its towers from other repos' configs)"
    if text is None:
        text = read_json(cached_hub_file(TEXT_TOWER_ID, "config.json", cache_dir, needed_by))
    if vision is None:
        vision = read_json(cached_hub_file(VISION_TOWER_ID, "config.json", cache_dir, needed_by))
        vision = vision.get("vision_config", vision)  # a full SigLIP config holds the vision one inside
    return MexmaSiglip2Config(text_config=text, vision_config=vision)


def load_mexma(model_dir: Path, config: dict[str, Any], dtype: torch.dtype,
               cache_dir: str | Path | None) -> MexmaSiglip2:
    return load_strict(MexmaSiglip2, model_dir, "MEXMA-SigLIP2", dtype,
                       config=tower_configs(model_dir, config, cache_dir))
