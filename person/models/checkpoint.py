"""Checkpoints: one `.pt` with everything a run needs to evaluate, export or continue, written atomically.

A checkpoint holds the student weights, the student spec (what rebuilds them: `StudentSpec`), optimiser /
scaler state, the iteration, RNG states, the long-memory state and the full training options. Evaluation
and export rebuild the students from the spec alone; only a resumed run reads the training options. It is
written to a temp file in the same folder and renamed into place, so a kill mid-write never leaves a
truncated `.pt` behind.
"""
from __future__ import annotations

import io
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from person import files
from person.data.images import parse_image_size
from person.errors import PersonError
from person.models.students import Students, StudentSpec

CHECKPOINT_VERSION = 1
_ITER_FILE = re.compile(r"^(\d+)\.pt$")


class CheckpointError(PersonError, ValueError):
    """A file that is not a usable checkpoint of this project; the message names it and what is wrong."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint atomically (person.files): a kill or a full disk never leaves a truncated `.pt`.
    Serialised in memory first (students are small): torch.save turns a disk error into a RuntimeError, the
    plain write says what it was."""
    buffer = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, **state}, buffer)
    return files.write_bytes(path, buffer.getbuffer())


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
    except Exception as e:  # torch.load raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:300]})") from None
    version = state.get("version") if isinstance(state, dict) else None
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a checkpoint of this project (version {version!r}, expected "
                              f"{CHECKPOINT_VERSION}); pass a .pt that main.py wrote")
    state["path"] = str(path)
    return state


def student_spec(state: dict[str, Any]) -> StudentSpec:
    """The spec of a checkpoint's students; a checkpoint written before specs were saved gives it from its
    training options (the same fields, under the names main.py's flags have)."""
    where = state.get("path", "checkpoint")
    if "students" in state:
        try:  # checked before anything is built: a spec edited to feature_dim 10^9 would allocate 500 GB
            return StudentSpec.from_dict(state["students"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: its student spec cannot be used ({e}); the file is damaged or was "
                                  f"edited") from None
    for key in ("options", "feature_dim"):
        if key not in state:
            raise CheckpointError(f"{where}: no '{key}' entry; not a training checkpoint of main.py")
    o, train = state["options"], state["options"].get("train", "both")
    try:  # an option the old run did not have takes the spec's own default
        given = {key: read(o[key]) for key, read in (("image_size", parse_image_size), ("resize", str),
                                                     ("max_seq_length", int), ("text_width", int),
                                                     ("text_stride", int)) if key in o}
        return StudentSpec(feature_dim=int(state["feature_dim"]), backbone=o["backbone"] if train != "text" else None,
                           tbackbone=o["tbackbone"] if train != "image" else None, **given)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: its options do not describe the students ({type(e).__name__}: {e})") from None


def students_from_checkpoint(state: dict[str, Any], device: str | torch.device = "cpu",
                             trusted: Collection[str] = ()) -> tuple[StudentSpec, Students]:
    """(spec, students in eval mode) rebuilt from a training checkpoint exactly as they were trained.

    Names outside the project resolve only in the `trusted` modules (person.models.registry.resolve): a file
    must not decide what code runs."""
    where = state.get("path", "checkpoint")
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{where}: no 'model' entry; not a training checkpoint of main.py")
    spec = student_spec(state)
    students = spec.build(trusted)
    try:
        students.load_state_dict(state["model"])
    except RuntimeError as e:  # missing / unexpected keys, or shapes that differ from the spec's students
        first = str(e).split("\n\t", 2)[:2]
        raise CheckpointError(f"{where}: its weights do not fit the students its options describe "
                              f"({' '.join(first)[:400]}); the file is damaged or was edited") from None
    return spec, students.to(device).eval()
