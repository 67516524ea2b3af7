"""The demo's first two steps, shared by demo.py and bench/ablation.py: the synthetic set and the teacher's
store, each skipped when it is already there (an interrupted extraction is resumed)."""
from __future__ import annotations

import time
from pathlib import Path

from person.data.records import load_records
from person.demo.synthetic.writer import JSON_NAME, write_dataset
from person.demo.recipe import DEMO_IMAGES_PER_ID, DEMO_SEED
from person.teacher.extract import extract
from person.teacher.hf import load_teacher
from person.teacher.store import StoreIncompleteError, open_store, resolve_store_path


def demo_set(folder: Path, ids: int, min_train_ids: int = 1) -> Path:
    """`ids` identities x 4 images in SYNTH-PEDES format (20% Chinese captions) under `folder`; its JSON.
    Refused when its training identities cannot fill a batch of `min_train_ids`."""
    json_path = folder / JSON_NAME["synthpedes"]
    if json_path.is_file():
        print(f"[data] {json_path} is there; skipped")
    else:
        start = time.perf_counter()
        write_dataset(folder, ids, DEMO_IMAGES_PER_ID, DEMO_SEED, "synthpedes")
        print(f"[data] drew {ids} x {DEMO_IMAGES_PER_ID} pedestrians in {time.perf_counter() - start:.1f} s")
    records = load_records(json_path)
    counts = records.split_counts()
    print(f"[data] {json_path}: {len(records)} images of {records.num_ids} identities; " +
          "; ".join(f"{split}: {c['ids']} ids, {c['images']} images, {c['captions']} captions"
                    for split, c in counts.items()))
    if counts["train"]["ids"] < min_train_ids:
        raise ValueError(f"{json_path}: {counts['train']['ids']} training identities cannot fill the demo's batches "
                         f"of {min_train_ids} identities: draw more (demo.py --ids N --workdir NEW_FOLDER)")
    return json_path


def teacher_store(folder: Path, json_path: Path, teacher_dir: Path) -> Path:
    """The teacher's embeddings of every image and caption in `folder`, named after the set and the teacher."""
    records = load_records(json_path)
    teacher = load_teacher(teacher_dir)
    path = resolve_store_path(folder, records, teacher)
    try:
        with open_store(path, records=records, teacher=teacher):
            print(f"[extract] {path} is there; skipped")
            return path
    except (FileNotFoundError, StoreIncompleteError):
        pass
    summary = extract(records, teacher, path, workers=2, progress=True)
    print(f"[extract] {summary.images} images and {summary.captions} captions with {teacher_dir} in "
          f"{summary.seconds:.1f} s -> {path} ({summary.store_bytes / 2**20:.1f} MiB)")
    return path
