"""The dataset files of the four formats: finding and recognising one, streaming its records, checking fields.

SYNTH-PEDES, CUHK-PEDES, ICFG-PEDES and RSTPReid are each one JSON list of records (README.md, "Datasets it reads"); they differ
in their file names, the key of the image path and whether records carry a split. A file is streamed with ijson
record by record (person.data.records keeps only the normalised columns), and refused before ijson parses it
when it nests deeper than any dataset does (`_NestingGuard`). Every refusal is a RecordError naming the file,
the record and the field.
"""
from __future__ import annotations

import posixpath
import reprlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import ijson
import numpy as np

from person.errors import PersonError

FORMATS = ("synthpedes", "cuhk-pedes", "icfg-pedes", "rstpreid")
# File names each format is published under (README.md, "Datasets it reads": some READMEs spell them differently).
FORMAT_FILES = {
    "synthpedes": ("synthpedes-dataset.json", "synthpedes_dataset.json"),
    "cuhk-pedes": ("reid_raw.json",),
    "icfg-pedes": ("ICFG-PEDES.json", "ICFG_PEDES.json"),
    "rstpreid": ("data_captions.json",),
}
PATH_KEY = {"synthpedes": "file_path", "cuhk-pedes": "file_path", "icfg-pedes": "file_path",
            "rstpreid": "img_path"}
HAS_SPLIT = {"synthpedes": False, "cuhk-pedes": True, "icfg-pedes": True, "rstpreid": True}

# Deeper than any dataset nests (a record is an object of strings and lists: 3-5 levels). ijson keeps a prefix
# string per open level, so its memory grows as depth squared: 200 KB of '[' would take ~20 GB.
MAX_NESTING = 16
_BOM = b"\xef\xbb\xbf"
_shown = reprlib.Repr()  # values quoted in messages, cut short: a hostile record may hold megabytes
_shown.maxstring, _shown.maxother, _shown.maxlong = 200, 200, 40


def quote(value: Any) -> str:
    """`value` as a message shows it: repr, cut short."""
    return _shown.repr(value)


class RecordError(PersonError, ValueError):
    """A dataset file or one of its records is malformed; the message names the file, record and field."""


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
                      f"format (keys: {quote(sorted(first))}); pass --dataset-format one of {', '.join(FORMATS)}")


def default_image_root(json_path: Path, first_path: str) -> Path:
    """Next to the JSON or in its imgs/ folder (README.md, "Datasets it reads"), whichever holds the first image."""
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


def iter_json_list(json_path: Path) -> Iterator[Any]:
    """The records of a dataset file one by one (ijson), refused with a RecordError when it is not a UTF-8 JSON
    list, not valid JSON, or nested deeper than MAX_NESTING."""
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


def first_record(json_path: Path) -> dict:
    """Record 0 of a dataset file, which must be an object: what its format is told by."""
    for rec in iter_json_list(json_path):
        if not isinstance(rec, dict):
            raise RecordError(f"{json_path}: record 0 is a {type(rec).__name__}, not an object")
        return rec
    raise RecordError(f"{json_path}: the list of records is empty")


def normalise_caption(text: str) -> str:
    """Collapse leading/trailing/repeated whitespace and CRLF; keep the text itself."""
    return " ".join(text.split())


def refuse_nul(text: str, where: str, fix: str) -> None:
    """A RecordError naming `where` when `text` holds a NUL: HDF5 strings end at one, so it is refused before any
    store exists and both store formats refuse it alike."""
    if "\x00" in text:
        raise RecordError(f"{where} holds a NUL character (U+0000) at character {text.index(chr(0))}, which a "
                          f"feature store cannot hold; {fix}")


def read_captions(rec: dict, key: str, where: str, required: bool) -> tuple[str, ...]:
    """A record's list of captions under `key`, each normalised; a RecordError naming `where` when malformed (or
    missing or empty while `required`)."""
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
        refuse_nul(c, f"{where}: '{key}'[{j}]", "remove it from the dataset file")
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
        raise RecordError(f"{where} {quote(rel)} holds a NUL character, which no file name can")
    drive = rel[1:2] == ":" and rel[:1].isascii() and rel[:1].isalpha()
    padded = f"/{rel}/"
    if not (drive or "\\" in rel or "//" in padded or "/./" in padded or "/../" in padded):
        return rel  # already normal (nearly every path): no new string per record
    posix = rel.replace("\\", "/")
    if drive or posix.startswith("/"):
        raise RecordError(f"{where} {quote(rel)} is an absolute path; record paths are relative to the "
                          f"image root (--image_root)")
    key = posixpath.normpath(posix)
    if key == ".." or key.startswith("../"):
        raise RecordError(f"{where} {quote(rel)} leaves the image root (it normalises to {key!r}); record paths "
                          f"must stay under --image_root")
    if key == ".":
        raise RecordError(f"{where} {quote(rel)} names the image root itself, not an image file")
    return key
