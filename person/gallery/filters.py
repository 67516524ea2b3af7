"""Conditions on rows' metadata, applied inside a search (a mask over the rows), not to its top-k afterwards.

`--where camera=3`, `--where "time>=2026-11-01T10:00"`, `--where track!=7`: a field, one of = != > >= < <=, and
a value. Fields are a detections line's own (`camera`, `time`, `track`, ...) and `identity` and `path`. A number
compares as a number when the row's value is one; otherwise values compare as text (ISO times sort as text).
A row without the field never matches. A condition that could match no row by construction is refused, not
answered with nothing (`check`): a field no live row carries, or a value of a kind the field never holds (text
against numbers; a number against text, but for = and !=, which compare a number stored as text, "3"); so is a
`group_by` field no live row carries.
"""
from __future__ import annotations

import json
import math
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
    if isinstance(value, float) and not math.isfinite(value):
        raise GalleryError(f"--where {text!r}: {raw} is not a finite number; compare with a finite one")
    return Condition(field, "=" if op == "==" else op, value)


def column(rows: Rows, field: str) -> list[Any]:
    """A field's value for every row (None where a row lacks it): identity, path, or a detection field."""
    if field == "identity":
        return [None if v < 0 else int(v) for v in rows.identity]
    if field == "path":
        return list(rows.path)
    return [m.get(field) for m in rows.meta]


@dataclass(frozen=True)
class _Column:
    """A field's values in the forms conditions compare: built once per field, kept in the caller's cache."""

    numbers: np.ndarray   # float64, NaN where the value is not a number (or missing)
    present: np.ndarray   # bool: the row has a value
    where: np.ndarray     # positions of the rows that have one
    texts: np.ndarray     # their values as text, in `where` order

    @classmethod
    def of(cls, values: list[Any]) -> _Column:
        numbers = np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in values],
                           np.float64)
        present = np.array([v is not None for v in values], dtype=bool)
        where = np.flatnonzero(present)
        return cls(numbers, present, where, np.array([str(values[i]) for i in where], dtype=str))

    def text_matches(self, op: str, value: str) -> np.ndarray:
        """bool [n]: rows that have a value whose text compares so with `value`."""
        result = np.zeros(len(self.present), dtype=bool)
        result[self.where] = _compare(self.texts, op, value)
        return result


def _known_fields(rows: Rows, live: np.ndarray) -> str:
    """The fields live rows carry, for a message (only built when a field is refused)."""
    names = {k for i in np.flatnonzero(live) for k, v in rows.meta[i].items() if v is not None}
    names |= {"path"} | ({"identity"} if (rows.identity[live] >= 0).any() else set())
    shown = sorted(names)[:20]
    return ", ".join(shown) + (", ..." if len(names) > len(shown) else "")


def _column(rows: Rows, field: str, cache: dict) -> _Column:
    if field not in cache:
        cache[field] = _Column.of(column(rows, field))
    return cache[field]


def check(rows: Rows, live: np.ndarray, conditions: list[Condition], group_by: str | None,
          cache: dict | None = None) -> None:
    """Refuse conditions and a group_by field that can match no live row by construction (GalleryError naming
    the field and what the rows hold); columns are built once per field and kept in `cache`."""
    cache = {} if cache is None else cache
    for c in conditions:
        col = _column(rows, c.field, cache)
        present = col.present & live
        if not present.any():
            raise GalleryError(f"--where {c.text()}: no row carries the field {c.field!r}; fields rows carry: "
                               f"{_known_fields(rows, live)}")
        numbers = present & ~np.isnan(col.numbers)
        texts = present & np.isnan(col.numbers)
        number = isinstance(c.value, (int, float))
        if number and not numbers.any() and not (c.op in ("=", "!=") and texts.any()):
            raise GalleryError(f"--where {c.text()}: {c.field!r} holds text in this gallery, {c.value!r} is a number; "
                               f"give the value in quotes to compare as text (e.g. {c.field}{c.op}\"{c.value}\")")
        if not number and not texts.any():
            raise GalleryError(f"--where {c.text()}: {c.field!r} holds numbers in this gallery, {c.value!r} is not "
                               f"one; compare with a number (e.g. {c.field}{c.op}3)")
    if group_by is not None and not (_column(rows, group_by, cache).present & live).any():
        raise GalleryError(f"--group-by {group_by}: no row carries the field {group_by!r}; fields rows carry: "
                           f"{_known_fields(rows, live)}")


def mask(rows: Rows, conditions: list[Condition], cache: dict | None = None) -> np.ndarray:
    """Rows matching every condition (bool [n]); columns are built once per field and kept in `cache`."""
    if len(conditions) > MAX_CONDITIONS:
        raise GalleryError(f"{len(conditions)} --where conditions: at most {MAX_CONDITIONS}")
    out = np.ones(len(rows), dtype=bool)
    cache = {} if cache is None else cache
    for c in conditions:
        col = _column(rows, c.field, cache)
        if isinstance(c.value, (int, float)):
            got = _compare(col.numbers, c.op, c.value) & ~np.isnan(col.numbers)
            if c.op in ("=", "!="):  # a number may be stored as text ("3")
                got |= np.isnan(col.numbers) & col.text_matches(c.op, str(c.value))
        else:
            got = col.text_matches(c.op, str(c.value))
        out &= got
    return out


def _compare(column: np.ndarray, op: str, value: Any) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return {"=": column == value, "!=": column != value, ">": column > value, ">=": column >= value,
                "<": column < value, "<=": column <= value}[op]
