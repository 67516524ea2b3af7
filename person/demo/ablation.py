"""The recipe's ablation (bench/ablation.py): a base recipe (the demo's, person.demo.recipe, as it is or as it
stood before this table moved it) against the recipe with one change per row, each row trained once.

Rows run as child processes (person.demo.rows), `jobs` at a time; each finished row is kept in
WORKDIR/ablation.json, so a rerun only trains rows that are missing or whose settings changed. The table gives
per row the student pair's held-out EER, Rank-1, mAP, the two mixed cases' EER and Rank-1 and the training minutes.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from person.demo import rows as rows_runner
from person.demo.recipe import DEMO_TRAINING
from person.demo.rows import CASES, Row
from person.eval.evaluate import teacher_evaluation
from person.teacher.store import open_store

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


def run_rows(tasks: list[tuple[str, int]], store: Path, workdir: Path, iters: int, jobs: int,
             base: str = "current") -> dict[str, dict]:
    """The results of `tasks` (row, seed), training those not kept in WORKDIR/ablation.json with these settings,
    `jobs` at a time (person.demo.rows); each is scored by its run's own final evaluation."""
    rows = [Row(f"{base}/{name}/s{seed}/{iters}", row_options(name, store, workdir, iters, seed, base))
            for name, seed in tasks]
    return rows_runner.run_rows(rows, workdir / "ablation.json", jobs, tag="ablation")


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


