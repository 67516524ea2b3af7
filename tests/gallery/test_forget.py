"""Erasure and retention (person.gallery.forget): the erased rows' vector bytes are nowhere under the gallery and
the thumbnail cache once the readers of the previous generation let go (looked for byte by byte, in every dtype),
nor in Milvus; selectors, refusals, rows deleted before, retention by a time field and by enrolment time, older
galleries, enrolment with --max-age, and the command."""
import getpass
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import cv2
import faiss
import numpy as np
import pytest

from person import files
from person.cli import enroll as enroll_cmd, forget as forget_cmd
from person.gallery import index as gindex, store
from person.gallery.audit import entries, verify
from person.gallery.enroll import enroll
from person.gallery.forget import Selector, forget, row_times
from person.gallery.manifest import GalleryError, read_manifest
from person.gallery.milvus import MilvusBackend, connect, default_collection
from person.gallery.search import LocalBackend
from person.gallery.segments import Rows, write_segment
from person.gallery.sources import Source, detections, timestamp
from person.web.images import ThumbnailCache

DIM, N = 32, 12
SPACE = {"kind": "siglip", "teacher": "made-up", "config_hash": "0" * 64, "dim": DIM}
TARGET = 5  # the row erased: image p05.jpg, track 2, camera 2


def distinctive(dim=DIM):
    """A unit vector no random row comes near byte for byte: every value distinct, signs alternating."""
    v = (np.arange(1, dim + 1) * 0.37 + 0.11) * np.where(np.arange(dim) % 2, -1, 1)
    return (v / np.linalg.norm(v)).astype(np.float16)


def patterns(v16):
    """The row as every dtype the project could store it: fp16 (segments, FAISS SQ fp16 codes), fp32 (what FAISS
    and Milvus are given), int8 (a quantised copy)."""
    v32 = v16.astype(np.float32)
    return {"fp16": v16.tobytes(), "fp32": v32.tobytes(), "int8": np.round(v32 * 127).astype(np.int8).tobytes()}


def holding(pattern, *folders):
    """Every file under `folders` whose bytes contain `pattern`."""
    return [p for folder in folders for p in Path(folder).rglob("*") if p.is_file() and pattern in p.read_bytes()]


def indexed(folder, v16):
    """How many saved index files hold the row, decoded (an IVF index stores residuals: no byte search sees them)."""
    count = 0
    for file in (folder / "index").glob("*.faiss"):
        index = faiss.read_index(str(file))
        if hasattr(index, "make_direct_map"):
            index.make_direct_map()
        rows = index.reconstruct_n(0, index.ntotal)
        count += bool((np.abs(rows - v16.astype(np.float32)).max(axis=1) < 1e-3).any())
    return count


def picture(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (40, 24, 3), dtype=np.uint8))
    return path


def make_gallery(tmp_path, times=None, parts=3):
    """N rows on N images in `parts` segments; row TARGET holds the distinctive vector."""
    root, folder = tmp_path / "photos", tmp_path / "g"
    paths = [picture(root / f"p{i:02d}.jpg", i) for i in range(N)]
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(N, DIM))
    feats = (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float16)
    feats[TARGET] = distinctive()
    store.create(folder, {"kind": "made-up"}, SPACE, DIM, root)
    for part in np.array_split(np.arange(N), parts):
        meta = [{"camera": int(i % 3), "track": int(i // 2)} | ({"time": times[i]} if times else {}) for i in part]
        rows = Rows(np.zeros(len(part), np.int64), [p.name for p in np.array(paths)[part]],
                    np.full((len(part), 4), np.nan), np.full(len(part), -1), np.zeros(len(part), np.int64),
                    np.zeros(len(part), np.int64), meta, [files.sha256_file(paths[i]) for i in part])
        store.append(folder, feats[part], rows)
    return folder, root


def thumbnail(cache, gallery, uid):
    i = gallery.position(uid)
    return cache.get(gallery.rows.sha256[i], lambda: cv2.imread(str(gallery.image_path(i)))[:, :, ::-1])


def test_erased_bytes_are_nowhere_on_disk_once_readers_let_go_nor_in_milvus(tmp_path):
    folder, root = make_gallery(tmp_path)
    cache = ThumbnailCache(tmp_path / "thumbs")
    before = store.Gallery.open(folder)
    for kind in ("hnsw", "ivf"):  # saved approximate indexes (HNSW holds rows as they are, IVF their residuals)
        gindex.load_or_build(folder, before.features(), kind, before.manifest)
    for uid in (TARGET, 0):
        thumbnail(cache, before, uid)
    db = str(tmp_path / "milvus" / "m.db")  # Milvus keeps its own files (deletes are marks until it compacts)
    os.makedirs(os.path.dirname(db))
    MilvusBackend(before, db).close()
    wanted = patterns(distinctive())
    found = holding(wanted["fp16"], folder)
    assert {p.relative_to(folder).parts[0] for p in found} == {"segments", "index"}  # the segment, HNSW: it can fail
    assert indexed(folder, distinctive()) == 2
    assert len(holding(b"", tmp_path / "thumbs")) == 2
    events = []
    reader = store.Gallery.open(folder)  # a reader on the generation the erasure replaces

    report = forget(folder, Selector(images=("p05.jpg",)), thumbs=cache.purge, milvus=db, audit=events.append)
    assert (report.uids, report.rows, report.deleted_rows) == ([TARGET], 1, 0)
    assert len(report.segments_rewritten) == 1 and report.indexes_rebuilt == ["hnsw", "ivf"]
    assert report.milvus_deleted == 1 and report.thumbnails == 1
    assert report.held_by_readers == [before.generation]
    assert holding(wanted["fp16"], folder)  # the previous generation's files stay while its reader holds it
    np.testing.assert_array_equal(reader.features()[TARGET], distinctive())  # and it reads on
    reader.close()
    before.close()
    assert store.purge(folder) == []
    for dtype, pattern in wanted.items():
        assert not holding(pattern, folder, tmp_path / "thumbs"), dtype
    assert indexed(folder, distinctive()) == 0
    assert len(holding(b"", tmp_path / "thumbs")) == 1  # another image's thumbnail stays

    after = store.Gallery.open(folder)
    assert len(after) == N - 1 and TARGET not in after.rows.uid.tolist()
    assert read_manifest(folder).generation == report.generation == before.generation + 1
    index = gindex.load_or_build(folder, after.features(), "ivf", after.manifest)
    assert index.index.ntotal == N - 1  # the rebuilt index, reused as it is
    _, top = LocalBackend(after, "exact").search(distinctive()[None].astype(np.float32), 3, [])
    assert TARGET not in after.rows.uid[top[0]].tolist()
    client = connect(db)
    try:
        name = default_collection(after)
        assert client.query(name, filter=f"uid == {TARGET}", output_fields=["uid"]) == []
        hits = client.search(name, data=[distinctive().astype(np.float32).tolist()], limit=3, output_fields=["uid"])
        assert len(hits[0]) == 3 and TARGET not in [h["entity"]["uid"] for h in hits[0]]
    finally:
        client.close()
    [event] = events
    assert event["action"] == "erase" and event["ids"] == [TARGET] and event["rows"] == 1
    assert event["selector"] == {"images": ["p05.jpg"]} and json.loads(json.dumps(event))


def test_a_reader_still_on_the_previous_generation_cannot_bring_the_rows_back(tmp_path):
    folder, _ = make_gallery(tmp_path)
    db = str(tmp_path / "m.db")
    reader = store.Gallery.open(folder)
    MilvusBackend(reader, db).close()
    gindex.load_or_build(folder, reader.features(), "hnsw", reader.manifest)
    assert forget(folder, Selector(uids=(TARGET,)), milvus=db).milvus_deleted == 1
    # The reader builds its index and syncs Milvus only now, for the generation the erasure replaced.
    assert LocalBackend(reader, "hnsw").index.index.ntotal == N  # in its memory, as it may
    backend = MilvusBackend(reader, db)
    try:
        assert backend.last_sync.skipped
        assert backend.client.query(default_collection(reader), filter=f"uid == {TARGET}", output_fields=["uid"]) == []
    finally:
        backend.close()
    reader.close()
    assert store.purge(folder) == []
    assert not holding(patterns(distinctive())["fp16"], folder) and indexed(folder, distinctive()) == 0


def test_a_thumbnail_another_live_row_shows_stays(tmp_path):
    folder, root = make_gallery(tmp_path)
    g = store.Gallery.open(folder)
    rows = replace(g.rows.take([TARGET]), bbox=np.array([[1.0, 1.0, 9.0, 9.0]]), uid=np.zeros(1, np.int64))
    store.append(folder, g.features()[[TARGET]], rows)  # a second box on the same frame
    cache = ThumbnailCache(tmp_path / "thumbs")
    thumbnail(cache, g, TARGET)
    report = forget(folder, Selector(uids=(TARGET,)), thumbs=cache.purge)
    assert report.thumbnails == 0 and len(holding(b"", tmp_path / "thumbs")) == 1


def test_a_step_failing_after_the_commit_is_audited_and_says_the_rows_are_erased(tmp_path):
    folder, _ = make_gallery(tmp_path)
    events = []

    def full_disk(hashes):
        raise OSError(28, "No space left on device")

    with pytest.raises(GalleryError, match=r"1 row\(s\) erased from the gallery's segments \(generation 4\), then: "
                                           r"\[Errno 28\] No space left"):
        forget(folder, Selector(uids=(TARGET,)), thumbs=full_disk, audit=events.append)
    assert [(e["ids"], e["error"]) for e in events] == [([TARGET], "[Errno 28] No space left on device")]
    assert TARGET not in store.Gallery.open(folder).rows.uid.tolist()


def test_selectors_combine_and_a_value_matching_nothing_erases_nothing(tmp_path):
    folder, root = make_gallery(tmp_path)
    generation = read_manifest(folder).generation
    for selector, why in ((Selector(uids=(3, 99)), "--uid 99 match"), (Selector(images=("nope.jpg",)), "--image"),
                          (Selector(tracks=("2",), where=("camera=0",)), "no row matches all"),
                          (Selector(where=("colour=red",)), "no row carries the field 'colour'"),
                          (Selector(), "nothing to erase given")):
        with pytest.raises(GalleryError, match=why):
            forget(folder, selector)
    assert read_manifest(folder).generation == generation
    report = forget(folder, Selector(tracks=("2",), where=("camera=2",)))  # track 2 is rows 4 and 5
    assert report.uids == [TARGET]
    assert forget(folder, Selector(images=(str(root / "p00.jpg"), "p01.jpg"))).uids == [0, 1]
    assert forget(folder, Selector(where=("camera>=1", "track<3"))).uids == [2, 4]
    with pytest.raises(GalleryError, match="--uid 5 match.*erased already"):
        forget(folder, Selector(uids=(TARGET,)))
    with pytest.raises(GalleryError, match="no gallery.json; not a gallery"):
        forget(tmp_path / "photos", Selector(uids=(1,)))
    assert not (tmp_path / "photos" / "gallery.lock").exists()


def test_rows_deleted_before_lose_their_bytes_too_and_copies_of_an_image_go_with_it(tmp_path):
    folder, root = make_gallery(tmp_path)
    store.delete(folder, np.array([TARGET]))  # a tombstone masks it, its bytes stay in the segment
    assert holding(patterns(distinctive())["fp16"], folder)
    (root / "copy.jpg").write_bytes((root / "p03.jpg").read_bytes())
    report = forget(folder, Selector(images=("p05.jpg", str(root / "copy.jpg"))), wait=1)
    assert (sorted(report.uids), report.rows, report.deleted_rows) == ([3, TARGET], 1, 1)  # row 3: the same bytes
    assert report.held_by_readers == [] and not holding(patterns(distinctive())["fp16"], folder)
    manifest = read_manifest(folder)
    assert manifest.deleted == 0 and manifest.tombstones is None and manifest.count == N - 2


def test_retention_by_time_field_then_by_enrolment_time(tmp_path):
    now = time.time()
    times = ["2001-01-01T00:00:00Z" if i < 4 else "not a time" if i == 4 else
             time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 3600)) if i < 8 else None for i in range(N)]
    folder, _ = make_gallery(tmp_path, [t for t in times])
    report = forget(folder, Selector(max_age_days=30))
    assert report.uids == [0, 1, 2, 3] and report.no_age == 0
    assert forget(folder, Selector(max_age_days=30)).uids == []  # nothing old: not an error
    # Ten days on: rows 5-7 by their time field, rows 4 (unreadable time) and 8-11 (none) by their enrolment time.
    assert forget(folder, Selector(max_age_days=2, where=("camera=1",)), now=now + 10 * 86400).uids == [4, 7, 10]
    assert timestamp("2026-11-01T10:00:00") == timestamp("2026-11-01T10:00:00+00:00") == 1793527200.0
    assert timestamp(12.5) == 12.5 and timestamp(True) is None and timestamp("yesterday") is None


def test_a_gallery_enrolled_before_enrolment_times_opens_and_keeps_undated_rows(tmp_path):
    folder, _ = make_gallery(tmp_path, parts=1)
    g = store.Gallery.open(folder)
    old = replace(g.rows, enrolled_ns=np.full(N, -1, np.int64))  # rows.jsonl without "enrolled_ns"
    with store.writer_lock(folder):
        segment = write_segment(folder, "seg-old", g.features(), old)
        store._commit(folder, g.manifest, replace(g.manifest, segments=[segment]))
    files.remove(folder / store.LEASES)  # nor leases
    g = store.Gallery.open(folder)
    assert "enrolled_ns" not in g.rows.record(0) and np.isnan(row_times(g.rows)).all()
    report = forget(folder, Selector(max_age_days=1), now=time.time() + 10 * 86400)
    assert report.uids == [] and report.no_age == N
    assert "12 row(s) have no 'time' field and no enrolment time" in "\n".join(report.lines())


class Colours:
    """An encoder enough for enrolment: an image's mean colour, spread over DIM values."""

    has_image, identity, space, dim = True, {"kind": "made-up"}, SPACE, DIM

    def embed(self, pixels):
        v = np.array([np.resize(p.reshape(-1, 3).mean(0), DIM) + np.arange(DIM) for p in pixels])
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_enrolment_with_max_age_skips_old_detections(tmp_path):
    root = tmp_path / "frames"
    lines = [{"image": picture(root / f"f{i}.jpg", i).name, "bbox": [0, 0, 20, 30], "track": i,
              "time": "2001-01-01T00:00:00" if i % 2 else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())}
             for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = enroll(tmp_path / "g", Colours(), detections(tmp_path / "d.jsonl", root), workers=0, max_age=30)
    assert (summary.added, summary.expired) == (2, 2)
    assert "2 item(s) older than --max-age" in "\n".join(summary.lines())
    assert sorted(store.Gallery.open(tmp_path / "g").rows.path) == ["f0.jpg", "f2.jpg"]
    again = enroll(tmp_path / "g", Colours(), Source(root, []), prune=True, workers=0, max_age=30)
    assert again.rows == 0  # nothing listed: pruned as before


def test_the_command_erases_purges_and_refuses_bad_combinations(tmp_path, capsys):
    folder, _ = make_gallery(tmp_path)
    events = []
    argv = ["--gallery", str(folder), "--thumb-cache", str(tmp_path / "thumbs"), "--wait", "0"]
    report = forget_cmd.main([*argv, "--track", "2", "--where", "camera=2"], audit=events.append)
    out = capsys.readouterr().out
    assert report.uids == [TARGET] and len(events) == 1
    assert "erased 1 row(s)" in out and "the previous generation's files are removed" in out
    assert forget_cmd.main(["--gallery", str(folder), "--purge"]) == []
    with pytest.raises(SystemExit):
        forget_cmd.main(["--gallery", str(folder), "--line", "3"])
    with pytest.raises(SystemExit):
        forget_cmd.main(["--store", str(tmp_path / "s.h5"), "--uid", "3"])
    assert "--line apply to --store only" in capsys.readouterr().err


def test_the_command_records_its_erasure_in_the_gallerys_audit_log(tmp_path, monkeypatch):
    folder, _ = make_gallery(tmp_path)
    monkeypatch.setattr(getpass, "getuser", lambda: "operator ana")
    forget_cmd.main(["--gallery", str(folder), "--uid", str(TARGET), "--wait", "0", "--thumb-cache",
                     str(tmp_path / "thumbs"), "--audit-key-dir", str(tmp_path / "keys")])
    assert verify(folder, tmp_path / "keys").ok
    (line,) = [e.event for e in entries(folder, tmp_path / "keys")]
    assert (line["action"], line["user"], line["client"], line["ids"]) == ("erase", "operator ana", "cli", [TARGET])


def test_enrol_command_with_max_age_erases_rows_older_by_enrolment(plain_export, tmp_path, monkeypatch):
    root = tmp_path / "photos"
    for i in range(3):
        picture(root / f"p{i}.jpg", i)
    argv = ["--model", str(plain_export), "--image-dir", str(root), "--gallery", str(tmp_path / "g"), "--workers", "0",
            "--thumb-cache", str(tmp_path / "thumbs")]
    assert enroll_cmd.main(argv).rows == 3
    later = time.time() + 3 * 86400
    monkeypatch.setattr(time, "time", lambda: later)
    events = []
    enroll_cmd.main([*argv, "--max-age", "2"], audit=events.append)  # unchanged: kept out, then erased as old
    g = store.Gallery.open(tmp_path / "g")
    assert len(g) == 0 and [e["rows"] for e in events] == [3]
