"""The admins' erase route (person.web.admin): POST /api/admin/forget is a 401 without credentials and a 403 for a
viewer; for an admin it erases through person.gallery.forget, answers the report, and from then on searches no longer
return the rows, /images and /thumbs of an erased id are 404, its thumbnail file is gone from the cache, the previous
generation's files are purged (the server let go of them), and the audit log holds an "erase" line by that admin.
A selector that matches nothing is a 400 (recorded), and image paths are not taken over HTTP."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from person.gallery import store
from person.gallery.audit import AuditError, AuditLog, entries, verify
from person.gallery.encoders import ExportEncoder
from person.gallery.forget import Selector, forget
from person.gallery.manifest import read_manifest
from person.gallery.search import LocalBackend, Searcher
from person.web import server
from person.web.accounts import Accounts
from person.web.admin import FORGET
from person.web.app import create_app
from person.web.images import ThumbnailCache
from person.web.service import Refused, SearchService, ServeLimits
from tests.gallery.test_forget import SPACE, TARGET, make_gallery as make_small_gallery
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


# ---------------------------------------------------------------- erased bytes must not stay nor come back
class _Encoder:
    """Just enough of an encoder for a Searcher over tests.gallery.test_forget's small gallery (no model runs)."""
    space, identity, has_text, has_image = SPACE, {}, True, False


def _service(tmp_path):
    """(SearchService over a small gallery of N one-row images, the gallery folder): its thumbnails under thumbs/."""
    folder, _ = make_small_gallery(tmp_path)
    searcher = Searcher(folder, _Encoder(), backend_factory=lambda g: LocalBackend(g, "exact"))
    return SearchService(searcher, ThumbnailCache(tmp_path / "thumbs"), ServeLimits()), folder


def _on_disk(folder):
    """The names under the gallery's segments/ and leases/ folders."""
    return ({p.name for p in (folder / "segments").iterdir()}, {p.name for p in (folder / "leases").iterdir()})


def test_a_thumbnail_served_from_the_old_generation_after_an_erasure_is_not_left_in_the_cache(tmp_path):
    service, folder = _service(tmp_path)
    old = service.current()
    sha = old.rows.sha256[old.position(TARGET)]
    assert service.thumbnail(TARGET).status_code == 200 and len(list((tmp_path / "thumbs").rglob("*.jpg"))) == 1
    report = forget(folder, Selector(uids=(TARGET,)), thumbs=service.thumbs.purge, wait=0)
    assert report.thumbnails == 1 and list((tmp_path / "thumbs").rglob("*.jpg")) == []
    with service._refreshing:  # another request is swapping the new generation in: this one answers from the old
        r = service.thumbnail(TARGET)
        assert service.searcher.gallery is old
    assert r.status_code == 200  # answered (it began before the erasure), but its picture is not kept
    assert list((tmp_path / "thumbs").rglob(f"{sha}-*")) == []
    assert service.thumbnail(0).status_code == 200  # a live row's thumbnail is cached as ever
    assert len(list((tmp_path / "thumbs").rglob("*.jpg"))) == 1
    with pytest.raises(Refused) as e:
        service.thumbnail(TARGET)
    assert e.value.status_code == 404


def test_a_thumbnail_of_an_image_a_live_row_still_shows_stays_cached(tmp_path):
    service, folder = _service(tmp_path)
    old = service.current()
    forget(folder, Selector(uids=(0,)), thumbs=service.thumbs.purge, wait=0)
    service.current()  # swapped in: the served generation, row 1 live in it
    assert service.searcher.gallery is not old
    live = service.searcher.gallery
    service._drop_if_erased(old, live.rows.sha256[live.position(1)])  # nothing to remove, nothing removed
    r = service.thumbnail(1)
    assert r.status_code == 200 and len(list((tmp_path / "thumbs").rglob("*.jpg"))) == 1
    service._drop_if_erased(old, live.rows.sha256[live.position(1)])
    assert len(list((tmp_path / "thumbs").rglob("*.jpg"))) == 1


def test_an_erasure_by_another_process_leaves_no_file_of_the_old_generation_after_the_next_request(tmp_path):
    service, folder = _service(tmp_path)
    old = service.current()
    report = forget(folder, Selector(uids=(TARGET,)), wait=0)  # as search/forget.py or another worker would
    assert report.held_by_readers == [old.generation]  # this process still holds it
    segments, _ = _on_disk(folder)
    assert segments > {s.name for s in read_manifest(folder).segments}  # the erased row's segment is still there
    assert service.health()["generation"] == report.generation  # the next request swaps it in ...
    current = read_manifest(folder)
    assert _on_disk(folder) == ({s.name for s in current.segments}, {f"gen-{current.generation:06d}"})  # ... and purges
    assert store._held_leases(folder, current.generation) == []


def test_the_old_generation_and_thumbnails_go_even_when_the_erase_line_cannot_be_written(served, monkeypatch):
    client, gallery, _, thumbs, bearer = served
    admin = bearer["root"]
    service = client.app.state.service
    g = service.current()  # the generation served: it stays served until the route swaps
    erased = sorted(int(u) for i, u in enumerate(g.rows.uid) if g.rows.path[i] == g.rows.path[g.position(3)])
    assert client.get("/thumbs/3", headers=admin).status_code == 200
    old = read_manifest(gallery)
    real = service.thumbs.purge
    rewritten = []

    def purge_then_a_late_request_writes_it_again(hashes):  # a /thumbs request still on the old generation
        removed = real(hashes)
        if not rewritten:
            for h in hashes:
                service.thumbs.get(h, lambda: service._pixels(service._enrolled(3, g)[0], 3))
                rewritten.append(h)
        return removed
    monkeypatch.setattr(service.thumbs, "purge", purge_then_a_late_request_writes_it_again)
    audit = client.app.state.audit
    record = audit.record

    def failing(event):
        if event.get("action") == "erase":
            raise AuditError("disk full")
        return record(event)
    monkeypatch.setattr(audit, "record", failing)
    r = client.post(FORGET, json={"uids": erased}, headers=admin)
    assert r.status_code == 503 and "cannot record this request" in r.json()["error"]
    assert rewritten and list(thumbs.rglob("*.jpg")) == []  # the route purged the thumbnail again
    current = read_manifest(gallery)
    assert current.generation == old.generation + 1
    assert {p.name for p in (gallery / "segments").iterdir()} == {s.name for s in current.segments}
