"""The server's side of the audit trail: each search, image view, thumbnail, sign-in and erasure the app answers is
one line in the gallery's audit log (person.gallery.audit), written and fsynced before the answer leaves. A request
whose line cannot be written (a full disk, a log whose chain does not verify) is refused with a 503 that names the
log and the fix, and its answer is never sent: who searched for whom is known for every answer that left.

What a line holds, beside the log's own time, seq, prev and hmac:
- every line: `action`, `user` (the signed-in name; null on a server open with no accounts), `client` (the
  address, a trusted proxy's word for it) and `status` (what the request was answered: 200, or a refusal's 4xx/503);
- `search` (GET /api/search: `query` the text, `ids` the uids returned; POST: `query` the list of texts, `ids` one
  list per query), `search-image` (`image_sha256` of the uploaded bytes, never the bytes), `similar` (`query_id`,
  the row searched with): with `where`, `group_by`, `k`, `far` and `threshold` (the FAR asked and the score
  threshold applied, null for every result) and the `generation` the hits came from;
- `image` and `thumb`: `id` (asked) and `ids` (the one sent; [] when refused);
- `login`: status 303 signed in or 401 wrong (never the password); `user` is the name the form gave when it is a
  valid account name, else null with `name_sha256`; a 429 (rate-limited) or 403 (another site's form) writes no
  line (a throttled warning in the server's log: unauthenticated requests must not fill the disk);
- `erase`: the erasure's own event (person.gallery.forget.ForgetReport.event: the uids erased, the selector, the
  generation it committed) by the admin who asked.
A refused search or view is recorded too, with its status and no ids. Requests the gate stops (401) or the
request's validation refuses (422) reach no route and leave no line.

An open loopback server with no accounts audits as well (user null): one fsync a request, thumbnails included;
lines that arrive together (a page's thumbnails) are committed in one, and the text searches the server gathered
into one batch (person.web.batching) are committed in one by the batcher's second stage, before any of them is
answered. Worker processes share the log: the writer appends under a file lock (person.gallery.audit).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from fastapi import Request

from person.gallery.audit import DEFAULT_MAX_BYTES, AuditError, AuditLog
from person.web.auth import client_of, identity_of
from person.web.service import Refused

log = logging.getLogger(__name__)

T = TypeVar("T")
Q = TypeVar("Q")
REFUSED = "so it is refused, not answered"


@dataclass(frozen=True)
class AuditOptions:
    """How the server opens its gallery's audit log (person-serve's --audit-* flags); text paths, so that worker
    processes get them as JSON."""

    key_dir: str | None = None           # None: $PERSON_CONFIG_DIR/audit, else ~/.config/person/audit
    retention_days: float | None = None  # whole files older than this go when the log rotates (recorded)
    max_bytes: int = DEFAULT_MAX_BYTES   # the size a file rotates at

    def open(self, gallery: str | Path) -> AuditLog:
        """The log, once per process at startup: AuditError (the server does not start) when its key is missing
        for a log that has lines, or cannot be used."""
        return AuditLog(gallery, self.key_dir, max_bytes=self.max_bytes, retention_days=self.retention_days)


class Trail:
    """What the routes record with: `log` (None: nothing is recorded, for an app a test or a program builds
    without one; person-serve always gives one) and `public`, which takes server paths out of a client's message."""

    def __init__(self, log: AuditLog | None, public: Callable[[str], str]) -> None:
        self.log, self._public = log, public

    def public(self, message: str) -> str:
        if self.log is not None:  # the key folder is the server's business
            message = message.replace(str(self.log.paths.key.parent), "<audit key folder>")
        return self._public(message)

    def who(self, request: Request, event: dict[str, Any]) -> dict[str, Any]:
        """`event` with who asked and from where (an event's own `user` wins: a sign-in's name)."""
        return {"user": identity_of(request).user, "client": client_of(request) or None, **event}

    def record(self, request: Request, event: dict[str, Any], refusal: str = REFUSED) -> None:
        """Append `event` with who asked and from where; Refused(503) naming the log and the fix when it cannot be
        written."""
        if self.log is None:
            return
        try:
            self.log.record(self.who(request, event))
        except AuditError as e:
            log.error("%s %s cannot be audited, %s: %s", request.method, request.url.path, refusal, e)
            raise self._unrecorded(e, refusal) from None

    def answer(self, request: Request, event: dict[str, Any], run: Callable[[], T],
               outcome: Callable[[T], dict[str, Any]]) -> T:
        """`run()`'s answer, once `event` with `outcome(answer)` and status 200 is recorded; a refusal is recorded
        with its status and no ids, then raised."""
        try:
            answer = run()
        except Refused as e:
            self.record(request, refused(event, e))
            raise
        self.record(request, {**event, **outcome(answer), "status": 200})
        return answer

    def commit(self, asked: list[Asked[Any]], outcomes: list[Any]) -> list[Any]:
        """The outcomes of a batch of searches (answer_all's), once all their lines (each event with what it found,
        or its refusal) are committed together: one write and one fsync for the batch. When they cannot be, every
        request of the batch is refused with a 503."""
        if self.log is None:
            return outcomes
        try:
            self.log.record_many([refused(a.event, o) if isinstance(o, Exception)
                                  else {**a.event, **found(o, a.several), "status": 200}
                                  for a, o in zip(asked, outcomes)])
        except AuditError as e:
            log.error("a batch of %d searches cannot be audited, %s: %s", len(asked), REFUSED, e)
            return [self._unrecorded(e, REFUSED) for _ in asked]
        return outcomes

    def _unrecorded(self, error: AuditError, refusal: str) -> Refused:
        assert self.log is not None
        return Refused(503, self.public(f"the audit log ({self.log.paths.log_dir}) cannot record this request, "
                                        f"{refusal}: {error}. The server's operator frees the disk or repairs the "
                                        f"log (search/audit.py --gallery GALLERY verify)"))


@dataclass(frozen=True)
class Asked(Generic[Q]):
    """One request of a batch (answer_all, Trail.commit): its audit line so far (Trail.who: who asked, from where, for
    what), how its query is made (raising: that request alone fails, a Refused with its status, anything else as a
    500, and is recorded so) and whether it asked several queries (its line then holds one list of ids per query)."""

    event: dict[str, Any]
    query: Callable[[], Q]
    several: bool = False


def answer_all(asked: list[Asked[Q]], run: Callable[[list[Q]], list[Any]]) -> list[Any]:
    """Each request's outcome: `run`'s answer or refusal over the queries that could be made, in one call, or the
    error its query raised when made (Trail.commit records them all)."""
    outcomes: list[Any] = []
    for a in asked:
        try:
            outcomes.append(a.query())
        except Exception as e:  # its own failure: the others of the batch are still searched
            outcomes.append(e)
    made = [i for i, o in enumerate(outcomes) if not isinstance(o, Exception)]
    if made:
        for i, answer in zip(made, run([outcomes[i] for i in made]), strict=True):
            outcomes[i] = answer
    return outcomes


def refused(event: dict[str, Any], refusal: Exception) -> dict[str, Any]:
    """The line of a refused request: its status (500 for an error that is not a refusal) and no ids."""
    return {**event, "ids": [], "status": refusal.status_code if isinstance(refusal, Refused) else 500}


def found(body: dict[str, Any], several: bool = False) -> dict[str, Any]:
    """What a search answered, for its line: the uids (one list per query when `several`), the FAR and threshold
    applied (the same for every query of a request) and the generation."""
    results = body["results"]
    ids = [[int(h["id"]) for h in r["hits"]] for r in results]
    first = results[0] if results else {}
    return {"ids": ids if several else (ids[0] if ids else []), "far": first.get("far"),
            "threshold": first.get("threshold"), "generation": int(body["generation"])}
