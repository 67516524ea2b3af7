"""The record model: a dataset's normalised records (RecordSet), their split rule, and the options that load them.

`load_records` reads SYNTH-PEDES, CUHK-PEDES, ICFG-PEDES and RSTPReid into one normalised form. The file is
streamed (person.data.formats), so only the normalised records are ever held in memory (never the raw text plus
a parsed copy). Records are kept column-wise (`RecordSet`): a 4.8M-record SYNTH-PEDES costs a list of paths, a
list of caption tuples and a few numpy arrays, not 4.8M Python objects.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from person.options import option

from .formats import (FORMATS, HAS_SPLIT, PATH_KEY, RecordError, default_image_root, detect_format, find_dataset_json,
                      first_record, image_path_key, iter_json_list, quote, read_captions)
from .limits import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, ImageLimits

SPLITS = ("train", "val", "test")
EVAL_SPLIT = "test"  # what "eval" means everywhere: the file's test split or the held-out identities

# Default hold-out when the file has no split: ~5000 eval images at SYNTH-PEDES scale, ~10% of small sets.
EVAL_IMAGES_TARGET = 5000
EVAL_FRACTION = 0.10
_INT64 = (-(2 ** 63), 2 ** 63)


def split_code(split: str) -> int:
    """The int8 code of a split name as records and stores hold it; "eval" means the test split."""
    name = EVAL_SPLIT if split == "eval" else split
    if name not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS + ('eval',))}")
    return SPLITS.index(name)


@dataclass
class RecordSet:
    """Normalised records, one row per image, stored column-wise.

    `pids` are contiguous 0..K-1 (sorted by original id); `orig_ids` keeps the file's ids for reports.
    `splits` holds indexes into SPLITS. Paths are relative to `image_root`.
    """

    source: Path
    format: str
    image_root: Path
    paths: list[str]
    captions: list[tuple[str, ...]]
    prompt_captions: list[tuple[str, ...]]
    pids: np.ndarray
    orig_ids: np.ndarray
    splits: np.ndarray
    split_rule: str = "file"
    _fingerprint: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_ids(self) -> int:
        return int(self.pids.max()) + 1 if len(self.pids) else 0

    def image_path(self, i: int) -> Path:
        return self.image_root / self.paths[i]

    def split_indices(self, split: str) -> np.ndarray:
        """Row indexes of a split; "eval" is an alias of the test split / held-out identities."""
        return np.flatnonzero(self.splits == split_code(split))

    def split_counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for code, name in enumerate(SPLITS):
            rows = self.splits == code
            if rows.any():
                out[name] = {"images": int(rows.sum()), "ids": int(np.unique(self.pids[rows]).size),
                             "captions": int(sum(len(self.captions[i]) for i in np.flatnonzero(rows)))}
        return out

    def fingerprint(self) -> str:
        """sha256 of the normalised content (paths, ids, captions, splits): what a feature store is tied to."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.format.encode())
            h.update(self.orig_ids.astype("<i8").tobytes())
            h.update(self.splits.astype("<i1").tobytes())
            for path, caps, prompts in zip(self.paths, self.captions, self.prompt_captions):
                # surrogatepass: the same bytes for any valid text, and no crash on a lone surrogate
                h.update("\x1e".join((path, "\x1f".join(caps), "\x1f".join(prompts))).encode("utf-8", "surrogatepass"))
                h.update(b"\x1d")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def check_image_root(self, sample: int = 8) -> None:
        """Raise a clear error when none of the first `sample` images exist under image_root."""
        probe = [self.image_path(i) for i in range(min(sample, len(self)))]
        if probe and not any(p.is_file() for p in probe):
            raise FileNotFoundError(
                f"none of the first {len(probe)} images of {self.source} exist under {self.image_root} "
                f"(e.g. {probe[0]}); pass --image-root pointing at the folder the JSON's paths are relative to")


def load_records(path: str | Path, image_root: str | Path | None = None, format: str | None = None,
                 eval_ids: int | None = None, eval_first_records: int | None = None,
                 seed: int = 0) -> RecordSet:
    """Read a dataset JSON (or its folder) into a RecordSet.

    Split: the file's own `split` field when it has one. Otherwise whole identities are held out
    (`eval_ids` of them, default `default_eval_ids`), chosen by a permutation seeded with `seed`, so
    no identity is in both splits. `eval_first_records` instead holds out the first N records (the
    SYNTH-PEDES habit; it shares identities with training, hence only on request).
    """
    json_path = find_dataset_json(path)
    first = first_record(json_path)
    fmt = format or detect_format(json_path, first)
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}: use one of {', '.join(FORMATS)}")
    path_key, has_split = PATH_KEY[fmt], HAS_SPLIT[fmt]
    if has_split and (eval_ids is not None or eval_first_records is not None):
        raise ValueError(f"{json_path} ({fmt}) has its own split field; --eval-ids / --eval-first-records "
                         f"apply only to files without one (SYNTH-PEDES)")

    paths: list[str] = []
    captions: list[tuple[str, ...]] = []
    prompts: list[tuple[str, ...]] = []
    ids: list[int] = []
    split_codes: list[int] = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(iter_json_list(json_path)):
        where = f"{json_path} record {i}"
        if not isinstance(rec, dict):
            raise RecordError(f"{where}: is a {type(rec).__name__}, not an object")
        for key in ("id", path_key, "captions") + (("split",) if has_split else ()):
            if key not in rec:
                raise RecordError(f"{where}: missing key '{key}' (a {fmt} record has "
                                  f"id, {path_key}, captions{', split' if has_split else ''})")
        pid = rec["id"]
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise RecordError(f"{where}: 'id' must be an integer, got {quote(pid)}")
        if not _INT64[0] <= pid < _INT64[1]:
            raise RecordError(f"{where}: 'id' {quote(pid)} does not fit in 64 bits")
        rel = rec[path_key]
        if not isinstance(rel, str) or not rel.strip():
            raise RecordError(f"{where}: '{path_key}' must be a non-empty string, got {quote(rel)}")
        key = image_path_key(rel, f"{where}: '{path_key}'")
        if key in seen:
            j = seen[key]
            raise RecordError(f"{where}: duplicate '{path_key}' {quote(rel)} (also record {j}, written "
                              f"{quote(paths[j])}; both name {quote(key)}); each image must appear once")
        seen[key] = i
        captions.append(read_captions(rec, "captions", where, required=True))
        prompts.append(read_captions(rec, "prompt_caption", where, required=False))
        if has_split:
            split = rec["split"]
            if split not in SPLITS:
                raise RecordError(f"{where}: 'split' is {quote(split)}; expected one of {', '.join(SPLITS)}")
            split_codes.append(SPLITS.index(split))
        paths.append(rel)
        ids.append(pid)
    del seen

    orig_ids = np.asarray(ids, dtype=np.int64)
    del ids
    unique_ids, pids = np.unique(orig_ids, return_inverse=True)
    if has_split:
        splits, rule = np.asarray(split_codes, dtype=np.int8), "file"
    elif eval_first_records is not None:
        splits, rule = _first_records_split(len(paths), eval_first_records), f"first-{eval_first_records}-records"
    else:
        if eval_ids is None and len(unique_ids) < 2:
            raise RecordError(f"{json_path}: every record has identity {unique_ids[0]}; holding identities out "
                              f"for evaluation needs at least 2 (or a file with its own 'split' field)")
        n_eval = default_eval_ids(len(unique_ids), len(paths)) if eval_ids is None else eval_ids
        splits, rule = _identity_split(pids, len(unique_ids), n_eval, seed), f"ids-{n_eval}-seed-{seed}"
    root = Path(image_root) if image_root is not None else default_image_root(json_path, paths[0])
    return RecordSet(source=json_path, format=fmt, image_root=root, paths=paths, captions=captions,
                     prompt_captions=prompts, pids=pids.astype(np.int64), orig_ids=orig_ids, splits=splits,
                     split_rule=rule)


def default_eval_ids(num_ids: int, num_images: int) -> int:
    """Identities to hold out: about 5000 eval images on SYNTH-PEDES scale, about 10% on small sets."""
    by_images = round(EVAL_IMAGES_TARGET * num_ids / max(num_images, 1))
    return max(1, min(math.ceil(EVAL_FRACTION * num_ids), by_images))


def _identity_split(pids: np.ndarray, num_ids: int, n_eval: int, seed: int) -> np.ndarray:
    if not 1 <= n_eval < num_ids:
        raise ValueError(f"--eval-ids {n_eval}: must be between 1 and {num_ids - 1} "
                         f"(the dataset has {num_ids} identities and training needs at least one)")
    held_out = np.zeros(num_ids, dtype=bool)
    held_out[np.random.default_rng(seed).permutation(num_ids)[:n_eval]] = True
    return np.where(held_out[pids], SPLITS.index(EVAL_SPLIT), SPLITS.index("train")).astype(np.int8)


def _first_records_split(n: int, first: int) -> np.ndarray:
    if not 1 <= first < n:
        raise ValueError(f"--eval-first-records {first}: must be between 1 and {n - 1}")
    splits = np.full(n, SPLITS.index("train"), dtype=np.int8)
    splits[:first] = SPLITS.index(EVAL_SPLIT)
    return splits


@dataclass
class DatasetOptions:
    """The command-line options that pick a dataset and its split (shared by extraction and training)."""

    data: str | None = option(None, "dataset JSON, or the folder holding it")
    image_root: str | None = option(None, "folder the JSON's image paths are relative to (default: beside the "
                                          "JSON, or its imgs/)")
    dataset_format: str | None = option(None, "dataset format (default: detected)", choices=FORMATS)
    eval_ids: int | None = option(None, "identities held out for evaluation when the file has no split field",
                                  at_least=1)
    eval_first_records: int | None = option(None, "hold out the first N records instead (shares identities)",
                                            at_least=1)
    split_seed: int = option(0, "seed that picks the held-out identities", at_least=0)
    max_image_pixels: int = option(DEFAULT_MAX_IMAGE_PIXELS, "largest image decode, in pixels (after JPEG "
                                   "reduction); a bigger image is skipped as unreadable", at_least=1)
    max_image_bytes: int = option(DEFAULT_MAX_IMAGE_BYTES, "largest image file read, in bytes; a bigger one is "
                                  "skipped as unreadable", at_least=1)

    @classmethod
    def from_saved(cls, values: Mapping[str, Any]) -> DatasetOptions:
        """These options out of a larger saved dict (a checkpoint's training options); absent ones take defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def split_kwargs(self) -> dict[str, int | None]:
        return {"eval_ids": self.eval_ids, "eval_first_records": self.eval_first_records, "seed": self.split_seed}

    def image_limits(self) -> ImageLimits:
        """The caps every image read under these options obeys (`load_image`, `ImageDataset`)."""
        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)

    def load_records(self) -> RecordSet:
        if not self.data:
            raise ValueError("--data is required: the dataset JSON (or its folder)")
        return load_records(self.data, self.image_root, self.dataset_format, **self.split_kwargs())


_RULE = re.compile(r"^(?:(file)|first-(\d+)-records|ids-(\d+)-seed-(\d+))$")


def split_kwargs_of(rule: str) -> dict[str, int | None]:
    """`load_records` arguments that reproduce a split rule (`RecordSet.split_rule`)."""
    m = _RULE.match(rule)
    if not m:
        raise ValueError(f"unknown split rule {rule!r}")
    if m[1]:
        return {}
    if m[2]:
        return {"eval_first_records": int(m[2])}
    return {"eval_ids": int(m[3]), "seed": int(m[4])}
