"""Checkpoints: one `.pt` with everything a run needs to evaluate, export or continue, written atomically.

A checkpoint holds the student weights, the student spec (what rebuilds them: `StudentSpec`), optimiser /
scaler state, the iteration, RNG states, the long-memory state and the full training options. Evaluation
and export rebuild the students from the spec alone; only a resumed run reads the training options. It is
written to a temp file in the same folder and renamed into place, so a kill mid-write never leaves a
truncated `.pt` behind.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from person.data.images import parse_image_size
from person.models.students import Students, StudentSpec

CHECKPOINT_VERSION = 1
_ITER_FILE = re.compile(r"^(\d+)\.pt$")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"version": CHECKPOINT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def last_checkpoint(folder: str | Path) -> Path:
    """The highest-iteration `<iter>.pt` in a run folder."""
    folder = Path(folder)
    found = sorted((int(m.group(1)), p) for p in folder.glob("*.pt") if (m := _ITER_FILE.match(p.name)))
    if not found:
        raise FileNotFoundError(f"no <iter>.pt checkpoint in {folder}: pass a checkpoint file or a run folder "
                                f"that holds one")
    return found[-1][1]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file, or the last one of a run folder."""
    path = Path(path)
    if path.is_dir():
        path = last_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # weights_only: a checkpoint holds tensors, numbers, strings and dicts only, never pickled code.
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: not a checkpoint of this project (version {state.get('version') if isinstance(state, dict) else '?'}, "
                         f"expected {CHECKPOINT_VERSION})")
    state["path"] = str(path)
    return state


def student_spec(state: dict[str, Any]) -> StudentSpec:
    """The spec of a checkpoint's students; a checkpoint written before specs were saved gives it from its
    training options (the same fields, under the names main.py's flags have)."""
    where = state.get("path", "checkpoint")
    if "students" in state:
        return StudentSpec.from_dict(state["students"])
    for key in ("options", "feature_dim"):
        if key not in state:
            raise ValueError(f"{where}: no '{key}' entry; not a training checkpoint of main.py")
    o, train = state["options"], state["options"].get("train", "both")
    try:
        return StudentSpec(feature_dim=int(state["feature_dim"]),
                           backbone=o["backbone"] if train != "text" else None,
                           tbackbone=o["tbackbone"] if train != "image" else None,
                           image_size=parse_image_size(o.get("image_size", "224x112")),
                           resize=o.get("resize", "stretch"), max_seq_length=int(o.get("max_seq_length", 128)),
                           text_width=int(o.get("text_width", 256)), text_stride=int(o.get("text_stride", 2)))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: its options do not describe the students ({type(e).__name__}: {e})") from None


def students_from_checkpoint(state: dict[str, Any], device: str | torch.device = "cpu"
                             ) -> tuple[StudentSpec, Students]:
    """(spec, students in eval mode) rebuilt from a training checkpoint exactly as they were trained."""
    if "model" not in state:
        raise ValueError(f"{state.get('path', 'checkpoint')}: no 'model' entry; not a training checkpoint of main.py")
    spec = student_spec(state)
    students = spec.build()
    students.load_state_dict(state["model"])
    return spec, students.to(device).eval()
