"""Quality against training minutes (bench/ablation.py --curve): a run's evaluations read back from its
TensorBoard events, the recipe of a curve run, and the int8 export of its last checkpoint scored the same way."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from person.demo.ablation import ROWS, base_recipe
from person.export.evaluation import evaluate_export
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
from person.models.checkpoint import last_checkpoint
from person.train.options import saved_options


def curve_points(run_dir: Path) -> list[dict]:
    """(iteration, minutes since the run's first logged step, held-out EER, Rank-1) of every evaluation in
    a run's TensorBoard events (none for a run trained without evaluations); the minutes include the
    evaluations themselves (~2 s each on the demo set)."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    if "eval/eer" not in events.Tags()["scalars"]:
        return []
    start = min(e.wall_time for e in events.Scalars("train/total"))
    first_step = min(e.step for e in events.Scalars("train/total"))
    # The first logged step came `first_step` iterations in: its time is extrapolated back to iteration 0.
    rate = [e for e in events.Scalars("train/images_per_s") if e.step == first_step]
    options = saved_options(run_dir)
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


def slug(label: str) -> str:
    """A label as a file name: what is not a letter, digit, dot or dash becomes "_"."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_") or "run"


def run_curve(run_dir: Path, workdir: Path, label: str) -> dict:
    """A run's evaluations (curve_points) and the int8 export of its last checkpoint, scored the same way;
    the export goes to WORKDIR/<label>-export."""
    points = curve_points(run_dir)
    if not points:
        raise ValueError(f"{run_dir}: the run logged no evaluation (trained with --eval_every 0?); a curve needs a "
                         f"run evaluated as it went")
    export_dir = workdir / f"{slug(label)}-export"
    export_checkpoint(last_checkpoint(run_dir), export_dir, ExportOptions(int8=True, calibration=512, overwrite=True))
    _, int8 = evaluate_export(export_dir, "int8", cases=["student"])
    return {"run": str(run_dir), "label": label, "points": points, "int8": int8.summaries()["student"]}
