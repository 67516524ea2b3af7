"""Operating points: the score a hit must reach for a false-accept rate (FAR) to hold, measured on a labelled
split, and the document that keeps them (the card's `operating_points`, a calibration file, the teacher's report).

The rule is person.eval.metrics': a pair is accepted when score >= threshold, FAR(t) = #impostor pairs with
score >= t / #impostor pairs, and the threshold at FAR f is the smallest score that lets at most floor(f x
impostors) impostor pairs through (found by metrics itself, exactly). A FAR whose threshold rests on fewer than
10 / f impostor pairs (so fewer than 10 false accepts decide it) is refused and recorded with the count, never
as a number. Genuine pairs share an identity, impostor pairs do not: text-to-image pairs every caption with every
image; image-to-image pairs every two different images once (i < j), never an image with itself.

A document: {"split", "store": {"path", "fingerprint"}, "space", "rule", "fars",
             "text_to_image": {pair: {variant: ENTRY}}, "image_to_image": {pair: {variant: ENTRY}}}
pair: which model embedded the queries and the gallery, named as person.eval.evaluate's cases ("student",
"student_text_teacher_image", "teacher_text_student_image", "teacher"); variant: the exported graphs' precision
(fp32, fp16, int8), or "teacher" when no exported model takes part.
ENTRY: {"genuine": int, "impostor": int, "images": int, "at_far": {far: {"threshold", "false_accepts", "allowed",
        "frr"} or {"refused": why}}}; a threshold of null accepts nothing.
"""
from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from person import files
from person.errors import PersonError
from person.eval import metrics
from person.eval.evaluate import eval_split
from person.teacher.space import space_of
from person.teacher.store import open_store

FARS = ("1e-2", "1e-3", "1e-4")
MIN_FALSE_ACCEPTS = 10  # a threshold needs at least 10 / FAR impostor pairs
DIRECTIONS = ("text_to_image", "image_to_image")
TEACHER_VARIANT = "teacher"
MAX_IMAGES = 4096  # image-to-image scores every pair in memory: 8.4M pairs at most
RULE = ("a hit passes when score >= threshold; FAR = impostor pairs scoring >= threshold / impostor pairs; a FAR "
        f"whose threshold rests on fewer than {MIN_FALSE_ACCEPTS} / FAR impostor pairs is refused")
CALIBRATION_FORMAT, CALIBRATION_VERSION = "person-calibration", 1


class OperatingPointError(PersonError, ValueError):
    """Scores or a document that give no operating points; the message names what and the fix."""


def far_key(far: str | float) -> str:
    """A FAR as a document's key ("1e-3" for 0.001, "1e-3" or 1e-3); OperatingPointError outside (0, 1)."""
    try:
        value = Fraction(str(far))
    except (ValueError, ZeroDivisionError):
        raise OperatingPointError(f"FAR {far!r}: give a rate such as 1e-3") from None
    if not 0 < value < 1:
        raise OperatingPointError(f"FAR {far!r}: a rate between 0 and 1, such as 1e-3")
    return next((k for k in FARS if Fraction(k) == value), f"{float(value):g}")


def min_impostors(far: str) -> int:
    """The impostor pairs a threshold at `far` needs: 10 / FAR."""
    return int(np.ceil(MIN_FALSE_ACCEPTS / Fraction(far)))


def refusal(far: str, impostor: int) -> str | None:
    """Why no threshold is kept at `far` for `impostor` impostor pairs, or None when it holds."""
    need = min_impostors(far)
    if impostor >= need:
        return None
    return (f"only {impostor:,} impostor pairs: FAR {far} needs at least {need:,} ({MIN_FALSE_ACCEPTS} / FAR) for "
            f"its threshold to rest on {MIN_FALSE_ACCEPTS} false accepts")


def _entry(ver: metrics.VerificationResult, fars: Sequence[str], images: int) -> dict[str, Any]:
    at_far: dict[str, Any] = {}
    for far in fars:
        why = refusal(far, ver.negatives)
        p = ver.at_far[far]
        at_far[far] = {"refused": why} if why else {
            "threshold": None if np.isinf(p.threshold) else p.threshold, "false_accepts": p.false_accepts,
            "allowed": ver.false_accepts_allowed[far], "frr": p.frr}
    return {"genuine": ver.positives, "impostor": ver.negatives, "images": images, "at_far": at_far}


def from_scores(genuine: Sequence[float] | np.ndarray, impostor: Sequence[float] | np.ndarray,
                fars: Sequence[str] = FARS, images: int = 0) -> dict[str, Any]:
    """The entry of two score lists (float32): the genuine pairs' and the impostor pairs'."""
    g, i = np.asarray(genuine, np.float32).ravel(), np.asarray(impostor, np.float32).ravel()
    if len(g) == 0 or len(i) == 0:
        raise OperatingPointError(f"{len(g)} genuine and {len(i)} impostor pairs: operating points need both (a "
                                  f"split of at least two identities, one with two images)")
    # One query row against every pair's score: metrics' exact in-memory ROC, genuine pairs labelled as positives.
    labels = np.concatenate([np.zeros(len(g), np.int64), np.ones(len(i), np.int64)])
    ver = metrics.verification_from_scores(np.concatenate([g, i])[None], labels, np.zeros(1, np.int64), top_k=0,
                                           far_levels=tuple(fars))
    return _entry(ver, fars, images)


def text_to_image(image_emb: np.ndarray, image_pid: np.ndarray, caption_emb: np.ndarray, caption_pid: np.ndarray,
                  fars: Sequence[str] = FARS, device: str | None = None) -> dict[str, Any]:
    """The entry of caption queries against images (every caption x image pair), streamed by metrics."""
    ver = metrics.verification(image_emb, image_pid, caption_emb, caption_pid, top_k=0, device=device,
                               far_levels=tuple(fars))
    return _entry(ver, fars, len(image_emb))


def image_to_image(image_emb: np.ndarray, image_pid: np.ndarray, fars: Sequence[str] = FARS,
                   max_images: int = MAX_IMAGES) -> dict[str, Any]:
    """The entry of image queries against the other images (each pair once), on at most `max_images` images:
    whole identities, drawn by a fixed seed when there are more."""
    pid = np.asarray(image_pid)
    keep = np.arange(len(pid))
    if len(pid) > max_images:
        ids, counts = np.unique(pid, return_counts=True)
        order = np.random.default_rng(0).permutation(len(ids))
        n = max(1, int(np.searchsorted(np.cumsum(counts[order]), max_images, "right")))
        keep = np.flatnonzero(np.isin(pid, ids[order[:n]]))
    emb = np.asarray(image_emb, np.float32)[keep]
    i, j = np.triu_indices(len(keep), 1)
    scores = (emb @ emb.T)[i, j]
    same = pid[keep][i] == pid[keep][j]
    return from_scores(scores[same], scores[~same], fars, len(keep))


def false_accepts(image_emb: np.ndarray, image_pid: np.ndarray, query_emb: np.ndarray, query_pid: np.ndarray,
                  thresholds: Sequence[float | None], same_set: bool = False,
                  strip: int = 256) -> tuple[list[int], int]:
    """(impostor pairs scoring >= each threshold (None: accepts nothing), impostor pairs) of queries against images,
    scored strip by strip: what a threshold lets through on another set. `same_set`: the queries are the images,
    each pair counted once (i < j), as image_to_image measures."""
    img, q = np.asarray(image_emb, np.float32), np.asarray(query_emb, np.float32)
    ipid, qpid = np.asarray(image_pid), np.asarray(query_pid)
    counts, impostors = np.zeros(len(thresholds), np.int64), 0
    for a in range(0, len(q), strip):
        scores = q[a:a + strip] @ img.T
        impostor = qpid[a:a + strip, None] != ipid[None, :]
        if same_set:
            impostor &= np.arange(a, a + len(scores))[:, None] < np.arange(len(img))[None, :]
        impostors += int(impostor.sum())
        for n, t in enumerate(thresholds):
            counts[n] += 0 if t is None else int((impostor & (scores >= np.float32(t))).sum())
    return counts.tolist(), impostors


def new_document(store, split: str, fars: Sequence[str] = FARS) -> dict[str, Any]:
    """An empty document for thresholds measured on `split` of a feature store."""
    return {"split": split, "store": {"path": str(Path(store.path).resolve()),
                                      "fingerprint": store.dataset_info.get("fingerprint")},
            "space": space_of(store.teacher_identity), "rule": RULE, "fars": list(fars),
            "text_to_image": {}, "image_to_image": {}}


def add(document: dict[str, Any], direction: str, pair: str, variant: str, entry: dict[str, Any]) -> None:
    document[direction].setdefault(pair, {})[variant] = entry


def add_teacher(document: dict[str, Any], store, split: str = "eval", device: str | None = None) -> None:
    """The teacher's own operating points (both directions) from its embeddings in the store."""
    data = eval_split(store, split)
    images = store.images(data.rows)
    fars = document["fars"]
    add(document, "text_to_image", "teacher", TEACHER_VARIANT,
        text_to_image(images, data.pids, store.captions(data.caption_rows), data.caption_pids, fars, device))
    add(document, "image_to_image", "teacher", TEACHER_VARIANT, image_to_image(images, data.pids, fars))


def teacher_document(store_path: str | Path, split: str = "eval", device: str | None = None) -> dict[str, Any]:
    """A document of the teacher's own operating points on `split` of its store (the teacher's report)."""
    with open_store(store_path, in_memory=False) as store:
        document = new_document(store, split)
        add_teacher(document, store, split, device)
    return document


def format_document(document: dict[str, Any]) -> str:
    """One line per direction, pair and variant: each FAR's threshold (FRR there) or why it was refused."""
    lines = [f"operating points on split {document['split']} of {document['store']['path']} ({document['rule']}):"]
    for direction in DIRECTIONS:
        for pair, variants in document[direction].items():
            for variant, entry in variants.items():
                cells = [f"FAR {far}: " + (f"refused (needs {min_impostors(far):,})" if "refused" in p else
                                           f"{'inf' if p['threshold'] is None else format(p['threshold'], '.4f')} "
                                           f"(FRR {100 * p['frr']:.2f}%)") for far, p in entry["at_far"].items()]
                lines.append(f"  {direction} {pair} {variant} [{entry['genuine']:,} genuine / {entry['impostor']:,} "
                             f"impostor pairs]: " + "; ".join(cells))
    return "\n".join(lines)


def write_calibration(path: str | Path, document: dict[str, Any], export: dict[str, Any] | None) -> Path:
    """A calibration file: the document, and the export it was measured with ({"path", "card_sha256"}) or None."""
    return files.write_json(path, {
        "format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "export": export, "operating_points": document})


def read_calibration(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(document, export or None) of a calibration file or of a report that carries `operating_points`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OperatingPointError(f"{path}: not a readable calibration file ({e})") from None
    doc = data.get("operating_points") if isinstance(data, dict) else None
    if isinstance(data, dict) and "format" in data and (data["format"], data.get("version")) != (
            CALIBRATION_FORMAT, CALIBRATION_VERSION):
        raise OperatingPointError(f"{path}: format {data['format']!r} version {data.get('version')!r}, not a "
                                  f"{CALIBRATION_FORMAT} {CALIBRATION_VERSION} file; make it with person-calibrate")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(d), dict) for d in DIRECTIONS) \
            or not isinstance(doc.get("space"), dict):
        raise OperatingPointError(f"{path}: holds no operating points (make it with person-calibrate)")
    export = data.get("export")
    return doc, export if isinstance(export, dict) else None
