"""Enrolment's loading threads: whatever --workers is, the gallery is the one a sequential run (workers=0) makes,
row for row and bit for bit (unreadable images in the middle, boxes, chunk and batch edges, a resume); the next
batch loads while this one is embedded; a failure in a loading thread reaches the caller and no thread is left."""
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from person.cli import enroll as enroll_cmd
from person.gallery import enroll as enroll_mod
from person.gallery import sources, store
from person.gallery.encoders import ExportEncoder
from person.gallery.enroll import EMBED_BATCH, enroll
from person.gallery.manifest import read_manifest

CRAFTED = {"010.jpg": "not an image", "070.jpg": "cut short", "071.jpg": "damaged in the middle", "100.jpg": "empty"}


def damaged_in_the_middle(path):
    """A JPEG whose scan data loses a stretch in the middle: libjpeg warns on fd 2 and makes the rest up."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    middle = (data.index(b"\xff\xda") + len(data)) // 2
    path.write_bytes(data[:middle] + data[middle + (len(data) - middle) // 2:])


@pytest.fixture
def crowd(trained_setup, tmp_path):
    """150 crops (the tiny set's 32, copied under new names), four of them unreadable in different ways: more than
    two batches, so loading runs ahead of the forward."""
    originals = sorted((trained_setup[0].parent / "Part1").rglob("*.jpg"))
    folder = tmp_path / "crowd"
    folder.mkdir()
    for i in range(150):
        shutil.copy(originals[i % len(originals)], folder / f"{i:03d}.jpg")
    (folder / "010.jpg").write_bytes(b"not a jpeg at all")
    (folder / "070.jpg").write_bytes((folder / "070.jpg").read_bytes()[:300])
    damaged_in_the_middle(folder / "071.jpg")
    (folder / "100.jpg").write_bytes(b"")
    return folder


def stored(folder):
    """Every row as stored, in gallery order, with its feature's bytes, and each segment's size."""
    g = store.Gallery.open(folder)
    feats = g.features()
    rows = [(g.rows.path[i], g.rows.record(i)["bbox"], int(g.rows.uid[i]), int(g.rows.size[i]),
             int(g.rows.mtime_ns[i]), g.rows.sha256[i], g.rows.meta[i], feats[i].tobytes()) for i in range(len(feats))]
    return rows, [s.rows for s in read_manifest(folder).segments]


def outcome(summary):
    return (summary.listed, summary.added, summary.rows, list(summary.unreadable.items()), summary.clipped,
            dict(summary.skipped_lines))


def loading_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("enrol-load")]


def test_loading_threads_make_the_gallery_a_sequential_run_makes(plain_export, crowd, tmp_path):
    encoder = ExportEncoder(plain_export)
    source = sources.image_dir(crowd)
    reference = enroll(tmp_path / "seq", encoder, source, chunk=100, workers=0)
    assert reference.added == 146 and [p for p, _ in reference.unreadable.items()] == sorted(CRAFTED)
    assert "premature end of data segment" in reference.unreadable["071.jpg"]
    want = stored(tmp_path / "seq")
    readable = [f"{i:03d}.jpg" for i in range(150) if f"{i:03d}.jpg" not in CRAFTED]
    assert [r[0] for r in want[0]] == readable and want[1] == [97, 49]  # the listing's order, chunk by chunk
    for workers in (1, 3):
        summary = enroll(tmp_path / f"w{workers}", encoder, source, chunk=100, workers=workers)
        assert outcome(summary) == outcome(reference)
        assert stored(tmp_path / f"w{workers}") == want
    via_cli = enroll_cmd.main(["--model", str(plain_export), "--image-dir", str(crowd), "--gallery",
                               str(tmp_path / "cli"), "--chunk", "100", "--workers", "2"])
    assert outcome(via_cli) == outcome(reference) and stored(tmp_path / "cli") == want
    assert not loading_threads()


def test_boxes_listed_twice_clipped_or_outside_count_alike_in_threads(plain_export, crowd, tmp_path):
    lines = [{"image": f"{i:03d}.jpg", "bbox": [2, 4, 30, 60], "camera": i % 3} for i in range(0, 150, 2)]
    lines[5:5] = [{"image": "004.jpg", "bbox": [-8, -8, 40, 500]}, {"image": "006.jpg", "bbox": [900, 900, 990, 990]},
                  {"image": "006.jpg", "bbox": [900, 900, 990, 990]}, {"image": "070.jpg", "bbox": [0, 0, 8, 8]}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    encoder = ExportEncoder(plain_export)
    source = sources.detections(tmp_path / "d.jsonl", crowd)
    reference = enroll(tmp_path / "seq", encoder, source, workers=0)
    assert reference.clipped == 1 and len(reference.unreadable) == 6  # 006's box twice, 070 twice, 010, 100
    assert "006.jpg [900.0, 900.0, 990.0, 990.0] (listed again, #2)" in reference.unreadable
    threaded = enroll(tmp_path / "threads", encoder, source, workers=2)
    assert outcome(threaded) == outcome(reference)
    assert stored(tmp_path / "threads") == stored(tmp_path / "seq")


def test_a_run_stopped_after_a_commit_resumes_in_threads_to_the_sequential_gallery(plain_export, crowd, tmp_path):
    encoder = ExportEncoder(plain_export)
    source = sources.image_dir(crowd)
    enroll(tmp_path / "seq", encoder, source, chunk=40, workers=0)

    class Killed(Exception):
        pass

    def kill(generation):
        if generation == 2:
            raise Killed

    with pytest.raises(Killed):
        enroll(tmp_path / "g", encoder, source, chunk=40, workers=2, on_commit=kill)
    assert not loading_threads()  # the loads running ahead were cancelled or finished, their threads joined
    assert read_manifest(tmp_path / "g").count == 39 + 38  # chunks 0-39 and 40-79; 010, 070, 071 unreadable
    again = enroll(tmp_path / "g", encoder, source, chunk=40, workers=2)
    assert again.added == 146 - 77 and again.unchanged == 77
    assert stored(tmp_path / "g")[0] == stored(tmp_path / "seq")[0]  # rows, uids and features


def test_the_next_batch_loads_while_this_one_is_embedded(plain_export, crowd, tmp_path, monkeypatch):
    source = sources.image_dir(crowd)
    second = {item.path for item in source.items[EMBED_BATCH + 1:2 * EMBED_BATCH]}  # 010.jpg is unreadable
    loading_second = threading.Event()
    real_decode = enroll_mod.decode_pixels

    def decode(data, path, *args):
        if path.name in second:
            loading_second.set()
        return real_decode(data, path, *args)

    class FirstBatchWaits:
        """The encoder, its first forward held until a load of the second batch has begun."""

        def __init__(self, inner):
            self.inner, self.saw = inner, []

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def embed(self, prepared):
            if not self.saw:  # sequential loading would never set it: the wait's timeout is the failure
                self.saw.append(loading_second.wait(timeout=120))
            return self.inner.embed(prepared)

    monkeypatch.setattr(enroll_mod, "decode_pixels", decode)
    encoder = FirstBatchWaits(ExportEncoder(plain_export))
    assert enroll(tmp_path / "g", encoder, source, workers=1).added == 146
    assert encoder.saw == [True]


def test_a_failure_in_a_loading_thread_reaches_the_caller_after_the_chunks_before_it(plain_export, crowd, tmp_path,
                                                                                     monkeypatch):
    real_decode = enroll_mod.decode_pixels

    def decode(data, path, *args):
        if path.name == "120.jpg":
            raise RuntimeError("a bug in the decoder")
        return real_decode(data, path, *args)

    monkeypatch.setattr(enroll_mod, "decode_pixels", decode)
    with pytest.raises(RuntimeError, match="a bug in the decoder"):
        enroll(tmp_path / "g", ExportEncoder(plain_export), sources.image_dir(crowd), chunk=40, workers=2)
    assert not loading_threads()
    assert read_manifest(tmp_path / "g").count == 120 - 4  # three chunks; 010, 070, 071 and 100 unreadable
