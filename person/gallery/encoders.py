"""The encoders a gallery is enrolled and searched with: an exported student or a teacher, each with its space.

An exported student (person.runtime, no torch) or a teacher (transformers). Each says which embedding space
it lives in; mixing is allowed exactly when the spaces are equal (a teacher-enrolled gallery searched with the
text student distilled from it).

The image side is split so enrolment can load ahead of the forward: `prepare` (in a loading thread: pixels of one
crop -> what the model takes) and `embed` (a batch of prepared crops -> L2-normalised [n, D]).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from person import files
from person.data.images import load_pixels
from person.gallery.manifest import GalleryError
from person.runtime import CARD_FILE, ExportedModels
from person.teacher.space import space_of


class ExportEncoder:
    """An export directory's image and/or text model, through onnxruntime."""

    def __init__(self, export_dir: str | Path, variant: str = "fp32", threads: int | None = None) -> None:
        self.models = ExportedModels(export_dir, variant, threads)
        self.space, self.dim = self.models.space, self.models.feature_dim
        self.identity = {"kind": "export", "name": str(Path(export_dir).resolve()), "variant": variant,
                         "card_sha256": files.sha256_file(Path(export_dir) / CARD_FILE)}
        self.max_seq_length = self.models.max_seq_length if self.models.has_text else None

    def prepare(self, image: np.ndarray | str | os.PathLike) -> np.ndarray:
        """A crop's pixels, or an image file (decoded as enrolment decodes it, at the model's size)."""
        return self.models.preprocess(image)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        return self.models.embed_pixels(np.stack(prepared))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.models.embed_texts(texts)

    @property
    def has_image(self) -> bool:
        return self.models.has_image

    @property
    def has_text(self) -> bool:
        return self.models.has_text


class TeacherEncoder:
    """A teacher's image and text towers (its own processor and tokenizer), loaded offline."""

    def __init__(self, teacher: str, device: str | None = None) -> None:
        from person.teacher.hf import load_teacher  # transformers and torch: only when a teacher is asked for
        self.teacher = load_teacher(teacher, device=device)
        identity: dict[str, Any] = self.teacher.identity()
        self.space, self.dim = space_of(identity), int(identity["dim"])
        self.identity = {"kind": "teacher", "name": identity["teacher"], "config_hash": identity["config_hash"]}
        self.max_seq_length = None  # its tokenizer truncates by tokens, not characters: no character limit to state
        self.has_image = self.has_text = True

    def prepare(self, image: np.ndarray | str | os.PathLike) -> np.ndarray:
        """A crop's pixels, or an image file decoded; the teacher's own processor resizes and normalises in embed."""
        return load_pixels(image) if isinstance(image, (str, os.PathLike)) else image

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image
        images = [Image.fromarray(np.ascontiguousarray(p)) for p in prepared]
        return self.teacher.encode_images(images).float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.teacher.encode_texts(list(texts)).float().cpu().numpy()


def open_encoder(export_dir: str | Path | None = None, teacher: str | None = None, variant: str = "fp32"):
    """The encoder a command names: `--model EXPORT_DIR` or `--teacher ID_OR_DIR`, exactly one."""
    if (export_dir is None) == (teacher is None):
        raise GalleryError("give exactly one encoder: --model EXPORT_DIR (an exported student) or --teacher ID_OR_DIR")
    return ExportEncoder(export_dir, variant) if export_dir is not None else TeacherEncoder(teacher)
