"""A run's logs beside its checkpoints: the TensorBoard events (tb/) and the text log (train.log)."""
from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from person import files


def tensorboard(folder: Path, iteration: int) -> SummaryWriter:
    """The run's event writer; it first drops what an earlier, killed run logged after `iteration` (its
    checkpoint, or before any), so a step is never in the events twice."""
    try:
        return SummaryWriter(str(files.make_folder(folder)), purge_step=iteration + 1)
    except OSError as e:
        raise files.output_error(folder, e) from None


def file_log(path: Path) -> logging.Handler:
    """Copy the project's log (INFO and up) into `path` until `close_file_log`."""
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as e:
        raise files.output_error(path, e) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("person")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def close_file_log(handler: logging.Handler) -> None:
    logging.getLogger("person").removeHandler(handler)
    handler.close()
