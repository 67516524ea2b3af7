"""The demo teacher's training data: its own draw as the processor's pixels, and batches of partial captions.

Held-out identities. The teacher trains on its own draw (another seed), never on the demo set it is
scored on. Different seeds draw different people, but an attribute combination can recur across
draws (the wardrobes are skewed), and captions name only attributes. So every training identity whose
attribute combination equals an identity of a reserved set (the whole demo set, and the validation
set) is dropped: no caption the teacher is scored on describes a combination it trained on.

Partial captions: a share of the rows name only 1-3 attributes, and every image that has all the attributes a
caption names is a positive of it (`positives`, the label matrix of person.demo.teacher.loss).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import SiglipImageProcessorPil, SiglipTokenizer

from person.demo.synthetic.attributes import attribute_key
from person.demo.synthetic.captions import keyed_caption, mentionable, pick_language
from person.demo.synthetic.oracle import attribute_codes, key_mask, read_truth
from person.demo.synthetic.writer import TRUTH_NAME
from person.demo.teacher.model import DemoTeacherConfig, encode_captions


@dataclass
class TrainingSet:
    """Training images as the processor's pixels, with what their captions are checked against."""

    pixels: torch.Tensor            # [N, 3, S, S] float16, the processor's output
    identity: np.ndarray            # [N] index into attrs
    attrs: list[dict]               # per identity: its attributes
    codes: np.ndarray               # [identities, keys] attribute codes (person.demo.synthetic.oracle)
    visible: list[dict]             # per image
    captions: list[list[tuple[str, list[str]]]]  # per image: (caption, keys it names)
    dropped_identities: int = 0     # identities left out because a reserved set has their combination

    def __len__(self) -> int:
        return len(self.identity)


def reserved_combinations(truth_paths: Sequence[str | Path]) -> set[tuple]:
    """Attribute combinations of every identity of the given demo_truth.json files."""
    return {attribute_key(a) for path in truth_paths for a in read_truth(path)["identities"]}


def preprocess(processor: SiglipImageProcessorPil, paths: Sequence[Path], batch: int = 256) -> torch.Tensor:
    """The processor's pixels of every image, float16 (exact to ~1e-3; the model trains in float32)."""
    out = []
    for i in range(0, len(paths), batch):
        images = []
        for p in paths[i:i + batch]:
            with Image.open(p) as img:
                images.append(img.convert("RGB"))
        out.append(processor(images=images, return_tensors="pt")["pixel_values"].to(torch.float16))
    return torch.cat(out) if out else torch.empty(0)


def load_training_set(dataset_json: str | Path, processor: SiglipImageProcessorPil,
                      reserved: set[tuple] = frozenset()) -> TrainingSet:
    """Every image of a drawn set (its demo_truth.json beside it) whose identity's attribute combination
    is not `reserved`."""
    dataset_json = Path(dataset_json)
    truth = read_truth(dataset_json.parent / TRUTH_NAME)
    idents = truth["identities"]
    kept = [i for i, a in enumerate(idents) if attribute_key(a) not in reserved]
    new_index = {old: new for new, old in enumerate(kept)}
    images = [im for im in truth["images"] if im["identity"] in new_index]
    if not images:
        raise ValueError(f"{dataset_json}: no training image left once reserved attribute combinations are "
                         f"dropped; draw more identities")
    root = dataset_json.parent / truth["image_root"]
    attrs = [idents[i] for i in kept]
    return TrainingSet(
        pixels=preprocess(processor, [root / im["path"] for im in images]),
        identity=np.array([new_index[im["identity"]] for im in images], dtype=np.int64),
        attrs=attrs, codes=attribute_codes(attrs), visible=[im["visible"] for im in images],
        captions=[list(zip(im["captions"], im["caption_keys"])) for im in images],
        dropped_identities=len(idents) - len(kept))


def partial_caption(attrs: dict, visible: dict, rng: np.random.Generator, max_keys: int,
                    chinese: float) -> tuple[str, list[str]]:
    """A caption naming 1..max_keys of the attributes the image shows, and the keys it names."""
    shown = mentionable(attrs, visible)
    k = min(len(shown), int(rng.integers(1, max_keys + 1)))
    subset = [shown[i] for i in rng.permutation(len(shown))[:k]]
    return keyed_caption(attrs, visible, rng, pick_language(rng, chinese), subset=subset)


def positives(caption_codes: np.ndarray, named: np.ndarray, image_codes: np.ndarray) -> np.ndarray:
    """[captions, images] bool: an image is a positive of a caption exactly when it has every attribute
    the caption names (`caption_codes` are the codes of the image the caption describes)."""
    return ((caption_codes[:, None, :] == image_codes[None, :, :]) | ~named[:, None, :]).all(axis=2)


@dataclass
class Batch:
    pixels: torch.Tensor      # [B, 3, S, S] float32
    input_ids: torch.Tensor   # [B, L]
    labels: torch.Tensor      # [B captions, B images] bool


def make_batch(data: TrainingSet, rows: np.ndarray, tokenizer: SiglipTokenizer, config: DemoTeacherConfig,
               rng: np.random.Generator) -> Batch:
    """Images `rows`, each with one caption: a partial one (share config.partial_share) or one of its own."""
    texts, named = [], []
    for r in rows:
        if rng.random() < config.partial_share:
            text, keys = partial_caption(data.attrs[data.identity[r]], data.visible[r], rng,
                                         config.partial_max_keys, config.chinese)
        else:
            text, keys = data.captions[r][int(rng.integers(len(data.captions[r])))]
        texts.append(text)
        named.append(keys)
    codes = data.codes[data.identity[rows]]
    labels = positives(codes, key_mask(named), codes)
    pixels = data.pixels[torch.from_numpy(rows)].float()
    if config.flip:
        flip = torch.from_numpy(rng.random(len(rows)) < 0.5)
        pixels[flip] = pixels[flip].flip(-1)
    return Batch(pixels, encode_captions(tokenizer, texts, config.text_length), torch.from_numpy(labels))
