"""Embeddings to score, from any model: a features .npz of plain arrays, or one split of a feature store.

An .npz holds image_emb [Ni, D], image_pid [Ni], caption_emb [Nc, D], caption_pid [Nc] (or caption_image [Nc],
the index of each caption's image), and optionally image_path [Ni] and caption_text [Nc] (unicode arrays) for
the lists of worst pairs. Every array is checked for its shape and its length against the others.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from person.errors import PersonError
from person.eval.evaluate import eval_split
from person.teacher.store import FIELDS, open_store

REQUIRED = ("image_emb", "image_pid", "caption_emb")
OPTIONAL = ("caption_pid", "caption_image", "image_path", "caption_text")


class FeatureFileError(PersonError, ValueError):
    """A features .npz that cannot be scored; the message names the file, the array and the fix."""


def load_features(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a features .npz, with caption_pid filled in from caption_image when absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such features file (an .npz with {', '.join(REQUIRED)}, caption_pid)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FeatureFileError(f"{path}: not a readable .npz file ({e})") from e
    with npz:
        missing = [k for k in REQUIRED if k not in npz.files]
        if "caption_pid" not in npz.files and "caption_image" not in npz.files:
            missing.append("caption_pid (or caption_image)")
        if missing:
            raise FeatureFileError(f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(npz.files)}")
        out = {}
        for key in REQUIRED + OPTIONAL:
            if key in npz.files:
                try:
                    out[key] = npz[key]
                except ValueError as e:  # object arrays need pickle, which we never load
                    raise FeatureFileError(f"{path}: array {key} is stored as Python objects; save strings "
                                           "as a unicode array, e.g. np.array(list_of_str)") from e
    _check_lengths(path, out)
    if "caption_pid" not in out:
        ci = out["caption_image"]
        if not np.issubdtype(ci.dtype, np.integer) or ci.ndim != 1 or len(ci) == 0 \
                or ci.min() < 0 or ci.max() >= len(out["image_pid"]):
            last = len(out["image_pid"]) - 1
            raise FeatureFileError(f"{path}: caption_image must hold image row indexes 0..{last}, one per caption")
        out["caption_pid"] = out["image_pid"][ci]
    return out


def _check_lengths(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Every array's shape, and its length against the embeddings it labels, named when it is off."""
    for key in ("image_emb", "caption_emb"):
        if arrays[key].ndim != 2 or not np.issubdtype(arrays[key].dtype, np.floating):
            raise FeatureFileError(f"{path}: {key} must be a float array [N, D], got {arrays[key].dtype} "
                                   f"{arrays[key].shape}")
    if arrays["image_emb"].shape[1] != arrays["caption_emb"].shape[1]:
        raise FeatureFileError(f"{path}: image_emb has dimension {arrays['image_emb'].shape[1]} but caption_emb "
                               f"{arrays['caption_emb'].shape[1]}: both must come from one embedding space")
    rows = {"image": len(arrays["image_emb"]), "caption": len(arrays["caption_emb"])}
    for key in ("image_pid", "image_path", "caption_pid", "caption_image", "caption_text"):
        if key in arrays:
            a, n = arrays[key], rows[key.split("_")[0]]
            if a.ndim != 1 or len(a) != n:
                raise FeatureFileError(f"{path}: {key} has shape {a.shape}, but {key.split('_')[0]}_emb has {n} rows: "
                                       f"give one value per row")


def store_features(path: str | Path, split: str = "eval", prompt_captions: bool = False) -> dict[str, np.ndarray]:
    """The arrays `load_features` gives, for one split of a feature store."""
    fields = (FIELDS.index("captions"),) + ((FIELDS.index("prompt_caption"),) if prompt_captions else ())
    with open_store(path, in_memory=False) as store:  # a split's rows, not the whole store in RAM
        data = eval_split(store, split, fields)
        return {"image_emb": store.images(data.rows), "image_pid": data.pids,
                "caption_emb": store.captions(data.caption_rows), "caption_pid": data.caption_pids,
                "caption_image": data.caption_image, "image_path": np.array(data.paths),
                "caption_text": np.array(data.caption_texts)}
