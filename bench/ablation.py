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

The library part: person.demo.ablation (the rows, their runs and the table) and person.demo.curve.

Usage: python bench/ablation.py [--workdir ablation] [--base current|previous] [--iters 500] [--jobs 2]
                                [--rows recipe no-mix_rel ...] [--seeds 0 1] [--seeded recipe stride-3 ...]
       python bench/ablation.py --curve [--plot docs/curve.png] [--eval-every 100] [--iters N] [--rows ROW ...]
                                [--run RUN_DIR ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from person import files
from person.demo.ablation import BASES, ROWS, ablation_table, base_recipe, run_rows, teacher_figures
from person.demo.curve import curve_options, run_curve, slug
from person.demo.prepare import demo_set, teacher_store
from person.demo.recipe import DEMO_IDS, DEMO_TRAINING
from person.demo.teacher import DEMO_TEACHER
from person.options import number, run_command
from person.train.options import TrainOptions, saved_options
from person.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def curve(args: argparse.Namespace, store: Path, teacher: dict) -> None:
    """Train the curve's run (or read --run's), then print and plot every run's curve."""
    runs = args.run
    if not runs:
        opts = TrainOptions(**curve_options(args.base, args.rows, args.iters, args.eval_every),
                            embedding_path=str(store.resolve()), log_dir=str((args.workdir / "logs").resolve()),
                            overwrite=True)
        runs = [Trainer(opts).fit().run_dir]
    labels = args.labels or [run.name for run in runs]
    if len({slug(label) for label in labels}) < len(labels):  # their exports and JSON are named by label
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
        files.write_json(args.workdir / f"{slug(c['label'])}.json",
                         c | {"teacher": {k: teacher[k] for k in ("eer", "rank1", "mAP")}})
    plot_curve(curves, teacher, args.plot)
    print(f"plot: {args.plot}")


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
    args = p.parse_args()
    if (args.run or args.labels) and not args.curve:
        p.error("--run and --labels go with --curve")
    if args.run and (args.rows or args.iters):
        p.error("--rows and --iters make the run --curve trains; with --run the runs are already trained")
    if args.labels and len(args.labels) != len(args.run or []):
        p.error(f"--labels: {len(args.labels)} names for {len(args.run or [])} --run folders")
    if args.curve and args.run:  # the runs' own stores: copies of one are fine, one plot has one teacher line
        stores = sorted({saved_options(run)["embedding_path"] for run in args.run})
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
    run_command(main)
