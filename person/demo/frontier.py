"""The image students a device integrator chooses from (bench/frontier.py): widths x input sizes, each trained for
the same minutes on the demo set, with held-out quality, size, work and int8 speed side by side.

Equal minutes: a short probe run of each cell (PROBE_ITERS iterations, alone on the machine) times its step from
its TensorBoard events; the cell then trains `minutes * 60 / step` iterations of the demo recipe (image student
only, against the teacher's cache), so a cheap student takes more steps in the same time. Fixing the iterations from
the probes, not stopping on a clock, keeps every run reproducible and lets the schedule anneal as it should; what
else runs on the machine later changes only the wall time. Each cell is then exported with its int8 variant, scored
(fp32 and int8) on the held-out split as teacher captions against student images, and its int8 graph timed at
batch 1 on one onnxruntime thread.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from person import files
from person.demo import rows as rows_runner
from person.demo.recipe import DEMO_TRAINING
from person.export.evaluation import evaluate_export
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
from person.models.flops import count_macs
from person.models.students import create_image_student

PROBE_ITERS = 12
CASE = "teacher_text_student_image"  # the image student against the teacher's captions: its reach in that space


@dataclass(frozen=True)
class Cell:
    backbone: str
    size: tuple[int, int]

    @property
    def key(self) -> str:
        return f"{self.backbone}@{self.size[0]}x{self.size[1]}"


def parse_cell(text: str) -> Cell:
    """"backbone.mf3.ANet2@224x112" -> Cell; a clear error for anything else."""
    name, _, size = text.partition("@")
    try:
        h, w = (int(v) for v in size.split("x"))
    except ValueError:
        raise ValueError(f"cell {text!r}: write BACKBONE@HxW, e.g. backbone.mf3.ANet2@224x112") from None
    return Cell(name, (h, w))


def _options(cell: Cell, store: Path, workdir: Path, iters: int, seed: int, tag: str) -> dict[str, Any]:
    warmup = max(1, min(DEMO_TRAINING["warmup_iters"], round(iters * DEMO_TRAINING["warmup_iters"]
                                                             / DEMO_TRAINING["max_iters"])))
    return DEMO_TRAINING | dict(
        backbone=cell.backbone, image_size=f"{cell.size[0]}x{cell.size[1]}", train="image", max_iters=iters,
        warmup_iters=warmup, seed=seed, eval_every=0, save_every=iters, keep_last=1, num_workers=1,
        log_every=2 if tag == "probe" else DEMO_TRAINING["log_every"], embedding_path=str(store.resolve()),
        log_dir=str((workdir / "logs").resolve()), run_name=f"{tag}-{cell.key}-s{seed}", overwrite=True)


def step_seconds(run_dir: Path) -> float:
    """Seconds a training step took in a probe run: from the wall times of its logged steps, the first left out
    (it carries the start-up: the loader's first batches, lazy initialisation)."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    points = sorted((e.step, e.wall_time) for e in events.Scalars("train/total"))
    if len(points) < 3:
        raise ValueError(f"{run_dir}: a probe needs at least 3 logged steps, found {len(points)}")
    (s0, t0), (s1, t1) = points[1], points[-1]
    return (t1 - t0) / (s1 - s0)


def probe(cells: list[Cell], store: Path, workdir: Path) -> dict[str, float]:
    """Seconds a step of each cell, from PROBE_ITERS-iteration runs one at a time (kept in WORKDIR/probe.json)."""
    rows = [rows_runner.Row(f"probe/{c.key}", _options(c, store, workdir, PROBE_ITERS, 0, "probe")) for c in cells]
    results = rows_runner.run_rows(rows, workdir / "probe.json", jobs=1, tag="probe")
    return {c.key: step_seconds(Path(results[f"probe/{c.key}"]["checkpoint_path"]).parent) for c in cells}


def train(cells: list[Cell], steps: dict[str, float], minutes: float, seeds: list[int], store: Path,
          workdir: Path) -> dict[str, dict]:
    """Each cell trained `minutes` (as iterations from its probe) for each seed, one at a time as the probes ran."""
    rows = [rows_runner.Row(f"train/{c.key}/s{seed}/{minutes:g}min",
                            _options(c, store, workdir, max(1, round(minutes * 60 / steps[c.key])), seed, "frontier"))
            for c in cells for seed in seeds]
    return rows_runner.run_rows(rows, workdir / "frontier.json", jobs=1, tag="frontier")


def int8_ms(path: Path, size: tuple[int, int], repeat: int = 50) -> float:
    """Median milliseconds of one crop through the int8 graph on one onnxruntime thread."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    crop = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    session.run(None, {name: crop})
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, {name: crop})
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(cell: Cell, result: dict, workdir: Path, dim: int, calibration: int = 512) -> dict[str, Any]:
    """The cell's export (fp32 + int8, calibrated on `calibration` training images), both scored on the held-out
    split, its size, work and int8 speed."""
    checkpoint = Path(result["checkpoint_path"])
    out = workdir / "exports" / f"{checkpoint.parent.name}-{checkpoint.stem}"
    if not (out / "model.json").is_file():
        export_checkpoint(checkpoint, out, ExportOptions(int8=True, calibration=calibration, overwrite=True))
    scores = {v: evaluate_export(out, v, cases=[CASE])[1].cases[CASE].to_dict() for v in ("fp32", "int8")}
    student = create_image_student(cell.backbone, dim, cell.size).eval()
    int8_file = out / "model_image.int8.onnx"
    return {"fp32": {m: scores["fp32"][m] for m in ("eer", "rank1", "mAP")},
            "int8": {m: scores["int8"][m] for m in ("eer", "rank1", "mAP")},
            "params": sum(p.numel() for p in student.parameters()),
            "macs": count_macs(student, torch.zeros(1, 3, *cell.size)),
            "int8_ms": int8_ms(int8_file, cell.size), "int8_kib": int8_file.stat().st_size / 1024,
            "iterations": _iterations(result), "minutes": result["minutes"]}


def _iterations(result: dict) -> int:
    return int(Path(result["checkpoint_path"]).stem)


def table(cells: list[Cell], measured: dict[str, list[dict]], steps: dict[str, float], teacher: dict) -> str:
    """Markdown: one line per cell (seeds averaged), the teacher first."""
    lines = ["| student | input | held-out EER % (fp32 / int8) | Rank-1 % | mAP % | params | MMACs | int8 ms a crop "
             "| int8 file | iterations (s a step) |", "|" + "---|" * 10,
             f"| teacher (its own embeddings) | | {100 * teacher['eer']:.2f} | {100 * teacher['rank1']:.2f} | "
             f"{100 * teacher['mAP']:.2f} | | | | | |"]
    for c in cells:
        runs = measured[c.key]
        mean = lambda variant, m: 100 * statistics.fmean(r[variant][m] for r in runs)  # noqa: E731
        r0 = runs[0]
        lines.append(f"| `{c.backbone}` | {c.size[0]}x{c.size[1]} | {mean('fp32', 'eer'):.2f} / "
                     f"{mean('int8', 'eer'):.2f} | {mean('fp32', 'rank1'):.2f} | {mean('fp32', 'mAP'):.2f} | "
                     f"{r0['params'] / 1e6:.2f}M | {r0['macs'] / 1e6:.0f} | "
                     f"{statistics.median(r['int8_ms'] for r in runs):.2f} | {r0['int8_kib']:,.0f} KiB | "
                     f"{r0['iterations']} ({steps[c.key]:.2f}) |")
    return "\n".join(lines)


def plot(cells: list[Cell], measured: dict[str, list[dict]], teacher: dict, path: Path) -> None:
    """Held-out EER and Rank-1 against int8 milliseconds a crop: one colour per input size, one marker per
    student; hollow markers for the ReLU variants."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted({c.size for c in cells})
    names = sorted({c.backbone.removesuffix("_relu") for c in cells})
    markers = dict(zip(names, "osD^v<>p"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "eer", "held-out EER % (lower is better)"),
                           (axes[1], "rank1", "held-out Rank-1 % (higher is better)")):
        for c in cells:
            runs = measured[c.key]
            x = statistics.median(r["int8_ms"] for r in runs)
            y = 100 * statistics.fmean(r["int8"][key] for r in runs)
            color = f"C{sizes.index(c.size)}"
            relu = c.backbone.endswith("_relu")
            ax.plot([x], [y], markers[c.backbone.removesuffix("_relu")], color=color, markersize=8,
                    markerfacecolor="none" if relu else color)
            ax.annotate(c.backbone.rsplit(".", 1)[-1], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.axhline(100 * teacher[key], color="k", linestyle="--", linewidth=1, label="teacher")
        ax.set_xscale("log")
        ax.set_xlabel("int8 ms a crop (batch 1, one CPU thread)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    for i, s in enumerate(sizes):
        axes[0].plot([], [], "s", color=f"C{i}", label=f"{s[0]}x{s[1]}")
    axes[0].plot([], [], "o", color="gray", markerfacecolor="none", label="ReLU variant (hollow)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    files.make_folder(path.parent)
    fig.savefig(path, dpi=110)
    plt.close(fig)
