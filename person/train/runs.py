"""Run folders: LOG_DIR/expModel-<backbone>-<H>x<W>-<dim>/<run>/ holds a run's checkpoints, options and logs.

A folder that already holds a run's checkpoints is never written into by a new run: its best.pt and
options.json would be replaced and `--resume` would then pick the wrong checkpoint. A new run there is
refused unless the user asks to replace it (`--overwrite`).
"""
from __future__ import annotations

from pathlib import Path

from person import files
from person.errors import PersonError

# What a run writes into its folder; --overwrite removes exactly these.
RUN_OUTPUTS = ("*.pt", "options.json", "train.log", "tb")


class RunExistsError(PersonError, ValueError):
    """A new run would write into the folder of an earlier one."""


def run_dir(log_dir: str | Path, backbone: str, image_size: tuple[int, int], dim: int, run: str) -> Path:
    """logs/expModel-<backbone>-<H>x<W>-<dim>/<run>/ (the layout users know from earlier runs)."""
    return Path(log_dir) / f"expModel-{backbone}-{image_size[0]}x{image_size[1]}-{dim}" / run


def previous_outputs(folder: str | Path) -> list[Path]:
    """The files and folders an earlier run left in `folder`."""
    folder = Path(folder)
    return sorted({p for pattern in RUN_OUTPUTS for p in folder.glob(pattern)}) if folder.is_dir() else []


def check_new_run(folder: str | Path, overwrite: bool) -> None:
    """Refuse to start a new run where an earlier one has checkpoints, unless `overwrite`."""
    folder = Path(folder)
    checkpoints = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
    if checkpoints and not overwrite:
        raise RunExistsError(f"{folder} already holds a run ({', '.join(checkpoints[:4])}"
                             f"{', ...' if len(checkpoints) > 4 else ''}): continue it with --resume {folder}, start a "
                             f"new one with another --run_name, or replace it with --overwrite")


def clear_run(folder: str | Path) -> None:
    """Remove what an earlier run wrote into `folder` (for --overwrite); other files are left alone."""
    for p in previous_outputs(folder):
        files.remove(p)
