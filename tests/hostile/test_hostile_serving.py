"""Hostile serving: what sits on disk after enrolment is not trusted. The web app serves only the image enrolled
(content hash, decoded, re-encoded; never a replaced file, a hard link out, a payload after the image, or files
under an edited image root of /) and sends no server path; boxes of any floats are enrolled and clipped or
skipped and counted, and every answer is standard JSON; an edited gallery is refused by the segment it damaged;
--where / --group-by on fields no row can satisfy, query strings that are not UTF-8 and an unreadable gallery
are said so, by a 4xx or 503, never an empty "ok"."""
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from person.cli import search as api
from person.data.images import load_pixels
from person.gallery import sources, store
from person.gallery.encoders import ExportEncoder
from person.gallery.enroll import enroll
from person.gallery.manifest import GalleryError
from person.gallery.search import Searcher
from person.gallery.segments import FEATURES, ROWS, SEGMENTS
from person.web.app import create_app

SECRET = b"TOP-SECRET-not-an-image"
BOXES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # an enrolment each


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity: what a standard JSON reader accepts."""
    def refuse(name):
        raise ValueError(f"{name} is not standard JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def enrolled(trained_setup, plain_export, tmp_path_factory):
    """A gallery of the tiny set's 32 images and 12 boxes (cameras, tracks), made once; tests change copies."""
    root = tmp_path_factory.mktemp("serving")
    photos = root / "photos"
    shutil.copytree(trained_setup[0].parent / "Part1", photos)
    images = sorted(str(p.relative_to(photos)) for p in photos.rglob("*.jpg"))
    (root / "d.jsonl").write_text("".join(json.dumps({"image": im, "bbox": [2, 4, 60, 120], "camera": 1 + i % 3,
                                                      "track": i // 2}) + "\n" for i, im in enumerate(images[:12])))
    encoder = ExportEncoder(plain_export)
    enroll(root / "g", encoder, sources.image_dir(photos), workers=0)
    enroll(root / "g", encoder, sources.detections(root / "d.jsonl", photos), workers=0)
    return root


@pytest.fixture
def served(enrolled, plain_export, tmp_path):
    """(client, gallery folder, photos, gallery) over a copy of the enrolled gallery and its images."""
    shutil.copytree(enrolled, tmp_path, dirs_exist_ok=True)
    manifest = json.loads((tmp_path / "g" / "gallery.json").read_text())
    manifest["image_root"] = str(tmp_path / "photos")  # the copy's images
    (tmp_path / "g" / "gallery.json").write_text(json.dumps(manifest))
    encoder = ExportEncoder(plain_export)
    searcher = Searcher(tmp_path / "g", encoder, encoder)
    with TestClient(create_app(searcher, None, tmp_path / "thumbs")) as client:
        yield client, tmp_path / "g", tmp_path / "photos", searcher.gallery


def row_of(gallery, path: str, boxed: bool = False) -> int:
    """The uid of the live row of `path` (whole image, or a box on it)."""
    return next(int(gallery.rows.uid[i]) for i in np.flatnonzero(gallery.live)
                if gallery.rows.path[i] == path and np.isnan(gallery.rows.bbox[i, 0]) != boxed)


def another_image_of(size: int, width: int, height: int) -> bytes:
    """A valid image (a flat PNG, a text chunk padding it) of exactly `size` bytes: a swap that size cannot show."""
    def png(padding: int) -> bytes:
        info = PngImagePlugin.PngInfo()
        info.add_text("pad", "x" * padding)
        out = io.BytesIO()
        Image.new("RGB", (width, height), (250, 20, 200)).save(out, "PNG", pnginfo=info)
        return out.getvalue()
    data = png(size - len(png(0)))
    assert len(data) == size
    return data


def rewrite_segment(gallery: Path, edit_rows=None, edit_features=None, **manifest_changes) -> None:
    """Edit the first segment's rows and/or features and write gallery.json to match, checksums included: a
    gallery edited by someone who knows the format, which only its contents can give away."""
    manifest = json.loads((gallery / "gallery.json").read_text())
    seg = manifest["segments"][0]
    folder = gallery / SEGMENTS / seg["name"]
    if edit_rows is not None:
        rows = [json.loads(line) for line in (folder / ROWS).read_text().splitlines()]
        edit_rows(rows)
        (folder / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if edit_features is not None:
        features = np.load(folder / FEATURES)
        edit_features(features)
        np.save(folder / FEATURES, features)
    seg["rows_sha256"] = hashlib.sha256((folder / ROWS).read_bytes()).hexdigest()
    seg["features_sha256"] = hashlib.sha256((folder / FEATURES).read_bytes()).hexdigest()
    (gallery / "gallery.json").write_text(json.dumps({**manifest, **manifest_changes}))


# ---------------------------------------------------------------- 1. only the image enrolled, no server paths

def test_a_file_replaced_after_enrolment_is_refused_whatever_its_size_and_mtime(served, plain_export):
    client, gallery, photos, g = served
    uid, path = row_of(g, "3/1.jpg"), photos / "3" / "1.jpg"
    assert client.get(f"/thumbs/{uid}").status_code == 200  # cached now
    st = path.stat()
    with Image.open(path) as original:
        swapped = another_image_of(st.st_size, *original.size)  # another picture of the same size in bytes
    path.write_bytes(swapped)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))   # and the mtime forged back
    for url in (f"/images/{uid}", f"/thumbs/{uid}"):  # the thumbnail is not answered from the cache either
        r = client.get(url)
        assert r.status_code == 409, (url, r.status_code)
        assert f"id {uid} changed since it was enrolled" in r.json()["error"] and str(photos) not in r.text
    path.write_bytes(SECRET)  # a text file where the image was
    r = client.get(f"/images/{uid}")
    assert r.status_code == 409 and SECRET not in r.content
    # enrolment's (size, mtime) check cannot see a forged change; --rehash reads the files and does
    path.write_bytes(swapped)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    encoder = ExportEncoder(plain_export)
    assert enroll(gallery, encoder, sources.image_dir(photos), workers=0).changed == 0
    again = enroll(gallery, encoder, sources.image_dir(photos), workers=0, rehash=True)
    assert again.changed == 1 and again.rows == 44
    fresh = store.Gallery.open(gallery)
    assert client.get(f"/images/{row_of(fresh, '3/1.jpg')}").status_code == 200  # the new content, enrolled


def test_a_hard_link_to_a_file_outside_the_root_is_refused(served, tmp_path):
    client, _, photos, g = served
    outside = tmp_path / "outside.txt"
    outside.write_bytes(SECRET)
    uid, path = row_of(g, "4/2.jpg"), photos / "4" / "2.jpg"
    path.unlink()
    os.link(outside, path)  # inside the root by every path check: only the content tells
    for url in (f"/images/{uid}", f"/thumbs/{uid}"):
        r = client.get(url)
        assert r.status_code == 409 and SECRET not in r.content and r.json()["error"]


def test_images_are_re_encoded_pixels_never_the_file_s_own_bytes(served, plain_export, tmp_path):
    _, _, photos, _ = served
    polyglot = photos / "0" / "1.jpg"
    polyglot.write_bytes(polyglot.read_bytes() + b"<script>alert(1)</script>" + SECRET)  # a payload after the image
    gallery = tmp_path / "g2"
    enroll(gallery, ExportEncoder(plain_export), sources.image_dir(photos), workers=0)
    searcher = Searcher(gallery, ExportEncoder(plain_export))
    with TestClient(create_app(searcher, None, tmp_path / "t2")) as client:
        r = client.get(f"/images/{row_of(searcher.gallery, '0/1.jpg')}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert SECRET not in r.content and b"<script>" not in r.content and r.content != polyglot.read_bytes()
    sent = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), np.float32)
    assert np.abs(sent - load_pixels(polyglot)).mean() < 3


def test_a_gallery_whose_image_root_is_slash_or_whose_rows_leave_it_is_refused(served, plain_export):
    _, gallery, _, _ = served
    encoder = ExportEncoder(plain_export)
    for n, (name, edit, changes) in enumerate((
            ("root /", lambda rows: rows[0].update(path="etc/passwd"), {"image_root": "/"}),
            ("..", lambda rows: rows[0].update(path="../../etc/passwd"), {}),
            ("absolute", lambda rows: rows[0].update(path="/etc/passwd"), {}))):
        copy = gallery.parent / f"edited-{n}"
        shutil.copytree(gallery, copy)
        rewrite_segment(copy, edit, **changes)
        with pytest.raises(GalleryError, match="file system's root|leaves the image root|absolute path") as e:
            Searcher(copy, encoder)
        assert "\n" not in str(e.value), name
    with pytest.raises(GalleryError, match="file system's root"):
        store.create(gallery.parent / "new", {"kind": "made-up"}, dict(encoder.space), 16, "/")


def test_hits_and_the_gallery_description_carry_no_server_path(served, plain_export, tmp_path):
    client, gallery, photos, _ = served
    body = client.get("/api/search", params={"q": "a person", "k": 44}).json()
    assert body["results"][0]["hits"] and all("path" not in h for h in body["results"][0]["hits"])
    encoder = ExportEncoder(plain_export)
    teacher = tmp_path / "models" / "my-teacher"  # a gallery the teacher enrolled, named by its local folder
    store.create(tmp_path / "tg", {"kind": "teacher", "name": str(teacher), "config_hash": "0"},
                 {**encoder.space, "teacher": str(teacher)}, 16, photos)
    g = store.Gallery.open(gallery)
    store.append(tmp_path / "tg", np.asarray(g.features()[:3]), g.rows.take(np.arange(3)))
    with TestClient(create_app(Searcher(tmp_path / "tg", encoder), None, tmp_path / "t3")) as other:
        info = other.get("/api/gallery")
        hits = other.get("/api/search", params={"q": "a person"})
    assert info.status_code == hits.status_code == 200
    for text in (info.text, hits.text, client.get("/api/gallery").text):
        assert str(tmp_path) not in text and "/models/" not in text
    assert info.json()["encoder"]["name"] == "my-teacher" and info.json()["space"].startswith("my-teacher ")


# ---------------------------------------------------------------- 2. boxes of any floats; standard JSON only

coordinates = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-300, 300),
                        st.sampled_from([1e308, -1e308, 1e39, 0.0, -0.0, 5e-324]), st.integers(-10 ** 400, 10 ** 400))


@BOXES
@given(boxes=st.lists(st.lists(coordinates, min_size=4, max_size=4), min_size=1, max_size=4))
@example(boxes=[[-1.0, -1e+308, 0.0, 0.0], [-1.0, -1e+308, 0.0, 0.0]])  # one unreadable box listed twice: two
@example(boxes=[[0, 0, 1e308, 1e308]])  # float32 would store it as Infinity
@example(boxes=[[0.0, 0.0, 2.0, 1.5]])  # 1.5 pixels high: it touches 2 rows, yet under 2 pixels are inside
@example(boxes=[[10, 20, 5, 50], [-50, -50, -10, -10], [0, 0, 1e39, 1e39]])
def test_any_box_is_enrolled_finite_or_skipped_and_counted_and_answers_stay_standard_json(enrolled, plain_export,
                                                                                         boxes):
    photos = enrolled / "photos"
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp) / "d.jsonl"
        lines.write_text("".join(json.dumps({"image": "5/1.jpg", "bbox": b, "camera": 1}) + "\n" for b in boxes))
        summary = enroll(Path(tmp) / "g", ExportEncoder(plain_export), sources.detections(lines, photos),
                         workers=0)
        assert summary.added + len(summary.unreadable) + sum(summary.skipped_lines.values()) == len(boxes)
        if not summary.added:
            return
        gallery = store.Gallery.open(Path(tmp) / "g")
        w, h = Image.open(photos / "5" / "1.jpg").size
        for i in range(len(gallery.rows)):
            x1, y1, x2, y2 = gallery.rows.bbox[i]
            assert np.isfinite(gallery.rows.bbox[i]).all() and x2 > x1 and y2 > y1
            assert min(x2, w) - max(x1, 0) >= 2 and min(y2, h) - max(y1, 0) >= 2  # something inside the image
        searcher = Searcher(Path(tmp) / "g", ExportEncoder(plain_export))
        with TestClient(create_app(searcher, None, Path(tmp) / "thumbs")) as client:
            r = client.get("/api/search", params={"q": "a person", "k": 10, "where": "camera=1"})
        assert r.status_code == 200, r.text
        assert len(strict_json(r.text)["results"][0]["hits"]) == summary.added


def test_the_cli_prints_standard_json_and_skips_lines_that_are_not(enrolled, plain_export, tmp_path, capsys):
    lines = tmp_path / "d.jsonl"
    lines.write_text('{"image": "5/1.jpg", "bbox": [0, 0, 1e308, 1e308], "camera": 1}\n'
                     '{"image": "5/2.jpg", "bbox": [0, 0, 40, 80], "score": NaN}\n'
                     '{"image": "6/1.jpg", "bbox": [0, 0, 40, 80], "speed": 1e400}\n'
                     '{"image": "6/2.jpg", "bbox": [0, 0, 40, Infinity]}\n')
    summary = enroll(tmp_path / "g", ExportEncoder(plain_export), sources.detections(lines, enrolled / "photos"),
                     workers=0)
    assert summary.added == 1 and sum(summary.skipped_lines.values()) == 3
    assert any("not finite" in reason for reason in summary.skipped_lines)
    capsys.readouterr()
    api.main(["--gallery", str(tmp_path / "g"), "--text-model", str(plain_export), "--queries", "a person", "--json"])
    [result] = strict_json(capsys.readouterr().out)
    assert result["hits"][0]["bbox"] == [0.0, 0.0, 1e308, 1e308]


# ---------------------------------------------------------------- 3. silently wrong, said so

@pytest.mark.parametrize("damage", ["times 1000", "NaN"])
def test_an_edited_feature_row_is_refused_naming_the_segment(served, plain_export, damage):
    _, gallery, _, g = served
    path = gallery / SEGMENTS / g.manifest.segments[0].name / FEATURES
    features = np.load(path, mmap_mode="r+")  # edited in place: same size, gallery.json untouched
    features[3] = features[3] * 1000 if damage == "times 1000" else np.nan
    features.flush()
    del features
    with pytest.raises(GalleryError, match=f"{path.parent.name}/{FEATURES}: its sha256 differs") as e:
        Searcher(gallery, ExportEncoder(plain_export))
    assert "\n" not in str(e.value)
    rewrite_segment(gallery, edit_features=lambda f: None)  # the checksums rewritten to match the edit
    with pytest.raises(GalleryError, match=f"{path.parent.name}/{FEATURES}: row 3 has norm"):  # its norms tell
        Searcher(gallery, ExportEncoder(plain_export))
    rows = store.Rows(np.zeros(5, np.int64), [f"{i}.jpg" for i in range(5)], np.full((5, 4), np.nan), np.full(5, -1),
                      np.zeros(5, np.int64), np.zeros(5, np.int64), [{}] * 5)
    with pytest.raises(GalleryError, match="row 3 has norm"):  # and such rows are never written
        store.append(gallery, np.load(path)[:5], rows)


def test_where_and_group_by_that_no_row_can_satisfy_are_refused_by_name(served, plain_export):
    client, gallery, _, _ = served
    argv = ["--gallery", str(gallery), "--text-model", str(plain_export), "--queries", "a person"]
    for extra, message in ((["--where", "colour=red"], "no row carries the field 'colour'; fields rows carry: "
                                                       "camera, path, track"),
                           (["--where", "camera=abc"], "'camera' holds numbers in this gallery, 'abc' is not one"),
                           (["--where", "path>3"], "'path' holds text in this gallery, 3 is a number"),
                           (["--where", "identity=2"], "no row carries the field 'identity'"),
                           (["--group-by", "person"], "--group-by person: no row carries the field 'person'")):
        with pytest.raises(GalleryError, match=message):
            api.main([*argv, *extra])
    r = client.get("/api/search", params={"q": "a person", "where": "colour=red"})
    assert r.status_code == 400 and "no row carries the field 'colour'" in r.json()["error"]
    r = client.post("/api/search", json={"queries": ["a person"], "group_by": "person"})
    assert r.status_code == 400 and "no row carries the field 'person'" in r.json()["error"]
    assert client.get("/api/search", params={"q": "a person", "where": "camera=\"2\""}).status_code == 400
    ok = client.get("/api/search", params={"q": "a person", "where": "camera=2", "group_by": "track"})
    assert ok.status_code == 200 and ok.json()["results"][0]["hits"]


def test_a_query_string_that_is_not_utf8_is_refused(served):
    client, *_ = served
    for query in ("q=%FF%FEperson", "q=a%C3", "q=a&where=camera%3D%E9", "q=%ED%A0%80"):  # a lone surrogate too
        r = client.get(f"/api/search?{query}")
        assert r.status_code == 400 and "not valid UTF-8" in r.json()["error"], query
    assert client.get("/api/search?q=%E7%A9%BF%E7%BA%A2").status_code == 200  # 穿红: UTF-8, searched


def test_health_reports_what_a_search_would_meet(served):
    client, gallery, photos, _ = served
    assert client.get("/api/health").json()["status"] == "ok"
    features = next((gallery / SEGMENTS).glob(f"*/{FEATURES}"))
    saved = features.read_bytes()
    features.write_bytes(saved[:-64] + bytes(64))  # damaged under the running app, gallery.json unchanged
    for r in (client.get("/api/health"), client.get("/api/search", params={"q": "a person"})):
        assert r.status_code == 503, r.text
        assert "sha256 differs" in r.json()["error"] and str(gallery) not in r.text and "<gallery>/segments" in r.text
    assert client.get("/api/health").json()["status"] == "error"
    features.write_bytes(saved)
    assert client.get("/api/health").status_code == 200
    (gallery / "gallery.json").write_text("{broken")  # and an unreadable manifest
    r = client.get("/api/health")
    assert r.status_code == 503 and "not a readable manifest" in r.json()["error"] and str(gallery) not in r.text
    assert client.get("/api/search", params={"q": "a person"}).status_code == 503
