"""Real inputs for the export's parity gate and int8 calibration, from the checkpoint's own dataset.

Parity: held-out images and captions, plus probe texts that reach every path of the text graph (English,
Chinese, emoji, every length from 1 to max_seq_length, and one longer, which is truncated). Calibration:
training images and captions, as many as asked; fewer available is an error that says how many there are.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from person.data.datasets import ImageDataset, collate_images
from person.data.datasets import normalize_batch
from person.data.images import ImageTransform
from person.data.records import RecordSet
from person.errors import PersonError
from person.eval.evaluate import eval_split
from person.models.students import StudentSpec

PROBE_TEXTS = ("A woman in a red coat and black trousers carrying a white bag.",
               "一位穿着红色外套和黑色裤子的女士", "穿红色外套的女孩", "a man 🧥 with a 🎒 backpack 👟", "x",
               "Ünïcödé café — naïve résumé")


class CalibrationError(PersonError, ValueError):
    """Fewer calibration inputs than asked for."""


@dataclass(frozen=True)
class ExportInputs:
    images: torch.Tensor          # float32 [N, 3, H, W], normalised as the card says
    texts: list[str]
    calibration_images: torch.Tensor | None = None
    calibration_texts: list[str] | None = None


def probe_texts(max_seq_length: int) -> list[str]:
    """Texts of every length 1..max_seq_length (and one longer) mixing scripts, plus the fixed probes."""
    alphabet = "a person in a 红色 coat 🎒 walks " * (max_seq_length // 8 + 2)
    return list(PROBE_TEXTS) + [alphabet[:n] for n in (*range(1, max_seq_length + 1), max_seq_length + 7)]


def load_images(records: RecordSet, rows: Sequence[int], spec: StudentSpec, mean: Sequence[float],
                std: Sequence[float], limits=None) -> torch.Tensor:
    """The images of `rows` as the trainer's evaluation sees them (readable ones only), normalised."""
    transform = ImageTransform(spec.image_size, spec.resize, tuple(mean))
    kwargs = {} if limits is None else {"limits": limits}
    dataset = ImageDataset(records, transform, False, transform.size, **kwargs)
    loader = DataLoader(dataset, batch_size=64, sampler=[int(r) for r in rows], collate_fn=collate_images)
    batches = [normalize_batch(b["images"], mean, std) for b in loader if len(b["rows"])]
    if not batches:
        raise CalibrationError(f"none of the {len(rows)} images of {records.source} could be read: the export "
                               f"checks its graphs on real images (are they still under {records.image_root}?)")
    return torch.cat(batches)


def gather_inputs(store, records: RecordSet, spec: StudentSpec, parity_images: int = 24,
                  calibration: int = 0, limits=None) -> ExportInputs:
    """Held-out inputs for parity; `calibration` training images and captions when > 0."""
    mean, std = store.image_normalisation
    held_out = eval_split(store, "eval")
    images = (load_images(records, held_out.rows[:parity_images], spec, mean, std, limits)
              if spec.backbone else None)
    texts = held_out.caption_texts[:parity_images * 2] + probe_texts(spec.max_seq_length)
    if calibration <= 0:
        return ExportInputs(images, texts)
    train = store.split_rows("train")
    if len(train) < calibration:
        raise CalibrationError(f"--calibration {calibration}: the training split has {len(train)} readable images; "
                               f"pass --calibration {len(train)} or fewer")
    pick = np.random.default_rng(0).choice(train, size=calibration, replace=False)
    calib_images = load_images(records, np.sort(pick), spec, mean, std, limits) if spec.backbone else None
    caption_rows = [int(store.caption_offsets[r]) for r in np.sort(pick)]  # each image's first caption
    return ExportInputs(images, texts, calib_images, store.caption_texts(caption_rows))
