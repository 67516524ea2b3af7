"""The admins' erase route (person.web.admin): POST /api/admin/forget is a 401 without credentials and a 403 for a
viewer; for an admin it erases through person.gallery.forget, answers the report, and from then on searches no longer
return the rows, /images and /thumbs of an erased id are 404, its thumbnail file is gone from the cache, the previous
generation's files are purged (the server let go of them), and the audit log holds an "erase" line by that admin.
A selector that matches nothing is a 400 (recorded), and image paths are not taken over HTTP."""
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from person.gallery import store
from person.gallery.audit import AuditLog, entries, verify
from person.gallery.encoders import ExportEncoder
from person.gallery.manifest import read_manifest
from person.gallery.search import Searcher
from person.web import server
from person.web.accounts import Accounts
from person.web.admin import FORGET
from person.web.app import create_app
from tests.web.test_app import make_gallery
from tests.web.test_auth import CASES

QUERY = "a man in a red coat"


@pytest.fixture(scope="module")
def enrolled(trained_setup, plain_export, tmp_path_factory):
    gallery, _ = make_gallery(trained_setup, plain_export, tmp_path_factory.mktemp("admin"))
    return gallery


@pytest.fixture
def served(enrolled, plain_export, tmp_path):
    """(client, gallery, key folder, thumbnail folder, {name: bearer header}) over a copy with a viewer and an admin."""
    gallery = Path(shutil.copytree(enrolled, tmp_path / "g"))
    accounts = Accounts(gallery)
    accounts.add_user("ann", "correct horse battery", "viewer")
    accounts.add_user("root", "admin staple battery", "admin")
    bearer = {name: {"authorization": f"Bearer {accounts.new_token(name)[1]}"} for name in ("ann", "root")}
    encoder = ExportEncoder(plain_export)
    app = create_app(Searcher(gallery, encoder, encoder), server.STATIC, tmp_path / "thumbs",
                     audit=AuditLog(gallery, tmp_path / "keys"))
    with TestClient(app) as client:
        yield client, gallery, tmp_path / "keys", tmp_path / "thumbs", bearer


def test_the_route_is_enumerated_and_closed_to_anyone_but_an_admin(served):
    client, gallery, _, _, bearer = served
    assert ("POST", FORGET) in CASES  # test_auth's every-route 401 test covers it
    r = client.post(FORGET, json={"uids": [0]})
    assert r.status_code == 401 and "sign in first" in r.json()["error"]
    r = client.post(FORGET, json={"uids": [0]}, headers=bearer["ann"])
    assert r.status_code == 403 and "admin" in r.json()["error"]
    assert store.Gallery.open(gallery).position(0) == 0  # nothing erased


def test_an_admin_erases_an_image_s_rows_and_they_are_gone_from_search_images_thumbnails_and_disk(served):
    client, gallery, keys, thumbs, bearer = served
    admin = bearer["root"]
    hits = client.get("/api/search", params={"q": QUERY, "k": 44}, headers=admin).json()["results"][0]["hits"]
    g = store.Gallery.open(gallery)
    path = g.rows.path[g.position(hits[0]["id"])]
    erased = sorted(int(u) for i, u in enumerate(g.rows.uid) if g.rows.path[i] == path)  # every row of the image
    g.close()
    for uid in erased:
        assert client.get(f"/thumbs/{uid}", headers=admin).status_code == 200
    assert len(list(thumbs.rglob("*.jpg"))) == 1  # rows of one image share its thumbnail
    old = read_manifest(gallery)

    r = client.post(FORGET, json={"uids": erased}, headers=admin)
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["ids"], report["rows"], report["thumbnails"], report["held_by_readers"]) == (erased, len(erased),
                                                                                                1, [])
    assert report["generation"] == old.generation + 1 and report["error"] is None
    assert report["lines"][0].startswith(f"<gallery>: erased {len(erased)} row(s)") and str(gallery) not in r.text
    assert list(thumbs.rglob("*.jpg")) == []  # the thumbnail file left the cache
    after = client.get("/api/search", params={"q": QUERY, "k": 44}, headers=admin).json()
    assert after["generation"] == report["generation"] and after["count"] == 44 - len(erased)
    assert not set(erased) & {h["id"] for h in after["results"][0]["hits"]}
    for uid in erased:
        for url in (f"/images/{uid}", f"/thumbs/{uid}", f"/api/search/similar/{uid}"):
            assert client.get(url, headers=admin).status_code == 404, url
    kept = {s.name for s in read_manifest(gallery).segments}
    assert {s.name for s in old.segments} - kept  # a segment was rewritten without the rows
    assert {p.name for p in (gallery / "segments").iterdir()} == kept  # and the old one purged: the server let go

    assert verify(gallery, keys).ok
    [line] = [e.event for e in entries(gallery, keys, action="erase")]
    assert (line["user"], line["client"], line["ids"], line["status"], line["selector"]) == (
        "root", "testclient", erased, 200, {"uids": erased})


def test_a_selector_matching_nothing_is_a_400_recorded_and_image_paths_are_not_taken(served):
    client, gallery, keys, _, bearer = served
    r = client.post(FORGET, json={"uids": [99999], "tracks": [1]}, headers=bearer["root"])
    assert r.status_code == 400 and "--uid 99999 match(es) no row" in r.json()["error"]
    assert "<gallery>" in r.json()["error"] and str(gallery) not in r.text
    [line] = [e.event for e in entries(gallery, keys, action="erase")]
    assert (line["status"], line["ids"], line["selector"]) == (400, [], {"tracks": ["1"], "uids": [99999]})
    r = client.post(FORGET, json={"images": ["4/1.jpg"]}, headers=bearer["root"])
    assert r.status_code == 422 and "images are not taken over HTTP" in r.json()["error"]
    r = client.post(FORGET, json={}, headers=bearer["root"])
    assert r.status_code == 400 and "nothing to erase given" in r.json()["error"]
    assert read_manifest(gallery).generation == store.Gallery.open(gallery).generation  # (nothing committed)
