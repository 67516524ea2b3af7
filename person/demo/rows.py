"""A benchmark's training rows as child processes, shared by bench/ablation.py and bench/domain.py.

Each row is a training run (its TrainOptions as a dict) and where to score it: `score` maps a label to a labelled
store whose held-out identities the row's checkpoint (`checkpoint`: "last", or "best" as the run chose it on its
own selection split) is scored on; the run's own final evaluation is kept as "cases" either way. Rows run as
`python -m person.demo.rows SPEC`, `jobs` at a time with cores / jobs torch threads each (2 x 1 thread does ~1.4x
the work of 1 x 2 threads on 2 cores); each finished row is kept in a results file, so a rerun only trains rows
that are missing or whose settings changed. A failed row does not stop the others; the failures are raised
together at the end, and an interrupted run (Ctrl-C, a kill of this process) stops its children.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from person import files
from person.eval.evaluate import evaluate_checkpoint
from person.train.options import TrainOptions
from person.train.trainer import Trainer

CASES = (("student", "pair"), ("student_text_teacher_image", "s.text>t.images"),
         ("teacher_text_student_image", "t.text>s.images"))
METRICS = ("eer", "rank1", "mAP")


@dataclass
class Row:
    """One training run of a benchmark and where its checkpoint is scored."""

    key: str
    options: dict[str, Any]
    score: dict[str, str] = field(default_factory=dict)  # label -> labelled store path
    checkpoint: str = "last"  # "last" | "best"
    # Runs trained first, in order (a staged recipe); "{stage0}", "{stage1}", ... in a later run's options stand
    # for those runs' last checkpoints.
    stages: tuple[dict[str, Any], ...] = ()

    def settings(self) -> dict[str, Any]:
        """What a kept result must have been made with (its thread count is kept beside its minutes, not compared:
        another --jobs does not retrain what is there)."""
        return {"options": self.options, "score": self.score, "checkpoint": self.checkpoint} | (
            {"stages": list(self.stages)} if self.stages else {})


def _with_stages(options: dict[str, Any], done: list[str]) -> dict[str, Any]:
    """`options` with each "{stageN}" (alone or in a list) replaced by stage N's last checkpoint."""
    def one(value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch(r"\{stage\d+\}", value):
            return done[int(value[6:-1])]
        return [one(v) for v in value] if isinstance(value, list) else value
    return {k: one(v) for k, v in options.items()}


def train_row(row: Row, threads: int, out: Path) -> None:
    """One row in this process (the child process run_rows starts): train, score, write `out`."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    done: list[str] = []
    for stage in row.stages:
        done.append(str(Trainer(TrainOptions(**_with_stages(stage, done))).fit().last_checkpoint))
    result = Trainer(TrainOptions(**_with_stages(row.options, done))).fit()
    minutes = (time.perf_counter() - start) / 60
    checkpoint = result.last_checkpoint if row.checkpoint == "last" else result.best_checkpoint
    scores = {}
    for label, store in row.score.items():
        _, evaluation = evaluate_checkpoint(checkpoint, embedding_path=store, cases=[c for c, _ in CASES],
                                            num_workers=0)
        scores[label] = {case: {m: evaluation.cases[case].to_dict()[m] for m in METRICS} for case, _ in CASES}
    files.write_json(out, row.settings() | {
        "threads": threads, "minutes": minutes, "checkpoint_path": str(checkpoint), "best": result.best,
        "scores": scores,
        # a run of one student (--train image|text) evaluates only the cases it has
        "cases": {case: {m: result.final[case][m] for m in METRICS} for case, _ in CASES if case in result.final}})


# What a result kept before rows named their scoring was made with (the ablation's: its own evaluation, last).
_KEPT_DEFAULTS = {"score": {}, "checkpoint": "last"}


def _finished(result: dict | None, row: Row) -> bool:
    return bool(result) and all(result.get(k, _KEPT_DEFAULTS.get(k)) == v for k, v in row.settings().items())


def run_rows(rows: list[Row], results_path: Path, jobs: int, tag: str = "rows") -> dict[str, dict]:
    """The results of `rows` by key, training those not kept in `results_path` with these settings, `jobs` at a
    time; `tag` prefixes the progress lines."""
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    threads = max(1, (os.cpu_count() or 2) // jobs)
    pending, failed = [], []
    for row in rows:
        out = results_path.parent / "rows" / (row.key.replace("/", "_") + ".json")
        if not _finished(results.get(row.key), row):
            done = json.loads(out.read_text()) if out.exists() else None  # a row whose parent was killed
            if _finished(done, row):
                results[row.key] = done
            else:
                pending.append((row, out))
    files.write_json(results_path, results)
    running: list[tuple[Row, subprocess.Popen, Path]] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                row, out = pending.pop(0)
                log = out.with_suffix(".log")
                files.make_folder(out.parent)
                out.unlink(missing_ok=True)
                spec = json.dumps({"row": asdict(row), "threads": threads, "out": str(out)})
                with log.open("w") as f:
                    proc = subprocess.Popen([sys.executable, "-m", "person.demo.rows", spec], stdout=f,
                                            stderr=subprocess.STDOUT)
                running.append((row, proc, out))
                print(f"[{tag}] {row.key}: started ({threads} thread(s)), log {log}", flush=True)
            time.sleep(0.5)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                row, proc, out = item
                if proc.returncode != 0:
                    failed.append(f"{row.key} (exit {proc.returncode}, log {out.with_suffix('.log')})")
                    print(f"[{tag}] {row.key}: FAILED, see {out.with_suffix('.log')}", flush=True)
                    continue
                results[row.key] = json.loads(out.read_text())
                files.write_json(results_path, results)
                case, scores = next(iter(results[row.key]["cases"].items()))  # the pair's, when both trained
                print(f"[{tag}] {row.key}: {case} EER {100 * scores['eer']:.2f}%  Rank-1 {100 * scores['rank1']:.2f}% "
                      f"on its own held-out split, in {results[row.key]['minutes']:.1f} min", flush=True)
    finally:
        for _, proc, _ in running:
            proc.terminate()
            proc.wait()
    if failed:
        raise RuntimeError(f"{len(failed)} row(s) failed: {'; '.join(failed)}")
    return {row.key: results[row.key] for row in rows}


if __name__ == "__main__":  # the child process of one row: python -m person.demo.rows SPEC
    spec = json.loads(sys.argv[1])
    train_row(Row(**spec["row"]), spec["threads"], Path(spec["out"]))
