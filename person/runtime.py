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
from person.data.images import ImageTransform, ImageLimits, DEFAULT_LIMITS, load_pixels, normalize_pixels
from person.data.text import encode_batch, length_batches, lookup_chars
from person.errors import PersonError
from person.vectors import unit_rows

CARD_FILE, CARD_FORMAT, CARD_VERSION = "model.json", "person-export", 1  # the card export_model.py writes
VARIANTS = ("fp32", "fp16", "int8")

ImageInput = str | os.PathLike | np.ndarray  # a path, or uint8 RGB [H, W, 3] pixels (PIL images are converted)


_PARTS = {"image": ("file", "size", "resize", "normalize"), "text": ("file", "table", "max_seq_length")}


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
        if self._text is not None:
            self.table = np.load(self.dir / self.card["text"]["table"]["file"], allow_pickle=False)
        if self._image is not None:
            size = self.card["image"]["size"]
            pad = self.card["image"]["resize"]["mode"]
            mean = tuple(self.card["image"]["normalize"]["mean"])
            self.transform = ImageTransform((size["height"], size["width"]), pad, mean)
            self.mean, self.std = mean, tuple(self.card["image"]["normalize"]["std"])

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
