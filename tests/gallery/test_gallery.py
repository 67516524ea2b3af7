"""Galleries and search on a tiny exported student: enrolment (incremental, pruned, resumed after SIGKILL),
search by text and by image, filters and grouping inside the scan, FAISS indexes, mixing spaces, the CLI's
Rank-1 against evaluation_model.py's, and bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from person.cli import evaluate as evaluation_model
from person.data.images import load_pixels
from person.data.records import DatasetOptions
from person.eval.evaluate import eval_split
from person.gallery import index as gindex
from person.gallery import sources, store
from person.gallery.encoders import ExportEncoder
from person.gallery.enroll import enroll
from person.gallery.manifest import GalleryError, read_manifest
from person.gallery.search import MAX_QUERY_CHARS, Searcher
from person.gallery.search_options import SearcherOptions
from person.options import OptionError, from_namespace
from person.runtime import ExportedModels
from person.teacher.space import SpaceMismatchError
from person.teacher.store import open_store
from person.cli import enroll as enroll_cmd, search as api

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def photos(trained_setup, tmp_path):
    """A copy of the tiny set's 32 images (the tests change files in it)."""
    folder = tmp_path / "photos"
    shutil.copytree(trained_setup[0].parent / "Part1", folder)
    return folder


def live_rows(folder):
    """(path, bbox, features) of every live row, sorted: what two galleries are compared by."""
    g = store.Gallery.open(folder)
    feats = g.features()
    rows = [(g.rows.path[i], g.rows.record(i)["bbox"], feats[i].tobytes(), int(g.rows.uid[i]))
            for i in np.flatnonzero(g.live)]
    return sorted(rows, key=lambda r: (r[0], str(r[1])))


# ---------------------------------------------------------------- enrolment

def test_enrolment_embeds_every_image_as_the_runtime_does(plain_export, photos, tmp_path):
    summary = enroll_cmd.main(["--model", str(plain_export), "--image-dir", str(photos), "--gallery",
                               str(tmp_path / "g"), "--workers", "1"])
    assert summary.added == summary.rows == 32 and not summary.unreadable
    manifest = read_manifest(tmp_path / "g")
    assert manifest.encoder["kind"] == "export" and manifest.dim == 16 and manifest.count == 32
    assert manifest.space == ExportedModels(plain_export).space
    g = store.Gallery.open(tmp_path / "g")
    want = ExportedModels(plain_export).embed_images([photos / p for p in g.rows.path[:5]])
    np.testing.assert_array_equal(g.features()[:5], want.astype(np.float16))
    assert sorted(g.rows.path) == sorted(str(p.relative_to(photos)) for p in photos.rglob("*.jpg"))


def test_running_again_adds_only_what_changed_and_prune_drops_what_is_gone(plain_export, photos, tmp_path):
    encoder = ExportEncoder(plain_export)
    enroll(tmp_path / "g", encoder, sources.image_dir(photos), workers=0)
    again = enroll(tmp_path / "g", encoder, sources.image_dir(photos), workers=0)
    assert (again.added, again.unchanged, again.rows) == (0, 32, 32)
    shutil.copy(photos / "0" / "1.jpg", photos / "new.jpg")                  # a new image
    (photos / "3" / "2.jpg").write_bytes((photos / "5" / "1.jpg").read_bytes())  # a changed one
    (photos / "7" / "1.jpg").unlink()                                          # a gone one
    third = enroll(tmp_path / "g", encoder, sources.image_dir(photos), workers=0)
    assert (third.added, third.changed, third.pruned, third.rows) == (2, 1, 0, 33)  # without --prune it stays
    pruned = enroll(tmp_path / "g", encoder, sources.image_dir(photos), prune=True, workers=0)
    assert (pruned.added, pruned.pruned, pruned.rows) == (0, 1, 32)
    paths = [p for p, *_ in live_rows(tmp_path / "g")]
    assert "new.jpg" in paths and "7/1.jpg" not in paths and paths.count("3/2.jpg") == 1
    g = store.Gallery.open(tmp_path / "g")
    i = [j for j in np.flatnonzero(g.live) if g.rows.path[j] == "3/2.jpg"][0]
    np.testing.assert_array_equal(g.features()[i], encoder.models.embed_images([photos / "3" / "2.jpg"])[0]
                                  .astype(np.float16))
    store.compact(tmp_path / "g")
    assert [p for p, *_ in live_rows(tmp_path / "g")] == paths and len(read_manifest(tmp_path / "g").segments) == 1


# The real enrolment, killed right after the commit of generation sys.argv[1]; then person-enroll's arguments.
KILLED_ENROLMENT = """
import os, signal, sys
from person.cli.enroll import parse_args
from person.gallery import sources
from person.gallery.encoders import open_encoder
from person.gallery.enroll import enroll
kill_at, args = int(sys.argv[1]), parse_args(sys.argv[2:])
def kill(generation):
    if generation == kill_at:
        os.killpg(os.getpid(), signal.SIGKILL)
enroll(args.gallery, open_encoder(args.model, args.teacher, args.variant), sources.image_dir(args.image_dir),
       chunk=args.chunk, workers=args.workers, on_commit=kill)
"""


def test_a_killed_enrolment_resumes_to_the_gallery_an_uninterrupted_one_gives(plain_export, photos, tmp_path):
    argv = ["--model", str(plain_export), "--image-dir", str(photos), "--chunk", "5", "--workers", "0"]
    enroll_cmd.main([*argv, "--gallery", str(tmp_path / "reference")])
    killed = subprocess.run([sys.executable, "-c", KILLED_ENROLMENT, "2", *argv, "--gallery", str(tmp_path / "g")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, timeout=300)  # its own process group: the kill takes only it
    assert killed.returncode == -signal.SIGKILL, f"the enrolment was not killed: {killed.stderr[-3000:]}"
    assert read_manifest(tmp_path / "g").count == 10  # two of the seven chunks committed
    summary = enroll_cmd.main([*argv, "--gallery", str(tmp_path / "g")])
    assert summary.rows == 32 and summary.added == 22
    assert live_rows(tmp_path / "g") == live_rows(tmp_path / "reference")  # paths, features and uids


def test_unreadable_images_are_counted_skips(plain_export, photos, tmp_path):
    (photos / "0" / "1.jpg").write_bytes(b"not a jpeg")
    summary = enroll(tmp_path / "g", ExportEncoder(plain_export), sources.image_dir(photos), workers=1)
    assert summary.rows == 31 and list(summary.unreadable) == ["0/1.jpg"]
    assert "unreadable: 0/1.jpg:" in "\n".join(summary.lines())


def test_relative_roots_name_images_from_the_root_and_still_refuse_links_out(photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the CLI passes roots as typed: relative ones included
    secret = tmp_path / "secret.jpg"
    shutil.copy(photos / "0" / "1.jpg", secret)
    (photos / "evil.jpg").symlink_to(secret)
    source = sources.image_dir("photos")
    assert len(source.items) == 32 and "evil.jpg" not in {i.path for i in source.items}
    assert source.skipped == {"link leading outside the folder": 1}
    detected = sources.detections(detections_file(photos, Path("d.jsonl")), Path("photos"))
    assert detected.items and all((photos / i.path).is_file() for i in detected.items)


def test_a_write_keeps_the_previous_generation_and_removes_older_files_and_dead_temps(tmp_path):
    g = tmp_path / "g"
    store.create(g, {"kind": "made-up"}, {"kind": "siglip", "config_hash": "0" * 64, "dim": 16}, 16, tmp_path)
    store.append(g, *clustered_rows(10, 1))
    store.append(g, *clustered_rows(10, 2))
    reader = store.Gallery.open(g)  # on generation 2, about to be compacted under it
    (g / "segments" / ".seg-000009.4000000000.tmp").mkdir()  # a killed write's temp folder
    store.delete(g, np.array([0]))
    store.compact(g)  # generation 4: generation 3's segments and tombstones stay for readers on it
    kept = sorted(p.name for p in (g / "segments").iterdir())
    assert kept == ["seg-000001", "seg-000002", "seg-000004"]
    assert [p.name for p in (g / "tombstones").iterdir()] == ["tomb-000003.npy"]
    store.append(g, *clustered_rows(5, 3))  # generation 5: only 4's files and its own remain
    assert sorted(p.name for p in (g / "segments").iterdir()) == ["seg-000004", "seg-000005"]
    assert not list((g / "tombstones").iterdir())
    assert reader.features().shape == (20, 16)  # memory-mapped files a reader holds open stay readable
    assert store.Gallery.open(g).manifest.count == 24


# ---------------------------------------------------------------- detections, filters, grouping

def detections_file(photos, path):
    """Boxes on 12 images: cameras 1-3, tracks of 2 frames each, plus bad lines and boxes."""
    lines = []
    images = sorted(str(p.relative_to(photos)) for p in photos.rglob("*.jpg"))[:12]
    for i, image in enumerate(images):
        lines.append(json.dumps({"image": image, "bbox": [0, 0, 32, 64], "score": 0.9, "camera": 1 + i % 3,
                                 "track": i // 2, "time": f"2026-11-01T10:{i:02d}:00"}))
    lines += ["not json", json.dumps({"image": images[0], "bbox": [5, 5, 5, 9]}), json.dumps({"bbox": [0, 0, 1, 1]}),
              json.dumps({"image": "../outside.jpg", "bbox": [0, 0, 8, 8]}),
              json.dumps({"image": images[1], "bbox": [-10, -10, 5000, 5000], "camera": 9}),
              json.dumps({"image": images[2], "bbox": [9000, 9000, 9100, 9100]})]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_detections_keep_boxes_and_fields_and_count_what_they_skip(plain_export, photos, tmp_path):
    summary = enroll_cmd.main(["--model", str(plain_export), "--detections", str(detections_file(photos, tmp_path /
                                                                                                   "d.jsonl")),
                               "--image-root", str(photos), "--gallery", str(tmp_path / "g"), "--workers", "0"])
    assert summary.rows == 13 and summary.clipped == 1 and len(summary.unreadable) == 1
    assert sum(summary.skipped_lines.values()) == 4
    g = store.Gallery.open(tmp_path / "g")
    assert g.rows.record(0)["bbox"] == [0.0, 0.0, 32.0, 64.0] and g.rows.meta[0]["camera"] == 1


def test_filters_apply_inside_the_scan_and_grouping_returns_k_groups(plain_export, photos, tmp_path):
    enroll(tmp_path / "g", ExportEncoder(plain_export), sources.detections(detections_file(photos, tmp_path / "d"),
                                                                           photos), workers=0)
    s = Searcher(tmp_path / "g", ExportEncoder(plain_export))
    [cam] = s.search(["a person"], k=4, where=["camera=2"])
    assert len(cam.hits) == 4 and {h.meta["camera"] for h in cam.hits} == {2}
    [late] = s.search(["a person"], k=20, where=["time>=2026-11-01T10:08:00", "camera!=9"])
    assert sorted(h.meta["time"][-5:] for h in late.hits) == ["08:00", "09:00", "10:00", "11:00"]
    [grouped] = s.search(["a person"], k=5, group_by="track")
    tracks = [h.meta.get("track") for h in grouped.hits]
    assert len(grouped.hits) == 5 and len(set(tracks)) == 5
    [everything] = s.search(["a person"], k=13)
    best = {}
    for h in everything.hits:  # each group's best frame, in score order: what group_by must return
        best.setdefault(h.meta.get("track", ("row", h.uid)), h.uid)
    assert [h.uid for h in grouped.hits] == list(best.values())[:5]
    with pytest.raises(GalleryError, match="expected FIELD OP VALUE"):
        s.search(["a person"], where=["camera~3"])


# ---------------------------------------------------------------- search

def test_search_by_text_and_by_image(plain_export, photos, tmp_path):
    enroll(tmp_path / "g", ExportEncoder(plain_export), sources.image_dir(photos), workers=0)
    encoder = ExportEncoder(plain_export)
    s = Searcher(tmp_path / "g", encoder, encoder)
    results = s.search(["a man in a red coat", "穿红色外套的女孩"], k=3)
    g = store.Gallery.open(tmp_path / "g")
    scores = encoder.embed_texts(["a man in a red coat"]) @ g.features().astype(np.float32).T
    assert [h.path for h in results[0].hits] == [g.rows.path[i] for i in np.argsort(-scores[0])[:3]]
    assert results[0].hits[0].score == pytest.approx(float(scores[0].max()), abs=1e-5)
    crop = load_pixels(photos / "4" / "1.jpg")
    [by_image] = s.search_images([crop], k=32)
    query = encoder.embed([encoder.prepare(crop)])[0]
    brute = np.argsort(-(g.features().astype(np.float32) @ query), kind="stable")
    assert [h.path for h in by_image.hits[:3]] == [g.rows.path[i] for i in brute[:3]]
    itself = next(h for h in by_image.hits if h.path == "4/1.jpg")  # the enrolled copy of the query crop
    assert itself.score > 0.99  # the same image, decoded at full size here and JPEG-draft-reduced at enrolment


def test_queries_are_embedded_on_one_onnxruntime_thread_unless_asked(plain_export, photos, tmp_path):
    """The CLI's and the server's searcher: one text thread by default (a second spins on the scan's core)."""
    enroll(tmp_path / "g", ExportEncoder(plain_export), sources.image_dir(photos), workers=0)
    for argv, threads in (([], 1), (["--threads", "2"], 2)):
        args = api.parse_args(["--gallery", str(tmp_path / "g"), "--text-model", str(plain_export),
                                      "--image-model", str(plain_export), "--queries", "a man", *argv])
        searcher = from_namespace(SearcherOptions, args).open(tmp_path / "g")
        for encoder in (searcher.text_encoder, searcher.image_encoder):
            for session in (encoder.models._text, encoder.models._image):
                assert session.get_session_options().intra_op_num_threads == threads
    with pytest.raises(OptionError, match="--threads must be >= 1, got 0"):
        api.parse_args(["--gallery", str(tmp_path / "g"), "--text-model", str(plain_export), "--queries", "a man",
                        "--threads", "0"])


def test_queries_are_checked(plain_export, photos, tmp_path):
    enroll(tmp_path / "g", ExportEncoder(plain_export), sources.image_dir(photos), workers=0)
    s = Searcher(tmp_path / "g", ExportEncoder(plain_export))
    [long] = s.search(["a person in red " * 3], k=1)
    assert long.note == "truncated to the first 24 characters (the text model reads no more)"
    for bad, message in (("", "an empty query"), ("   ", "an empty query"), ("x" * 100_000, "the limit is 1000"),
                         ("a\x00b", "control character U\\+0000"), ("a\x1bb", "U\\+001B")):
        with pytest.raises(GalleryError, match=message):
            s.search([bad])
    with pytest.raises(GalleryError, match="ask for 1 to 1000 results"):
        s.search(["a person"], k=0)
    assert MAX_QUERY_CHARS == 1000


def clustered_rows(n, seed):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(50, 16))
    feats = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, 16))
    rows = store.Rows(np.zeros(n, np.int64), [f"{seed}-{i}.jpg" for i in range(n)], np.full((n, 4), np.nan, np.float32),
                      np.full(n, -1), np.zeros(n, np.int64), np.zeros(n, np.int64), [{} for _ in range(n)])
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float16), rows


def opened_index(g, kind):
    gallery = store.Gallery.open(g)
    return gallery, gindex.load_or_build(g, gallery.features(), kind, gallery.manifest)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_are_saved_extended_on_enrolment_and_rebuilt_after_compaction(plain_export, tmp_path,
                                                                                          kind, capsys):
    g = tmp_path / "g"
    store.create(g, {"kind": "made-up"}, {"kind": "siglip", "config_hash": "0" * 64, "dim": 16}, 16, tmp_path)
    store.append(g, *clustered_rows(4000, 1))
    _, built = opened_index(g, kind)
    saved = json.loads((g / "index" / f"{kind}.json").read_text())
    assert built.info.recall_at_10 >= 0.9 and (g / "index" / saved["file"]).is_file()
    _, again = opened_index(g, kind)
    assert again.info == built.info  # read back, not rebuilt
    api.main(["--gallery", str(g), "--text-model", str(plain_export), "--queries", "a person", "--index", kind])
    assert f"index {kind} over 4,000 rows (generation 1): recall@10 {built.info.recall_at_10:.3f}" in \
        capsys.readouterr().err
    store.append(g, *clustered_rows(500, 2))   # an enrolment: its rows are added to the saved index
    store.delete(g, np.array([0, 1]))           # deleted rows stay in it, masked at search time
    gallery, extended = opened_index(g, kind)
    # extended, not built again: the build's own record (its duration) is carried over unchanged
    assert extended.index.ntotal == 4500 and extended.info.build_seconds == built.info.build_seconds
    assert extended.info.generation == gallery.generation == 3
    exact = gindex.build(gallery.features(), "exact", gallery.generation)
    q = np.asarray(gallery.features()[4000:4100], np.float32)  # new rows find themselves through the old index
    _, got = extended.search(q, 1, gallery.live)
    _, want = exact.search(q, 1, gallery.live)
    assert np.mean(got[:, 0] == want[:, 0]) >= 0.95 and not np.isin(got, [0, 1]).any()
    store.compact(g)                            # rows renumbered: built anew
    gallery, rebuilt = opened_index(g, kind)
    assert rebuilt.index.ntotal == 4498 and rebuilt.info.segments == ((gallery.manifest.segments[0].name, 4498),)
    assert [p.name for p in (g / "index").iterdir() if p.suffix == ".faiss"] == [json.loads(
        (g / "index" / f"{kind}.json").read_text())["file"]]  # replaced index files removed


def test_a_gallery_made_again_in_its_folder_does_not_reuse_the_old_saved_index(tmp_path):
    g = tmp_path / "g"
    store.create(g, {"kind": "made-up"}, {"kind": "siglip", "config_hash": "0" * 64, "dim": 16}, 16, tmp_path)
    store.append(g, *clustered_rows(2000, 1))
    opened_index(g, "hnsw")
    for p in g.iterdir():  # everything but index/ removed: the same segment names and row counts come again
        if p.name != "index":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    store.create(g, {"kind": "made-up"}, {"kind": "siglip", "config_hash": "0" * 64, "dim": 16}, 16, tmp_path)
    store.append(g, *clustered_rows(2000, 7))
    gallery, index = opened_index(g, "hnsw")
    q = np.asarray(gallery.features()[:200], np.float32)
    _, got = index.search(q, 1)
    assert index.info.gallery == gallery.manifest.id and np.mean(got[:, 0] == np.arange(200)) >= 0.95


def test_spaces_must_match_and_a_teacher_gallery_takes_its_student_s_text(plain_export, photos, tmp_path):
    encoder = ExportEncoder(plain_export)
    store.create(tmp_path / "teacher", {"kind": "teacher", "name": "made-up"}, dict(encoder.space), 16, photos)
    Searcher(tmp_path / "teacher", encoder)  # the space the student was distilled into: allowed
    other = {**encoder.space, "config_hash": "f" * 64, "teacher": "org/other-teacher"}
    store.create(tmp_path / "other", {"kind": "teacher", "name": "other"}, other, 16, photos)
    with pytest.raises(SpaceMismatchError, match="the gallery .*other lives in the space of org/other-teacher .*"
                                                 "config_hash differ"):
        Searcher(tmp_path / "other", encoder)


# ---------------------------------------------------------------- the CLI and evaluation agree

def test_cli_rank1_on_the_held_out_split_equals_evaluation_model_s(plain_export, trained_setup, tmp_path, capsys):
    json_path, store_path, _ = trained_setup
    enroll_cmd.main(["--model", str(plain_export), "--data", str(json_path), "--split", "eval", "--gallery",
                     str(tmp_path / "g"), "--workers", "0"])
    evaluation = evaluation_model.main([str(plain_export), "--top-k", "0"])
    with open_store(store_path) as st:  # the held-out captions, as evaluation scores them
        split = eval_split(st, "eval")
    results = api.main(["--gallery", str(tmp_path / "g"), "--text-model", str(plain_export), "--top-n", "1",
                        "--queries", *split.caption_texts])
    rank1 = np.mean([r.hits[0].identity == pid for r, pid in zip(results, split.caption_pids)])
    assert rank1 == pytest.approx(evaluation["rank1"], abs=1e-12)
    out = capsys.readouterr().out
    assert "query: " in out and "time: " in out and "identity" in out


def test_bad_galleries_are_one_line_errors(plain_export, photos, tmp_path):
    enroll(tmp_path / "g", ExportEncoder(plain_export), sources.image_dir(photos), workers=0)
    manifest = json.loads((tmp_path / "g" / "gallery.json").read_text())
    cases = {
        "version": ({**manifest, "version": 9}, None, "gallery format version 9, this code reads version 2"),
        "old": ({**manifest, "version": 1}, None, "gallery format version 1 (made before images and segments were "
                                                  "recorded by content hash), this code reads version 2; enrol it "
                                                  "again into a new folder: search/enroll.py --gallery NEW_FOLDER"),
        "features": (manifest, "features.npy", "features.npy: missing or unreadable"),
        "rows": (manifest, "rows.jsonl", "rows.jsonl: missing or unreadable"),
    }
    for name, (m, remove, message) in cases.items():
        g = tmp_path / name
        shutil.copytree(tmp_path / "g", g)
        (g / "gallery.json").write_text(json.dumps(m))
        if remove:
            next(g.rglob(remove)).unlink()
        done = subprocess.run([sys.executable, "search/api.py", "--gallery", str(g), "--text-model",
                               str(plain_export), "--queries", "a person"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert message in done.stderr, (name, done.stderr)
    (tmp_path / "g" / "gallery.json").write_text("{broken")
    with pytest.raises(GalleryError, match="not a readable manifest"):
        Searcher(tmp_path / "g", ExportEncoder(plain_export))
    with pytest.raises(GalleryError, match="no gallery.json; not a gallery"):
        Searcher(tmp_path / "nothing", ExportEncoder(plain_export))


def test_another_encoder_or_image_root_is_refused_for_an_existing_gallery(plain_export, photos, tmp_path):
    encoder = ExportEncoder(plain_export)
    enroll(tmp_path / "g", encoder, sources.image_dir(photos), workers=0)
    other_root = tmp_path / "elsewhere"
    shutil.copytree(photos, other_root)
    with pytest.raises(GalleryError, match="holds images under .*photos, this source's are under .*elsewhere"):
        enroll(tmp_path / "g", encoder, sources.image_dir(other_root), workers=0)
    encoder.identity = {**encoder.identity, "card_sha256": "0" * 64}
    with pytest.raises(GalleryError, match="would mix two models' features in one gallery"):
        enroll(tmp_path / "g", encoder, sources.image_dir(photos), workers=0)


def test_an_image_root_that_moved_is_named(plain_export, photos, tmp_path, capsys):
    enroll(tmp_path / "g", ExportEncoder(plain_export), sources.image_dir(photos), workers=0)
    photos.rename(tmp_path / "moved")
    api.main(["--gallery", str(tmp_path / "g"), "--text-model", str(plain_export), "--queries", "a person"])
    err = capsys.readouterr().err
    assert f"warning: images are missing under {photos}" in err and "the image root moved" in err


def test_dataset_source_keeps_identities(trained_setup):
    source = sources.dataset(DatasetOptions(data=str(trained_setup[0])), "eval")
    assert source.items and all(i.identity is not None for i in source.items)
    assert os.path.isfile(source.image_root / source.items[0].path)


def test_the_cli_searches_milvus_with_the_local_results(plain_export, photos, tmp_path):
    enroll(tmp_path / "g", ExportEncoder(plain_export), sources.image_dir(photos), workers=0)
    argv = ["--gallery", str(tmp_path / "g"), "--text-model", str(plain_export), "--top-n", "5", "--queries",
            "a man in a red coat", "穿红色外套的女孩"]
    local = api.main(argv)
    remote = api.main([*argv, "--milvus", str(tmp_path / "milvus.db")])
    for a, b in zip(local, remote):
        assert [h.uid for h in a.hits] == [h.uid for h in b.hits]
        assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], abs=1e-5)
