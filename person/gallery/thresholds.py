"""Which operating points (person.eval.operating_points) a search applies: those of the encoder pair in use, the
query encoder against the gallery's, in the search's direction and variant.

The pair is named as the evaluation cases are: a student text model against a gallery its export's image model
enrolled is "student"; against a teacher-enrolled gallery, "student_text_teacher_image"; and so on. Both sides
exported: the same export (card sha256) and variant, or no threshold holds. The variant is the export's, or
"teacher" when only the teacher takes part.

Where they come from, first found wins for a pair (its FARs are never mixed across sources):
1. a calibration file given to the Searcher (`--calibration FILE`: person-calibrate's, or a teacher's report);
2. `calibration.json` in the gallery folder, the same kind of file, used by every search of that gallery;
3. the card of the export taking part (its `operating_points`, measured at export on the held-out split).
A calibration file names the export it was measured with (card sha256): its student pairs apply to that export
only. Its space must be the gallery's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from person import files
from person.eval.operating_points import (TEACHER_VARIANT, OperatingPointError, far_key, read_calibration)
from person.gallery.manifest import GalleryError
from person.runtime import CARD_FILE, ExportDirError, read_card
from person.teacher.space import check_same_space

GALLERY_CALIBRATION = "calibration.json"
_TEXT_PAIRS = {("student", "student"): "student", ("student", "teacher"): "student_text_teacher_image",
               ("teacher", "student"): "teacher_text_student_image", ("teacher", "teacher"): "teacher"}
_IMAGE_PAIRS = {("student", "student"): "student", ("student", "teacher"): "student_image_teacher_image",
                ("teacher", "student"): "teacher_image_student_image", ("teacher", "teacher"): "teacher"}


@dataclass(frozen=True)
class PairPoints:
    """One pair's operating points from one source: thresholds that hold (None accepts nothing) and refusals."""

    source: str
    direction: str
    pair: str
    variant: str
    thresholds: dict[str, float | None]
    refused: dict[str, str]

    def passes(self, score: float) -> list[str]:
        """The FARs whose threshold `score` reaches (score >= threshold), loosest first."""
        return [far for far, t in self.thresholds.items() if t is not None and score >= t]

    def threshold(self, far: str | float) -> float | None:
        """The threshold at `far`; GalleryError naming what this pair has when none holds there."""
        key = far_of(far)
        if key in self.thresholds:
            return self.thresholds[key]
        held = ", ".join(self.thresholds) or "none"
        why = f"refused when measured ({self.refused[key]})" if key in self.refused else "not measured"
        raise GalleryError(f"no threshold at FAR {key} for {self.describe()}: {why}; thresholds that hold: {held}")

    def describe(self) -> str:
        return f"{self.direction} {self.pair} ({self.variant}) from {self.source}"


@dataclass(frozen=True)
class _Source:
    name: str
    document: dict[str, Any]
    export_sha256: str | None  # the export its student pairs were measured with; None: teacher pairs only


def far_of(far: str | float) -> str:
    """A FAR as the documents key it; GalleryError when it is no rate."""
    try:
        return far_key(far)
    except OperatingPointError as e:
        raise GalleryError(str(e)) from None


def pair_of(direction: str, query: dict[str, Any], gallery: dict[str, Any]) -> tuple[str, str, str | None]:
    """(pair, variant, export card sha256 or None) of a query encoder against a gallery's encoder (identities
    as the encoders and the manifest record them); GalleryError when no threshold can hold for them."""
    roles = tuple("student" if e.get("kind") == "export" else "teacher" for e in (query, gallery))
    exports = [e for e in (query, gallery) if e.get("kind") == "export"]
    if len(exports) == 2 and (query.get("card_sha256"), query.get("variant")) != (
            gallery.get("card_sha256"), gallery.get("variant")):
        raise GalleryError(f"the queries' export ({query.get('variant')}, card {str(query.get('card_sha256'))[:12]}) "
                           f"is not the gallery's ({gallery.get('variant')}, card "
                           f"{str(gallery.get('card_sha256'))[:12]}): thresholds hold for one export and variant; "
                           f"search with the export and variant the gallery was enrolled with")
    pair = (_TEXT_PAIRS if direction == "text_to_image" else _IMAGE_PAIRS)[roles]
    return (pair, exports[0].get("variant", "fp32"), exports[0].get("card_sha256")) if exports else \
        (pair, TEACHER_VARIANT, None)


class Calibration:
    """The sources of one Searcher over one gallery generation, in the order they are preferred."""

    def __init__(self, gallery_folder: Path, space: dict[str, Any], explicit: str | Path | None,
                 cards: list[tuple[str, str, dict[str, Any]]]) -> None:
        """`cards`: (sha256, folder, card) of the exports taking part."""
        self.sources: list[_Source] = []
        paths = [Path(explicit)] if explicit else []
        if (gallery_folder / GALLERY_CALIBRATION).is_file():
            paths.append(gallery_folder / GALLERY_CALIBRATION)
        for path in paths:
            try:
                document, export = read_calibration(path)
            except OperatingPointError as e:
                raise GalleryError(str(e)) from None
            check_same_space(space, document["space"], f"the gallery {gallery_folder}", f"the calibration {path}")
            self.sources.append(_Source(str(path), document, (export or {}).get("card_sha256")))
        for sha, folder, card in cards:
            if isinstance(card.get("operating_points"), dict):
                self.sources.append(_Source(f"the card of {folder}", card["operating_points"], sha))

    def for_pair(self, direction: str, query: dict[str, Any] | None, gallery: dict[str, Any]
                 ) -> tuple[PairPoints | None, str]:
        """(the pair's points, "") from the first source that has them, else (None, why none: what exists)."""
        if query is None:
            return None, "the query encoder does not say which model it is"
        try:
            pair, variant, sha = pair_of(direction, query, gallery)
        except GalleryError as e:
            return None, str(e)
        found = []
        for s in self.sources:
            if sha is not None and s.export_sha256 != sha:
                continue
            entries = s.document.get(direction, {}).get(pair, {})
            if variant in entries:
                at_far = entries[variant].get("at_far", {})
                return PairPoints(s.name, direction, pair, variant,
                                  {f: p["threshold"] for f, p in at_far.items() if "refused" not in p},
                                  {f: p["refused"] for f, p in at_far.items() if "refused" in p}), ""
            found += [f"{p} ({', '.join(v)})" for p, v in s.document.get(direction, {}).items()]
        have = f"; {'; '.join(dict.fromkeys(found))} exist" if found else "; no source holds any for this pair"
        return None, f"no {direction} thresholds for {pair} ({variant}){have}"


def export_card(identity: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(sha256, folder, card) of an encoder's export, when its folder (as the manifest or the encoder names it)
    holds the card of that sha256."""
    folder = Path(str(identity.get("name", "")))
    try:
        if identity.get("kind") != "export" or files.sha256_file(folder / CARD_FILE) != identity.get("card_sha256"):
            return None
        return identity["card_sha256"], str(folder), read_card(folder)
    except (OSError, ExportDirError):
        return None
