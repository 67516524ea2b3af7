"""The server's audit trail (person.web.audited): each search, photo search, similar search, image and thumbnail
view and sign-in writes exactly one line that verifies, holding who (the signed-in user, the client's address), what
(the query text, or the sha256 of the uploaded bytes and never the bytes), the filters, k, the ids answered, the
FAR and threshold applied and the status; a request whose line cannot be written is a 503 and its answer never
leaves; a sign-in refused before its password is checked (429, 403) leaves no line, and a name that is not an
account name is recorded as its sha256; an open server audits too (user null); person-serve opens the log (its
--audit-* flags) and refuses to start on a log whose key is missing."""
import errno
import hashlib
import logging
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from person.cli import serve as serve_cmd
from person.gallery.audit import AuditError, AuditLog, entries, verify
from person.gallery.encoders import ExportEncoder
from person.gallery.search import Searcher
from person.gallery.search_options import SearcherOptions
from person.web import server
from person.web.accounts import Accounts
from person.web.app import create_app
from person.web.audited import AuditOptions
from person.web.auth import AuthOptions
from person.web.sessions import SESSION_COOKIE
from tests.web.test_app import make_gallery

PASSWORD = "correct horse battery"
QUERY = "a man in a red coat"


@pytest.fixture(scope="module")
def enrolled(trained_setup, plain_export, tmp_path_factory):
    gallery, photos = make_gallery(trained_setup, plain_export, tmp_path_factory.mktemp("audited"))
    return gallery, photos


@pytest.fixture
def gallery(enrolled, tmp_path):
    """A copy of the enrolled gallery with the viewer ann, and its photos."""
    folder = Path(shutil.copytree(enrolled[0], tmp_path / "g"))
    Accounts(folder).add_user("ann", PASSWORD)
    return folder, enrolled[1]


@pytest.fixture
def app_of(gallery, plain_export, tmp_path):
    """app_of(**AuditLog options) -> (app, the log's key folder) over `gallery`, with a text and an image model."""
    encoder = ExportEncoder(plain_export)

    def make(**options):
        log = AuditLog(gallery[0], tmp_path / "keys", **options)
        return create_app(Searcher(gallery[0], encoder, encoder), server.STATIC, tmp_path / "thumbs", audit=log)
    return make


def signed_in(client: TestClient) -> TestClient:
    r = client.post("/signin", data={"name": "ann", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def lines(gallery: Path, keys: Path) -> list[dict]:
    """Every line of the log, after checking the chain verifies."""
    report = verify(gallery, keys)
    assert report.ok, report.problems
    found = list(entries(gallery, keys))
    assert all(e.problem is None for e in found)
    return [e.event for e in found]


def ids(body: dict, i: int = 0) -> list[int]:
    return [h["id"] for h in body["results"][i]["hits"]]


def test_a_search_writes_one_verifiable_line_with_who_what_and_the_ids_answered(app_of, gallery, tmp_path):
    folder, keys = gallery[0], tmp_path / "keys"
    with signed_in(TestClient(app_of())) as client:
        before = len(lines(folder, keys))  # the sign-in's
        r = client.get("/api/search", params={"q": QUERY, "k": 5, "where": "camera>=1", "group_by": "track"})
        assert r.status_code == 200, r.text
        [line] = lines(folder, keys)[before:]
        assert {k: line[k] for k in ("action", "user", "client", "query", "where", "group_by", "k", "far",
                                     "threshold", "status")} == {
            "action": "search", "user": "ann", "client": "testclient", "query": QUERY, "where": ["camera>=1"],
            "group_by": "track", "k": 5, "far": None, "threshold": None, "status": 200}
        assert line["ids"] == ids(r.json()) and len(line["ids"]) == 5 and line["generation"] == r.json()["generation"]

        queries = [QUERY, "穿红色外套的女孩"]
        r = client.post("/api/search", json={"queries": queries, "k": 3})
        [line] = lines(folder, keys)[before + 1:]
        assert (line["query"], line["ids"]) == (queries, [ids(r.json(), 0), ids(r.json(), 1)])  # one list a query

        r = client.get("/api/search", params={"q": "a", "where": "nofield=1"})  # refused: recorded, nothing sent
        assert r.status_code == 400
        [line] = lines(folder, keys)[before + 2:]
        assert (line["status"], line["ids"], line["where"]) == (400, [], ["nofield=1"])
        assert client.get("/api/search", params={"q": "a", "k": "ten"}).status_code == 422  # no route ran: no line
        assert client.get("/api/gallery").status_code == 200  # not a search or a view
        assert len(lines(folder, keys)) == before + 3


def test_a_photo_search_records_the_sha256_of_its_bytes_never_the_bytes(app_of, gallery, tmp_path):
    folder, photos = gallery
    data = (photos / "4" / "1.jpg").read_bytes()
    with signed_in(TestClient(app_of())) as client:
        r = client.post("/api/search/image", files={"image": ("crop.jpg", data, "image/jpeg")}, data={"k": "4"})
        assert r.status_code == 200, r.text
        uid = ids(r.json())[0]
        assert client.get(f"/api/search/similar/{uid}", params={"k": 2}).status_code == 200
    *_, photo, similar = lines(folder, tmp_path / "keys")
    assert photo["action"] == "search-image" and photo["image_sha256"] == hashlib.sha256(data).hexdigest()
    assert photo["ids"] == ids(r.json()) and photo["k"] == 4 and "query" not in photo
    logged = b"".join(p.read_bytes() for p in (folder / "audit").glob("*.jsonl"))
    assert data[:64] not in logged and len(logged) < 8 * 1024  # a few lines of text: no image in them
    assert (similar["action"], similar["query_id"], len(similar["ids"])) == ("similar", uid, 2)


def test_image_and_thumbnail_views_and_sign_ins_are_recorded_never_the_password(app_of, gallery, tmp_path):
    folder = gallery[0]
    with TestClient(app_of()) as client:
        r = client.post("/signin", data={"name": "ann", "password": "wrong password"}, follow_redirects=False)
        assert r.status_code == 401
        signed_in(client)
        uid = ids(client.get("/api/search", params={"q": QUERY, "k": 1}).json())[0]
        assert client.get(f"/images/{uid}").status_code == 200
        assert client.get(f"/thumbs/{uid}").status_code == 200
        assert client.get("/images/99999").status_code == 404
    wrong, right, _, image, thumb, missing = lines(folder, tmp_path / "keys")
    assert [(e["action"], e["user"], e["status"]) for e in (wrong, right)] == [("login", "ann", 401),
                                                                              ("login", "ann", 303)]
    assert [(e["action"], e["id"], e["ids"], e["user"]) for e in (image, thumb)] == [("image", uid, [uid], "ann"),
                                                                                   ("thumb", uid, [uid], "ann")]
    assert (missing["action"], missing["id"], missing["ids"], missing["status"]) == ("image", 99999, [], 404)
    logged = b"".join(p.read_bytes() for p in (folder / "audit").glob("*.jsonl"))
    assert b"wrong password" not in logged and PASSWORD.encode() not in logged


def test_a_request_that_cannot_be_audited_is_a_503_and_its_answer_never_leaves(app_of, gallery, tmp_path):
    folder = gallery[0]
    full = {"on": False}

    def writer(fd: int, data: bytes) -> int:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)
    with signed_in(TestClient(app_of(writer=writer))) as client:
        uid = ids(client.get("/api/search", params={"q": QUERY, "k": 1}).json())[0]
        kept = lines(folder, tmp_path / "keys")
        full["on"] = True
        for r in (client.get("/api/search", params={"q": QUERY}), client.post("/api/search", json={"queries": [QUERY]}),
                  client.get(f"/images/{uid}"), client.get(f"/thumbs/{uid}")):
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert set(r.json()) == {"error"} and r.headers["content-type"] == "application/json"  # no hits, no JPEG
            assert "the audit log (<gallery>/audit) cannot record this request, so it is refused" in error
            assert "No space left on device" in error and "search/audit.py --gallery GALLERY verify" in error
            assert str(tmp_path) not in error  # no server path
        client.cookies.clear()
        r = client.post("/signin", data={"name": "ann", "password": PASSWORD}, follow_redirects=False)
        assert r.status_code == 503 and "Sign-in is unavailable" in r.text and SESSION_COOKIE not in r.headers.get(
            "set-cookie", "")
        full["on"] = False
        signed_in(client)
        assert client.get("/api/search", params={"q": QUERY}).status_code == 200  # space again: served again
    assert lines(folder, tmp_path / "keys")[:len(kept)] == kept  # what failed was undone: the chain verifies


def test_an_open_server_with_no_account_audits_too(gallery, plain_export, tmp_path):
    folder = gallery[0]
    Accounts(folder).remove_user("ann")
    options = SearcherOptions(text_model=str(plain_export))
    app = server.build_app(folder, options, thumb_cache=tmp_path / "t", audit=AuditOptions(str(tmp_path / "k")))
    with TestClient(app, base_url="http://127.0.0.1:5005") as client:
        assert client.get("/api/search", params={"q": QUERY, "k": 2}).status_code == 200
    [line] = lines(folder, tmp_path / "k")
    assert (line["action"], line["user"], line["client"], len(line["ids"])) == ("search", None, "testclient", 2)


def test_the_command_opens_the_log_with_its_flags_and_refuses_a_log_whose_key_is_gone(gallery, plain_export,
                                                                                      tmp_path, monkeypatch):
    folder, keys = gallery[0], tmp_path / "keys"
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(app))
    serve_cmd.main(["--gallery", str(folder), "--text-model", str(plain_export), "--audit-key-dir", str(keys),
                    "--audit-retention-days", "30", "--audit-max-bytes", "1000000"])
    log = calls[-1].state.audit
    assert (log.paths.key.parent, log.retention_days, log.max_bytes) == (keys, 30, 1000000)
    with TestClient(calls[-1], base_url="http://127.0.0.1:5005") as client:
        assert client.post("/signin", data={"name": "ann", "password": "nope"}).status_code == 401
    assert lines(folder, keys)[-1]["action"] == "login" and list(keys.glob("*.key"))
    for key in keys.glob("*.key"):
        key.unlink()
    with pytest.raises(AuditError, match="the audit key of this gallery is missing"):
        serve_cmd.main(["--gallery", str(folder), "--text-model", str(plain_export), "--audit-key-dir", str(keys)])


def test_refused_sign_ins_leave_no_line_and_a_refused_origin_counts_toward_the_limit(gallery, plain_export,
                                                                                    tmp_path, caplog):
    folder, keys = gallery[0], tmp_path / "keys"
    encoder = ExportEncoder(plain_export)
    app = create_app(Searcher(folder, encoder, encoder), server.STATIC, tmp_path / "thumbs",
                     audit=AuditLog(folder, keys), auth=AuthOptions(login_attempts=2, login_window=60,
                                                                    clock=lambda: 1_800_000_000.0))
    form = {"name": "ann", "password": "wrong password"}
    with TestClient(app) as client, TestClient(app, client=("192.0.2.7", 4000)) as other, \
            caplog.at_level(logging.WARNING, logger="person.web.auth"):
        assert client.post("/signin", data=form, headers={"origin": "http://evil.example"}).status_code == 403
        assert client.post("/signin", data=form).status_code == 401
        for origin in ({"origin": "http://evil.example"}, {}, {"origin": "http://evil.example"}):
            r = client.post("/signin", data={"name": "ann", "password": PASSWORD}, headers=origin,
                            follow_redirects=False)
            assert r.status_code == 429  # the refused Origin was the first of the two attempts
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 2 and "'http://evil.example'" in refusals[0] and "429" in refusals[1]  # one each

        name = 'ann\n{"action":"erase"}\x1b[2J'  # the form's name is the client's to choose
        assert other.post("/signin", data={**form, "name": name}).status_code == 401
    [wrong, invalid] = lines(folder, keys)  # no line for the 403 and the 429s
    assert (wrong["user"], wrong["status"], "name_sha256" in wrong) == ("ann", 401, False)
    assert (invalid["action"], invalid["user"], invalid["status"]) == ("login", None, 401)
    assert invalid["name_sha256"] == hashlib.sha256(name.encode()).hexdigest()
    assert b"erase" not in b"".join(p.read_bytes() for p in (folder / "audit").glob("*.jsonl"))
