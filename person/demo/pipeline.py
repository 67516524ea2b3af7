"""The built-in demo's steps, end to end on a CPU: synthetic pedestrians -> the teacher's feature store -> the
teacher's report -> distilled students -> the students' report -> their ONNX export (fp32 and int8) and its report
-> the held-out images enrolled and searched by text (person.demo.search_step).

Each step writes under the workdir and is skipped when its output is already there (a killed training run is
resumed), so a second run only repeats what is missing. Each prints what it did ("[step] ...").
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from person import files
from person.demo.prepare import demo_set, teacher_store
from person.demo.recipe import DEMO_TRAINING
from person.demo.search_step import step_search
from person.eval import report
from person.eval.evaluate import checkpoint_summary, evaluate_checkpoint, teacher_evaluation
from person.export.evaluation import evaluate_export, export_summary
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
from person.models.checkpoint import last_checkpoint
from person.runtime import ExportDirError, read_card
from person.teacher.store import open_store
from person.train.options import TrainOptions, recipe_changes
from person.train.trainer import Trainer


def step_teacher_report(workdir: Path, store_path: Path) -> dict:
    """The teacher's figures from its store alone (reports/teacher.json and its ROC)."""
    with open_store(store_path) as store:
        evaluation, _ = teacher_evaluation(store)
    summary = evaluation.to_dict()
    out, _ = report.write_report(summary, evaluation.verification, workdir / "reports" / "teacher.json",
                                 title="demo teacher")
    print(f"[teacher] {out}")
    return summary


def step_train(workdir: Path, store_path: Path, overrides: dict, run_name: str | None = None) -> Path:
    """The students (continued from the last checkpoint when a run was cut short); `overrides` change the demo's
    recipe, `run_name` (default: demo-<store>) names the run."""
    # One run per store (so per teacher): another teacher's students are not resumed.
    opts = TrainOptions(embedding_path=str(store_path), log_dir=str(workdir / "logs"),
                        run_name=run_name or f"demo-{store_path.stem}", **(DEMO_TRAINING | overrides))
    with open_store(store_path) as store:
        folder = opts.run_folder(store.dim)
    try:
        last = last_checkpoint(folder)
    except FileNotFoundError:
        last = None
    changed = recipe_changes(folder, DEMO_TRAINING | overrides) if last is not None else []
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


def step_student_report(workdir: Path, checkpoint: Path) -> dict:
    """Every case of the checkpoint (reports/student.json, the main case's ROC); case title -> summary."""
    state, result = evaluate_checkpoint(checkpoint)
    summary = checkpoint_summary(state, result)
    out, _ = report.write_report(summary, result.cases[summary["case"]].verification,
                                 workdir / "reports" / "student.json", title="demo students")
    print(f"[students] {out}")
    return result.titled_summaries()


def step_export(workdir: Path, store_path: Path, checkpoint: Path, folder: str = "export") -> Path:
    """The students as ONNX (fp32 and int8) with their card in WORKDIR/`folder`, skipped when the export of this
    checkpoint is there."""
    out = workdir / folder
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


def run_demo(workdir: Path, ids: int, teacher: Path, max_iters: int | None) -> dict:
    """Every step in turn (`max_iters` None: the recipe's length), then the held-out comparison table.

    Returns the figures (teacher, students, export, search) and `export_dir`, the export's folder."""
    start = time.perf_counter()
    overrides = {} if max_iters is None else {"max_iters": max_iters, "eval_every": 0, "save_every": max_iters}
    json_path = demo_set(workdir / "data", ids, DEMO_TRAINING["p"])
    store_path = teacher_store(workdir / "embeddings", json_path, teacher)
    teacher_figures = step_teacher_report(workdir, store_path)
    checkpoint = step_train(workdir, store_path, overrides)
    students = step_student_report(workdir, checkpoint)
    export_dir = step_export(workdir, store_path, checkpoint)
    exported = step_export_report(workdir, export_dir)
    searched = step_search(workdir, json_path, store_path, export_dir, teacher, exported, students)
    print("\nHeld-out identities (text queries against the image gallery):\n")
    print(report.format_comparison({"teacher": teacher_figures,
                                    **{c: s for c, s in students.items() if c != "teacher"}, **exported}))
    print("(s.text>t.images: student text queries against a gallery the teacher enrolled; t.text>s.images: the "
          "reverse; onnx fp32 / int8: the exported student pair through onnxruntime)")
    print(f"[demo] every step done in {(time.perf_counter() - start) / 60:.1f} min")
    return {"teacher": teacher_figures, "students": students, "export": exported, "search": searched,
            "export_dir": export_dir}
