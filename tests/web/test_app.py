"""The web app over a gallery (person.web, served by person.web.server; search/app.py): search by text, by photo
and by a row's own crop, images and thumbnails by id only, no file outside the image root readable whatever the
request, caps that say their limit, no traceback to a client, and a gallery enrolled into while the app answers."""
import hashlib
import io
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from person.data.images import load_pixels
from person.files import resolve_under
from person.gallery import sources, store
from person.gallery.manifest import GalleryError
from person.gallery.encoders import ExportEncoder
from person.gallery.enroll import enroll
from person.gallery.search import MAX_K, MAX_QUERY_CHARS, Searcher
from person.gallery.search_options import SearcherOptions
from person.web import server
from person.web.app import create_app
from tests.servers import free_port, read_until_ready
from person.web.service import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, ServeLimits
from person.cli import serve as app_cmd

ROOT = Path(__file__).resolve().parents[2]
STATIC = server.STATIC
# What uvicorn logs once it listens, and once the app (in a worker process too) has started; in either order.
READY = ("Uvicorn running on", "Application startup complete.")
SECRET = b"TOP-SECRET-outside-the-image-root"


def detections(photos: Path, path: Path) -> Path:
    """Boxes on 12 of the images (cameras 1-3, tracks of 2 frames), for rows that carry a bbox."""
    images = sorted(str(p.relative_to(photos)) for p in photos.rglob("*.jpg"))[:12]
    path.write_text("".join(json.dumps({"image": im, "bbox": [4, 8, 36, 72], "camera": 1 + i % 3, "track": i // 2})
                            + "\n" for i, im in enumerate(images)))
    return path


def make_gallery(trained_setup, plain_export, root: Path) -> tuple[Path, Path]:
    """(gallery, photos): the tiny set's 32 images enrolled whole, and 12 person boxes on them."""
    photos = root / "photos"
    shutil.copytree(trained_setup[0].parent / "Part1", photos)
    encoder = ExportEncoder(plain_export)
    enroll(root / "g", encoder, sources.image_dir(photos), workers=0)
    enroll(root / "g", encoder, sources.detections(detections(photos, root / "d.jsonl"), photos), workers=0)
    return root / "g", photos


def append_rows(gallery: Path, paths: list[str], features: np.ndarray) -> list[int]:
    """Rows with these stored paths, each with the sha256 of the file it names now (as if enrolled through it,
    links followed); their uids."""
    n = len(paths)
    root = Path(store.Gallery.open(gallery).image_root)
    hashes = [hashlib.sha256((root / p).read_bytes()).hexdigest() if (root / p).is_file() else None for p in paths]
    rows = store.Rows(np.zeros(n, np.int64), paths, np.full((n, 4), np.nan, np.float32), np.full(n, -1),
                      np.zeros(n, np.int64), np.zeros(n, np.int64), [{} for _ in range(n)], hashes)
    manifest = store.append(gallery, np.asarray(features, np.float16).reshape(n, -1), rows)
    return list(range(manifest.next_uid - n, manifest.next_uid))


def start_app(argv: list[str], log: Path, timeout: float = 90) -> tuple[subprocess.Popen, str]:
    """search/app.py in its own process on a free port; (process, base URL) once its output (stderr merged in,
    copied to `log` line by line) says uvicorn listens and the app has started."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "search/app.py", *argv, "--port", str(port), "--no-access-log"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    out = log.open("w", encoding="utf-8")
    try:
        read_until_ready(proc, READY, timeout, copy=out)
    except AssertionError:
        out.close()
        raise AssertionError(f"search/app.py ended ({proc.returncode}) before it served:\n{log.read_text()}") from None
    # The rest of its output keeps going to the log, so a full pipe never blocks the server.
    threading.Thread(target=copy_lines, args=(proc.stdout, out), daemon=True).start()
    return proc, f"http://127.0.0.1:{port}"


def copy_lines(source, out) -> None:
    with out:
        for line in source:
            out.write(line)
            out.flush()


@pytest.fixture
def served(trained_setup, plain_export, tmp_path):
    """(client, searcher, gallery folder, photos) for an app with a text and an image model."""
    gallery, photos = make_gallery(trained_setup, plain_export, tmp_path)
    encoder = ExportEncoder(plain_export)
    searcher = Searcher(gallery, encoder, encoder)
    app = create_app(searcher, STATIC, tmp_path / "thumbs")
    with TestClient(app) as client:
        yield client, searcher, gallery, photos


def ids(body: dict, i: int = 0) -> list[int]:
    return [h["id"] for h in body["results"][i]["hits"]]


# ---------------------------------------------------------------- search

def test_text_search_returns_the_searcher_s_hits_as_ids_with_no_server_path(served):
    client, searcher, gallery, photos = served
    r = client.get("/api/search", params={"q": "a man in a red coat", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    [want] = searcher.search(["a man in a red coat"], k=5)
    assert ids(body) == [h.uid for h in want.hits]
    hits = body["results"][0]["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and hits[0]["score"] >= hits[-1]["score"]
    assert hits[0]["image"] == f"/images/{hits[0]['id']}" and hits[0]["thumb"] == f"/thumbs/{hits[0]['id']}"
    assert body["generation"] == searcher.gallery.generation and body["count"] == len(searcher.gallery) == 44
    assert str(photos) not in r.text and str(gallery) not in r.text  # relative paths only
    info = client.get("/api/gallery").json()
    assert (info["count"], info["dimension"], info["generation"]) == (44, 16, searcher.gallery.generation)
    assert info["text_model"] and info["image_model"] and info["encoder"]["kind"] == "export"
    assert "/" not in info["encoder"]["name"]  # the export's folder name, not the server's path to it
    assert client.get("/api/health").json() == {"status": "ok", "generation": info["generation"], "count": 44}


def test_chinese_emoji_filters_and_grouping_go_through_post(served):
    client, searcher, _, _ = served
    queries = ["穿红色外套的女孩", "🧥👖 person", "a man in black"]
    r = client.post("/api/search", json={"queries": queries, "k": 4, "where": ["camera=2"]})
    assert r.status_code == 200, r.text
    body = r.json()
    want = searcher.search(queries, k=4, where=["camera=2"])
    assert [ids(body, i) for i in range(3)] == [[h.uid for h in w.hits] for w in want]
    assert [res["query"] for res in body["results"]] == queries
    assert all(h["meta"]["camera"] == 2 and h["bbox"] == [4.0, 8.0, 36.0, 72.0] for h in body["results"][0]["hits"])
    grouped = client.post("/api/search", json={"queries": ["a person"], "k": 3, "group_by": "track",
                                               "where": ["track>=0"]}).json()
    tracks = [h["meta"]["track"] for h in grouped["results"][0]["hits"]]
    assert len(tracks) == 3 == len(set(tracks))
    r = client.get("/api/search", params={"q": "x" * 200})  # longer than the text model reads: a note
    assert r.json()["results"][0]["note"].startswith("truncated to the first 24 characters")


def test_search_by_photo_and_by_a_row_s_own_crop(served):
    client, searcher, gallery, photos = served
    crop = photos / "4" / "1.jpg"
    r = client.post("/api/search/image", files={"image": ("crop.jpg", crop.read_bytes(), "image/jpeg")},
                    data={"k": "5"})
    assert r.status_code == 200, r.text
    [want] = searcher.search_images([load_pixels(crop)], k=5)
    assert ids(r.json()) == [h.uid for h in want.hits] and r.json()["results"][0]["query"] == "crop.jpg"
    g = store.Gallery.open(gallery)
    row = next(i for i in range(len(g.rows)) if g.rows.path[i] == "4/1.jpg" and g.rows.record(i)["bbox"] is None)
    similar = client.get(f"/api/search/similar/{g.rows.uid[row]}", params={"k": 44}).json()["results"][0]["hits"]
    features = g.features().astype(np.float32)
    want = np.sort(features @ features[row])[::-1]  # the query is the row's own enrolled features
    np.testing.assert_allclose([h["score"] for h in similar], want, atol=1e-5)
    assert [h["score"] for h in similar if h["id"] == g.rows.uid[row]][0] > 0.999
    assert client.get("/api/search/similar/99999").status_code == 404
    text_only = create_app(Searcher(gallery, ExportEncoder(plain_export_of(searcher))), STATIC, gallery.parent / "t")
    with TestClient(text_only) as other:
        r = other.post("/api/search/image", files={"image": ("c.jpg", crop.read_bytes(), "image/jpeg")})
        assert r.status_code == 400 and "no image model" in r.json()["error"]
        assert other.get(f"/api/search/similar/{g.rows.uid[row]}").status_code == 200  # stored features: no model


def plain_export_of(searcher: Searcher) -> Path:
    return searcher.text_encoder.models.dir


# ---------------------------------------------------------------- caps and bad input

def test_caps_and_bad_input_are_4xx_json_that_name_the_cap_or_field(served):
    client, *_ = served
    cases = [
        (client.get("/api/search", params={"q": "x" * (MAX_QUERY_CHARS + 1)}), 400, f"the limit is {MAX_QUERY_CHARS}"),
        (client.get("/api/search", params={"q": "a", "k": MAX_K + 1}), 400, f"ask for 1 to {MAX_K} results"),
        (client.get("/api/search", params={"q": "a", "k": 0}), 400, f"ask for 1 to {MAX_K} results"),
        (client.get("/api/search", params={"q": "a", "k": 10 ** 30}), 400, f"ask for 1 to {MAX_K} results"),
        (client.get("/api/search", params={"q": "a", "k": "ten"}), 422, "k: "),
        (client.get("/api/search"), 422, "q: Field required"),
        (client.get("/api/search", params={"q": "  "}), 400, "an empty query"),
        (client.get("/api/search", params={"q": "a\x00b"}), 400, "control character U+0000"),
        (client.get("/api/search", params={"q": "a", "where": "camera~3"}), 400, "expected FIELD OP VALUE"),
        (client.post("/api/search", content=b'{"queries": ["a"', headers={"content-type": "application/json"}),
         400, "not valid JSON"),
        (client.post("/api/search", json={"queries": "a person"}), 422, "queries: "),
        (client.post("/api/search", json={"queries": [1]}), 422, "queries.0: "),
        (client.post("/api/search", json={"queries": ["a"], "k": "5"}), 422, "k: "),
        (client.post("/api/search", json={"queries": ["a"], "top": 5}), 422, "top: "),
        (client.post("/api/search", json={"queries": ["a"] * 65}), 422, "at most 64"),
        (client.post("/api/search", json={"queries": []}), 422, "queries: "),
        (client.post("/api/search", json=["a"]), 422, "body"),
        (client.post("/api/search", json={"queries": ["a"], "where": ["camera=1"] * 17}), 400, "at most 16"),
        (client.post("/api/search", json={"queries": ["a " * 600_000]}), 413, "1048576 bytes (1 MiB)"),
        (client.get("/images/abc"), 422, "id: "),
        (client.get("/nothing-here"), 404, "Not Found"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (message, response.status_code, response.text[:300])
        body = response.json()
        assert message in body["error"], (message, body)
        assert "Traceback" not in response.text


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says width x height: what a decompression bomb looks like before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def test_uploads_are_capped_in_bytes_and_pixels(served, tmp_path):
    client, *_ = served

    def upload(data: bytes, name: str = "p.png"):
        return client.post("/api/search/image", files={"image": (name, data, "application/octet-stream")})
    big = upload(b"\xff" * (MAX_UPLOAD_BYTES + 1024 * 1024))
    assert big.status_code == 413 and f"{MAX_UPLOAD_BYTES} bytes (8 MiB)" in big.json()["error"]
    for width, height in ((8000, 8000), (40000, 40000)):  # over our cap; over Pillow's own bomb cap too
        r = upload(png_claiming(width, height))
        assert r.status_code == 413 and f"over the {MAX_UPLOAD_PIXELS}-pixel limit" in r.json()["error"], r.text
    r = upload(b"GIF89a-not-really")
    assert r.status_code == 400 and "the upload is not an image" in r.json()["error"]
    r = client.post("/api/search/image", data={"k": "3"})
    assert r.status_code == 422 and "image: Field required" in r.json()["error"]
    tiny = create_app(client.app.state.service.searcher, None, tmp_path / "t", ServeLimits(upload_bytes=1000))
    with TestClient(tiny) as capped:
        png = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 10, 10)).save(png, "PNG")
        r = capped.post("/api/search/image", files={"image": ("x.png", png.getvalue() + b"\0" * 2000)})
        assert r.status_code == 413 and "1000 bytes" in r.json()["error"]


def test_a_crash_is_a_json_500_and_its_traceback_stays_in_the_server_log(served, monkeypatch, caplog):
    client, searcher, *_ = served

    def boom(*args, **kwargs):
        raise RuntimeError("secret detail /etc/shadow")
    monkeypatch.setattr(searcher, "search", boom)
    monkeypatch.setattr(searcher, "search_batch", boom)  # text searches are batched (person.web.batching)
    r = client.get("/api/search", params={"q": "a person"})
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "secret" not in r.text and "Traceback" not in r.text
    logged = [rec for rec in caplog.records if rec.exc_info and "internal error" in rec.getMessage()]
    assert logged and "secret detail" in str(logged[0].exc_info[1])


# ---------------------------------------------------------------- files by id only

def test_images_and_thumbnails_are_served_by_id_and_thumbnails_cached(served, tmp_path):
    client, searcher, gallery, photos = served
    g = searcher.gallery
    boxed = next(i for i in range(len(g.rows)) if g.rows.record(i)["bbox"] is not None)
    uid, path = int(g.rows.uid[boxed]), photos / g.rows.path[boxed]
    r = client.get(f"/images/{uid}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-content-type-options"] == "nosniff"
    sent = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), np.float32)  # re-encoded pixels
    assert np.abs(sent - load_pixels(path)).mean() < 3
    t = client.get(f"/thumbs/{uid}")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    with Image.open(path) as original:
        assert t.headers["x-image-size"] == f"{original.width}x{original.height}"
    cached = list((tmp_path / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == t.content
    assert client.get(f"/thumbs/{uid}").content == t.content  # from the cache
    big = Image.new("RGB", (1200, 600), (30, 90, 200))  # a frame larger than a thumbnail
    big.save(photos / "frame.jpg")
    [frame] = append_rows(gallery, ["frame.jpg"], g.features()[:1])
    t = client.get(f"/thumbs/{frame}")
    with Image.open(io.BytesIO(t.content)) as thumb:
        assert thumb.size == (256, 128) and t.headers["x-image-size"] == "1200x600"
    assert client.get("/images/123456").status_code == 404


def test_no_file_outside_the_image_root_can_be_read(served, tmp_path):
    client, searcher, gallery, photos = served
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "secret.txt").write_bytes(SECRET)
    Image.new("RGB", (40, 80), (1, 2, 3)).save(outside / "secret.jpg", comment=SECRET)
    os.symlink(outside / "secret.jpg", photos / "link.jpg")             # a file link out of the root
    os.symlink(outside, photos / "linkdir")                               # a folder link out of the root
    os.symlink(photos / "4" / "1.jpg", photos / "inside-link.jpg")        # a link that stays inside: allowed
    leaving = ["../secret.txt", "../outside/secret.jpg", str(outside / "secret.jpg"), "/etc/passwd",
               "4/../../outside/secret.jpg", "", ".", "a\x00b", "4/1.jpg/../../../secret.txt"]
    for stored in leaving:  # a row that names a file outside the root is never written
        with pytest.raises(GalleryError, match="leaves the image root|absolute path|image root itself|NUL"):
            append_rows(gallery, [stored], searcher.gallery.features()[:1])
    hostile = ["link.jpg", "linkdir/secret.jpg", "..%2Fsecret.txt"]  # inside by their text, not once resolved
    uids = append_rows(gallery, [*hostile, "inside-link.jpg"], np.repeat(searcher.gallery.features()[:1], 4, 0))
    for uid, stored in zip(uids[:-1], hostile):
        for url in (f"/images/{uid}", f"/thumbs/{uid}"):
            r = client.get(url)
            assert r.status_code == 404, (stored, url, r.status_code)
            assert SECRET not in r.content and b"root:" not in r.content and r.json()["error"]
    assert client.get(f"/images/{uids[-1]}").status_code == 200
    assert list(tmp_path.joinpath("thumbs").rglob("*.jpg")) == []  # nothing outside was even decoded
    for url in ["/images/..%2F..%2Fetc%2Fpasswd", "/images/..%2f..%2fsecret.txt", "/images/%2e%2e/%2e%2e/etc/passwd",
                "/thumbs/..%2F..%2Fsecret.txt", "/images/-1", "/images/1.5", "/images/0x1", "/images/1e3",
                "/images/%00", "/images/99999999999999999999999999", "/images/" + "9" * 5000,
                "/static/..%2F..%2Fperson%2Fweb%2Fapp.py", "/static/../app.py", "/static/%2e%2e/app.py",
                f"/images/{uids[0]}%2F..%2F..%2Fsecret.txt", "/api/search/similar/..%2F1"]:
        r = client.get(url)
        assert r.status_code in (404, 422), (url, r.status_code)
        assert SECRET not in r.content and b"root:" not in r.content and b"import" not in r.content, url
    # The check itself, beside the app: resolved first, then compared by whole path components.
    assert resolve_under(photos, "4/1.jpg") == os.path.realpath(photos / "4" / "1.jpg")
    assert resolve_under(photos, "../photos-evil/x.jpg") is None  # a sibling sharing the root's name as a prefix
    assert resolve_under(photos, "link.jpg") is None and resolve_under(photos, "/etc/passwd") is None


# ---------------------------------------------------------------- the page and the description

def test_the_page_and_its_assets_come_from_the_app(served):
    client, *_ = served
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "app.js", "app.css"):
        assert client.get(f"/static/{name}").status_code == 200
        text = (STATIC / name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name  # no CDN
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/search/image", "/api/search/similar/{id}", "/api/gallery", "/api/health",
            "/images/{id}", "/thumbs/{id}"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 404  # Swagger UI would load its scripts from a CDN


def test_the_served_app_answers_only_this_machine_s_names_when_bound_to_it(trained_setup, plain_export, tmp_path):
    gallery, _ = make_gallery(trained_setup, plain_export, tmp_path)
    args = app_cmd.parse_args(["--gallery", str(gallery), "--text-model", str(plain_export)])
    assert (args.host, args.port, args.index, args.workers, args.allowed_host) == ("127.0.0.1", 5005, "auto", 1, None)
    with pytest.raises(SystemExit):
        app_cmd.parse_args(["--gallery", str(gallery)])  # no text model
    options = SearcherOptions(text_model=str(plain_export), image_model=str(plain_export))
    app = server.build_app(gallery, options, thumb_cache=tmp_path / "t")  # serve's defaults: 127.0.0.1
    with TestClient(app, base_url="http://127.0.0.1:5005") as client:
        assert client.get("/api/search", params={"q": "a person", "k": 3}).status_code == 200
        assert client.get("/api/gallery").json()["image_model"] is True
        rebound = client.get("/api/health", headers={"host": "rebound.example:5005"})  # a DNS-rebinding page
        assert rebound.status_code == 400 and "--allowed-host rebound.example" in rebound.json()["error"]
        assert client.get("/api/health", headers={"host": "localhost:5005"}).status_code == 200
        assert client.get("/").status_code == 200  # the page, from the package's static/
    for host, allowed, status in (("0.0.0.0", None, 200), ("127.0.0.1", ["rebound.example"], 200),
                                  ("0.0.0.0", ["search.example"], 400)):
        app = server.build_app(gallery, options, host=host, thumb_cache=tmp_path / "t", allowed_hosts=allowed,
                               insecure_no_auth=True)  # the host check alone (test_auth: no account beyond loopback)
        with TestClient(app) as client:
            assert client.get("/api/health", headers={"host": "rebound.example"}).status_code == status, host


# ---------------------------------------------------------------- a live gallery

def test_rows_enrolled_while_the_app_answers_are_found_and_every_answer_is_one_generation(served, plain_export):
    client, searcher, gallery, photos = served
    start = searcher.gallery
    first_gen, first_count = start.generation, len(start)
    query = "a unicorn in a silver cape 🦄"
    vector = ExportEncoder(plain_export).embed_texts([query])
    seen, errors, stop = [], [], threading.Event()
    answered = queue.Queue()  # each answer's generation, as the asking thread gets it
    swaps = []
    searcher.on_refresh = swaps.append  # the app's Searcher says which generation it swapped in

    def ask() -> None:
        while not stop.is_set():
            r = client.get("/api/search", params={"q": "a person", "k": 100})
            if r.status_code != 200:
                errors.append(r.text)
                continue
            body = r.json()
            seen.append((body["generation"], body["count"], ids(body)))
            answered.put(body["generation"])
            for uid in (min(ids(body)), max(ids(body))):
                if client.get(f"/images/{uid}").status_code != 200:
                    errors.append(f"id {uid} of generation {body['generation']} does not resolve")
    thread = threading.Thread(target=ask)
    thread.start()
    try:
        added = []
        for gen in range(first_gen + 1, first_gen + 6):  # commit a generation while queries run; the next one
            added += append_rows(gallery, ["4/1.jpg", "5/1.jpg", "6/2.jpg"], np.repeat(vector, 3, 0))
            while answered.get(timeout=120) < gen:  # once a query was answered from this one
                pass
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert swaps == list(range(first_gen + 1, first_gen + 6))  # each generation swapped in whole, once, in order
    assert {gen for gen, _, _ in seen} >= set(swaps)
    for (gen, count, hit_ids), (next_gen, next_count, _) in zip(seen, seen[1:]):
        assert next_gen >= gen and next_count >= count
    for gen, count, hit_ids in seen:
        assert count == first_count + 3 * (gen - first_gen)  # a count that belongs to its generation
        assert max(hit_ids) < count  # every hit from that generation (uids are dense: rows were only added)
    found = client.get("/api/search", params={"q": query, "k": 15}).json()
    assert found["generation"] == first_gen + 5 and set(ids(found)) == set(added)


def test_the_command_serves_from_worker_processes(trained_setup, plain_export, tmp_path):
    gallery, _ = make_gallery(trained_setup, plain_export, tmp_path)
    proc, url = start_app(["--gallery", str(gallery), "--text-model", str(plain_export), "--workers", "2",
                           "--thumb-cache", str(tmp_path / "t")], tmp_path / "app.log")
    try:
        r = httpx.get(f"{url}/api/search", params={"q": "穿红色外套的女孩", "k": 3})
        assert r.status_code == 200 and len(r.json()["results"][0]["hits"]) == 3
        assert httpx.get(f"{url}/api/search", params={"q": "a", "k": 0}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Started parent process" in (tmp_path / "app.log").read_text()
