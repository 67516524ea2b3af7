"""The admins' route: POST /api/admin/forget erases rows through person.gallery.forget, the function search/forget.py
calls, so their bytes leave the segments, the saved indexes, Milvus and the thumbnail cache; then this process swaps
in the new generation, lets go of the old one and purges its files, and an erased id is a 404 from the next request.

Rows are named by uid (every hit carries one), track or conditions, and by age (retention), never by an image path:
the API names rows by id and never shows a path, and a path a client sends would have the server open and hash a
file it names (search/forget.py --image PATH, run on the server, erases by file).

The erasure is audited (action "erase", by the admin who asked, from their address) once it commits; when that line
cannot be written the rows are still erased (an erasure is not undone), and the answer is a 503 saying both.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from person.errors import PersonError
from person.gallery import store
from person.gallery.forget import Selector, forget
from person.gallery.manifest import GalleryError
from person.web.audited import Trail
from person.web.auth import require_admin
from person.web.service import Refused, SearchService

log = logging.getLogger(__name__)

FORGET = "/api/admin/forget"
MAX_UIDS = 100_000  # a cap that names its limit before the 1 MiB body cap (about 150,000 uids) would


class ForgetRequest(BaseModel):
    """Which rows to erase: those matching every kind given; within a kind, any of its values."""

    model_config = ConfigDict(extra="forbid")
    uids: list[int] = Field(default_factory=list, max_length=MAX_UIDS, description="row ids, as hits carry them")
    tracks: list[str | int] = Field(default_factory=list, max_length=10_000, description="detections track ids")
    where: list[str] = Field(default_factory=list, max_length=16,
                             description="conditions on the rows' fields, all must hold: camera=3")
    max_age_days: float | None = Field(None, gt=0, description="rows older than this many days (retention)")

    @model_validator(mode="before")
    @classmethod
    def _no_paths(cls, data: Any) -> Any:
        if isinstance(data, dict) and "images" in data:
            raise ValueError("images are not taken over HTTP (the API names rows by id, never by a file on the "
                             "server): erase their rows by uid, or run search/forget.py --gallery G --image PATH on "
                             "the server")
        return data


class ForgetOut(BaseModel):
    ids: list[int] = Field(description="every row erased, live and deleted ones whose bytes were still on disk")
    rows: int = Field(description="of them live (searchable) rows")
    deleted_rows: int
    generation: int = Field(description="the generation the erasure committed")
    selector: dict[str, Any]
    segments_rewritten: list[str]
    indexes_rebuilt: list[str]
    milvus_deleted: int | None
    thumbnails: int | None = Field(description="thumbnails removed from the server's cache")
    held_by_readers: list[int] = Field(description="older generations other processes still hold: their files go "
                                                   "at the next purge (search/forget.py --gallery G --purge)")
    error: str | None
    lines: list[str] = Field(description="the report search/forget.py prints")


def add_admin_routes(app: FastAPI, service: SearchService, trail: Trail, errors: dict[int | str, Any],
                     milvus: str | None = None, milvus_collection: str | None = None) -> None:
    """POST /api/admin/forget, for admins only (require_admin); `errors`: its refusals' OpenAPI description.
    `milvus`, `milvus_collection`: the collection the searcher reads, whose rows go too."""

    def settle(folder: Path, purged: set[str], generation: int | None) -> tuple[list[int], str | None]:
        """After an erasure committed: this process stops reading the old generation, so its files (with the erased
        bytes) can go now, and thumbnails that requests still answering from it wrote meanwhile go again. (The
        generations still held after this purge, an error saying what failed or None.)"""
        held, error = [], None
        try:
            service.swap_in_latest()
            held = store.purge(folder)
        except (PersonError, OSError, Refused) as e:
            why = e.detail if isinstance(e, Refused) else e
            log.warning("after erasing generation %s: %s", generation, why)
            error = f"the rows are erased; removing the previous generation's files failed: {why}"
        try:
            service.thumbs.purge(purged - service.live_hashes())
        except (PersonError, OSError) as e:
            log.warning("after erasing generation %s: thumbnails: %s", generation, e)
            error = error or f"the rows are erased; removing their thumbnails failed: {e}"
        return held, error

    @app.post(FORGET, response_model=ForgetOut, dependencies=[Depends(require_admin)], responses=errors,
              summary="Erase rows by uid, track, conditions or age (admins): their bytes leave the disk")
    def erase(request: Request, body: ForgetRequest) -> JSONResponse:
        folder = service.searcher.folder
        selector = Selector(tracks=tuple(map(str, body.tracks)), where=tuple(body.where), uids=tuple(body.uids),
                            max_age_days=body.max_age_days)
        committed: list[dict[str, Any]] = []
        purged: set[str] = set()  # the erased images' hashes whose thumbnails forget() removed

        def audit(event: dict[str, Any]) -> None:
            committed.append(event)
            trail.record(request, {**event, "status": 200 if event.get("error") is None else 500},
                         refusal=f"though the erasure of {len(event['ids'])} row(s) is done (generation "
                                 f"{event['generation']}): it is not undone, and its answer is withheld")

        def thumbs(hashes: set[str]) -> int:
            purged.update(hashes)
            return service.thumbs.purge(hashes)

        report = None
        try:
            report = forget(folder, selector, thumbs=thumbs, milvus=milvus, milvus_collection=milvus_collection,
                            audit=audit, wait=0.0)
        except GalleryError as e:
            if committed:  # erased, then a later step failed: the line says which
                raise Refused(500, service.public(str(e))) from None
            trail.record(request, {"action": "erase", "selector": selector.to_dict(), "ids": [], "status": 400})
            raise Refused(400, service.public(str(e))) from None
        finally:
            if committed or report is not None:  # also when a 500 or the audit's 503 is answered: the rows are erased
                why = settle(folder, purged, None if report is None else report.generation)
                if report is not None:
                    report.held_by_readers, error = why
                    if error is not None:
                        report.error = error
        out = {k: v for k, v in report.event().items() if k not in ("action", "gallery")}
        out["error"] = None if out["error"] is None else service.public(out["error"])
        return JSONResponse({**out, "lines": [service.public(line) for line in report.lines()]})
