"""Evaluate students on a held-out split: embed its images and captions, then score with person.eval.metrics.

Four cases, because students live in the teacher's space and can be mixed with it:
- `student`: student text queries against student-enrolled images (what a camera-only system runs);
- `teacher`: the teacher's cached embeddings (the upper bound the students chase);
- `student_text_teacher_image`: student queries against a gallery the teacher enrolled;
- `teacher_text_student_image`: teacher queries against a gallery the student enrolled.
Each needs the students it names; with one student trained, only the cases it can take part in are run.
Images that cannot be read now are left out of every case (so all cases score the same pairs) and counted.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from person.data.datasets import ImageDataset, SkipReport, collate_images
from person.data.datasets import normalize_batch
from person.data.images import DEFAULT_LIMITS, ImageLimits, ImageTransform
from person.data.records import DatasetOptions, RecordSet
from person.data.text import encode_batch, length_batches
from person.eval import metrics
from person.models.checkpoint import load_checkpoint, student_spec, students_from_checkpoint
from person.teacher.store import FeatureStore, check_teacher, open_with_records

log = logging.getLogger(__name__)

CASES = ("student", "teacher", "student_text_teacher_image", "teacher_text_student_image")
# Short column titles for side-by-side tables: which model embedded the queries (text) and the gallery (images).
CASE_TITLES = {"student": "student", "teacher": "teacher", "student_text_teacher_image": "s.text>t.images",
               "teacher_text_student_image": "t.text>s.images"}
# The case a checkpoint is judged by: the students together, or the one trained student against the teacher.
MAIN_CASE = {"both": "student", "image": "teacher_text_student_image", "text": "student_text_teacher_image"}


def cases_for(train: str, teacher_space: bool = True) -> tuple[str, ...]:
    """The cases a run can be scored on: the teacher, and whatever its students can take part in (mixing
    with the teacher needs the teacher's space: a student of another --feature_dim cannot)."""
    students = {"both": ("student", "student_text_teacher_image", "teacher_text_student_image"),
                "image": ("teacher_text_student_image",), "text": ("student_text_teacher_image",)}[train]
    return ("teacher",) + tuple(c for c in students if teacher_space or c == "student")
# Which embeddings each case scores: (images from, captions from).
SOURCES = {"student": ("student", "student"), "teacher": ("teacher", "teacher"),
            "student_text_teacher_image": ("teacher", "student"),
            "teacher_text_student_image": ("student", "teacher")}


@dataclass
class EvalSplit:
    """The images of a split (store rows) and the captions scored against them."""

    rows: np.ndarray            # image rows (records and store), readable at extraction
    pids: np.ndarray            # identity of each image
    paths: list[str]
    caption_rows: np.ndarray    # store caption rows
    caption_image: np.ndarray   # index into `rows` of each caption's image
    caption_texts: list[str]

    @property
    def caption_pids(self) -> np.ndarray:
        return self.pids[self.caption_image]

    def without_images(self, positions: np.ndarray) -> EvalSplit:
        """This split less the images at `positions` (indexes into `rows`) and their captions."""
        keep = np.ones(len(self.rows), dtype=bool)
        keep[positions] = False
        new_index = np.cumsum(keep) - 1
        cap_keep = keep[self.caption_image]
        return EvalSplit(self.rows[keep], self.pids[keep], [p for p, k in zip(self.paths, keep) if k],
                         self.caption_rows[cap_keep], new_index[self.caption_image[cap_keep]],
                         [t for t, k in zip(self.caption_texts, cap_keep) if k])


def eval_split(store, split: str = "eval", fields: Sequence[int] = (0,)) -> EvalSplit:
    """A split's readable images and their captions of the given fields (0 = `captions`, 1 = prompt)."""
    rows = store.split_rows(split)
    if len(rows) == 0:
        raise ValueError(f"{store.path}: no readable image in split {split!r}; pick another --split")
    starts, ends = store.caption_offsets[rows], store.caption_offsets[rows + 1]
    cap_rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
    cap_image = np.repeat(np.arange(len(rows)), ends - starts)
    keep = np.isin(store.caption_field[cap_rows], np.asarray(fields))
    cap_rows, cap_image = cap_rows[keep], cap_image[keep]
    return EvalSplit(rows, store.image_pid[rows], [store.image_paths[r] for r in rows], cap_rows, cap_image,
                     store.caption_texts(cap_rows))


@torch.no_grad()
def embed_images(model: torch.nn.Module, records: RecordSet, rows: np.ndarray, transform: ImageTransform,
                 mean: Sequence[float], std: Sequence[float], device: torch.device, batch_size: int = 128,
                 num_workers: int = 0, strict: bool = False, limits: ImageLimits = DEFAULT_LIMITS
                 ) -> tuple[np.ndarray, SkipReport]:
    """L2-normalised float32 [n, D] embeddings of `rows`' images; unreadable ones come back as NaN rows."""
    dataset = ImageDataset(records, transform, strict, transform.size, limits)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_images,
                        sampler=[int(r) for r in rows])
    position = {int(r): i for i, r in enumerate(rows)}
    out, skips = None, SkipReport()
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            skips.add(batch["skipped"])
            if len(batch["rows"]) == 0:
                continue
            x = normalize_batch(batch["images"].to(device), mean, std)
            emb = torch.nn.functional.normalize(model(x).float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.full((len(rows), emb.shape[1]), np.nan, dtype=np.float32)
            out[[position[int(r)] for r in batch["rows"]]] = emb
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError(f"none of the {len(rows)} images could be read: {skips.summary(3)}")
    return out, skips


@torch.no_grad()
def embed_texts(model: torch.nn.Module, texts: Sequence[str], max_seq_length: int, device: torch.device,
                batch_size: int = 256) -> np.ndarray:
    """L2-normalised float32 [n, D] embeddings of `texts` (batched by length: less padding to compute)."""
    out = None
    was_training = model.training
    model.eval()
    try:
        for idx in length_batches(texts, max_seq_length, batch_size):
            chars, mask = encode_batch([texts[j] for j in idx], max_seq_length)
            emb = model(torch.from_numpy(chars).to(device), torch.from_numpy(mask).to(device))
            emb = torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("no caption to embed")
    return out


@dataclass
class EvalResult:
    cases: dict[str, metrics.Evaluation]
    split: EvalSplit
    skipped: SkipReport = field(default_factory=SkipReport)

    def summaries(self) -> dict[str, dict]:
        return {case: ev.to_dict() for case, ev in self.cases.items()}

    def titled_summaries(self) -> dict[str, dict]:
        """The summaries under CASE_TITLES, for report.format_comparison."""
        return {CASE_TITLES[case]: summary for case, summary in self.summaries().items()}


# What a case needs of the students: image rows -> (L2-normalised [n, D], unreadable ones as NaN rows and their
# report), and texts -> L2-normalised [n, D]. The torch students and an exported model (person.runtime) both
# give these, so a checkpoint and its export are scored by the same code.
ImageEmbedder = Callable[[np.ndarray], tuple[np.ndarray, SkipReport]]
TextEmbedder = Callable[[Sequence[str]], np.ndarray]


def evaluate_embedders(embed_images_of: ImageEmbedder | None, embed_texts_of: TextEmbedder | None, store,
                       cases: Sequence[str] = CASES, split: str = "eval", top_k: int = 15,
                       device: str | torch.device | None = None) -> EvalResult:
    """Score `cases` on `split` of the store with the students' embedders; a case needs the students it names."""
    unknown = set(cases) - set(CASES)
    if unknown:
        raise ValueError(f"unknown evaluation case(s) {sorted(unknown)}: use {', '.join(CASES)}")
    have = {"image": embed_images_of is not None, "text": embed_texts_of is not None}
    missing = [c for c in cases if any(src == "student" and not have[m] for m, src in zip(("image", "text"),
                                                                                          SOURCES[c]))]
    if missing:
        present = " and ".join(m for m in ("image", "text") if have[m]) or "no"
        raise ValueError(f"case(s) {', '.join(missing)} need a student this checkpoint does not have (it has the "
                         f"{present} student); choose among "
                         f"{', '.join(c for c in CASES if c not in missing)}")
    data, emb, skips = split_embeddings(embed_images_of, embed_texts_of, store, cases, split)
    results = {}
    for case in cases:
        img_src, txt_src = SOURCES[case]
        results[case] = metrics.evaluate(emb[img_src, "image"], data.pids, emb[txt_src, "text"], data.caption_pids,
                                         top_k=top_k, device=device)
    return EvalResult(results, data, skips)


def split_embeddings(embed_images_of: ImageEmbedder | None, embed_texts_of: TextEmbedder | None, store,
                     cases: Sequence[str] = CASES, split: str = "eval"
                     ) -> tuple[EvalSplit, dict[tuple[str, str], np.ndarray], SkipReport]:
    """(the split less images unreadable now, {(model, "image" / "text"): embeddings} for what `cases` need, the
    unreadable images): what evaluate_embedders scores, and person.eval.operating_points measures."""
    data = eval_split(store, split)
    skips = SkipReport()
    emb: dict[tuple[str, str], np.ndarray] = {}
    have = {"image": embed_images_of is not None, "text": embed_texts_of is not None}
    if have["image"] and any("student" == SOURCES[c][0] for c in cases):
        student_images, skips = embed_images_of(data.rows)
        if len(skips):
            log.warning("%d eval images unreadable now; left out of every case", len(skips))
            gone = np.flatnonzero(np.isnan(student_images[:, 0]))
            data, student_images = data.without_images(gone), np.delete(student_images, gone, axis=0)
        emb["student", "image"] = student_images
    if have["text"] and any("student" == SOURCES[c][1] for c in cases):
        emb["student", "text"] = embed_texts_of(data.caption_texts)
    emb["teacher", "image"] = store.images(data.rows)
    emb["teacher", "text"] = store.captions(data.caption_rows)
    return data, emb, skips


def evaluate_students(image_model: torch.nn.Module | None, text_model: torch.nn.Module | None, records: RecordSet,
                      store, transform: ImageTransform, mean: Sequence[float], std: Sequence[float],
                      max_seq_length: int, device: torch.device, cases: Sequence[str] = CASES,
                      split: str = "eval", num_workers: int = 0, top_k: int = 15,
                      limits: ImageLimits = DEFAULT_LIMITS) -> EvalResult:
    """Score `cases` on `split` of the store with the torch students (evaluate_embedders)."""
    images = None if image_model is None else (
        lambda rows: embed_images(image_model, records, rows, transform, mean, std, device, num_workers=num_workers,
                                  limits=limits))
    texts = None if text_model is None else (lambda t: embed_texts(text_model, t, max_seq_length, device))
    return evaluate_embedders(images, texts, store, cases, split, top_k, device)


def teacher_evaluation(store, split: str = "eval", top_k: int = 15,
                       device: str | torch.device | None = None) -> tuple[metrics.Evaluation, EvalSplit]:
    """The teacher's own scores on a split, from its cached embeddings (the upper bound)."""
    data = eval_split(store, split)
    return metrics.evaluate(store.images(data.rows), data.pids, store.captions(data.caption_rows),
                            data.caption_pids, top_k=top_k, device=device), data


def open_training_data(state: dict, dataset: DatasetOptions | None = None, embedding_path: str | None = None
                       ) -> tuple[FeatureStore, RecordSet, DatasetOptions]:
    """The store and records a checkpoint was trained on (read from its saved options; `dataset`'s data /
    image_root and `embedding_path` replace paths that moved), checked to be of the checkpoint's teacher.
    Rows are read from the file: evaluation and export need a few thousand of them, not the store in RAM."""
    saved = DatasetOptions.from_saved(state["options"])
    moved = replace(saved, data=(dataset.data if dataset and dataset.data else saved.data),
                    image_root=(dataset.image_root if dataset and dataset.image_root else saved.image_root))
    store, records = open_with_records(embedding_path or state["options"]["embedding_path"], moved, in_memory=False)
    try:
        check_teacher(store.path, store.teacher_identity, state["teacher"])
    except BaseException:
        store.close()
        raise
    return store, records, moved


def evaluate_checkpoint(checkpoint: str | Path, dataset: DatasetOptions | None = None,
                        embedding_path: str | None = None, split: str = "eval", cases: Sequence[str] | None = None,
                        device: str | torch.device | None = None, num_workers: int = 2,
                        top_k: int = 15, trusted: Collection[str] = ()) -> tuple[dict, EvalResult]:
    """(checkpoint state, scores) of a training checkpoint on `split`, with the options it was trained with.

    `dataset` (data / image_root) and `embedding_path` replace the saved paths when files moved. `trusted`:
    modules outside the project the checkpoint's student names may import (the user named them).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state = load_checkpoint(checkpoint)
    spec, students = students_from_checkpoint(state, device, trusted)
    store, records, moved = open_training_data(state, dataset, embedding_path)
    with store:
        mean, std = store.image_normalisation
        transform = ImageTransform(spec.image_size, spec.resize, mean)
        result = evaluate_students(students.image, students.text, records, store, transform, mean, std,
                                   spec.max_seq_length, device,
                                   cases=cases or cases_for(spec.trained, spec.feature_dim == store.dim),
                                   split=split, num_workers=num_workers, top_k=top_k, limits=moved.image_limits())
    return state, result


def main_case(result: EvalResult, train: str) -> str:
    """The case a checkpoint of a `train` run is judged by, among those scored."""
    return MAIN_CASE[train] if MAIN_CASE[train] in result.cases else next(iter(result.cases))


def checkpoint_summary(state: dict, result: EvalResult) -> dict:
    """A checkpoint's report as JSON: its main case's metrics at the top level (the metrics keys, as
    evaluation_labels.py writes them), which case that is, and every other case under "cases"."""
    main = main_case(result, student_spec(state).trained)
    summaries = result.summaries()
    return {**summaries[main], "case": main, "checkpoint": state["path"], "iteration": state["iteration"],
            "cases": {c: s for c, s in summaries.items() if c != main}}
