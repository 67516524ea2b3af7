"""A small distillation setup for trainer tests: a drawn dataset and a store of made-up teacher embeddings.

The embeddings come from a fixed rule, not a model: each identity has a random unit centre, its images
and captions are noisy copies of it. So training tests need no teacher, run in seconds, and still have
something learnable. The store is written through person.teacher.store's real writer.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from person.data.records import load_records
from person.data.unlabeled import captions_file, detections_file
from person.demo.synthetic import write_dataset
from person.teacher.store import StoreWriter, caption_layout

DIM = 16
IDENTITY = {"teacher": "made-up", "kind": "siglip", "config_hash": "0" * 64, "dim": DIM, "dtype": "float32",
            "preprocessing": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def make_setup(root: Path, ids: int = 12, images_per_id: int = 2, seed: int = 0, broken: bool = False,
               fmt: str = "synthpedes") -> tuple[Path, Path, int | None]:
    """(dataset JSON, store path, broken row) under `root`. With `broken`, the first training image's JPEG
    is garbage and marked unreadable in the store, as extraction would."""
    json_path = write_dataset(root / "data", ids, images_per_id, seed, fmt, workers=1)
    records = load_records(json_path)
    broken = int(records.split_indices("train")[0]) if broken else None
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(records.num_ids, DIM))
    images = _unit(centres[records.pids] + 0.5 * rng.normal(size=(len(records), DIM)))
    layout = caption_layout(records)
    captions = _unit(centres[records.pids[layout.image]] + 0.5 * rng.normal(size=(len(layout.texts), DIM)))
    status = np.ones(len(records), dtype=np.uint8)
    reasons = {}
    if broken is not None:
        records.image_path(broken).write_bytes(b"not a jpeg")
        status[broken], images[broken] = 2, 0
        reasons[broken] = f"{records.image_path(broken)}: not an image Pillow can read"
    store = root / "store.h5"
    writer = StoreWriter.open(store, records, IDENTITY, chunk_rows=16, batch_size=8)
    for unit in writer.pending():
        if unit.kind == "image":
            part = {r: t for r, t in reasons.items() if unit.start <= r < unit.stop}
            writer.write(unit, images[unit.start:unit.stop], status[unit.start:unit.stop], part)
        else:
            writer.write(unit, captions[unit.start:unit.stop])
    return json_path, store, broken


def write_unlabeled(path: Path, source, identity: dict, seed: int, unreadable: tuple[int, ...] = ()) -> Path:
    """A complete unlabeled store of `source` with made-up unit embeddings (rows drawn from `seed`); the image rows
    in `unreadable` are marked so, as extraction marks an image it cannot read."""
    rng = np.random.default_rng(seed)
    writer = StoreWriter.open(path, source, identity, chunk_rows=8, batch_size=4)
    for unit in writer.pending():
        emb = _unit(rng.normal(size=(unit.stop - unit.start, identity["dim"])))
        if unit.kind == "caption":
            writer.write(unit, emb)
            continue
        bad = [r for r in unreadable if unit.start <= r < unit.stop]
        status = np.ones(unit.stop - unit.start, np.uint8)
        for r in bad:
            status[r - unit.start], emb[r - unit.start] = 2, 0
        writer.write(unit, emb, status, {r: "made unreadable by the test" for r in bad})
    return path


def make_unlabeled(root: Path, json_path: Path, identity: dict = IDENTITY, tracks: bool = True,
                   seed: int = 1) -> tuple[Path, Path]:
    """(crops store, captions store) under `root`: a detector box on each of the set's images (its upper part;
    tracks of two images where `tracks`) and 10 descriptions, with made-up embeddings of `identity`'s dim. A
    broken image of the set (make_setup's) stays in: its crop is unreadable at training time."""
    records = load_records(json_path)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in range(len(records)):
        line = {"image": str(records.paths[row]), "bbox": [2, 2, 30, 40]}
        lines.append(json.dumps(line | ({"track": row // 2} if tracks else {})))
    (root / "boxes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "captions.txt").write_text("\n".join(f"a person number {i} in a coat" for i in range(10)) + "\n")
    crops = detections_file(root / "boxes.jsonl", records.image_root)
    return (write_unlabeled(root / "crops.h5", crops, identity, seed),
            write_unlabeled(root / "captions.h5", captions_file(root / "captions.txt"), identity, seed + 1))
