"""The demo students at a new user's cameras: adapted to the frozen second site from its unlabeled crops, its
unlabeled captions or some of its labels, scored on its held-out identities (issue: "Your own cameras").

Prepares, each step skipped when its output is in WORKDIR: the demo set and the second site (the layout of
bench/site.py, so `--workdir` may be bench/site.py's), the demo teacher's stores of both, the site's training
images as whole-image detections and its training captions as a text file, their unlabeled stores, and the
labelled mixes (the demo set + 50 / 200 / all of the site's training identities, 50 others for validation, its
held-out identities as test). The demo students are trained once with the demo's recipe (or `--demo-checkpoint`,
a run of it). Then every row of person.demo.domain is trained from them (`--init`), `--jobs` at a time, and kept
in WORKDIR/domain.json; the table of the site's and the demo set's held-out figures is printed.

Usage: python bench/domain.py [--workdir domain] [--rows crops crops-captions ...] [--seeds 0 1]
                              [--seeded crops-captions labels-50 ...] [--iters 600] [--jobs 2]
                              [--demo-checkpoint CKPT]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from person.data.records import load_records
from person.data.unlabeled import captions_file, detections_file
from person.demo.ablation import teacher_figures
from person.demo.domain import ROWS, SITE_VAL_IDS, Inputs, domain_row, domain_table
from person.demo.prepare import demo_set, teacher_store, unlabeled_store
from person.demo.recipe import ADAPT_TRAINING, DEMO_IDS, DEMO_TRAINING
from person.demo.rows import CASES, Row, run_rows
from person.demo.site_data import labelled_mix, second_site, site_captions, site_crops
from person.demo.teacher import DEMO_TEACHER
from person.eval.evaluate import evaluate_checkpoint
from person.options import number


def prepare(workdir: Path, rows: list[str], demo_checkpoint: Path | None) -> Inputs:
    demo_json = demo_set(workdir / "demo", DEMO_IDS, DEMO_TRAINING["p"])
    demo_store = teacher_store(demo_json.parent / "embeddings", demo_json, DEMO_TEACHER)
    site_json = second_site(workdir / "second")
    site_store = teacher_store(site_json.parent / "embeddings", site_json, DEMO_TEACHER)
    if demo_checkpoint is None:  # the demo's own run and checkpoint: alone on the machine, as the demo trains
        row = Row("demo-students", DEMO_TRAINING | dict(embedding_path=str(demo_store), log_dir=str(
            (workdir / "logs").resolve()), run_name="demo-students", overwrite=True))
        demo_checkpoint = Path(run_rows([row], workdir / "demo-students.json", jobs=1)[row.key]["checkpoint_path"])
    folder = workdir / "site-unlabeled"
    root = load_records(site_json).image_root
    unlabeled = {"crops": unlabeled_store(folder, detections_file(site_crops(site_json, folder / "crops.jsonl"),
                                                                  root), DEMO_TEACHER),
                 "captions": unlabeled_store(folder, captions_file(site_captions(site_json, folder / "captions.txt")),
                                             DEMO_TEACHER)}
    if any("tracked-crops" in ROWS[name].unlabeled for name in rows):
        tracked = site_crops(site_json, folder / "crops-tracks.jsonl", tracks=True)
        unlabeled["tracked-crops"] = unlabeled_store(folder, detections_file(tracked, root), DEMO_TEACHER)
    mixes = {}
    for ids in {ROWS[name].site_ids for name in rows if ROWS[name].labelled}:
        mix_json = labelled_mix(demo_json, site_json, workdir / f"mix-{ids or 'all'}", ids, SITE_VAL_IDS)
        mixes[ids] = teacher_store(mix_json.parent / "embeddings", mix_json, DEMO_TEACHER)
    return Inputs(demo_store, site_store, demo_checkpoint, unlabeled, mixes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("domain"), help="sets, stores, runs and results")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="rows to run (default: all)")
    p.add_argument("--seeds", type=number(int, at_least=0), nargs="+", default=[0, 1],
                   help="seeds of the rows in --seeded")
    p.add_argument("--seeded", nargs="*", choices=list(ROWS),
                   default=["crops-captions", "crops-captions-tracks", "crops-captions-id", "labels-50", "labels-all",
                            "labels-50-sdm", "labels-all-sdm", "labels-all-sdm-0.03", "labels-all-sdm-cls"],
                   help="rows run with every seed in --seeds, the ones that decide a goal (the others: the first)")
    p.add_argument("--iters", type=number(int, at_least=1), default=ADAPT_TRAINING["max_iters"], help="iterations of a row")
    p.add_argument("--jobs", type=number(int, at_least=1), default=2, help="rows trained at once")
    p.add_argument("--demo-checkpoint", type=Path, default=None,
                   help="the demo students to start from: the last checkpoint of the demo's recipe on WORKDIR's demo "
                        "set, as demo.py trains it (default: train them here, ~10 minutes)")
    args = p.parse_args()
    inputs = prepare(args.workdir, args.rows, args.demo_checkpoint)
    rows = [domain_row(name, seed, inputs, args.workdir, args.iters) for name in args.rows
            for seed in (args.seeds if name in args.seeded else args.seeds[:1])]
    results = run_rows(rows, args.workdir / "domain.json", args.jobs, tag="domain")
    stores = {"site": inputs.site_store, "demo": inputs.demo_store}
    teacher = {label: teacher_figures(store) for label, store in stores.items()}
    students = {label: evaluate_checkpoint(inputs.demo_checkpoint, embedding_path=str(store), num_workers=0,
                                           cases=[c for c, _ in CASES])[1].summaries() for label, store in stores.items()}
    print(f"\nThe demo students ({inputs.demo_checkpoint}) adapted to the second site, {args.iters} iterations a row; "
          f"figures on the site's held-out identities, and the demo set's (%):\n")
    print(domain_table(results, args.rows, teacher, students))


if __name__ == "__main__":
    main()
