"""Conditions on rows' metadata, applied inside a search (a mask over the rows), not to its top-k afterwards.

`--where camera=3`, `--where "time>=2026-11-01T10:00"`, `--where track!=7`: a field, one of = != > >= < <=, and
a value. Fields are a detections line's own (`camera`, `time`, `track`, ...) and `identity` and `path`. A number
compares as a number when the row's value is one; otherwise values compare as text (ISO times sort as text).
A row without the field never matches.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from person.gallery.manifest import GalleryError
from person.gallery.segments import Rows

_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(==|=|!=|>=|<=|>|<)\s*(.*?)\s*$", re.S)
MAX_CONDITIONS, MAX_VALUE = 16, 256


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any

    def text(self) -> str:
        return f"{self.field}{self.op}{self.value}"


def parse(text: str) -> Condition:
    """'camera=3' -> Condition("camera", "=", 3); a clear error for anything else."""
    m = _CONDITION.match(text) if isinstance(text, str) else None
    if m is None:
        raise GalleryError(f"--where {text!r}: expected FIELD OP VALUE with OP one of = != > >= < <= "
                           f"(e.g. camera=3 or \"time>=2026-11-01T10:00\")")
    field, op, raw = m.groups()
    if len(raw) > MAX_VALUE or not raw:
        raise GalleryError(f"--where {text!r}: the value must hold 1 to {MAX_VALUE} characters")
    try:
        value = json.loads(raw)
        if not isinstance(value, (int, float, str)) or isinstance(value, bool):
            value = raw
    except json.JSONDecodeError:
        value = raw
    return Condition(field, "=" if op == "==" else op, value)


def column(rows: Rows, field: str) -> list[Any]:
    """A field's value for every row (None where a row lacks it): identity, path, or a detection field."""
    if field == "identity":
        return [None if v < 0 else int(v) for v in rows.identity]
    if field == "path":
        return list(rows.path)
    return [m.get(field) for m in rows.meta]


def _numbers(values: list[Any]) -> np.ndarray:
    return np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in values],
                    np.float64)


def mask(rows: Rows, conditions: list[Condition], cache: dict | None = None) -> np.ndarray:
    """Rows matching every condition (bool [n]); columns are built once per field and kept in `cache`."""
    if len(conditions) > MAX_CONDITIONS:
        raise GalleryError(f"{len(conditions)} --where conditions: at most {MAX_CONDITIONS}")
    out = np.ones(len(rows), dtype=bool)
    cache = {} if cache is None else cache
    for c in conditions:
        if c.field not in cache:
            values = column(rows, c.field)
            cache[c.field] = (_numbers(values), np.array([None if v is None else str(v) for v in values], object))
        numbers, texts = cache[c.field]
        present = np.array([t is not None for t in texts])
        if isinstance(c.value, (int, float)):
            got = _compare(numbers, c.op, c.value) & ~np.isnan(numbers)
            if c.op in ("=", "!="):  # a number may be stored as text ("3")
                got |= present & np.isnan(numbers) & _compare(texts, c.op, str(c.value), present)
        else:
            got = present & _compare(texts, c.op, str(c.value), present)
        out &= got
    return out


def _compare(column: np.ndarray, op: str, value: Any, present: np.ndarray | None = None) -> np.ndarray:
    if present is not None:  # text: compare only where the row has a value
        result = np.zeros(len(column), dtype=bool)
        idx = np.flatnonzero(present)
        sub = column[idx].astype(str)
        result[idx] = _compare(sub, op, value)
        return result
    with np.errstate(invalid="ignore"):
        return {"=": column == value, "!=": column != value, ">": column > value, ">=": column >= value,
                "<": column < value, "<=": column <= value}[op]
