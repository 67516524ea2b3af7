"""Scoring the students while they train and keeping the best checkpoint: the evaluation half of the Trainer.

`Selection` is a base of `person.train.trainer.Trainer` and reads what the trainer built (store, records,
students, options); on its own it holds nothing. best.pt is chosen by the main case's EER on the selection
split (the file's val split, else the held-out identities); the final report of every case is on the held-out
(test) split.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from person.data.images import ImageTransform
from person.data.records import RecordSet
from person.eval.evaluate import MAIN_CASE, cases_for, evaluate_students
from person.models.students import Students
from person.teacher.store import FeatureStore
from person.train.options import TrainOptions

log = logging.getLogger(__name__)

BEST_NAME = "best.pt"


def selection_split(store: FeatureStore) -> str:
    """Where best.pt is chosen: the file's val split when it has one (never choose on test), else the
    held-out identities. Both must hold two identities at least (verification needs negatives)."""
    split = "val" if len(store.split_rows("val")) else "eval"
    for name in {split, "eval"}:
        ids = np.unique(store.image_pid[store.split_rows(name)])
        if len(ids) < 2:
            raise ValueError(f"{store.path}: the {name} split has {len(ids)} readable identities; scoring "
                             f"needs two at least (hold out more with --eval_ids when extracting)")
    return split


class Selection:
    """Evaluation during and at the end of a run, and best.pt (see the module's note)."""

    opts: TrainOptions
    store: FeatureStore
    records: RecordSet
    students: Students
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    feature_dim: int
    iteration: int
    select_split: str
    best: dict[str, Any] | None
    save: Callable[..., Path]

    def evaluate(self, cases: tuple[str, ...] | None = None, split: str = "eval") -> dict[str, dict]:
        """Scores on `split` (rank 0 only); returns case -> metrics summary."""
        o = self.opts
        transform = ImageTransform(self.image_size, o.resize, self.mean)
        result = evaluate_students(self.students.image, self.students.text, self.records, self.store, transform,
                                   self.mean, self.std, o.max_seq_length, self.device,
                                   cases=cases or (self.main_case,), split=split,
                                   num_workers=min(o.num_workers, 2), limits=o.image_limits())
        return result.summaries()

    @property
    def main_case(self) -> str:
        return MAIN_CASE[self.opts.train]

    @property
    def final_cases(self) -> tuple[str, ...]:
        """Every case the run's students can be scored on (mixed ones only in the teacher's space)."""
        return cases_for(self.opts.train, self.feature_dim == self.store.dim)

    def _evaluate_and_keep_best(self, writer: SummaryWriter | None, cases: tuple[str, ...] | None = None
                                ) -> dict[str, dict]:
        """Evaluate `cases` (default: the main one) on the selection split, log the main case, and save
        best.pt when its EER is the lowest so far."""
        summaries = self.evaluate(cases, self.select_split)
        summary = summaries[self.main_case]
        log.info("eval at iteration %d (%s, %s split): EER %.4f%%  Rank-1 %.3f%%  mAP %.3f%%", self.iteration,
                 self.main_case, self.select_split, 100 * summary["eer"], 100 * summary["rank1"],
                 100 * summary["mAP"])
        if writer:
            for key in ("eer", "rank1", "rank5", "mAP", "mINP"):
                writer.add_scalar(f"eval/{key}", summary[key], self.iteration)
        if self.best is None or summary["eer"] < self.best["eer"]:
            self.best = {"iteration": self.iteration, "case": self.main_case, "split": self.select_split,
                         **{k: summary[k] for k in ("eer", "rank1", "mAP")}}
            self.save(BEST_NAME)
        return summaries

    def _final_evaluation(self, writer: SummaryWriter | None) -> dict[str, dict]:
        """best.pt's last chance on the selection split, then every case on the held-out (test) split."""
        cases = self.final_cases
        if self.select_split == "eval":
            return self._evaluate_and_keep_best(writer, cases)
        self._evaluate_and_keep_best(writer)
        return self.evaluate(cases, "eval")
