"""The embedding space a model lives in: its teacher's kind, config hash and dimension.

A student distilled from a teacher's feature store lives in that teacher's space; two encoders may be mixed
(a gallery enrolled by the teacher searched with the student's text model) exactly when their spaces are equal.
The teacher's name is recorded but not compared (a model directory may move), nor its preprocessing (how the
teacher read an image changes its image embeddings' quality, not the space its text lives in).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from person.errors import PersonError

SPACE_KEYS = ("kind", "config_hash", "dim")


class SpaceMismatchError(PersonError, ValueError):
    """Two encoders of different embedding spaces would be mixed."""


def space_of(identity: Mapping[str, Any], store_fingerprint: str | None = None) -> dict[str, Any]:
    """The space of a teacher identity (Teacher.identity(), or what a store / checkpoint recorded)."""
    space = {"teacher": identity.get("teacher"), **{k: identity.get(k) for k in SPACE_KEYS}}
    if store_fingerprint is not None:
        space["store_fingerprint"] = store_fingerprint
    return space


def describe(space: Mapping[str, Any]) -> str:
    config = str(space.get("config_hash"))[:12]
    return f"{space.get('teacher')} ({space.get('kind')}, dim {space.get('dim')}, config {config})"


def check_same_space(a: Mapping[str, Any], b: Mapping[str, Any], what_a: str, what_b: str) -> None:
    """Refuse to mix encoders of different spaces, naming both."""
    differ = [k for k in SPACE_KEYS if a.get(k) != b.get(k)]
    if differ:
        raise SpaceMismatchError(f"{what_a} lives in the space of {describe(a)} but {what_b} in that of {describe(b)} "
                                 f"({', '.join(differ)} differ): embeddings of different spaces cannot be compared; "
                                 f"use encoders distilled from the same teacher")
