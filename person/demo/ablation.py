"""The recipe's ablation (bench/ablation.py): a base recipe (the demo's, person.demo.recipe, as it is or as it
stood before this table moved it) against the recipe with one change per row, each row trained once.

Rows run as child processes (`python -m person.demo.ablation SPEC`), `jobs` at a time with cores / jobs torch
threads each (2 x 1 thread does ~1.4x the work of 1 x 2 threads on 2 cores); each finished row is kept in
WORKDIR/ablation.json, so a rerun only trains rows that are missing or whose settings changed. The table gives
per row the student pair's held-out EER, Rank-1, mAP, the two mixed cases' EER and Rank-1 and the training minutes.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from person import files
from person.demo.recipe import DEMO_TRAINING
from person.eval.evaluate import teacher_evaluation
from person.teacher.store import open_store
from person.train.options import TrainOptions
from person.train.trainer import Trainer

# The recipe each row changes. "current": the demo's recipe as it is. "previous": as it stood when this table was
# first run (text stride 2, lr 2e-3, no pair terms); its stride, learning-rate and pair rows are what moved the
# recipe to stride 3, 4e-3 and d_pos / s_neg at 0.1, and BENCHMARKS.md's table is of this base.
PREVIOUS = dict(text_stride=2, lr=2e-3, d_pos_weight=0.0, s_neg_weight=0.0)
BASES = ("current", "previous")
# Added terms start at weights where they are of the size of the recipe's own terms (~0.02-0.1 late in a
# run): the contrastive and pair terms are means of (1 - cos) over positives, ~1 at first, so they get 0.1.
ID_TERMS = dict(id_img_weight=0.1, id_cap_weight=0.1, id_img_cap_weight=0.1, memory_warmup=100)
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "recipe": ("the base recipe (--base)", {}),
    "no-dist_img": ("without dist_img", dict(dist_img_weight=0.0)),
    "no-dist_cap": ("without dist_cap", dict(dist_cap_weight=0.0)),
    "no-mix_rel": ("without mix_rel", dict(mix_rel_weight=0.0)),
    "with-dist_rel": ("+ dist_rel (1)", dict(dist_rel_weight=1.0)),
    "with-rel": ("+ rel_img, rel_cap (1, 1)", dict(rel_img_weight=1.0, rel_cap_weight=1.0)),
    "with-rkda": ("+ rkda (1)", dict(rkda_weight=1.0)),
    "with-id": ("+ id_img, id_cap, id_img_cap (0.1 each), memory 1024", dict(ID_TERMS, memory_size=1024)),
    "with-id-mem4096": ("+ id terms, memory 4096", dict(ID_TERMS, memory_size=4096)),
    "with-id-margin-0.2": ("+ id terms, memory 1024, negatives above 0.2 (not 0.5)",
                           dict(ID_TERMS, memory_size=1024, id_margin=0.2)),
    "with-id-0.3": ("+ id terms at 0.3 each, memory 1024, margin 0.2",
                    dict(ID_TERMS, id_img_weight=0.3, id_cap_weight=0.3, id_img_cap_weight=0.3, memory_size=1024,
                         id_margin=0.2)),
    "with-id-1": ("+ id terms at 1 each, memory 1024, margin 0.2",
                  dict(ID_TERMS, id_img_weight=1.0, id_cap_weight=1.0, id_img_cap_weight=1.0, memory_size=1024,
                       id_margin=0.2)),
    "with-id-cross": ("+ id_img_cap alone (0.1), memory 1024",
                      dict(id_img_cap_weight=0.1, memory_warmup=100, memory_size=1024)),
    "with-pairs": ("+ d_pos, s_neg (0.1, 0.1)", dict(d_pos_weight=0.1, s_neg_weight=0.1)),
    "no-pairs": ("without d_pos, s_neg", dict(d_pos_weight=0.0, s_neg_weight=0.0)),
    "pairs-0.3": ("d_pos, s_neg at 0.3", dict(d_pos_weight=0.3, s_neg_weight=0.3)),
    "s_neg-1": ("s_neg at 1 (below the teacher on other identities' pairs), d_pos 0.1",
                dict(d_pos_weight=0.1, s_neg_weight=1.0)),
    "image-ANet2": ("image student backbone.mf3.ANet2 (full width)", dict(backbone="backbone.mf3.ANet2")),
    "text-256": ("text student width 256", dict(text_width=256)),
    "wide": ("both wider: ANet2 full width and text width 256", dict(backbone="backbone.mf3.ANet2", text_width=256)),
    "captions-1": ("1 caption per image (half the text batch)", dict(captions_per_image=1)),
    "stride-2": ("text stem stride 2", dict(text_stride=2)),
    "stride-3": ("text stem stride 3 (a third fewer positions)", dict(text_stride=3)),
    "stride-4": ("text stem stride 4", dict(text_stride=4)),
    "stride-3-len160": ("text stem stride 3, captions read to 160 characters (not 128)",
                        dict(text_stride=3, max_seq_length=160)),
    "cheap-step": ("1 caption per image and stride 3", dict(captions_per_image=1, text_stride=3)),
    "lr-2e-3": ("peak learning rate 2e-3", dict(lr=2e-3)),
    "lr-4e-3": ("peak learning rate 4e-3", dict(lr=4e-3)),
    "lr-8e-3": ("peak learning rate 8e-3", dict(lr=8e-3)),
    "stride-3-lr-4e-3": ("text stem stride 3 and learning rate 4e-3", dict(text_stride=3, lr=4e-3)),
}
CASES = (("student", "pair"), ("student_text_teacher_image", "s.text>t.images"),
         ("teacher_text_student_image", "t.text>s.images"))


def base_recipe(base: str) -> dict[str, Any]:
    if base not in BASES:
        raise ValueError(f"base {base!r}: use one of {', '.join(BASES)}")
    return DEMO_TRAINING | (PREVIOUS if base == "previous" else {})


def row_options(name: str, store: Path, workdir: Path, iters: int, seed: int, base: str = "current") -> dict[str, Any]:
    """The TrainOptions of one row: the base recipe, the row's changes, the ablation's length and seed."""
    recipe = base_recipe(base)
    run = dict(max_iters=iters, seed=seed, eval_every=0, save_every=iters, keep_last=1, num_workers=0,
               warmup_iters=min(recipe["warmup_iters"], iters // 10))
    return dict(recipe | ROWS[name][1] | run, embedding_path=str(Path(store).resolve()),
                log_dir=str((workdir / "logs").resolve()), run_name=f"{base}-{name}-s{seed}", overwrite=True)


def train_row(options: dict[str, Any], threads: int, out: Path) -> None:
    """One row in this process (the child process run_rows starts): train, score, write `out`."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = Trainer(TrainOptions(**options)).fit()
    minutes = (time.perf_counter() - start) / 60
    files.write_json(out, {"options": options, "threads": threads, "minutes": minutes,
                           "cases": {case: {k: result.final[case][k] for k in ("eer", "rank1", "mAP")}
                                     for case, _ in CASES}})


def _finished(result: dict | None, options: dict[str, Any], threads: int) -> bool:
    """A kept result of exactly these settings (minutes are only comparable at the same thread count)."""
    return bool(result) and result.get("options") == options and result.get("threads") == threads


def run_rows(tasks: list[tuple[str, int]], store: Path, workdir: Path, iters: int, jobs: int,
             base: str = "current") -> dict[str, dict]:
    """The results of `tasks` (row, seed), training those not kept in WORKDIR/ablation.json with these settings,
    `jobs` at a time. A failed row does not stop the others; the failures are raised together at the end, and
    an interrupted run (Ctrl-C, a kill of this process) stops its children."""
    results_path = workdir / "ablation.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    threads = max(1, (os.cpu_count() or 2) // jobs)
    keys, pending, failed = [], [], []
    for name, seed in tasks:
        key, options = f"{base}/{name}/s{seed}/{iters}", row_options(name, store, workdir, iters, seed, base)
        out = workdir / "rows" / (key.replace("/", "_") + ".json")
        keys.append(key)
        if not _finished(results.get(key), options, threads):
            done = json.loads(out.read_text()) if out.exists() else None  # a row whose parent was killed
            if _finished(done, options, threads):
                results[key] = done
            else:
                pending.append((key, options, out))
    files.write_json(results_path, results)
    running: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                key, options, out = pending.pop(0)
                log = out.with_suffix(".log")
                files.make_folder(out.parent)
                out.unlink(missing_ok=True)
                spec = json.dumps({"options": options, "threads": threads, "out": str(out)})
                with log.open("w") as f:
                    proc = subprocess.Popen([sys.executable, "-m", "person.demo.ablation", spec], stdout=f,
                                            stderr=subprocess.STDOUT)
                running.append((key, proc, out))
                print(f"[ablation] {key}: started ({threads} thread(s)), log {log}", flush=True)
            time.sleep(0.5)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                key, proc, out = item
                if proc.returncode != 0:
                    failed.append(f"{key} (exit {proc.returncode}, log {out.with_suffix('.log')})")
                    print(f"[ablation] {key}: FAILED, see {out.with_suffix('.log')}", flush=True)
                    continue
                results[key] = json.loads(out.read_text())
                files.write_json(results_path, results)
                pair = results[key]["cases"]["student"]
                print(f"[ablation] {key}: EER {100 * pair['eer']:.2f}%  Rank-1 {100 * pair['rank1']:.2f}%  "
                      f"in {results[key]['minutes']:.1f} min", flush=True)
    finally:
        for _, proc, _ in running:
            proc.terminate()
            proc.wait()
    if failed:
        raise RuntimeError(f"{len(failed)} row(s) failed: {'; '.join(failed)}")
    return {key: results[key] for key in keys}


def _cell(values: list[float], percent: bool = True) -> str:
    scale = 100 if percent else 1
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ±{(max(values) - min(values)) * scale / 2:.2f}"


def ablation_table(results: dict[str, dict], names: list[str], teacher: dict) -> str:
    """Markdown of run_rows' results: one line per row (seeds averaged, ± half their range), the teacher first."""
    head = ("| row | pair EER % | pair Rank-1 % | pair mAP % | s.text>t.images EER / R1 % | "
            "t.text>s.images EER / R1 % | train min | seeds |")
    lines = [head, "|" + "---|" * 8,
             f"| teacher (demo teacher's own embeddings) | {100 * teacher['eer']:.2f} | {100 * teacher['rank1']:.2f} | "
             f"{100 * teacher['mAP']:.2f} | | | | |"]
    for name in names:
        runs = [r for k, r in sorted(results.items()) if k.split("/")[1] == name]
        if not runs:
            continue
        cases = {case: {m: [r["cases"][case][m] for r in runs] for m in ("eer", "rank1", "mAP")} for case, _ in CASES}
        pair, st, ts = (cases[c] for c, _ in CASES)
        lines.append(f"| {ROWS[name][0]} | {_cell(pair['eer'])} | {_cell(pair['rank1'])} | {_cell(pair['mAP'])} | "
                     f"{_cell(st['eer'])} / {_cell(st['rank1'])} | {_cell(ts['eer'])} / {_cell(ts['rank1'])} | "
                     f"{_cell([r['minutes'] for r in runs], percent=False)} | {len(runs)} |")
    return "\n".join(lines)


def teacher_figures(store: Path) -> dict:
    """The teacher's own figures on the store's held-out split (the table's first line)."""
    with open_store(store) as s:
        evaluation, _ = teacher_evaluation(s)
    return evaluation.to_dict()


if __name__ == "__main__":  # the child process of one row: python -m person.demo.ablation SPEC
    spec = json.loads(sys.argv[1])
    train_row(spec["options"], spec["threads"], Path(spec["out"]))
