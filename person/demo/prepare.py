"""The demo's first two steps, shared by demo.py and the benches: the synthetic set and the teacher's store (of a
labelled set, or of an unlabeled source), each skipped when it is already there (an interrupted extraction is
resumed, a grown source appended)."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from person.data.records import RecordSet, load_records
from person.data.unlabeled import UnlabeledSource
from person.demo.synthetic.writer import JSON_NAME, write_dataset
from person.demo.recipe import DEMO_IMAGES_PER_ID, DEMO_SEED
from person.teacher.extract import extract
from person.teacher.hf import Teacher, load_teacher
from person.teacher.store import StoreIncompleteError, open_store, open_unlabeled, resolve_store_path
from person.teacher.store.unlabeled import stored_source


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

    def complete(path: Path, teacher: Teacher) -> bool:
        with open_store(path, records=records, teacher=teacher):
            return True
    return _extracted(folder, records, teacher_dir, complete)


def unlabeled_store(folder: Path, source: UnlabeledSource, teacher_dir: Path) -> Path:
    """The teacher's embeddings of an unlabeled source in `folder`, named as extraction names it; skipped when
    the store is complete and holds every row of the source (a grown source is appended to it)."""
    def complete(path: Path, teacher: Teacher) -> bool:
        with open_unlabeled(path, teacher):
            return not len(source.new_rows(stored_source(path, source)))
    return _extracted(folder, source, teacher_dir, complete)


def _extracted(folder: Path, source: RecordSet | UnlabeledSource, teacher_dir: Path,
               complete: Callable[[Path, Teacher], bool]) -> Path:
    """The store of `source` in `folder`: extracted (or finished, or grown) unless `complete(path, teacher)`."""
    teacher = load_teacher(teacher_dir)
    path = resolve_store_path(folder, source, teacher)
    try:
        if complete(path, teacher):
            print(f"[extract] {path} is there; skipped")
            return path
    except (FileNotFoundError, StoreIncompleteError):
        pass
    summary = extract(source, teacher, path, workers=2, progress=True)
    print(f"[extract] {summary.images} images and {summary.captions} captions of {source.source} with {teacher_dir} "
          f"in {summary.seconds:.1f} s -> {path} ({summary.store_bytes / 2**20:.1f} MiB)")
    return path
