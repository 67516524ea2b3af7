"""`demo.py --adapt`: the demo's students adapted to the built-in second site (a new user's cameras,
person.demo.synthetic.sites) from its unlabeled crops and captions, the README's "Your own cameras" path on data
the project draws.

The steps, each skipped when its output is in the workdir: the demo's set, store and students (trained here, or
finished, when the demo has not run them to the end), the second site, its training images as whole-image
detections with tracks (two per identity, as two cameras' tracklets) and its training captions as a text file
(person.demo.site_data; its labels are never read for training), their unlabeled stores, the students fine-tuned
from the demo's (`--init`) with those rows beside the demo set (`--unlabeled`, each track a weak identity:
`--unlabeled_tracks`), their export, and the teacher's, the demo students' and the adapted students' figures on the
site's held-out identities (the only use of the site's labels: scoring) and on the demo set's.
"""
from __future__ import annotations

import time
from pathlib import Path

from person.data.records import load_records
from person.data.unlabeled import captions_file, detections_file
from person.demo.pipeline import step_export, step_train
from person.demo.prepare import demo_set, teacher_store, unlabeled_store
from person.demo.recipe import ADAPT_TRAINING, DEMO_TRAINING, TRACK_TERMS
from person.demo.site_data import second_site, site_captions, site_crops
from person.eval import report
from person.eval.evaluate import MAIN_CASE, evaluate_checkpoint, teacher_evaluation
from person.teacher.store import open_store

ADAPT_RUN = "adapt-second-site"


def _held_out(checkpoint: Path, store: Path) -> dict:
    """The student pair's figures on the store's held-out identities."""
    return evaluate_checkpoint(checkpoint, embedding_path=str(store), cases=[MAIN_CASE["both"]],
                               num_workers=0)[1].summaries()[MAIN_CASE["both"]]


def _teacher(store: Path) -> dict:
    with open_store(store) as s:
        return teacher_evaluation(s)[0].to_dict()


def run_adapt(workdir: Path, ids: int, teacher: Path, max_iters: int | None = None) -> dict:
    """Every step in turn (`max_iters` None: ADAPT_TRAINING's length), then the comparison tables; returns the
    figures by set ("second site", "demo set") and column, and `export_dir`."""
    start = time.perf_counter()
    json_path = demo_set(workdir / "data", ids, DEMO_TRAINING["p"])
    store_path = teacher_store(workdir / "embeddings", json_path, teacher)
    students = step_train(workdir, store_path, {})  # the demo's run: continued or skipped as the demo does
    site_json = second_site(workdir / "second")
    site_store = teacher_store(site_json.parent / "embeddings", site_json, teacher)
    folder = workdir / "second-unlabeled"
    crops = unlabeled_store(folder, detections_file(site_crops(site_json, folder / "crops-tracks.jsonl", tracks=True),
                                                    load_records(site_json).image_root), teacher)
    captions = unlabeled_store(folder, captions_file(site_captions(site_json, folder / "captions.txt")), teacher)
    length = {} if max_iters is None else {"max_iters": max_iters, "save_every": max_iters}
    adapted = step_train(workdir, store_path, ADAPT_TRAINING | TRACK_TERMS | length | dict(
        init=[str(students)], unlabeled=[str(crops), str(captions)], eval_every=0), run_name=ADAPT_RUN)
    export_dir = step_export(workdir, store_path, adapted, folder="export-second-site")
    figures = {name: {"teacher": _teacher(store), "demo students": _held_out(students, store),
                      "adapted students": _held_out(adapted, store)}
               for name, store in (("second site", site_store), ("demo set", store_path))}
    report.write_json(figures, workdir / "reports" / "adapt.json")
    for name, columns in figures.items():
        print(f"\n{name.capitalize()}, held-out identities (text queries against the image gallery):\n")
        print(report.format_comparison(columns))
    print(f"\n[adapt] the adapted students: {adapted}, exported to {export_dir}; figures in "
          f"{workdir / 'reports' / 'adapt.json'}; every step done in {(time.perf_counter() - start) / 60:.1f} min")
    return figures | {"export_dir": export_dir}
