"""The exported students without torch: load an export directory, embed images and texts with onnxruntime.

    models = ExportedModels("export/")                # model.json + the ONNX files + input_embeddings.npy
    models.embed_images(["a.jpg", pil_image, rgb])   # L2-normalised float32 [n, D]
    models.embed_texts(["a girl in a red coat", "穿红色外套的女孩"])

Images are decoded, resized and normalised exactly as the trainer's evaluation does (the same numpy code in
person.data.images); texts become UTF-8 bytes per character (person.data.text), four table rows summed per
character, then the graph. Imports numpy, onnxruntime, OpenCV and Pillow (decoding), never torch: a test
imports this module with torch made unimportable. Search and `evaluation_model.py EXPORT_DIR` use it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from person import files
from person.data.images import (DEFAULT_LIMITS, MAX_IMAGE_SIDE, ImageLimits, ImageTransform, load_pixels, normalization,
                                 normalize_pixels)
from person.data.text import BYTE_VALUES, BYTES_PER_CHAR, MAX_SEQ_LENGTH, encode_batch, length_batches, lookup_chars
from person.errors import PersonError
from person.vectors import unit_rows

CARD_FILE, CARD_FORMAT, CARD_VERSION = "model.json", "person-export", 1  # the card export_model.py writes
VARIANTS = ("fp32", "fp16", "int8")

ImageInput = str | os.PathLike | np.ndarray  # a path, or uint8 RGB [H, W, 3] pixels (PIL images are converted)


_PARTS = {"image": ("file", "size", "resize", "normalize"), "text": ("file", "table", "max_seq_length")}
# onnxruntime's element types, as the card (numpy) names them.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
               "tensor(bool)": "bool"}
_ORT_ERRORS = (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument,
               ort.capi.onnxruntime_pybind11_state.RuntimeException)


class ExportDirError(PersonError, ValueError):
    """An export directory that cannot be used; the message names the file and the fix."""


def read_card(export_dir: str | Path) -> dict[str, Any]:
    """The card of an export directory, checked for its format and version."""
    path = Path(export_dir) / CARD_FILE
    if not path.is_file():
        raise ExportDirError(f"{export_dir}: no {CARD_FILE}; an export directory is what export_model.py writes")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportDirError(f"{path}: not a readable card ({e}); export the checkpoint again") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or card.get("version") != CARD_VERSION:
        found = (card.get("format"), card.get("version")) if isinstance(card, dict) else (type(card).__name__, None)
        raise ExportDirError(f"{path}: not a card this version reads (format {found[0]!r}, version {found[1]!r}); "
                             f"export the checkpoint again with this version")
    missing = [k for k in ("space", "feature_dim", "files", "static_shapes") if k not in card] + \
        [f"{part}.{k}" for part, keys in _PARTS.items() if part in card for k in keys
         if not isinstance(card[part], dict) or k not in card[part]]
    if missing or not ("image" in card or "text" in card):
        raise ExportDirError(f"{path}: the card lacks {', '.join(missing) or 'an image or text model'}; export the "
                             f"checkpoint again")
    maps = [("files", card["files"])] + [(f"{p}.variants", card[p].get("variants", {})) for p in _PARTS if p in card]
    malformed = [name for name, value in maps if not isinstance(value, dict)]
    if malformed:
        raise ExportDirError(f"{path}: {', '.join(malformed)} should map names to files; export the checkpoint again")
    named = [*card["files"], *(card[p]["file"] for p in _PARTS if p in card), *(
        v for p in _PARTS if p in card for v in card[p].get("variants", {}).values())]
    if "text" in card:
        named.append(card["text"]["table"].get("file") if isinstance(card["text"]["table"], dict) else None)
    outside = [n for n in named if not isinstance(n, str) or Path(n).name != n or n in ("", ".", "..")]
    if outside:
        raise ExportDirError(f"{path}: the card names files outside its directory ({outside[:3]}); an export's "
                             f"card names its files by their plain names")
    return card


class ExportedModels:
    """The image and/or text model of an export directory, ready to embed (one onnxruntime session each)."""

    def __init__(self, export_dir: str | Path, variant: str = "fp32", threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",), verify: bool = True) -> None:
        if variant not in VARIANTS:
            raise ExportDirError(f"variant {variant!r}: use one of {', '.join(VARIANTS)}")
        self.dir, self.variant = Path(export_dir), variant
        self.card = read_card(self.dir)
        if verify:
            self._verify_files()
        self.static = bool(self.card.get("static_shapes"))
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self._image = self._session("image", options, providers) if "image" in self.card else None
        self._text = self._session("text", options, providers) if "text" in self.card else None
        # The card against the graphs themselves, before any input is fed: a disagreement is one message here,
        # not onnxruntime's InvalidArgument at the first image (ARCHITECTURE.md, "The export directory").
        check = CardCheck(self.dir, self.card)
        if self._image is not None:
            self.transform, self.mean, self.std = check.image(self._image)
        if self._text is not None:
            self.table = check.text(self._text)

    # ------------------------------------------------------------------ what it is
    @property
    def space(self) -> dict[str, Any]:
        return self.card["space"]

    @property
    def feature_dim(self) -> int:
        return int(self.card["feature_dim"])

    @property
    def max_seq_length(self) -> int:
        return int(self.card["text"]["max_seq_length"])

    @property
    def has_image(self) -> bool:
        return self._image is not None

    @property
    def has_text(self) -> bool:
        return self._text is not None

    def _verify_files(self) -> None:
        for name, info in self.card.get("files", {}).items():
            path = self.dir / name
            if not path.is_file():
                raise ExportDirError(f"{path}: missing (the card lists it); copy the whole export directory")
            if path.stat().st_size != info["bytes"] or files.sha256_file(path) != info["sha256"]:
                raise ExportDirError(f"{path}: its size or sha256 differs from the card's: the file is damaged or "
                                     f"from another export; copy the export directory again")

    def _session(self, kind: str, options: ort.SessionOptions, providers: Sequence[str]) -> ort.InferenceSession:
        entry = self.card[kind]
        file = entry["file"] if self.variant == "fp32" else entry.get("variants", {}).get(self.variant)
        if file is None:
            made = ", ".join(["fp32", *entry.get("variants", {})])
            raise ExportDirError(f"{self.dir}: no {self.variant} {kind} model (this export has {made}); export with "
                                 f"--{self.variant}")
        return ort.InferenceSession(str(self.dir / file), options, providers=list(providers))

    # ------------------------------------------------------------------ images
    def preprocess(self, image: ImageInput, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        """One image (a path, or uint8 RGB pixels / a PIL image) -> uint8 [3, H, W], as the trainer's eval does."""
        if isinstance(image, (str, os.PathLike)):
            image = load_pixels(image, self.transform.size, limits)
        return self.transform(np.asarray(image) if not isinstance(image, np.ndarray) else image)

    def embed_pixels(self, batch: np.ndarray) -> np.ndarray:
        """uint8 [B, 3, H, W] (preprocess's output, stacked) -> [B, D] float32, L2-normalised."""
        if self._image is None:
            raise ExportDirError(f"{self.dir}: this export has no image model")
        x = normalize_pixels(batch, self.mean, self.std)
        return unit_rows(self._run(self._image, {self._image.get_inputs()[0].name: x}))

    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """[n, D] float32, L2-normalised, for image paths or pixel arrays (unreadable paths raise ImageReadError)."""
        out = [self.embed_pixels(np.stack([self.preprocess(im) for im in images[i:i + batch_size]]))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)

    # ------------------------------------------------------------------ texts
    def text_inputs(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The text graph's inputs: looked-up character vectors [B, L, E] and the mask [B, L], float32."""
        # A static (npu) graph reads exactly max_seq_length characters: every text is padded to that length.
        chars, mask = encode_batch(texts, self.max_seq_length, pad_to=self.max_seq_length if self.static else None)
        names = [i.name for i in self._text.get_inputs()]
        return {names[0]: lookup_chars(self.table, chars), names[1]: mask.astype(np.float32)}

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """[n, D] float32, L2-normalised; texts longer than max_seq_length characters are truncated (as in
        training). Batches are formed by length, so short queries are not padded to long ones."""
        if self._text is None:
            raise ExportDirError(f"{self.dir}: this export has no text model")
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of texts, got a single str")
        out = np.zeros((len(texts), self.feature_dim), np.float32)
        for idx in length_batches(texts, self.max_seq_length, batch_size):
            out[idx] = unit_rows(self._run(self._text, self.text_inputs([texts[j] for j in idx])))
        return out

    # ------------------------------------------------------------------ running
    def _run(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return run_session(session, feeds, session.get_inputs()[0].shape[0] if self.static else None)


class CardCheck:
    """The card of an export checked against its onnxruntime sessions and its byte table: every name, dtype and
    static dimension, the image size, feature_dim, the table's shape and max_seq_length. A disagreement is an
    ExportDirError naming model.json, the key and both values."""

    def __init__(self, folder: Path, card: dict[str, Any]) -> None:
        self.folder, self.card, self.path = folder, card, folder / CARD_FILE
        self.feature_dim = self._whole("feature_dim", card["feature_dim"], 1, None)
        if not isinstance(card["static_shapes"], bool):
            raise ExportDirError(f"{self.path}: static_shapes is {card['static_shapes']!r:.80}, not true or false; "
                                 f"export the checkpoint again")

    def image(self, session: ort.InferenceSession) -> tuple[ImageTransform, tuple, tuple]:
        """(transform, mean, std) the card's image part gives, once it agrees with the image graph."""
        entry = self.card["image"]
        io = self._io("image", session)
        shape = io["inputs"][0]["shape"]
        if len(io["inputs"]) != 1 or len(shape) != 4 or shape[1] not in (3, None):
            raise self._error("image.inputs[0].shape", shape, f"not an RGB image batch [B, 3, H, W] in {entry['file']}")
        size = entry["size"] if isinstance(entry["size"], dict) else {}
        for i, side in ((2, "height"), (3, "width")):
            value = self._whole(f"image.size.{side}", size.get(side), 8, MAX_IMAGE_SIDE)
            if shape[i] is not None and value != shape[i]:
                raise self._error(f"image.size.{side}", value, f"{shape[i]} in {entry['file']}")
        resize, normalize = entry["resize"], entry["normalize"]
        try:
            mean, std = tuple(normalize["mean"]), tuple(normalize["std"])
            normalization(mean, std)
            transform = ImageTransform((size["height"], size["width"]), resize["mode"], mean)
        except (KeyError, TypeError, ValueError) as e:
            raise ExportDirError(f"{self.path}: image.resize / image.normalize cannot be used ({e}); export the "
                                 f"checkpoint again") from None
        return transform, mean, std

    def text(self, session: ort.InferenceSession) -> np.ndarray:
        """The byte table, once it, the card's text part and the text graph agree."""
        entry, table_entry = self.card["text"], self.card["text"]["table"]
        io = self._io("text", session)
        try:
            table = np.load(self.folder / table_entry["file"], allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ExportDirError(f"{self.folder / table_entry['file']}: not a readable byte table ({e}); copy the "
                                 f"export directory again") from None
        rows = BYTES_PER_CHAR * BYTE_VALUES
        if table.ndim != 2 or table.shape[0] != rows or table.dtype != np.float32:
            raise ExportDirError(f"{self.folder / table_entry['file']}: a {table.dtype} {list(table.shape)} array, "
                                 f"not the float32 [{rows}, E] byte table; export the checkpoint again")
        for key, value in (("shape", list(table.shape)), ("dtype", table.dtype.name)):
            if table_entry.get(key) != value:
                raise self._error(f"text.table.{key}", table_entry.get(key), f"{value} in {table_entry['file']}")
        chars = io["inputs"][0]["shape"]
        if len(io["inputs"]) != 2 or len(chars) != 3 or chars[2] != table.shape[1]:
            raise self._error("text.inputs[0].shape", chars, f"[B, L, {table.shape[1]}] for the byte table's width "
                              f"in {entry['file']}")
        length = self._whole("text.max_seq_length", entry["max_seq_length"], 1, MAX_SEQ_LENGTH)
        if chars[1] is not None and length != chars[1]:
            raise self._error("text.max_seq_length", length, f"{chars[1]} in {entry['file']}")
        if chars[1] is None:
            self._probe_length(session, chars[0] or 1, length, table.shape[1], entry["file"])
        return table

    def _io(self, kind: str, session: ort.InferenceSession) -> dict[str, list[dict[str, Any]]]:
        """The graph's inputs and outputs (a static dim as its int, a dynamic one as None), once the card's agree:
        names, dtypes, shapes, the batch dimension static exactly when static_shapes, outputs [B, feature_dim]."""
        graph = {"inputs": session.get_inputs(), "outputs": session.get_outputs()}
        file, found = self.card[kind]["file"], {}
        for side, args in graph.items():
            found[side] = [{"name": a.name, "dtype": _ORT_DTYPES.get(a.type, a.type),
                            "shape": [d if isinstance(d, int) else None for d in a.shape]} for a in args]
            listed = self.card[kind].get(side)
            if not isinstance(listed, list) or len(listed) != len(args):
                raise self._error(f"{kind}.{side}", listed, f"{len(args)} {side} in {file}")
            for i, (said, got) in enumerate(zip(listed, found[side])):
                said = said if isinstance(said, dict) else {}
                for key in ("name", "dtype"):
                    if said.get(key) != got[key]:
                        raise self._error(f"{kind}.{side}[{i}].{key}", said.get(key), f"{got[key]!r} in {file}")
                shape = said.get("shape")
                dims = [d if isinstance(d, int) and not isinstance(d, bool) else None if isinstance(d, str) else d
                        for d in shape] if isinstance(shape, list) else shape
                if dims != got["shape"]:
                    shown = ["any" if d is None else d for d in got["shape"]]
                    raise self._error(f"{kind}.{side}[{i}].shape", shape, f"{shown} in {file}")
            for arg in found[side]:
                if arg["shape"] and (arg["shape"][0] is not None) != self.card["static_shapes"]:
                    raise self._error("static_shapes", self.card["static_shapes"],
                                      f"a batch of {arg['shape'][0] or 'any size'} for {arg['name']} in {file}")
        out = found["outputs"][0]["shape"]
        if len(out) != 2 or out[1] != self.feature_dim:
            raise self._error("feature_dim", self.feature_dim, f"an output {['any' if d is None else d for d in out]} "
                              f"in {file}")
        return found

    def _probe_length(self, session: ort.InferenceSession, batch: int, length: int, width: int, file: str) -> None:
        """A graph of any text length may still not take max_seq_length characters (its position table is that
        long): one batch of that length, run once, tells."""
        names = [i.name for i in session.get_inputs()]
        feeds = {names[0]: np.zeros((batch, length, width), np.float32), names[1]: np.ones((batch, length), np.float32)}
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the failure is this check's answer, not an error for the log
        try:
            session.run(None, feeds, quiet)
        except _ORT_ERRORS as e:
            raise self._error("text.max_seq_length", length, f"a graph that fails on {length} characters "
                              f"({str(e).splitlines()[0][:200]}) in {file}") from None

    def _whole(self, key: str, value: Any, low: int, high: int | None) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
            raise ExportDirError(f"{self.path}: {key} is {value!r:.80}, not a whole number in {low}..{high or 'any'}; "
                                 f"export the checkpoint again")
        return value

    def _error(self, key: str, said: Any, found: str) -> ExportDirError:
        return ExportDirError(f"{self.path}: {key} is {said!r:.200}, but the export has {found}: the card does not "
                              f"describe these files; export the checkpoint again (or copy the whole export directory)")


def static_batches(feeds: dict[str, np.ndarray], static_batch: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(batch, rows in it that are real): `feeds` cut into batches of exactly `static_batch` rows, as a static-batch
    (npu) graph takes them, the last padded with copies of its last row."""
    n = len(next(iter(feeds.values())))
    for a in range(0, n, static_batch):
        part = {k: v[a:a + static_batch] for k, v in feeds.items()}
        m = len(next(iter(part.values())))
        if m < static_batch:
            part = {k: np.concatenate([v, np.repeat(v[-1:], static_batch - m, axis=0)]) for k, v in part.items()}
        yield part, m


def run_session(session: ort.InferenceSession, feeds: dict[str, np.ndarray], static_batch: int | None) -> np.ndarray:
    """Run a graph on any number of rows; a static-batch (npu) graph runs batch by batch (static_batches), the
    padding copies' outputs dropped."""
    if static_batch is None:
        return session.run(None, feeds)[0]
    return np.concatenate([session.run(None, part)[0][:m] for part, m in static_batches(feeds, static_batch)])
