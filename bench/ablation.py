"""Which losses matter, and how close the students get for the compute spent (the quality issue's answer).

1. The ablation: a base recipe (`--base`: the demo's, person.demo.recipe, as it is or as it stood before this
   table moved it) on the demo set, against the recipe without each of its loss terms, with each term it
   leaves out, with other memory sizes, widths and cheaper steps; same seed and iterations for every row
   (`--iters`; `--seeds` for the rows named in `--seeded`, with their spread). Per row: the student pair's
   held-out EER, Rank-1, mAP, the two mixed cases' EER and Rank-1 (student text against the teacher's
   gallery, and the reverse), and the training minutes. Rows run as separate processes, `--jobs` at a time
   with cores / jobs torch threads each (2 x 1 thread does ~1.4x the work of 1 x 2 threads on 2 cores);
   each finished row is kept in WORKDIR/ablation.json, so a rerun only trains rows that are missing or
   whose settings changed.
2. `--curve`: held-out EER and Rank-1 against training minutes of one run of the recipe (evaluated every
   `--eval-every` iterations, alone on the machine as the demo runs), the teacher as a horizontal line and
   the int8 export of the final checkpoint as a point: a PNG (`--plot`) and the figures. `--iters` and `--rows`
   make the run longer or change its recipe; `--run RUN_DIR ...` reads finished runs' evaluations (their
   TensorBoard events) instead of training one, and plots them together.

Usage: python bench/ablation.py [--workdir ablation] [--base current|previous] [--iters 500] [--jobs 2]
                                [--rows recipe no-mix_rel ...] [--seeds 0 1] [--seeded recipe stride-3 ...]
       python bench/ablation.py --curve [--plot docs/curve.png] [--eval-every 100] [--iters N] [--rows ROW ...]
                                [--run RUN_DIR ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from person import files
from person.demo.prepare import demo_set, teacher_store
from person.demo.recipe import DEMO_IDS, DEMO_TRAINING
from person.demo.teacher import DEMO_TEACHER
from person.options import number

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
    """One row in this process (the `--one` mode the parent starts): train, score, write `out`."""
    import torch
    torch.set_num_threads(threads)
    from person.train.options import TrainOptions
    from person.train.trainer import Trainer
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
                    proc = subprocess.Popen([sys.executable, __file__, "--one", spec], stdout=f,
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
    from person.eval.evaluate import teacher_evaluation
    from person.teacher.store import open_store
    with open_store(store) as s:
        evaluation, _ = teacher_evaluation(s)
    return evaluation.to_dict()


def curve_points(run_dir: Path) -> list[dict]:
    """(iteration, minutes since the run's first logged step, held-out EER, Rank-1) of every evaluation in
    a run's TensorBoard events (none for a run trained without evaluations); the minutes include the
    evaluations themselves (~2 s each on the demo set)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    if "eval/eer" not in events.Tags()["scalars"]:
        return []
    start = min(e.wall_time for e in events.Scalars("train/total"))
    first_step = min(e.step for e in events.Scalars("train/total"))
    # The first logged step came `first_step` iterations in: its time is extrapolated back to iteration 0.
    rate = [e for e in events.Scalars("train/images_per_s") if e.step == first_step]
    options = json.loads((run_dir / "options.json").read_text())
    start -= first_step * options["p"] * options["k"] / rate[0].value if rate else 0.0
    rank1 = {e.step: e.value for e in events.Scalars("eval/rank1")}
    return [{"iteration": e.step, "minutes": (e.wall_time - start) / 60, "eer": e.value, "rank1": rank1[e.step]}
            for e in events.Scalars("eval/eer")]


def curve_options(base: str, rows: list[str], iters: int | None, eval_every: int) -> dict[str, Any]:
    """The curve run's recipe: the base with the named rows' changes (the longer-run candidates: a wider
    student, more iterations), `iters` long (default: the recipe's own), evaluated and saved every `eval_every`."""
    recipe = base_recipe(base)
    for name in rows:
        recipe |= ROWS[name][1]
    iters = iters or recipe["max_iters"]
    label = "-".join([base, *rows, str(iters)])
    return recipe | dict(max_iters=iters, eval_every=eval_every, save_every=eval_every, run_name=f"curve-{label}")


def curve(args: argparse.Namespace, store: Path, teacher: dict) -> None:
    from person.train.options import TrainOptions
    from person.train.trainer import Trainer
    runs = args.run
    if not runs:
        opts = TrainOptions(**curve_options(args.base, args.rows, args.iters, args.eval_every),
                            embedding_path=str(store.resolve()), log_dir=str((args.workdir / "logs").resolve()),
                            overwrite=True)
        runs = [Trainer(opts).fit().run_dir]
    labels = args.labels or [run.name for run in runs]
    if len({_slug(label) for label in labels}) < len(labels):  # their exports and JSON are named by label
        raise SystemExit(f"--run: two runs would share output names ({labels}): name them apart with --labels")
    curves = [run_curve(run_dir, args.workdir, label) for run_dir, label in zip(runs, labels)]
    for c in curves:
        points, int8 = c["points"], c["int8"]
        lines = ["| iteration | train min | pair EER % | pair Rank-1 % |", "|---|---|---|---|"]
        lines += [f"| {p['iteration']} | {p['minutes']:.1f} | {100 * p['eer']:.2f} | {100 * p['rank1']:.2f} |"
                  for p in points]
        lines.append(f"| {points[-1]['iteration']}, int8 export | {points[-1]['minutes']:.1f} | "
                     f"{100 * int8['eer']:.2f} | {100 * int8['rank1']:.2f} |")
        lines.append(f"| teacher | | {100 * teacher['eer']:.2f} | {100 * teacher['rank1']:.2f} |")
        print(f"\n{c['label']}: run {c['run']}\n" + "\n".join(lines))
        files.write_json(args.workdir / f"{_slug(c['label'])}.json",
                         c | {"teacher": {k: teacher[k] for k in ("eer", "rank1", "mAP")}})
    plot_curve(curves, teacher, args.plot)
    print(f"plot: {args.plot}")


def _slug(label: str) -> str:
    """A label as a file name: what is not a letter, digit, dot or dash becomes "_"."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_") or "run"


def run_curve(run_dir: Path, workdir: Path, label: str) -> dict:
    """A run's evaluations (curve_points) and the int8 export of its last checkpoint, scored the same way;
    the export goes to WORKDIR/<label>-export."""
    points = curve_points(run_dir)
    if not points:
        raise SystemExit(f"{run_dir}: the run logged no evaluation (trained with --eval_every 0?); a curve needs a "
                         f"run evaluated as it went")
    from person.export.evaluation import evaluate_export
    from person.export.exporter import export_checkpoint
    from person.export.options import ExportOptions
    from person.models.checkpoint import last_checkpoint
    export_dir = workdir / f"{_slug(label)}-export"
    export_checkpoint(last_checkpoint(run_dir), export_dir, ExportOptions(int8=True, calibration=512, overwrite=True))
    _, int8 = evaluate_export(export_dir, "int8", cases=["student"])
    return {"run": str(run_dir), "label": label, "points": points, "int8": int8.summaries()["student"]}


def plot_curve(curves: list[dict], teacher: dict, path: Path) -> None:
    """One line per run (its "label"), each with its int8 export as a square."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "eer", "held-out EER %"), (axes[1], "rank1", "held-out Rank-1 %")):
        for i, c in enumerate(curves):
            color, points = f"C{i}", c["points"]
            minutes = [p["minutes"] for p in points]
            ax.plot(minutes, [100 * p[key] for p in points], "o-", color=color, label=c["label"])
            ax.plot([minutes[-1]], [100 * c["int8"][key]], "s", color=color, markeredgecolor="k",
                    label="int8 export of the last checkpoint" if i == len(curves) - 1 else None)
        ax.axhline(100 * teacher[key], color="k", linestyle="--", label="teacher")
        ax.set_xlabel("training minutes (2 CPU cores)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    files.make_folder(path.parent)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("ablation"), help="set, store, runs and results")
    p.add_argument("--base", choices=BASES, default="current", help="the recipe the rows change (default: the "
                   "demo's as it is; previous: stride 2, lr 2e-3, no pair terms: the base of BENCHMARKS.md's table)")
    p.add_argument("--iters", type=number(int, at_least=1), default=None,
                   help="iterations of every ablation row (default 500), or of the curve's run (default: the recipe's)")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=None,
                   help="rows to run (default: all); with --curve, the rows whose changes the curve's run takes")
    p.add_argument("--seeds", type=number(int, at_least=0), nargs="+", default=[0, 1],
                   help="seeds of the rows in --seeded")
    p.add_argument("--seeded", nargs="*", choices=list(ROWS), default=["recipe"],
                   help="rows run with every seed in --seeds (the others with the first)")
    p.add_argument("--jobs", type=number(int, at_least=1), default=2, help="rows trained at once")
    p.add_argument("--curve", action="store_true", help="the quality-per-minute curve instead of the table")
    p.add_argument("--eval-every", type=number(int, at_least=1), default=100,
                   help="with --curve: evaluate every N iterations")
    p.add_argument("--run", type=Path, nargs="+", default=None, help="with --curve: finished runs of the recipe "
                   "to read, on one store (each trained in one go: a resumed run's pause would count)")
    p.add_argument("--labels", nargs="+", default=None, help="with --curve --run: the runs' names in the plot "
                   "(default: their folder names)")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "curve.png", help="with --curve: the PNG")
    p.add_argument("--one", help=argparse.SUPPRESS)  # the child process of one row
    args = p.parse_args()
    if (args.run or args.labels) and not args.curve:
        p.error("--run and --labels go with --curve")
    if args.run and (args.rows or args.iters):
        p.error("--rows and --iters make the run --curve trains; with --run the runs are already trained")
    if args.labels and len(args.labels) != len(args.run or []):
        p.error(f"--labels: {len(args.labels)} names for {len(args.run or [])} --run folders")
    if args.one:
        spec = json.loads(args.one)
        train_row(spec["options"], spec["threads"], Path(spec["out"]))
        return
    if args.curve and args.run:  # the runs' own stores: copies of one are fine, one plot has one teacher line
        stores = sorted({json.loads((run / "options.json").read_text())["embedding_path"] for run in args.run})
        scores = {path: teacher_figures(Path(path)) for path in stores}
        if len({(t["eer"], t["rank1"]) for t in scores.values()}) > 1:
            p.error("--run: the runs trained on stores whose teachers score differently on their held-out split ("
                    + ", ".join(f"{path}: EER {100 * t['eer']:.2f}%" for path, t in scores.items())
                    + "); one plot has one teacher line")
        store, teacher = Path(stores[0]), scores[stores[0]]
    else:
        json_path = demo_set(args.workdir / "data", DEMO_IDS, DEMO_TRAINING["p"])
        store = teacher_store(args.workdir / "embeddings", json_path, DEMO_TEACHER)
        teacher = teacher_figures(store)
    if args.curve:
        args.rows = [n for n in args.rows or [] if n != "recipe"]
        curve(args, store, teacher)
        return
    args.rows, args.iters = args.rows or list(ROWS), args.iters or 500
    base = base_recipe(args.base)
    same = [n for n in args.rows if n != "recipe" and base | ROWS[n][1] == base]
    if same:
        print(f"[ablation] left out, the same as the {args.base} base recipe: {', '.join(same)}")
    rows = [n for n in args.rows if n not in same]
    tasks = [(name, seed) for name in rows for seed in (args.seeds if name in args.seeded else args.seeds[:1])]
    results = run_rows(tasks, store, args.workdir, args.iters, args.jobs, args.base)
    print(f"\n{args.base} base, {args.iters} iterations a row, {args.jobs} row(s) at a time\n")
    print(ablation_table(results, rows, teacher))


if __name__ == "__main__":
    main()
