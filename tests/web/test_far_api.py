"""Calibrated matches over HTTP: the API's `far` (query parameter, JSON field, form field) keeps exactly the hits at
or above the threshold of the models in use, every hit lists the FARs it reaches, no hit reaching it returns none
with a note, a FAR that is not a measured level is a 400 naming the levels, a FAR the models have no threshold for
is a 400 naming what exists (and no server path), and the page and the description carry the fields."""
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from person.gallery.encoders import ExportEncoder
from person.gallery.search import Searcher
from person.web import server
from person.web.app import create_app
from tests.gallery.test_far_search import calibrate
from tests.web.test_app import make_gallery

QUERY = "a man in a red coat"


@pytest.fixture(scope="module")
def calibrated(trained_setup, plain_export, tmp_path_factory):
    """(client, the 1e-2 threshold, the folder): a text threshold at FAR 1e-2 that the fifth hit of QUERY just
    reaches, 1e-3 refused when measured; an image threshold at 1e-2 that nothing reaches."""
    root = tmp_path_factory.mktemp("far-api")
    gallery, _ = make_gallery(trained_setup, plain_export, root)
    encoder = ExportEncoder(plain_export)
    [everything] = Searcher(gallery, encoder).search([QUERY], k=44)
    threshold = everything.hits[4].score
    path = calibrate(root / "site" / "c.json", plain_export, gallery, {
        ("text_to_image", "student", "fp32"): {"1e-2": threshold, "1e-3": "only 2,000 impostor pairs"},
        ("image_to_image", "student", "fp32"): {"1e-2": 1.5}})
    app = create_app(Searcher(gallery, encoder, encoder, calibration=path), server.STATIC, root / "thumbs")
    with TestClient(app) as client:
        yield client, threshold, root


def result(r, i: int = 0) -> dict:
    assert r.status_code == 200, r.text
    return r.json()["results"][i]


def test_far_keeps_exactly_the_hits_at_or_above_its_threshold_and_hits_list_what_they_reach(calibrated):
    client, threshold, _ = calibrated
    every = result(client.get("/api/search", params={"q": QUERY, "k": 44}))
    assert (every["far"], every["threshold"], every["operating_points"]) == (None, None, {"1e-2": threshold})
    assert "text_to_image student (fp32) from c.json" in every["calibration"]  # the file by name, not its path
    assert [h["passes"] for h in every["hits"]] == [["1e-2"] if h["score"] >= threshold else [] for h in every["hits"]]
    for far in ("1e-2", "0.01", "1E-2"):  # the level, however it is written
        kept = result(client.get("/api/search", params={"q": QUERY, "k": 44, "far": far}))
        assert [h["id"] for h in kept["hits"]] == [h["id"] for h in every["hits"] if h["score"] >= threshold]
        assert len(kept["hits"]) >= 5 and all(h["score"] >= threshold and h["passes"] == ["1e-2"]
                                              for h in kept["hits"])
        assert (kept["far"], kept["threshold"], kept["note"]) == ("1e-2", threshold, None)
    for body in ({"queries": [QUERY, QUERY], "k": 44, "far": "1e-2"}, {"queries": [QUERY], "k": 44, "far": 0.01}):
        posted = client.post("/api/search", json=body).json()["results"]
        assert all(r["far"] == "1e-2" and all(h["score"] >= threshold for h in r["hits"]) for r in posted)
    assert result(client.get("/api/search", params={"q": QUERY, "k": 44, "far": ""}))["far"] is None  # "all"


def test_no_hit_reaching_the_threshold_returns_none_with_a_note(calibrated):
    client, _, root = calibrated
    photo = next((root / "photos").rglob("*.jpg")).read_bytes()
    for r in (client.post("/api/search/image", files={"image": ("p.jpg", photo, "image/jpeg")},
                          data={"k": "5", "far": "1e-2"}),
              client.get("/api/search/similar/3", params={"far": "1e-2"})):
        found = result(r)
        assert found["hits"] == [] and found["threshold"] == 1.5
        assert found["note"].startswith("no hit reaches FAR 1e-2: its threshold is 1.5000")
        assert str(root) not in r.text
    plain = result(client.get("/api/search/similar/3"))
    assert plain["hits"] and all(h["passes"] == [] for h in plain["hits"])  # below every operating point


def test_a_far_that_is_no_measured_level_or_has_no_threshold_is_refused_by_name(calibrated):
    client, _, root = calibrated
    for far in ("often", "0.5", "1e-5", "1", "true"):
        r = client.get("/api/search", params={"q": QUERY, "far": far})
        assert r.status_code == 400 and "give one of 1e-2, 1e-3, 1e-4" in r.json()["error"], (far, r.text)
    r = client.post("/api/search", json={"queries": [QUERY], "far": True})
    assert r.status_code == 400 and "give one of 1e-2, 1e-3, 1e-4" in r.json()["error"]
    r = client.get("/api/search", params={"q": QUERY, "far": "1e-3"})  # measured, but on too few impostor pairs
    error = r.json()["error"]
    assert r.status_code == 400 and "refused when measured (only 2,000 impostor pairs)" in error
    assert "thresholds that hold: 1e-2" in error and "c.json" in error and str(root) not in error
    r = client.get("/api/search/similar/3", params={"far": "1e-4"})
    assert r.status_code == 400 and "not measured; thresholds that hold: 1e-2" in r.json()["error"]


def test_the_description_and_the_page_carry_the_far_fields(calibrated):
    client, *_ = calibrated
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "far" in schemas["SearchRequest"]["properties"] and "passes" in schemas["HitOut"]["properties"]
    assert {"far", "threshold", "operating_points", "calibration", "note"} <= set(schemas["ResultOut"]["properties"])
    page = client.get("/").text
    assert '<select id="far"' in page and all(f'value="{far}"' in page for far in ("1e-2", "1e-3", "1e-4"))
    assert 'value="" selected>all results' in page and "<script>" not in page and "style=" not in page
    script = (Path(server.STATIC) / "app.js").read_text(encoding="utf-8")
    assert "below every operating point" in script and "FAR ≤" in script
