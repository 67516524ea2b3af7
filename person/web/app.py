"""The routes: create_app(searcher) -> the FastAPI app person.web.server serves."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from person.eval.operating_points import FARS
from person.gallery.audit import AuditLog
from person.gallery.search import MAX_K, MAX_QUERY_CHARS, QueryResult, Searcher, TextRequest
from person.web.accounts import Accounts
from person.web.admin import add_admin_routes
from person.web.audited import Asked, Trail, answer_all, found
from person.web.auth import Auth, AuthOptions, Gate, add_account_routes, identity_of
from person.web.batching import Batcher, BatchOptions
from person.web.images import THUMB_SIDE, ThumbnailCache
from person.web.middleware import BodyCap, CatchAll, HostCheck, SecurityHeaders, StrictQuery
from person.web.service import (MAX_QUERIES, MULTIPART_SLACK, Refused, SearchService, ServeLimits, describe_bytes,
                                far_level)

log = logging.getLogger(__name__)

Search = Callable[[], list[QueryResult]]  # one search, run (again, if a refresh swapped the gallery) by service.answer
FAR_HELP = (f"keep only the hits whose score reaches the threshold measured at this false-accept rate for the models "
            f"in use: one of {', '.join(FARS)} (0.001 is 1e-3); left out: every result. A FAR of x means about x "
            f"times the gallery's size false hits a query")


class Answer(JSONResponse):
    """A search's answer as JSON, rendered by orjson: a page of hits in microseconds where json.dumps takes tens
    (it runs once per request on the event loop). The same compact UTF-8 JSON; numbers from numpy as numbers."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(min_length=1, max_length=MAX_QUERIES,
                               description=f"free-text queries, any language, each at most {MAX_QUERY_CHARS} "
                                           f"characters")
    k: int = Field(10, strict=True, description=f"results per query, 1 to {MAX_K}")
    where: list[str] = Field(default_factory=list, max_length=64,
                             description="conditions on the rows' fields, all must hold: camera=3, time>=2026-11-01")
    group_by: str | None = Field(None, max_length=128, description="one result per value of this field (e.g. track)")
    far: str | float | None = Field(None, description=FAR_HELP)


class HitOut(BaseModel):
    id: int = Field(description="the row's opaque id: /images/{id}, /thumbs/{id}, /api/search/similar/{id}")
    rank: int
    score: float | None
    passes: list[str] | None = Field(description="the FARs whose threshold the score reaches, loosest first ([]: "
                                                 "below every operating point; null: the models have none)")
    bbox: list[float] | None = Field(description="the person's box on the image, x1 y1 x2 y2 in pixels")
    identity: int | None
    meta: dict[str, Any]
    image: str
    thumb: str


class ResultOut(BaseModel):
    query: str
    seconds: float = Field(description="embedding and search time of this query on the server")
    note: str | None = Field(description="e.g. a truncated query, or that no hit reaches the FAR asked")
    far: str | None = Field(description="the FAR applied (null: every result)")
    threshold: float | None = Field(description="its score threshold: every hit scores at least this")
    operating_points: dict[str, float | None] | None = Field(
        description="the thresholds of the models in use, by FAR (null: none measured)")
    calibration: str | None = Field(description="where those thresholds come from, or why there are none")
    hits: list[HitOut]


class SearchOut(BaseModel):
    generation: int = Field(description="the gallery generation every hit came from")
    count: int = Field(description="live rows in that generation")
    results: list[ResultOut]


class ErrorOut(BaseModel):
    error: str


ERRORS = {400: {"model": ErrorOut}, 404: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut},
          503: {"model": ErrorOut}}
PICTURE = {200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut},
           503: {"model": ErrorOut}}


def _field(loc: Sequence[Any]) -> str:
    """('query', 'k') -> 'k'; ('body', 'queries', 0) -> 'queries.0'; ('body',) -> 'body'."""
    if not loc:
        return "request"
    return ".".join(str(p) for p in loc[1:]) or str(loc[0])


# ---------------------------------------------------------------------- the app

def create_app(searcher: Searcher, static_dir: str | Path | None = None, thumb_cache: str | Path | None = None,
               limits: ServeLimits = ServeLimits(), allowed_hosts: Sequence[str] | None = None,
               auth: AuthOptions = AuthOptions(), audit: AuditLog | None = None, milvus: str | None = None,
               milvus_collection: str | None = None, batching: BatchOptions = BatchOptions()) -> FastAPI:
    """The web app: the page (from `static_dir`, when given), the JSON API, images and thumbnails by id, and the
    admins' erase route.

    `allowed_hosts`: Host header values to answer (others get a 400), e.g. 127.0.0.1 and localhost for a server
    bound to this machine only, so a web page elsewhere cannot reach it through DNS rebinding; None answers all.
    Once the gallery has an account (its users.json), every request needs credentials (person.web.auth); `auth`
    says what a gallery with none gets. `audit`: the gallery's audit log, where each search, view, sign-in and
    erasure is recorded before it is answered (person.web.audited); None records nothing, for an app a test or a
    program builds without one (person-serve always opens it). `milvus`, `milvus_collection`: the collection the
    searcher reads, which an erasure deletes from too. `batching`: how concurrent text searches are gathered into
    one batch (person.web.batching; size 1: each searched alone); the app's shutdown ends its worker."""
    service = SearchService(searcher, ThumbnailCache(thumb_cache), limits)
    trail = Trail(audit, service.public)
    gate = Auth(Accounts(searcher.folder), auth, page=static_dir is not None)
    # The batch's audit lines are committed on the batcher's second thread, while the next batch is searched.
    batcher = Batcher(lambda asked: answer_all(asked, service.answer_texts), batching, name="text-search batcher",
                      finish=trail.commit) if batching.enabled else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if batcher is not None:
            await run_in_threadpool(batcher.close)  # what is queued is answered first

    # Swagger UI and ReDoc load their scripts from a CDN: only the description itself is served.
    app = FastAPI(title="Person search", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Free-text (any language) and by-image search of an enrolled gallery of people.")
    app.state.service, app.state.audit, app.state.batcher = service, audit, batcher

    def body_cap(path: str) -> tuple[int, str]:
        if path == "/api/search/image":
            return limits.upload_bytes + MULTIPART_SLACK, f"an upload (the photo itself: {describe_bytes(limits.upload_bytes)})"
        return limits.json_bytes, "a JSON request"

    app.add_middleware(BodyCap, cap=body_cap)
    app.add_middleware(StrictQuery)
    app.add_middleware(Gate, auth=gate)  # after the host check, before a body is read
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(CatchAll)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            why = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return JSONResponse({"error": f"the request body is not valid JSON ({why}); send "
                                          f"{{\"queries\": [\"...\"], \"k\": 10}}"}, 400)
        fields = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in errors]
        text = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse({"error": text, "fields": fields}, 422)

    # ------------------------------------------------------------------ search
    def searched(request: Request, event: dict[str, Any], prepare: Callable[[str | None], Search],
                 several: bool = False) -> dict[str, Any]:
        """The answer of the search `prepare(far)` gives (the request's FAR checked first; then a photo decoded or
        a row's vector read, once), after its audit line is written."""
        return trail.answer(request, event, lambda: service.answer(prepare(far_level(event["far"]))),
                            lambda body: found(body, several))

    async def searched_texts(request: Request, event: dict[str, Any], texts: list[str], k: int, where: list[str],
                             group_by: str | None, several: bool = False) -> dict[str, Any]:
        """A text search's answer, after its audit line is written: gathered with the others in flight into one
        batch, whose lines are committed together (the route awaits it, holding no thread), or with batching off
        searched alone in the thread pool."""
        if batcher is None:
            return await run_in_threadpool(searched, request, event, lambda level: lambda: searcher.search(
                texts, k, where, group_by, level), several)
        asked = Asked(trail.who(request, event), lambda: TextRequest(texts, k, where, group_by,
                                                                     far_level(event["far"])), several)
        return await asyncio.wrap_future(batcher.submit(asked))

    @app.get("/api/search", response_model=SearchOut, responses=ERRORS, summary="Search by free text")
    async def search_text(request: Request,
                          q: str = Query(description=f"a description, any language, at most {MAX_QUERY_CHARS} "
                                                     f"characters"),
                          k: int = Query(10, description=f"results, 1 to {MAX_K}"),
                          where: list[str] = Query([], description="conditions on the rows' fields, all must hold"),
                          group_by: str | None = Query(None, max_length=128),
                          far: str | None = Query(None, max_length=32, description=FAR_HELP)) -> Answer:
        event = {"action": "search", "query": q, "where": where, "group_by": group_by, "k": k, "far": far}
        return Answer(await searched_texts(request, event, [q], k, where, group_by))

    @app.post("/api/search", response_model=SearchOut, responses=ERRORS, summary="Search by several queries")
    async def search_many(request: Request, body: SearchRequest) -> Answer:
        event = {"action": "search", "query": body.queries, "where": body.where, "group_by": body.group_by,
                 "k": body.k, "far": body.far}
        return Answer(await searched_texts(request, event, body.queries, body.k, body.where, body.group_by,
                                           several=True))

    @app.post("/api/search/image", response_model=SearchOut, responses=ERRORS, summary="Search by a photo")
    def search_image(request: Request,
                     image: UploadFile = File(description=f"a photo of a person, at most "
                                                          f"{describe_bytes(limits.upload_bytes)}"),
                     k: int = Form(10), where: list[str] = Form([]),
                     group_by: str | None = Form(None, max_length=128),
                     far: str | None = Form(None, max_length=32, description=FAR_HELP)) -> JSONResponse:
        data = image.file.read(limits.upload_bytes + 1)
        event = {"action": "search-image", "image_sha256": hashlib.sha256(data).hexdigest(), "where": where,
                 "group_by": group_by, "k": k, "far": far}

        def prepare(level: str | None) -> Search:
            if not service.has_image:
                raise Refused(400, "this server has no image model: start it with --image-model EXPORT_DIR (or "
                                   "--teacher) to search by photo")
            pixels = service.decode_upload(data)
            return lambda: searcher.search_images([pixels], k, where, group_by, level)
        result = searched(request, event, prepare)
        for r in result["results"]:
            r["query"] = image.filename or "upload"
        return Answer(result)

    @app.get("/api/search/similar/{id}", response_model=SearchOut, responses=ERRORS,
             summary="Search with a gallery row's own crop (its enrolled features)")
    def search_similar(request: Request, id: int, k: int = Query(10, description=f"results, 1 to {MAX_K}"),
                       where: list[str] = Query([]), group_by: str | None = Query(None, max_length=128),
                       far: str | None = Query(None, max_length=32, description=FAR_HELP)) -> JSONResponse:
        event = {"action": "similar", "query_id": id, "where": where, "group_by": group_by, "k": k, "far": far}

        def prepare(level: str | None) -> Search:
            vector = service.row_vector(id)
            return lambda: searcher.search_vectors(vector, [f"person #{id}"], k, where, group_by, level)
        return Answer(searched(request, event, prepare))

    # ------------------------------------------------------------------ the gallery
    @app.get("/api/gallery", summary="What the gallery holds and what this server can do")
    def gallery_info() -> JSONResponse:
        return JSONResponse(service.info())

    @app.get("/api/health", responses={503: {"model": ErrorOut}},
             summary="What a search would meet: the generation served, or (503) why the gallery cannot be; "
                     "without credentials, once there are accounts, only whether the service is up")
    def health(request: Request) -> JSONResponse:
        told = identity_of(request).role is not None  # signed in, or a server open to all
        try:
            body = service.health()
        except Refused as e:
            return JSONResponse({"status": "error", "error": e.detail} if told else {"status": "error"},
                                e.status_code)
        return JSONResponse(body if told else {"status": body["status"]})

    app.add_api_route("/api/health", health, methods=["HEAD"], include_in_schema=False)  # what uptime checkers send

    @app.get("/images/{id}", responses=PICTURE,
             summary="A gallery image by its row id: the image enrolled (409 if its file changed since), re-encoded")
    def serve_image(request: Request, id: int) -> Response:
        return trail.answer(request, {"action": "image", "id": id}, lambda: service.image(id),
                            lambda _: {"ids": [id]})

    @app.get("/thumbs/{id}", responses=PICTURE,
             summary=f"A JPEG thumbnail (longest side {THUMB_SIDE}); X-Image-Size says the original W x H")
    def serve_thumbnail(request: Request, id: int) -> Response:
        return trail.answer(request, {"action": "thumb", "id": id}, lambda: service.thumbnail(id),
                            lambda _: {"ids": [id]})

    add_admin_routes(app, service, trail, {**ERRORS, 403: {"model": ErrorOut}}, milvus, milvus_collection)

    # ------------------------------------------------------------------ the page
    add_account_routes(app, gate, None if static_dir is None else Path(static_dir), trail.record)
    if static_dir is not None:
        static = Path(static_dir)
        app.mount("/static", StaticFiles(directory=static), name="static")

        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(static / "index.html", headers={"cache-control": "no-cache"})

    return app
