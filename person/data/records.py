"""Dataset records: read SYNTH-PEDES, CUHK-PEDES, ICFG-PEDES and RSTPReid into one normalised form.

Every format is one JSON list of records (see FORMATS.md). The file is streamed with ijson, so only
the normalised records are ever held in memory (never the raw text plus a parsed copy). Records are
kept column-wise (`RecordSet`): a 4.8M-record SYNTH-PEDES costs a list of paths, a list of caption
tuples and a few numpy arrays, not 4.8M Python objects.
"""
from __future__ import annotations

import hashlib
import math
import posixpath
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

import ijson
import numpy as np

from person.errors import PersonError
from person.options import option

from .limits import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, ImageLimits

SPLITS = ("train", "val", "test")
EVAL_SPLIT = "test"  # what "eval" means everywhere: the file's test split or the held-out identities

FORMATS = ("synthpedes", "cuhk-pedes", "icfg-pedes", "rstpreid")
# File names each format is published under (FORMATS.md: some READMEs spell them differently).
FORMAT_FILES = {
    "synthpedes": ("synthpedes-dataset.json", "synthpedes_dataset.json"),
    "cuhk-pedes": ("reid_raw.json",),
    "icfg-pedes": ("ICFG-PEDES.json", "ICFG_PEDES.json"),
    "rstpreid": ("data_captions.json",),
}
PATH_KEY = {"synthpedes": "file_path", "cuhk-pedes": "file_path", "icfg-pedes": "file_path",
            "rstpreid": "img_path"}
HAS_SPLIT = {"synthpedes": False, "cuhk-pedes": True, "icfg-pedes": True, "rstpreid": True}

# Default hold-out when the file has no split: ~5000 eval images at SYNTH-PEDES scale, ~10% of small sets.
EVAL_IMAGES_TARGET = 5000
EVAL_FRACTION = 0.10

# Deeper than any dataset nests (a record is an object of strings and lists: 3-5 levels). ijson keeps a prefix
# string per open level, so its memory grows as depth squared: 200 KB of '[' would take ~20 GB.
MAX_NESTING = 16
_BOM = b"\xef\xbb\xbf"
_INT64 = (-(2 ** 63), 2 ** 63)
_shown = reprlib.Repr()  # values quoted in messages, cut short: a hostile record may hold megabytes
_shown.maxstring, _shown.maxother, _shown.maxlong = 200, 200, 40


class RecordError(PersonError, ValueError):
    """A dataset file or one of its records is malformed; the message names the file, record and field."""


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


def find_dataset_json(path: str | Path) -> Path:
    """A dataset given as its JSON file, or as the folder holding one of the known file names."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for names in FORMAT_FILES.values():
            for name in names:
                if (p / name).is_file():
                    return p / name
        known = ", ".join(n for names in FORMAT_FILES.values() for n in names)
        raise FileNotFoundError(f"no dataset JSON in {p}: expected one of {known}")
    if p.exists():  # a FIFO or a device: reading one could block or never end
        raise RecordError(f"dataset {p} is not a regular file: pass the dataset JSON (e.g. reid_raw.json) or "
                          f"its folder")
    raise FileNotFoundError(f"dataset {p} does not exist: pass the dataset JSON (e.g. reid_raw.json) or its folder")


def detect_format(json_path: Path, first: dict) -> str:
    """Format from the first record's keys, with the file name to tell CUHK-PEDES from ICFG-PEDES."""
    if "img_path" in first:
        return "rstpreid"
    if "file_path" in first and "split" not in first:
        return "synthpedes"
    if "file_path" in first:
        return "icfg-pedes" if json_path.name in FORMAT_FILES["icfg-pedes"] else "cuhk-pedes"
    raise RecordError(f"{json_path}: record 0 has neither 'file_path' nor 'img_path'; cannot tell the dataset "
                      f"format (keys: {_shown.repr(sorted(first))}); pass --dataset-format one of {', '.join(FORMATS)}")


def default_image_root(json_path: Path, first_path: str) -> Path:
    """Next to the JSON or in its imgs/ folder (FORMATS.md), whichever holds the first image."""
    here, imgs = json_path.parent, json_path.parent / "imgs"
    if _exists(imgs / first_path):
        return imgs
    if _exists(here / first_path):
        return here
    return imgs if imgs.is_dir() else here


def _exists(path: Path) -> bool:
    """exists(), with a name too long or a folder we may not read counted as absent, not an error."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _iter_json_list(json_path: Path):
    with open(json_path, "rb") as f:
        head = f.read(64 * 1024)
        start = len(_BOM) if head.startswith(_BOM) else 0  # Windows editors write one; it is not JSON
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[start:start + 2]:
            raise RecordError(f"{json_path}: the file is UTF-16 or UTF-32 encoded; save it as UTF-8")
        if not head[start:].lstrip().startswith(b"["):
            raise RecordError(f"{json_path}: the top level must be a JSON list of records")
        f.seek(start)
        try:
            yield from ijson.items(_NestingGuard(f, json_path), "item", use_float=True)
        except RecordError:  # the nesting guard's
            raise
        except UnicodeDecodeError as e:  # ijson's C parser's answer to an escaped lone surrogate such as "\udc80"
            raise RecordError(f"{json_path}: a string escape is not a Unicode character ({e}); fix or drop "
                              f"that \\u escape") from e
        except (ijson.JSONError, ValueError) as e:  # ValueError: the pure-Python parser's json.JSONDecodeError
            raise RecordError(f"{json_path}: not valid JSON ({e})") from e


class _NestingGuard:
    """The dataset file as ijson reads it, refusing JSON nested deeper than MAX_NESTING before ijson parses it.

    Exact, and ~5% of the load's time: escaped backslashes and quotes are dropped, every byte but quotes and
    brackets deleted (C-speed bytes operations), then numpy keeps the brackets outside strings and sums them.
    """

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path
        self.depth, self.in_string, self.backslash, self.offset = 0, False, b"", 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.offset += len(data)
        if data:
            self._follow(self.backslash + data)
        return data

    def _follow(self, text: bytes) -> None:
        if b"\\" in text:
            run = len(text) - len(text.rstrip(b"\\"))
            # A trailing run of backslashes escapes the next read's first byte when it is odd: carry its parity.
            text, self.backslash = text[:len(text) - run], b"\\" * (run % 2)
            text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
        text = text.translate(None, _NOT_STRUCTURE)
        if not text:
            return
        chars = np.frombuffer(text, np.uint8)
        quotes = chars == 0x22
        inside = (np.cumsum(quotes) + self.in_string) & 1  # odd: within a string (its opening quote included)
        self.in_string = bool(inside[-1])
        brackets = chars[~quotes & (inside == 0)]
        if brackets.size:
            depths = self.depth + np.cumsum(np.where((brackets == 0x5B) | (brackets == 0x7B), 1, -1))
            if depths.max() > MAX_NESTING:
                raise RecordError(f"{self.path}: JSON nested deeper than {MAX_NESTING} levels (within its first "
                                  f"{self.offset} bytes); a dataset is a list of flat records")
            self.depth = int(depths[-1])


_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))


def _first_record(json_path: Path) -> dict:
    for rec in _iter_json_list(json_path):
        if not isinstance(rec, dict):
            raise RecordError(f"{json_path}: record 0 is a {type(rec).__name__}, not an object")
        return rec
    raise RecordError(f"{json_path}: the list of records is empty")


def normalise_caption(text: str) -> str:
    """Collapse leading/trailing/repeated whitespace and CRLF; keep the text itself."""
    return " ".join(text.split())


def _captions(rec: dict, key: str, where: str, required: bool) -> tuple[str, ...]:
    if key not in rec:
        if required:
            raise RecordError(f"{where}: missing key '{key}'")
        return ()
    caps = rec[key]
    if not isinstance(caps, list):
        raise RecordError(f"{where}: '{key}' must be a list of strings, got {type(caps).__name__}")
    if required and not caps:
        raise RecordError(f"{where}: '{key}' is empty; every image needs at least one caption")
    out = []
    for j, c in enumerate(caps):
        if not isinstance(c, str):
            raise RecordError(f"{where}: '{key}'[{j}] is a {type(c).__name__}, not a string")
        c = normalise_caption(c)
        if not c:
            raise RecordError(f"{where}: '{key}'[{j}] is empty or only whitespace")
        out.append(c)
    return tuple(out)


def image_path_key(rel: str, where: str = "image path") -> str:
    """The normalised form of a record's image path: two records whose keys are equal name one file.

    Refuses (RecordError, the message starting with `where`) a path that leaves the image root: absolute
    (`/x`, `C:\\x`, `\\\\server\\x`) or `..` after normalising. `\\` counts as a separator too, as on
    Windows. The path text itself is kept as written elsewhere (the dataset fingerprint hashes it).
    """
    if "\x00" in rel:
        raise RecordError(f"{where} {_shown.repr(rel)} holds a NUL character, which no file name can")
    drive = rel[1:2] == ":" and rel[:1].isascii() and rel[:1].isalpha()
    padded = f"/{rel}/"
    if not (drive or "\\" in rel or "//" in padded or "/./" in padded or "/../" in padded):
        return rel  # already normal (nearly every path): no new string per record
    posix = rel.replace("\\", "/")
    if drive or posix.startswith("/"):
        raise RecordError(f"{where} {_shown.repr(rel)} is an absolute path; record paths are relative to the "
                          f"image root (--image_root)")
    key = posixpath.normpath(posix)
    if key == ".." or key.startswith("../"):
        raise RecordError(f"{where} {_shown.repr(rel)} leaves the image root (it normalises to {key!r}); record paths "
                          f"must stay under --image_root")
    if key == ".":
        raise RecordError(f"{where} {_shown.repr(rel)} names the image root itself, not an image file")
    return key


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
    first = _first_record(json_path)
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
    for i, rec in enumerate(_iter_json_list(json_path)):
        where = f"{json_path} record {i}"
        if not isinstance(rec, dict):
            raise RecordError(f"{where}: is a {type(rec).__name__}, not an object")
        for key in ("id", path_key, "captions") + (("split",) if has_split else ()):
            if key not in rec:
                raise RecordError(f"{where}: missing key '{key}' (a {fmt} record has "
                                  f"id, {path_key}, captions{', split' if has_split else ''})")
        pid = rec["id"]
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise RecordError(f"{where}: 'id' must be an integer, got {_shown.repr(pid)}")
        if not _INT64[0] <= pid < _INT64[1]:
            raise RecordError(f"{where}: 'id' {_shown.repr(pid)} does not fit in 64 bits")
        rel = rec[path_key]
        if not isinstance(rel, str) or not rel.strip():
            raise RecordError(f"{where}: '{path_key}' must be a non-empty string, got {_shown.repr(rel)}")
        key = image_path_key(rel, f"{where}: '{path_key}'")
        if key in seen:
            j = seen[key]
            raise RecordError(f"{where}: duplicate '{path_key}' {_shown.repr(rel)} (also record {j}, written "
                              f"{_shown.repr(paths[j])}; both name {_shown.repr(key)}); each image must appear once")
        seen[key] = i
        captions.append(_captions(rec, "captions", where, required=True))
        prompts.append(_captions(rec, "prompt_caption", where, required=False))
        if has_split:
            split = rec["split"]
            if split not in SPLITS:
                raise RecordError(f"{where}: 'split' is {_shown.repr(split)}; expected one of {', '.join(SPLITS)}")
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
