"""The attribute oracle: how well captions alone can find a synthetic pedestrian, given perfect eyes.

The generator knows every image's attributes and which attributes each caption names
(`demo_truth.json`, `caption_keys`). The oracle scores a caption against an image by the share of the
caption's named attributes that the image's identity has. Every image of the caption's own identity
scores 1, and so does every image of another identity that agrees on all named attributes: those are
the captions' ambiguity, which no model can resolve. Run through person.eval.metrics, the oracle's EER and
Rank-1 are the ceiling a model reaches when it sees every attribute perfectly and reads nothing else.

It is a ceiling on reading named attributes, not on every signal: a model may also learn that an
unnamed bag was probably absent, and it sees occluded parts worse than the oracle, which reads the
identity's attributes even where the image hides them. Ties are ranked as person.eval.metrics ranks them
(gallery order), so its Rank-1 is what a random tie-break gives on average.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from person.errors import PersonError

from .attributes import ATTRIBUTE_KEYS


class TruthError(PersonError, ValueError):
    """A demo_truth.json that cannot drive the oracle; the message names the file and the fix."""


def read_truth(path: str | Path) -> dict:
    """A demo_truth.json that has `caption_keys` (version 2 and later)."""
    path = Path(path)
    if not path.is_file():
        raise TruthError(f"{path}: not found; the oracle needs the ground truth that tools/make_demo_data.py "
                         f"writes beside a drawn set's JSON")
    truth = json.loads(path.read_text(encoding="utf-8"))
    images = truth.get("images") or []
    if not images or "caption_keys" not in images[0]:
        raise TruthError(f"{path}: no per-caption `caption_keys` (version {truth.get('version')}); redraw the set "
                         f"with tools/make_demo_data.py, which records which attributes each caption names")
    return truth


def attribute_codes(attrs: Sequence[dict]) -> np.ndarray:
    """[N, len(ATTRIBUTE_KEYS)] int codes, equal exactly where the values are equal; absent (None) is -1."""
    vocab: dict[str, dict] = {k: {} for k in ATTRIBUTE_KEYS}
    out = np.full((len(attrs), len(ATTRIBUTE_KEYS)), -1, dtype=np.int16)
    for i, a in enumerate(attrs):
        for j, key in enumerate(ATTRIBUTE_KEYS):
            if a.get(key) is not None:
                out[i, j] = vocab[key].setdefault(a[key], len(vocab[key]))
    return out


def key_mask(caption_keys: Sequence[Sequence[str]]) -> np.ndarray:
    """[N, len(ATTRIBUTE_KEYS)] bool: which attributes each caption names."""
    unknown = sorted({k for keys in caption_keys for k in keys} - set(ATTRIBUTE_KEYS))
    if unknown:
        raise TruthError(f"caption keys {unknown} are not attributes; use keys of ATTRIBUTE_KEYS")
    index = {k: j for j, k in enumerate(ATTRIBUTE_KEYS)}
    out = np.zeros((len(caption_keys), len(ATTRIBUTE_KEYS)), dtype=bool)
    for i, keys in enumerate(caption_keys):
        out[i, [index[k] for k in keys]] = True
    return out


def match_scores(caption_codes: np.ndarray, named: np.ndarray, image_codes: np.ndarray) -> np.ndarray:
    """[Nc, Ni] float32: the share of each caption's named attributes the image has (1 when it names none).

    `caption_codes` [Nc, K] are the attributes of the image each caption describes, `named` [Nc, K] which
    of them it names, `image_codes` [Ni, K] the gallery's (same coding, attribute_codes)."""
    if caption_codes.shape != named.shape or caption_codes.shape[1] != image_codes.shape[1]:
        raise ValueError(f"shapes differ: caption codes {caption_codes.shape}, named {named.shape}, "
                         f"image codes {image_codes.shape}; all need one column per attribute key")
    agree = (caption_codes[:, None, :] == image_codes[None, :, :]) & named[:, None, :]
    n_named = named.sum(axis=1, keepdims=True)
    return np.where(n_named > 0, agree.sum(axis=2) / np.maximum(n_named, 1), 1.0).astype(np.float32)


def oracle_scores(truth: dict, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The oracle's scores [captions, images] of the images `rows` (indexes into truth["images"], i.e. dataset
    records) and all their captions in record order (the queries and gallery a model is scored on), with
    the images' and captions' identities and how many attributes each caption names."""
    images = [truth["images"][int(r)] for r in rows]
    codes = attribute_codes([im["attributes"] for im in images])
    image_pid = np.array([im["identity"] for im in images], dtype=np.int64)
    cap_image = np.array([i for i, im in enumerate(images) for _ in im["captions"]], dtype=np.int64)
    named = key_mask([keys for im in images for keys in im["caption_keys"]])
    return match_scores(codes[cap_image], named, codes), image_pid, image_pid[cap_image], named.sum(axis=1)

