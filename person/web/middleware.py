"""ASGI wrappers: security headers, a catch-all 500, the host check, the body cap, strict query strings."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi.responses import JSONResponse

from person.web.service import describe_bytes

log = logging.getLogger(__name__)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    # No referrer to other sites; to this one it lets a browser send the form's real Origin (no-referrer makes
    # it "null"), which the sign-in form's cross-site check reads.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                 b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
]


class SecurityHeaders:
    """Security headers on every response (errors included): no sniffing, no framing, the app's own assets only."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)
        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


class CatchAll:
    """Anything unexpected becomes a 500 `{"error": "internal error"}`; the traceback goes to the server's log."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = False

        async def watch(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            if started or scope["type"] != "http":
                raise  # half a response is out: the server closes the connection
            await JSONResponse({"error": "internal error"}, 500)(scope, receive, send)


class HostCheck:
    """Answers only requests whose Host header names an allowed host (a JSON 400 otherwise)."""

    def __init__(self, app: Any, allowed: Sequence[str]) -> None:
        self.app, self.allowed = app, {h.lower().strip("[]") for h in allowed}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
            if name not in self.allowed:
                error = (f"this server does not answer for the host {host[:100]!r}; start it with --allowed-host "
                         f"{name[:100] or 'NAME'} to serve that name")
                return await JSONResponse({"error": error}, 400)(scope, receive, send)
        await self.app(scope, receive, send)


class BodyCap:
    """Reads a request's body before the app does, at most `cap(path)` bytes; over it, a 413 naming the cap.
    Buffered here (caps are a few MiB) so a chunked body without Content-Length is held to the same cap."""

    def __init__(self, app: Any, cap: Callable[[str], tuple[int, str]]) -> None:
        self.app, self.cap = app, cap

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        cap, what = self.cap(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        refusal = JSONResponse({"error": f"the request body is over {describe_bytes(cap)}, the limit for {what}"}, 413)
        if declared.isdigit() and int(declared) > cap:
            return await refusal(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > cap:
                return await refusal(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay, send)


class StrictQuery:
    """Refuses (a JSON 400) a query string that is not percent-encoded UTF-8: Starlette would replace each bad byte
    with U+FFFD (or read raw bytes as Latin-1) and search for text nobody sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            raw: bytes = scope.get("query_string", b"")
            try:
                if not raw.isascii():
                    raise UnicodeError("raw bytes beyond ASCII")
                for part in raw.replace(b"+", b" ").split(b"&"):
                    unquote_to_bytes(part).decode("utf-8")
            except UnicodeError:
                error = "the query string is not valid UTF-8 (percent-encoded); send the text as UTF-8"
                return await JSONResponse({"error": error}, 400)(scope, receive, send)
        await self.app(scope, receive, send)
