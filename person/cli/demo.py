"""The built-in demo, end to end on a CPU: synthetic pedestrians -> the shipped demo teacher's feature
store -> the teacher's report -> distilled students -> the students' report -> their ONNX export (fp32 and
int8) and its report -> the held-out images enrolled (student and teacher galleries) and searched by text.

    python demo.py [--workdir demo]

Each step writes under the workdir and is skipped when its output is already there (a killed training
run is resumed), so a second run only repeats what is missing. Reports: WORKDIR/reports/teacher.json,
student.json, export_fp32.json / export_int8.json (the metrics keys of evaluation_labels.py /
evaluation_model.py) and search.json; the export in WORKDIR/export/, the galleries in WORKDIR/galleries/.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from person import files
from person.data.records import DatasetOptions
from person.demo.prepare import demo_set, teacher_store
from person.demo.recipe import DEMO_IDS, DEMO_TRAINING
from person.demo.teacher import DEMO_TEACHER
from person.eval import report
from person.eval.evaluate import checkpoint_summary, eval_split, evaluate_checkpoint, teacher_evaluation
from person.export.evaluation import evaluate_export, export_summary
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
from person.gallery import sources
from person.gallery.encoders import ExportEncoder, TeacherEncoder
from person.gallery.enroll import enroll
from person.gallery.search import Searcher
from person.models.checkpoint import last_checkpoint
from person.options import run_command
from person.runtime import ExportDirError, read_card
from person.teacher.store import open_store
from person.train.options import RESUMABLE_CHANGES, TrainOptions
from person.train.trainer import Trainer
from person.cli import serve as search_app




def step_teacher_report(workdir: Path, store_path: Path) -> dict:
    with open_store(store_path) as store:
        evaluation, _ = teacher_evaluation(store)
    out = report.write_json(evaluation.to_dict(), workdir / "reports" / "teacher.json")
    report.plot_roc(evaluation.verification, report.roc_path(out), title="demo teacher")
    print(f"[teacher] {out}")
    return evaluation.to_dict()


def step_train(workdir: Path, store_path: Path, overrides: dict) -> Path:
    """The students (continued from the last checkpoint when a run was cut short)."""
    # One run per store (so per teacher): another teacher's students are not resumed.
    opts = TrainOptions(embedding_path=str(store_path), log_dir=str(workdir / "logs"),
                        run_name=f"demo-{store_path.stem}", **(DEMO_TRAINING | overrides))
    with open_store(store_path) as store:
        folder = opts.run_folder(store.dim)
    try:
        last = last_checkpoint(folder)
    except FileNotFoundError:
        last = None
    changed = _recipe_changes(folder, DEMO_TRAINING | overrides) if last is not None else []
    if changed:  # a run of an earlier recipe (an older checkout's workdir): not resumed, not reported as this one
        print(f"[train] {folder} holds a run of another recipe ({', '.join(changed)}); training anew")
        last, opts = None, replace(opts, overwrite=True)
    if last is not None and int(last.stem) >= opts.max_iters:
        print(f"[train] {last} is there; skipped")
        return last
    trainer = (Trainer(TrainOptions(resume=str(last), max_iters=opts.max_iters), given={"resume", "max_iters"})
               if last is not None else Trainer(opts))
    start, first = time.perf_counter(), trainer.iteration
    result = trainer.fit()
    seconds = time.perf_counter() - start
    print(f"[train] {result.iteration - first} iterations in {seconds / 60:.1f} min "
          f"({(result.iteration - first) / seconds:.2f} it/s, evaluations included) -> {result.last_checkpoint}")
    return result.last_checkpoint


def _recipe_changes(folder: Path, recipe: dict) -> list[str]:
    """'name saved -> wanted' for each recipe option a run folder's options.json holds otherwise (how far and
    how it runs, which a resumed run may change, aside)."""
    options = folder / "options.json"
    saved = json.loads(options.read_text()) if options.is_file() else {}
    defaults = {f.name: f.default for f in fields(TrainOptions)}  # what a key an older run did not save meant
    return [f"{k} {saved.get(k, defaults[k])} -> {v}" for k, v in recipe.items()
            if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != v]


def step_student_report(workdir: Path, checkpoint: Path) -> dict:
    state, result = evaluate_checkpoint(checkpoint)
    summary = checkpoint_summary(state, result)
    out = report.write_json(summary, workdir / "reports" / "student.json")
    report.plot_roc(result.cases[summary["case"]].verification, report.roc_path(out), title="demo students")
    print(f"[students] {out}")
    return result.titled_summaries()


def step_export(workdir: Path, store_path: Path, checkpoint: Path) -> Path:
    """The students as ONNX (fp32 and int8) with their card, skipped when the export of this checkpoint is there."""
    out = workdir / "export"
    try:
        if read_card(out)["checkpoint"]["sha256"] == files.sha256_file(checkpoint):
            print(f"[export] {out} is there; skipped")
            return out
    except (ExportDirError, KeyError):
        pass
    with open_store(store_path) as store:  # int8 calibrates on 512 training images, or all of a smaller set
        calibration = min(ExportOptions.calibration, len(store.split_rows("train")))
    start = time.perf_counter()
    result = export_checkpoint(checkpoint, out, ExportOptions(int8=True, calibration=calibration, overwrite=True))
    sizes = ", ".join(f"{name} {info['bytes'] / 2**10:.0f} KiB" for name, info in result.card["files"].items())
    print(f"[export] {out} in {time.perf_counter() - start:.1f} s: {sizes}")
    for parity in result.parity:
        print(f"[export] parity {parity.line()}")
    return out


def step_export_report(workdir: Path, export_dir: Path) -> dict:
    """The exported models scored like the checkpoint (through onnxruntime): their pair, fp32 and int8."""
    out = {}
    for variant in ("fp32", "int8"):
        card, result = evaluate_export(export_dir, variant)
        summary = export_summary(export_dir, variant, card, result)
        report.write_json(summary, workdir / "reports" / f"export_{variant}.json")
        out[f"onnx {variant}"] = result.summaries()[summary["case"]]
    print(f"[export] {workdir / 'reports'}/export_fp32.json, export_int8.json")
    return out


def _typo(text: str) -> str:
    """The caption with two letters of its longest word swapped: a query with a typo."""
    words = text.split()
    i = max(range(len(words)), key=lambda j: len(words[j]))
    w = words[i]
    words[i] = w[:1] + w[2] + w[1] + w[3:] if len(w) > 3 else w
    return " ".join(words)


def step_search(workdir: Path, json_path: Path, store_path: Path, export_dir: Path, teacher_dir: Path,
                exported: dict, students: dict) -> dict:
    """The held-out images enrolled twice (the student's exported image model, the teacher), example queries
    with the student's text model against both, and each gallery's Rank-1 over every held-out caption beside
    evaluation's for the same encoders."""
    source = sources.dataset(DatasetOptions(data=str(json_path)), "eval")
    text = ExportEncoder(export_dir)
    galleries = {"student": (text, "onnx fp32"), "teacher": (TeacherEncoder(str(teacher_dir)), "s.text>t.images")}
    with open_store(store_path) as store:
        split = eval_split(store, "eval")
    english = [i for i, t in enumerate(split.caption_texts) if t.isascii()]
    chinese = next(i for i, t in enumerate(split.caption_texts) if not t.isascii())
    examples = [(split.caption_texts[english[0]], split.caption_pids[english[0]]),
                (split.caption_texts[chinese], split.caption_pids[chinese]),
                (_typo(split.caption_texts[english[-1]]), split.caption_pids[english[-1]])]
    out = {}
    for name, (encoder, case) in galleries.items():
        folder = workdir / "galleries" / name
        summary = enroll(folder, encoder, source, workers=2)
        print(f"[search] {summary.lines()[0]}")
        searcher = Searcher(folder, text)
        for query, pid in examples:
            [result] = searcher.search([query], k=3)
            first = result.hits[0].identity == pid
            print(f"[search] {name} gallery, {1000 * result.seconds:.1f} ms: {query[:70]!r} (identity {pid}) -> "
                  + ", ".join(f"{h.identity} ({h.score:.3f})" for h in result.hits)
                  + ("  first is right" if first else "  first is wrong"))
        results = searcher.search(split.caption_texts, k=1)
        rank1 = float(np.mean([r.hits[0].identity == pid for r, pid in zip(results, split.caption_pids)]))
        reference = (exported if name == "student" else students)[case]["rank1"]
        out[name] = {"rank1": rank1, "evaluation_rank1": reference, "rows": summary.rows,
                     "ms_per_query": 1000 * float(np.mean([r.seconds for r in results]))}
        print(f"[search] {name} gallery: Rank-1 over {len(results)} held-out captions {100 * rank1:.2f}% "
              f"(evaluation_model.py, {case}: {100 * reference:.2f}%)")
    report.write_json(out, workdir / "reports" / "search.json")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("demo"), help="where every step writes (default: demo/)")
    p.add_argument("--ids", type=int, default=DEMO_IDS, help="identities drawn (x 4 images)")
    p.add_argument("--teacher", type=Path, default=DEMO_TEACHER, help="teacher directory (default: the shipped one)")
    p.add_argument("--max-iters", type=int, default=None, help="training iterations (default: the demo recipe's)")
    p.add_argument("--serve", action="store_true", help="then serve the search page on the student gallery "
                                                        "(search/app.py; stop it with Ctrl-C)")
    p.add_argument("--port", type=int, default=5005, help="with --serve: the port on 127.0.0.1")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    overrides = {} if args.max_iters is None else {"max_iters": args.max_iters, "eval_every": 0,
                                                   "save_every": args.max_iters}
    json_path = demo_set(args.workdir / "data", args.ids, DEMO_TRAINING["p"])
    store_path = teacher_store(args.workdir / "embeddings", json_path, args.teacher)
    teacher = step_teacher_report(args.workdir, store_path)
    checkpoint = step_train(args.workdir, store_path, overrides)
    students = step_student_report(args.workdir, checkpoint)
    export_dir = step_export(args.workdir, store_path, checkpoint)
    exported = step_export_report(args.workdir, export_dir)
    searched = step_search(args.workdir, json_path, store_path, export_dir, args.teacher, exported, students)
    print("\nHeld-out identities (text queries against the image gallery):\n")
    print(report.format_comparison({"teacher": teacher, **{c: s for c, s in students.items() if c != "teacher"},
                                    **exported}))
    print("(s.text>t.images: student text queries against a gallery the teacher enrolled; t.text>s.images: the "
          "reverse; onnx fp32 / int8: the exported student pair through onnxruntime)")
    print(f"[demo] every step done in {(time.perf_counter() - start) / 60:.1f} min")
    if args.serve:
        print(f"\n[serve] the search page: http://127.0.0.1:{args.port}/  (the held-out images, enrolled by the "
              f"student; queries through its text model; Ctrl-C stops it)", flush=True)
        search_app.main(["--gallery", str(args.workdir / "galleries" / "student"), "--text-model", str(export_dir),
                         "--image-model", str(export_dir), "--port", str(args.port)])
    return {"teacher": teacher, "students": students, "export": exported, "search": searched}



def run() -> None:
    """`person-demo`, and the script at the top of the repository."""
    run_command(main)
