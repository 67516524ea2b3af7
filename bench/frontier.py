"""The image students a device integrator chooses from: widths x input sizes, trained for equal minutes on the demo.

For each cell (a student at an input size): held-out EER, Rank-1 and mAP of teacher captions against its images
(fp32 and its int8 export), parameters, MACs, int8 milliseconds a crop (batch 1, one onnxruntime thread) and the
int8 file's size; a table and a plot (PNG, README's export section). Equal minutes: each cell's step is timed by a
short probe run first, and the cell trains minutes * 60 / step iterations of the demo recipe, image student only
(person.demo.frontier). Cells, probes and runs are kept in WORKDIR, so a rerun trains only what is missing.
Run it alone on the machine: the probes' timings decide every cell's iterations.

The default cells: ANet2_w050, ANet2_w075 and ANet2 at 96x48, 128x64 and 224x112, and the ReLU variants of ANet2
at 224x112 and of ANet2_w050 at 96x48 (issue 27: the activation that quantises cleanly, against PReLU at equal
minutes).

Usage: python bench/frontier.py [--workdir frontier] [--minutes 4] [--seeds 0] [--cells NAME@HxW ...]
                                [--store STORE.h5] [--plot docs/frontier.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from person import files
from person.demo.ablation import teacher_figures
from person.demo.frontier import measure, parse_cell, plot, probe, table, train
from person.demo.prepare import demo_set, teacher_store
from person.demo.recipe import DEMO_IDS, DEMO_TRAINING
from person.demo.teacher import DEMO_TEACHER
from person.options import number, run_command
from person.teacher.store import open_store

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = ("backbone.mf3.ANet2_w050", "backbone.mf3.ANet2_w075", "backbone.mf3.ANet2")
SIZES = ("96x48", "128x64", "224x112")
CELLS = [f"{w}@{s}" for s in SIZES for w in WIDTHS] + ["backbone.mf3.ANet2_relu@224x112",
                                                         "backbone.mf3.ANet2_w050_relu@96x48"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("frontier"), help="set, store, probes, runs and exports")
    p.add_argument("--minutes", type=number(float, at_least=0.1), default=4.0, help="training minutes a cell")
    p.add_argument("--seeds", type=number(int, at_least=0), nargs="+", default=[0])
    p.add_argument("--cells", nargs="+", default=CELLS, help="BACKBONE@HxW, e.g. backbone.mf3.ANet2@224x112")
    p.add_argument("--store", type=Path, default=None,
                   help="the demo set's teacher store, when one is there already (default: drawn into WORKDIR)")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "frontier.png")
    args = p.parse_args()
    try:
        cells = [parse_cell(c) for c in args.cells]
    except ValueError as e:
        p.error(str(e))
    store = args.store or teacher_store(args.workdir / "embeddings",
                                        demo_set(args.workdir / "data", DEMO_IDS, DEMO_TRAINING["p"]), DEMO_TEACHER)
    teacher = teacher_figures(store)
    with open_store(store) as s:
        dim = s.dim
    steps = probe(cells, store, args.workdir)
    results = train(cells, steps, args.minutes, args.seeds, store, args.workdir)
    measured = {c.key: [measure(c, results[f"train/{c.key}/s{seed}/{args.minutes:g}min"], args.workdir, dim)
                        for seed in args.seeds] for c in cells}
    files.write_json(args.workdir / "measured.json", {"steps": steps, "minutes": args.minutes, "cells": measured})
    print(f"\n{args.minutes:g} training minutes a cell (iterations from each cell's probe), seeds "
          f"{', '.join(map(str, args.seeds))}; teacher captions against student images on the held-out split\n")
    print(table(cells, measured, steps, teacher))
    plot(cells, measured, teacher, args.plot)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    run_command(main)
