"""Run folders: LOG_DIR/expModel-<backbone>-<H>x<W>-<dim>/<run>/ holds a run's checkpoints, options and logs."""
from __future__ import annotations

from pathlib import Path


def run_dir(log_dir: str | Path, backbone: str, image_size: tuple[int, int], dim: int, run: str) -> Path:
    """logs/expModel-<backbone>-<H>x<W>-<dim>/<run>/ (the layout users know from earlier runs)."""
    return Path(log_dir) / f"expModel-{backbone}-{image_size[0]}x{image_size[1]}-{dim}" / run
