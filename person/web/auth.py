"""Who is asking: the gate every request passes, the sign-in page's routes, and the identity routes read.

Once the gallery has an account (G/users.json, person.web.accounts), every request needs credentials, from
loopback too: a session cookie the sign-in form set, or `Authorization: Bearer TOKEN`. Without them only the
sign-in page, its stylesheet, sign-out and /api/health (which then says only whether the service is up) answer;
`/` redirects to the sign-in page and everything else, unknown paths included, is a 401 before any route runs.
With no account at all, a server bound to loopback (or started with --insecure-no-auth) stays open, as a person's
own tool on their own machine; one bound beyond it answers 401 until an account exists.

What a route can read (the audit log does): `request.state.identity`, an Identity (user, role, via: "session",
"token" or "none"), and `request.state.client`, the client's address (the forwarded one when the peer is a trusted
proxy: uvicorn's --forwarded-allow-ips rewrites it, and the scheme, before the app sees the request).
An admin-only route takes `Depends(require_admin)`.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import cookie_parser

from person.web.accounts import MAX_PASSWORD, NAME, Accounts, AccountsError
from person.web.service import Refused
from person.web.sessions import (LOGIN_ATTEMPTS, LOGIN_WINDOW, MAX_CLIENTS, SESSION_COOKIE, SESSION_SECONDS,
                                 LoginLimiter, read_session, sign_session)

log = logging.getLogger(__name__)

SIGN_IN, SIGN_OUT = "/signin", "/signout"
# What answers without credentials once there are accounts: the sign-in page and its one asset, and health.
PUBLIC = frozenset({SIGN_IN, SIGN_OUT, "/static/app.css", "/api/health"})
ADD_ACCOUNT = "search/users.py --gallery GALLERY add NAME --role admin"
CHALLENGE = {"www-authenticate": 'Bearer realm="person search"'}


@dataclass(frozen=True)
class Identity:
    """Who a request comes from. `user` None: nobody signed in; `role` None: a public route answered to nobody."""

    user: str | None
    role: str | None   # "viewer" or "admin" (person.web.accounts.ROLES)
    via: str           # "session" (the page's cookie), "token" (Authorization: Bearer) or "none"


ANONYMOUS = Identity(None, None, "none")   # no credentials, on a public route
OPEN = Identity(None, "viewer", "none")    # a server with no accounts, open to whoever reaches it


@dataclass(frozen=True)
class AuthOptions:
    """How the gate treats a gallery. `open_without_accounts`: with no account, answer everyone (a server bound to
    loopback, or --insecure-no-auth, which `insecure` records so the page can say so)."""

    open_without_accounts: bool = True
    insecure: bool = False
    session_seconds: int = SESSION_SECONDS
    login_attempts: int = LOGIN_ATTEMPTS
    login_window: float = LOGIN_WINDOW
    clock: Callable[[], float] = time.time  # a test's clock, for expiry


def identity_of(request: Request) -> Identity:
    return getattr(request.state, "identity", ANONYMOUS)


def client_of(request: Request) -> str:
    return getattr(request.state, "client", "")


def require_admin(request: Request) -> Identity:
    """A dependency for admin-only routes: `@app.post(..., dependencies=[Depends(require_admin)])`; a 403 unless
    an admin signed in (a server open with no accounts has no admin: erase through the command there)."""
    identity = identity_of(request)
    if identity.role != "admin":
        raise Refused(403, "this needs an admin account: sign in as one, or send an admin's token")
    return identity


def expected_origin(request: Request) -> str:
    """The origin this server's own page sends: the scheme and Host the request arrived with (a trusted proxy's
    scheme, under uvicorn's --forwarded-allow-ips)."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def same_origin(request: Request) -> bool:
    """No Origin header (not a browser's cross-site request), or this server's own."""
    origin = request.headers.get("origin")
    return origin is None or origin == expected_origin(request)


PROXY_FIX = ("if this server is behind a TLS proxy, start it with --forwarded-allow-ips set to the proxy's address "
             "and have the proxy pass the browser's Host header (nginx: proxy_set_header Host $host)")


def login_event(name: str, status: int) -> dict[str, Any]:
    """The audit line of a sign-in: the form's name as `user` only when it is a valid account name (the form's
    text is the client's to choose), else `user` null and `name_sha256`; never the password."""
    if NAME.fullmatch(name):
        return {"action": "login", "user": name, "via": "form", "status": status}
    return {"action": "login", "user": None, "name_sha256": hashlib.sha256(name.encode("utf-8", "surrogatepass"))
            .hexdigest(), "via": "form", "status": status}


class OncePerWindow:
    """Whether to log a refusal for a client: at most once per client per `window` seconds (thread-safe, at most
    MAX_CLIENTS remembered), so that refused requests cannot flood the log."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window, self.clock = window, clock
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, client: str, kind: str) -> bool:
        now, key = self.clock(), (client, kind)
        with self._lock:
            last = self._last.pop(key, None)
            if last is not None and now - last < self.window:
                self._last[key] = last
                return False
            self._last[key] = now
            if len(self._last) > MAX_CLIENTS:
                self._last.popitem(last=False)
            return True


class Auth:
    """What the gate and the sign-in routes share: the accounts, the options, the sign-in rate limit."""

    def __init__(self, accounts: Accounts, options: AuthOptions, page: bool) -> None:
        self.accounts, self.options, self.page = accounts, options, page  # page: the app serves the sign-in page
        self.limiter = LoginLimiter(options.login_attempts, options.login_window, options.clock)
        self.warn_once = OncePerWindow(options.login_window, options.clock)

    def session_cookie(self, request: Request, user: str, generation: int) -> dict[str, Any]:
        """set_cookie's arguments: HttpOnly, SameSite=Strict, Secure under https (TLS, or a trusted proxy's word)."""
        value = sign_session(self.accounts.session_key(), user, generation,
                             self.options.clock() + self.options.session_seconds)
        return dict(key=SESSION_COOKIE, value=value, max_age=self.options.session_seconds, path="/",
                    secure=request.url.scheme == "https", httponly=True, samesite="strict")

    def credentials(self, headers: dict[bytes, bytes]) -> tuple[Identity | None, str]:
        """(the identity, "") the request's token or session cookie proves, else (None, why not)."""
        authorization = headers.get(b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None, "send the API token as Authorization: Bearer TOKEN"
            user, why = self.accounts.check_token(token.strip(), self.options.clock())
            return (Identity(user.name, user.role, "token"), "") if user else (None, why)
        cookie = cookie_parser(headers.get(b"cookie", b"").decode("latin-1")).get(SESSION_COOKIE)
        if cookie is None:
            return None, (f"sign in first: the page at {SIGN_IN}, or send Authorization: Bearer TOKEN "
                          f"(search/users.py --gallery GALLERY token NAME makes one)")
        signed = read_session(self.accounts.session_key(), cookie, self.options.clock())
        user = self.accounts.user(signed[0]) if signed else None
        if user is None or user.generation != signed[1]:
            return None, f"the session ended (expired, signed out, or the password changed): sign in at {SIGN_IN}"
        return Identity(user.name, user.role, "session"), ""

    def decide(self, scope: dict) -> tuple[Identity, Response | None]:
        """The request's identity, and the answer that stops it here (None: it goes on to its route)."""
        path, public = scope["path"], scope["path"] in PUBLIC
        try:
            if not self.accounts.has_accounts():
                if self.options.open_without_accounts:
                    return OPEN, None
                identity, why = None, (f"this server has no account yet: its operator adds one with {ADD_ACCOUNT}, "
                                       f"then signs in at {SIGN_IN}")
            else:
                identity, why = self.credentials(dict(scope["headers"]))
        except AccountsError as e:  # fail closed: no request is answered on a users file that cannot be read
            log.error("%s", e)
            return ANONYMOUS, JSONResponse({"error": "the server's users file cannot be used; its log says why"}, 503)
        if identity is not None:
            return identity, None
        if public:
            return ANONYMOUS, None
        if path == "/" and self.page and scope["method"] in ("GET", "HEAD"):
            return ANONYMOUS, RedirectResponse(SIGN_IN, 303)
        return ANONYMOUS, JSONResponse({"error": why}, 401, headers=CHALLENGE)


class Gate:
    """ASGI: puts the identity and the client's address on `request.state`, and answers requests that may go no
    further (401, or `/` redirected to the sign-in page) before any route or body is read."""

    def __init__(self, app: Any, auth: Auth) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        identity, answer = self.auth.decide(scope)
        state = scope.setdefault("state", {})
        state["identity"], state["client"] = identity, (scope.get("client") or ("",))[0]
        if answer is not None:
            return await answer(scope, receive, send)
        await self.app(scope, receive, send)


def add_account_routes(app: FastAPI, auth: Auth, static: Path | None,
                       audit: Callable[[Request, dict[str, Any]], None] = lambda request, event: None) -> None:
    """GET /api/me (who is signed in, and whether the server has accounts); with the page (`static`), the sign-in
    page, its form's POST and sign-out. `audit(request, event)` records each sign-in that checked a password (401
    wrong, 303 signed in: the name given when it is a valid account name, else its sha256; never the password),
    raising Refused(503) when it cannot (person.web.audited). A sign-in refused before that (429 over the rate
    limit, 403 sent from another site) writes no audit line, so that nobody can fill the disk with them: it is
    logged as a warning, at most once per client per rate-limit window. A refused Origin counts toward the
    client's sign-in limit."""

    @app.get("/api/me", summary="Who is signed in, how, and whether this server has accounts at all")
    def me(request: Request) -> JSONResponse:
        identity = identity_of(request)
        return JSONResponse({"user": identity.user, "role": identity.role, "via": identity.via,
                             "accounts": auth.accounts.has_accounts(), "insecure": auth.options.insecure})

    if static is None:
        return
    page = (static / "signin.html").read_text(encoding="utf-8")

    def render(message: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
        """The sign-in page with `message` in it (as text: no markup from a request reaches the page)."""
        return HTMLResponse(page.replace("<!--message-->", escape(message)), status,
                            headers={"cache-control": "no-store", **(headers or {})})

    def cross_site(request: Request) -> HTMLResponse:
        expected, received = expected_origin(request), request.headers.get("origin")
        if auth.warn_once(client_of(request), "origin"):
            log.warning("refused %s %s from %s: its Origin %r is not this server's %r (at most one such line per "
                        "client every %g s); %s", request.method, request.url.path, client_of(request), received,
                        expected, auth.options.login_window, PROXY_FIX)
        return render(f"refused: the form was sent from another site (its origin {received} is not this server's "
                      f"{expected}); {PROXY_FIX}", 403)

    @app.get(SIGN_IN, include_in_schema=False)
    def sign_in_page(request: Request) -> Response:
        if identity_of(request).user is not None:
            return RedirectResponse("/", 303)
        if not auth.accounts.has_accounts():
            return render(f"This gallery has no account yet: add one on the server with {ADD_ACCOUNT}.")
        return render("")

    # A plain form POST (no script): it works under the CSP's form-action 'self'. Hashing runs in the thread pool.
    @app.post(SIGN_IN, include_in_schema=False)
    def sign_in(request: Request, name: str = Form(max_length=64),
                password: str = Form(max_length=MAX_PASSWORD)) -> Response:
        answer = attempt(request, name, password)
        if answer.status_code in (401, 303):  # a password was checked; refusals before that leave no line
            try:  # recorded before it is sent: no session leaves unaudited
                audit(request, login_event(name, answer.status_code))
            except Refused as e:
                return render(f"Sign-in is unavailable: {e.detail}", 503)
        return answer

    def attempt(request: Request, name: str, password: str) -> Response:
        # The limit first: a form sent from another site counts toward it too, so that it cannot be sent unlimited.
        wait = auth.limiter.attempt(client_of(request))
        if wait is not None:
            if auth.warn_once(client_of(request), "limit"):
                log.warning("sign-in refused (429): too many attempts from %s (at most one such line per client "
                            "every %g s)", client_of(request), auth.options.login_window)
            return render(f"Too many sign-in attempts from this address: try again in {wait} s.", 429,
                          {"retry-after": str(wait)})
        if not same_origin(request):
            return cross_site(request)
        user = auth.accounts.check_password(name, password)
        if user is None:
            log.warning("failed sign-in as %r from %s", name[:64], client_of(request))
            return render("Wrong name or password.", 401)
        answer = RedirectResponse("/", 303)
        answer.set_cookie(**auth.session_cookie(request, user.name, user.generation))
        return answer

    @app.post(SIGN_OUT, include_in_schema=False)
    def sign_out(request: Request) -> Response:
        if not same_origin(request):
            return cross_site(request)
        answer = RedirectResponse(SIGN_IN, 303)
        answer.delete_cookie(SESSION_COOKIE, path="/", secure=request.url.scheme == "https", httponly=True,
                             samesite="strict")
        return answer
