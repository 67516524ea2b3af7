"""Load a teacher's weights strictly: a weight missing from the checkpoint is an error, not random init.

transformers fills missing weights with fresh random values and only logs a report; for a teacher
that would be a silently wrong feature store. Unexpected extra weights are harmless and only logged.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from person.teacher.hf.source import TeacherFormatError

log = logging.getLogger(__name__)


def load_strict(cls: Any, model_dir: Path, what: str, dtype: torch.dtype, **kwargs: Any) -> torch.nn.Module:
    """`cls.from_pretrained(model_dir, ...)`, local files only, raising TeacherFormatError on any gap."""
    try:
        model, info = cls.from_pretrained(model_dir, dtype=dtype, local_files_only=True, trust_remote_code=False,
                                          output_loading_info=True, **kwargs)
    except (OSError, RuntimeError) as e:
        # OSError: no weights file; RuntimeError: a weight's shape differs from the config's.
        raise TeacherFormatError(f"{model_dir}: cannot load the {what} weights ({e}); the directory must hold "
                                 f"model.safetensors (or its shards) matching its config.json") from None
    missing = sorted(info["missing_keys"])
    if missing:
        raise TeacherFormatError(f"{model_dir}: {len(missing)} {what} weights are missing from the checkpoint "
                                 f"(e.g. {missing[:5]}); the download is incomplete or it is another model")
    if info["unexpected_keys"]:
        log.warning("%s: %d checkpoint weights unused by %s (e.g. %s)", model_dir, len(info["unexpected_keys"]),
                    what, sorted(info["unexpected_keys"])[:5])
    return model
