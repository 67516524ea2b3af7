"""Sign-in (person.web.auth, accounts, sessions; search/users.py): once a gallery has an account every route of the
app answers 401 without credentials, loopback included, except the sign-in page, its stylesheet, sign-out and a
health check that then says only "ok"; the form signs in with a strict, HttpOnly, expiring cookie (Secure under
https); tokens work until revoked or expired; sign-in attempts are rate-limited per client address; the users file
is 0600 and re-read when it changes; a server beyond loopback with no account is refused."""
import io
import json
import logging
import os
import shutil
import stat
import subprocess
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import Depends, Request
from fastapi.testclient import TestClient
from starlette.routing import Mount
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from person.cli import serve as serve_cmd
from person.cli import users
from person.errors import PersonError
from person.gallery.encoders import ExportEncoder
from person.gallery.search import Searcher
from person.gallery.search_options import SearcherOptions
from person.web import server
from person.web.accounts import USERS_FILE, Accounts, AccountsError
from person.web.app import create_app
from person.web.auth import AuthOptions, client_of, identity_of, require_admin
from person.web.sessions import SESSION_COOKIE, SESSION_SECONDS
from tests.web.test_app import make_gallery, start_app

STATIC = server.STATIC
PASSWORD, ADMIN_PASSWORD = "correct horse battery", "admin staple battery"
# The routes, from an app over no gallery at all (create_app opens nothing until a request): what parametrises the
# 401 test. test_the_route_list_is_the_real_app_s checks it is the app's own.
ROUTES = create_app(SimpleNamespace(folder=Path("/nonexistent")), STATIC).routes
# What answers without credentials once there are accounts, and how; every other route and method: 401.
EXEMPT = {("GET", "/"): 303, ("GET", "/signin"): 200, ("POST", "/signin"): 422, ("POST", "/signout"): 303,
          ("GET", "/api/health"): 200}


class Clock:
    """A clock the test moves: session and token expiry without waiting."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def requests_of(route) -> list[tuple[str, str]]:
    """(method, a concrete path) for each method of a route: path parameters filled in, a file under a mount."""
    if isinstance(route, Mount):
        return [("GET", f"{route.path}/app.js"), ("GET", f"{route.path}/index.html")]
    path = route.path.replace("{id}", "1")
    assert "{" not in path, f"fill in the parameters of {route.path}"
    return [(method, path) for method in sorted(route.methods - {"HEAD"})]


CASES = sorted({case for route in ROUTES for case in requests_of(route)} | {("GET", "/nowhere")})


def command(gallery: Path, *argv: str, stdin: str = "", monkeypatch=None, capsys=None):
    """search/users.py as a user runs it, `stdin` piped in; (its return value, what it printed)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    done = users.main(["--gallery", str(gallery), *argv])
    return done, capsys.readouterr()


@pytest.fixture(scope="module")
def enrolled(trained_setup, plain_export, tmp_path_factory):
    gallery, _ = make_gallery(trained_setup, plain_export, tmp_path_factory.mktemp("auth"))
    return gallery


@pytest.fixture
def gallery(enrolled, tmp_path):
    """A copy of the enrolled gallery (its image root stays the original's), with no account yet."""
    return Path(shutil.copytree(enrolled, tmp_path / "g"))


@pytest.fixture
def app_of(gallery, plain_export, tmp_path):
    """app_of(**auth options) -> an app over `gallery` with a text and an image model."""
    encoder = ExportEncoder(plain_export)

    def make(**options):
        return create_app(Searcher(gallery, encoder, encoder), STATIC, tmp_path / "thumbs",
                          auth=AuthOptions(**options))
    return make


@pytest.fixture
def accounts(gallery):
    """The gallery with ann (a viewer) and root (an admin)."""
    found = Accounts(gallery)
    found.add_user("ann", PASSWORD, "viewer")
    found.add_user("root", ADMIN_PASSWORD, "admin")
    return found


def sign_in(client: TestClient, name: str = "ann", password: str = PASSWORD, **headers: str) -> httpx.Response:
    return client.post("/signin", data={"name": name, "password": password}, follow_redirects=False,
                       headers=headers)


def probe(app) -> None:
    """Routes that show what the gate put on request.state, and the admin dependency at work."""
    @app.get("/probe")
    def state(request: Request) -> dict:
        return {"identity": asdict(identity_of(request)), "client": client_of(request)}

    @app.get("/probe/admin", dependencies=[Depends(require_admin)])
    def admin_only() -> dict:
        return {"ok": True}


# ---------------------------------------------------------------- which routes answer

def test_the_route_list_is_the_real_app_s(app_of):
    assert sorted({c for r in app_of().routes for c in requests_of(r)} | {("GET", "/nowhere")}) == CASES
    assert set(EXEMPT) <= set(CASES)


@pytest.fixture(scope="module")
def locked(enrolled, plain_export, tmp_path_factory):
    """One app over a copy of the gallery with an account, for the 401 test's many cases."""
    root = tmp_path_factory.mktemp("locked")
    gallery = Path(shutil.copytree(enrolled, root / "g"))
    Accounts(gallery).add_user("ann", PASSWORD)
    encoder = ExportEncoder(plain_export)
    with TestClient(create_app(Searcher(gallery, encoder, encoder), STATIC, root / "thumbs")) as client:
        yield client


@pytest.mark.parametrize("method,path", CASES, ids=[f"{m} {p}" for m, p in CASES])
def test_every_route_answers_401_without_credentials_once_there_is_an_account(locked, method, path):
    r = locked.request(method, path, follow_redirects=False)  # from loopback: TestClient's client, Host testserver
    if (method, path) not in EXEMPT:
        assert r.status_code == 401, r.text
        assert "sign in first" in r.json()["error"] and r.headers["www-authenticate"].startswith("Bearer")
        return
    assert r.status_code == EXEMPT[method, path], r.text
    if path == "/":
        assert r.headers["location"] == "/signin"
    if path == "/api/health":
        assert r.json() == {"status": "ok"}  # up; not the generation or the count
        assert locked.head(path).status_code == 200  # what uptime checkers send


def test_the_sign_in_page_and_its_stylesheet_answer_but_not_the_search_page_s_files(locked):
    page = locked.get("/signin")
    assert 'action="/signin"' in page.text and 'method="post"' in page.text and "<script" not in page.text
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "same-origin"  # no-referrer would make the form's Origin "null"
    assert locked.get("/static/app.css").status_code == 200
    assert locked.get("/static/app.js").status_code == locked.get("/static/index.html").status_code == 401


# ---------------------------------------------------------------- the page's session

def test_the_form_signs_in_with_a_strict_http_only_expiring_cookie_and_search_works(app_of, accounts):
    app = app_of()
    probe(app)
    with TestClient(app) as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/signin"
        r = sign_in(client, origin="http://testserver")
        assert (r.status_code, r.headers["location"]) == (303, "/")
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert {"HttpOnly", f"Max-Age={SESSION_SECONDS}", "Path=/", "SameSite=strict"} <= \
            {part.strip() for part in cookie.split(";")}
        assert "Secure" not in cookie  # plain http: a browser would drop a Secure cookie
        found = client.get("/api/search", params={"q": "a man in a red coat", "k": 3})
        assert found.status_code == 200 and len(found.json()["results"][0]["hits"]) == 3
        assert client.get("/").status_code == 200 and 'id="q"' in client.get("/").text
        assert client.get("/signin", follow_redirects=False).headers["location"] == "/"
        assert client.get("/api/health").json()["generation"] >= 1  # signed in: the whole answer
        assert client.get("/api/me").json() == {"user": "ann", "role": "viewer", "via": "session", "accounts": True,
                                                "insecure": False}
        assert client.get("/probe").json() == {"identity": {"user": "ann", "role": "viewer", "via": "session"},
                                               "client": "testclient"}
        assert client.get("/probe/admin").status_code == 403  # a viewer
        r = client.post("/signout", follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/signin")
        assert "Max-Age=0" in r.headers["set-cookie"]
        assert client.get("/api/search", params={"q": "a man"}).status_code == 401
    with TestClient(app, base_url="https://testserver") as client:
        r = sign_in(client, "root", ADMIN_PASSWORD)
        assert "Secure" in {part.strip() for part in r.headers["set-cookie"].split(";")}  # under TLS
        assert client.get("/probe/admin").json() == {"ok": True}


def test_a_sign_in_from_another_site_is_refused(app_of, accounts):
    with TestClient(app_of()) as client:
        r = sign_in(client, origin="http://evil.example")
        assert r.status_code == 403 and "another site" in r.text and "set-cookie" not in r.headers
        assert client.post("/signout", headers={"origin": "null"}).status_code == 403


def test_a_wrong_password_is_401_and_attempts_past_the_limit_are_429_per_address(app_of, accounts):
    clock = Clock()
    app = app_of(login_attempts=3, login_window=60, clock=clock)
    with TestClient(app) as client, TestClient(app, client=("192.0.2.7", 4000)) as other:
        for name in ("ann", "ann", "nobody"):
            r = sign_in(client, name, "wrong password")
            assert r.status_code == 401 and "Wrong name or password" in r.text and "set-cookie" not in r.headers
        r = sign_in(client)  # the right password, but one attempt too many
        assert (r.status_code, r.headers["retry-after"]) == (429, "60") and "try again in 60 s" in r.text
        assert sign_in(other).status_code == 303  # another address has its own count
        clock.now += 59
        assert sign_in(client).headers["retry-after"] == "1"
        clock.now += 1  # the first attempt has left the window
        assert sign_in(client).status_code == 303


def test_a_session_ends_at_its_expiry_on_a_new_password_and_with_its_user(app_of, accounts, gallery, monkeypatch,
                                                                            capsys):
    clock = Clock()
    with TestClient(app_of(clock=clock)) as client:
        assert sign_in(client).status_code == 303
        clock.now += SESSION_SECONDS - 1
        assert client.get("/api/me").status_code == 200
        clock.now += 1  # what the signed value says, whatever a client does with Max-Age
        r = client.get("/api/me")
        assert r.status_code == 401 and "the session ended" in r.json()["error"]

        assert sign_in(client).status_code == 303
        value = client.cookies[SESSION_COOKIE]
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
        assert client.get("/api/me").status_code == 401  # a tampered signature
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, value)
        assert client.get("/api/me").status_code == 200
        command(gallery, "password", "ann", stdin="a new long password\n", monkeypatch=monkeypatch, capsys=capsys)
        assert client.get("/api/me").status_code == 401
        assert sign_in(client).status_code == 401
        assert sign_in(client, password="a new long password").status_code == 303
        command(gallery, "remove", "ann", monkeypatch=monkeypatch, capsys=capsys)
        assert client.get("/api/me").status_code == 401


# ---------------------------------------------------------------- tokens and the command

def test_tokens_work_until_revoked_or_expired(app_of, accounts, gallery, monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr("time.time", clock)  # the command dates the token by the same clock
    app = app_of(clock=clock)
    probe(app)
    _, out = command(gallery, "token", "root", "--expires", "1", monkeypatch=monkeypatch, capsys=capsys)
    token = out.out.strip()
    assert token.startswith("pst_") and len(token) > 50 and "shown this once" in out.err
    stored = json.loads((gallery / USERS_FILE).read_text())
    assert token not in json.dumps(stored) and token.split("_", 2)[2] not in json.dumps(stored)  # only its hash
    with TestClient(app) as client:
        bearer = {"authorization": f"Bearer {token}"}
        assert client.get("/probe", headers=bearer).json()["identity"] == {"user": "root", "role": "admin",
                                                                           "via": "token"}
        assert client.get("/probe/admin", headers=bearer).status_code == 200
        assert client.get("/api/search", params={"q": "a person"}, headers=bearer).status_code == 200
        for bad, why in ((f"Bearer {token[:-1]}x", "not one this gallery issued"),
                         (f"Basic {token}", "Authorization: Bearer TOKEN")):
            r = client.get("/api/search", params={"q": "a person"}, headers={"authorization": bad})
            assert r.status_code == 401 and why in r.json()["error"]
        clock.now += 86400  # a day later
        r = client.get("/api/gallery", headers=bearer)
        assert r.status_code == 401 and "expired" in r.json()["error"]
        command(gallery, "expire", token.split("_")[1], "--never", monkeypatch=monkeypatch, capsys=capsys)
        assert client.get("/api/gallery", headers=bearer).status_code == 200
        _, out = command(gallery, "list", monkeypatch=monkeypatch, capsys=capsys)
        assert f"{token.split('_')[1]}  root" in out.out and "expires never" in out.out
        assert token.split("_")[2] not in out.out and "scrypt" not in out.out
        command(gallery, "revoke", token, monkeypatch=monkeypatch, capsys=capsys)
        assert client.get("/api/gallery", headers=bearer).status_code == 401


def test_the_command_keeps_scrypt_hashes_in_a_0600_file_and_refuses_a_looser_one(gallery, app_of, monkeypatch,
                                                                                  capsys):
    done, out = command(gallery, "add", "ann", "--role", "admin", stdin=f"{PASSWORD}\n", monkeypatch=monkeypatch,
                        capsys=capsys)
    assert (done.name, done.role) == ("ann", "admin") and "added ann (admin)" in out.out
    path = gallery / USERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = json.loads(path.read_text())["users"]["ann"]["password"]
    assert {k: record[k] for k in ("scheme", "n", "r", "p")} == {"scheme": "scrypt", "n": 2 ** 15, "r": 8, "p": 3}
    assert PASSWORD not in path.read_text() and len(bytes.fromhex(record["salt"])) == 16
    with pytest.raises(AccountsError, match="'ann' already has an account; .* password ann"):
        command(gallery, "add", "ann", stdin=f"{PASSWORD}\n", monkeypatch=monkeypatch, capsys=capsys)
    with pytest.raises(AccountsError, match="a password has 8 to 1024 characters, this one 5"):
        command(gallery, "add", "bob", stdin="short\n", monkeypatch=monkeypatch, capsys=capsys)
    with pytest.raises(AccountsError, match="is not a gallery"):
        command(gallery / "segments", "add", "bob", stdin=f"{PASSWORD}\n", monkeypatch=monkeypatch, capsys=capsys)
    app = app_of()
    os.chmod(path, 0o644)
    with pytest.raises(AccountsError, match=f"{path} has mode 0644: .* chmod 600 {path}"):
        command(gallery, "list", monkeypatch=monkeypatch, capsys=capsys)
    with TestClient(app) as client:  # the server fails closed
        for route in ("/api/health", "/api/search?q=a", "/signin"):
            r = client.get(route)
            assert r.status_code == 503 and "users file cannot be used" in r.json()["error"], route
        os.chmod(path, 0o600)
        assert client.get("/api/health").json() == {"status": "ok"}


def test_an_account_added_while_the_app_runs_closes_it_from_the_next_request(app_of, gallery, monkeypatch, capsys):
    app = app_of()
    probe(app)
    with TestClient(app) as client:
        assert client.get("/api/search", params={"q": "a person"}).status_code == 200  # no account: open, loopback
        assert client.get("/api/me").json() == {"user": None, "role": "viewer", "via": "none", "accounts": False,
                                                "insecure": False}
        assert client.get("/probe/admin").status_code == 403  # open to search, but nobody is an admin
        command(gallery, "add", "ann", stdin=f"{PASSWORD}\n", monkeypatch=monkeypatch, capsys=capsys)
        assert client.get("/api/search", params={"q": "a person"}).status_code == 401
        assert sign_in(client).status_code == 303
        assert client.get("/api/search", params={"q": "a person"}).status_code == 200


# ---------------------------------------------------------------- beyond loopback

def test_beyond_loopback_with_no_account_the_server_is_refused_unless_insecure(gallery, plain_export, tmp_path,
                                                                              monkeypatch, capsys):
    options = SearcherOptions(text_model=str(plain_export))
    with pytest.raises(PersonError) as refused:
        serve_cmd.main(["--gallery", str(gallery), "--text-model", str(plain_export), "--host", "0.0.0.0"])
    assert f"search/users.py --gallery {gallery} add NAME --role admin" in str(refused.value)
    assert "--insecure-no-auth" in str(refused.value)
    app = server.build_app(gallery, options, host="0.0.0.0", thumb_cache=tmp_path / "t", insecure_no_auth=True)
    with TestClient(app) as client:
        assert client.get("/api/search", params={"q": "a person"}).status_code == 200
        assert client.get("/api/me").json()["insecure"] is True  # the page shows its banner
    app = create_app(Searcher(gallery, ExportEncoder(plain_export)), STATIC,
                     auth=AuthOptions(open_without_accounts=False))  # the last account removed while it ran
    with TestClient(app) as client:
        r = client.get("/api/search", params={"q": "a person"})
        assert r.status_code == 401 and "search/users.py --gallery GALLERY add NAME" in r.json()["error"]
        assert "no account yet" in client.get("/signin").text
    command(gallery, "add", "ann", stdin=f"{PASSWORD}\n", monkeypatch=monkeypatch, capsys=capsys)
    server.build_app(gallery, options, host="0.0.0.0", thumb_cache=tmp_path / "t")  # an account: served


def test_tls_and_forwarded_headers_reach_uvicorn_and_a_trusted_proxy_s_word_marks_cookies_secure(
        app_of, accounts, gallery, plain_export, monkeypatch):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(kw))
    serve_cmd.main(["--gallery", str(gallery), "--text-model", str(plain_export), "--ssl-certfile", "c.pem",
                    "--ssl-keyfile", "k.pem", "--forwarded-allow-ips", "10.0.0.2"])
    serve_cmd.main(["--gallery", str(gallery), "--text-model", str(plain_export)])
    assert [(c["ssl_certfile"], c["ssl_keyfile"], c["proxy_headers"], c["forwarded_allow_ips"]) for c in calls] == \
        [("c.pem", "k.pem", True, "10.0.0.2"), (None, None, False, None)]  # by default no forwarded header counts
    app = app_of(login_attempts=1)
    probe(app)
    behind = ProxyHeadersMiddleware(app, trusted_hosts="testclient")  # what uvicorn wraps it in with the option
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"}
    with TestClient(behind) as client:
        r = sign_in(client, **forwarded)
        assert "Secure" in {part.strip() for part in r.headers["set-cookie"].split(";")}
        session = r.headers["set-cookie"].split(";")[0]  # (the test's client keeps no Secure cookie over http)
        assert client.get("/probe", headers={**forwarded, "cookie": session}).json() == {
            "identity": {"user": "ann", "role": "viewer", "via": "session"}, "client": "203.0.113.9"}
        assert sign_in(client, **forwarded).status_code == 429  # that address's limit
        assert sign_in(client, **{**forwarded, "x-forwarded-for": "203.0.113.10"}).status_code == 303


def test_the_command_serves_tls_from_workers_that_share_the_sessions(gallery, plain_export, accounts, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    proc, url = start_app(["--gallery", str(gallery), "--text-model", str(plain_export), "--workers", "2",
                           "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)], tmp_path / "app.log")
    url = url.replace("http://", "https://")
    try:
        with httpx.Client(base_url=url, verify=False) as client:
            assert client.get("/api/gallery").status_code == 401
            r = client.post("/signin", data={"name": "ann", "password": PASSWORD}, headers={"origin": url})
            assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
        cookie = r.cookies[SESSION_COOKIE]
        for _ in range(12):  # new connections, answered by either worker: each reads the signed cookie itself
            with httpx.Client(base_url=url, verify=False, cookies={SESSION_COOKIE: cookie}) as client:
                assert client.get("/api/search", params={"q": "a person", "k": 2}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_proxy_that_hides_the_scheme_or_host_is_named_in_the_refusal_and_logged(app_of, accounts, caplog):
    with TestClient(app_of()) as client, caplog.at_level(logging.WARNING, logger="person.web.auth"):
        # what a browser sends through a TLS proxy that uvicorn does not trust: the page's origin is https
        r = sign_in(client, origin="https://testserver")
        assert r.status_code == 403 and "another site" in r.text
        assert "https://testserver" in r.text and "http://testserver" in r.text
        assert "--forwarded-allow-ips" in r.text and "proxy_set_header Host $host" in r.text
        [warning] = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
        assert "'https://testserver'" in warning.getMessage() and "'http://testserver'" in warning.getMessage()
        assert "--forwarded-allow-ips" in warning.getMessage()
