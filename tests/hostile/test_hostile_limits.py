"""Hostile limits: a card that disagrees with its graphs, sizes that would exhaust memory, a NUL in a caption, a JPEG
damaged in the middle, a run name that leaves --log_dir, and an export killed while the harness that killed it
still holds it unreaped. Each is refused with a message that names the thing, or survived whole."""
import json
import os
import signal
import string
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from person import files
from person.cli import export as export_model
from person.cli import extract as extract_cmd
from person.data import jpeg_warnings
from person.data.datasets import ImageDataset, collate_images
from person.data.images import ImageReadError, ImageTransform, load_image, load_pixels
from person.data.records import RecordError, load_records
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
from person.models.checkpoint import CheckpointError, load_checkpoint, student_spec
from person.models.students import StudentSpec
from person.options import OptionError
from person.runtime import ExportDirError, ExportedModels
from person.teacher.store import StoreWriter, open_store
from person.train.budget import TrainingMemoryError, available_memory, check_training_memory, estimate_step_memory
from person.train.options import TrainOptions

ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
IDENTITY = {"teacher": "made-up", "kind": "siglip", "config_hash": "0" * 64, "dim": 8, "dtype": "float32",
            "preprocessing": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}}


# ---------------------------------------------------------------- 1. the card against its graphs

junk = st.one_of(st.none(), st.booleans(), st.text(max_size=6), st.floats(allow_nan=True), st.lists(st.integers(),
                                                                                                    max_size=3))
sizes = st.one_of(st.integers(-2, 5000), st.sampled_from([8, 16, 32, 64, 2 ** 31, 10 ** 9]), junk)
names = st.one_of(st.sampled_from(["image", "chars", "mask", "embedding", "img", ""]), st.text(max_size=6), junk)
dtypes = st.one_of(st.sampled_from(["float32", "float16", "float64", "int64", "uint8", "float"]), junk)
shapes = st.one_of(st.lists(st.one_of(st.integers(0, 100), st.sampled_from(["batch", "length"])), max_size=5), junk)
EDITS = {  # a card key -> the values an edit may put there
    ("image", "size", "height"): sizes, ("image", "size", "width"): sizes, ("feature_dim",): sizes,
    ("text", "max_seq_length"): sizes, ("static_shapes",): st.one_of(st.booleans(), junk),
    ("image", "inputs", 0, "name"): names, ("text", "inputs", 1, "name"): names, ("text", "outputs", 0, "name"): names,
    ("image", "inputs", 0, "dtype"): dtypes, ("text", "inputs", 0, "dtype"): dtypes,
    ("image", "outputs", 0, "dtype"): dtypes, ("image", "inputs", 0, "shape"): shapes,
    ("text", "inputs", 0, "shape"): shapes, ("text", "table", "shape"): shapes, ("text", "table", "dtype"): dtypes,
}
card_edits = st.lists(st.sampled_from(sorted(EDITS, key=str)).flatmap(
    lambda key: st.tuples(st.just(key), EDITS[key])), min_size=1, max_size=3)


def edited_export(export: Path, folder: Path, edits) -> Path:
    """`export`'s files (linked) and its card with `edits` applied, in `folder`."""
    card = json.loads((export / "model.json").read_text())
    for key, value in edits:
        target = card
        for part in key[:-1]:
            target = target[part]
        target[key[-1]] = value
    for p in export.iterdir():
        if p.name != "model.json":
            (folder / p.name).symlink_to(p)
    (folder / "model.json").write_text(json.dumps(card))
    return folder


@FAST
@given(edits=card_edits)
def test_a_card_edited_anywhere_is_refused_on_opening_or_works(plain_export, edits):
    with tempfile.TemporaryDirectory() as tmp:
        folder = edited_export(plain_export, Path(tmp), edits)
        try:
            models = ExportedModels(folder)
        except ExportDirError as e:
            assert str(e).startswith(str(folder))
            return
        # It opened: then every image and text embeds, the longest the card allows included.
        long = "a person in a red coat " * 200
        texts = models.embed_texts(["a man", "", long[:models.max_seq_length], long])
        images = models.embed_images([np.zeros((100, 40, 3), np.uint8), np.full((7, 300, 3), 255, np.uint8)])
        assert texts.shape == (4, models.feature_dim) and images.shape == (2, models.feature_dim)


def test_an_image_size_that_disagrees_with_the_graph_names_the_key_and_both_values(plain_export, tmp_path):
    cases = [((("image", "size", "height"), 128), r"image\.size\.height is 128, but the export has 64 in model_image"),
             ((("text", "max_seq_length"), 500), r"text\.max_seq_length is 500, but the export has a graph that fails "
                                                 r"on 500 characters"),
             ((("feature_dim",), 32), r"feature_dim is 32, but the export has an output \['any', 16\]")]
    for i, (edit, message) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        with pytest.raises(ExportDirError, match=rf"model\.json: {message}"):
            ExportedModels(edited_export(plain_export, tmp_path / str(i), [edit]))


# ---------------------------------------------------------------- 2. sizes that would exhaust memory

CAPS = {"k": 256, "p": 4096, "max_seq_length": 2048, "captions_per_image": 64, "memory_size": 1 << 19,
        "feature_dim": 16384, "text_width": 4096}


@settings(FAST, max_examples=60)
@given(flag=st.sampled_from(sorted(CAPS)), value=st.one_of(st.integers(-5, 10 ** 12), st.sampled_from(
    [1, 2, 10 ** 7, 2 ** 63, *CAPS.values(), *(v + 1 for v in CAPS.values())])))
def test_train_option_sizes_beyond_any_real_run_are_refused_by_name(flag, value):
    opts = TrainOptions(**{flag: value})
    if 1 <= value <= CAPS[flag]:
        opts.validate()
    else:
        with pytest.raises(OptionError, match=f"--{flag} must be >= 1 and <= {CAPS[flag]}, got {value}"):
            opts.validate()


def test_export_batch_and_seq_len_are_capped_before_anything_is_read(tmp_path):
    for argv, message in ((["--target", "npu", "--batch", "10000000"], "--batch must be >= 1 and <= 1024"),
                          (["--target", "npu", "--seq-len", "10000000"], "--seq_len must be >= 1 and <= 2048")):
        with pytest.raises(OptionError, match=message):
            export_model.main([str(tmp_path / "no.pt"), str(tmp_path / "out"), *argv])
    with pytest.raises(OptionError, match="--batch must be"):
        ExportOptions(target="npu", batch=10 ** 7)  # a library caller too
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("key, value", [("feature_dim", 10 ** 9), ("max_seq_length", 10 ** 9), ("text_width", 10 ** 9),
                                        ("image_size", [10 ** 5, 64]), ("feature_dim", "16"), ("text_stride", 0)])
def test_a_checkpoint_spec_too_large_to_build_is_refused_before_building(trained_checkpoint, tmp_path, key, value):
    state = load_checkpoint(trained_checkpoint)
    state["students"] = {**state["students"], key: value}
    with pytest.raises(CheckpointError, match=rf"its student spec cannot be used \({key}"):
        student_spec(state)


def tiny_students(image_size=(64, 32), max_seq_length=24):
    return StudentSpec(16, "backbone.tiny.TinyNet", "tbackbone.char.L1", image_size, "stretch", max_seq_length, 32,
                       2).build()


def test_a_step_that_does_not_fit_is_refused_with_the_estimate_and_what_is_available():
    students = tiny_students()
    opts = TrainOptions(p=4096, k=256, image_size="64x32", max_seq_length=24, num_workers=0)
    with pytest.raises(TrainingMemoryError, match=r"a training step needs about [\d.]+ GiB for a batch of 4096 x 256 "
                                                  r"images at 64x32 and 1048576 captions of up to 24 characters "
                                                  r"\(.*activations.*\); 8\.0 GiB available .*; lower "
                                                  r"--p/--k/--image_size/--max_seq_length"):
        check_training_memory(students, opts, 16, uses_memory=False, available=8 << 30)
    small = TrainOptions(p=4, k=2, image_size="64x32", max_seq_length=24, num_workers=0)
    need = check_training_memory(students, small, 16, uses_memory=False, available=8 << 30)
    assert 0 < need.total < 1 << 30
    # Two CPU ranks on the machine share it: the same step is refused when only one of them would fit.
    with pytest.raises(TrainingMemoryError, match="for each of the 2 ranks here"):
        check_training_memory(students, small, 16, uses_memory=False, available=need.total * 3 // 2, ranks_here=2)


def test_main_refuses_a_step_that_cannot_fit_before_it_starts(trained_setup, tmp_path):
    """The command as a user runs it: the image size is within its cap, but a step of 128 images at 2048x2048 fits
    no machine here; one line, nothing written."""
    done = subprocess.run([sys.executable, "main.py", "--embedding_path", str(trained_setup[1]), "--log_dir",
                           str(tmp_path / "logs"), "--backbone", "backbone.tiny.TinyNet", "--tbackbone",
                           "tbackbone.char.L1", "--text_width", "32", "--image_size", "2048x2048", "--p", "64",
                           "--k", "2", "--num_workers", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("main.py: error: a training step needs about ") and \
        "lower --p/--k/--image_size/--max_seq_length" in done.stderr
    assert not (tmp_path / "logs").exists()


def test_the_estimate_grows_with_the_batch_the_image_size_and_the_text_length():
    small = estimate_step_memory(tiny_students(), TrainOptions(p=4, k=2, image_size="64x32", max_seq_length=24), 16,
                                 False)
    double = estimate_step_memory(tiny_students(), TrainOptions(p=4, k=4, image_size="64x32", max_seq_length=24), 16,
                                  False)
    assert 1.9 < double.activations / small.activations < 2.1 and double.parameters == small.parameters
    with torch.device("meta"):  # shapes only: nothing this size is allocated, here or in the estimate
        big = tiny_students((2048, 2048), 2048)
    opts = TrainOptions(p=32, k=2, image_size="2048x2048", max_seq_length=2048)
    assert estimate_step_memory(big, opts, 16, False).activations > 1000 * small.activations
    with pytest.raises(TrainingMemoryError, match="at 2048x2048"):
        check_training_memory(big, opts, 16, uses_memory=True, available=16 << 30)


def write_tree(root: Path, tree: dict[str, str]) -> Path:
    for name, text in tree.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_available_memory_is_the_smaller_of_mem_available_and_the_cgroup_room(tmp_path):
    gib = 1 << 30
    meminfo = f"MemTotal: {64 * gib // 1024} kB\nMemAvailable: {40 * gib // 1024} kB\n"
    v2 = write_tree(tmp_path / "v2", {
        "proc/meminfo": meminfo, "proc/self/cgroup": "0::/job/step\n",
        "sys/fs/cgroup/job/memory.max": str(16 * gib), "sys/fs/cgroup/job/memory.current": str(10 * gib),
        "sys/fs/cgroup/job/memory.stat": f"anon 1\ninactive_file {2 * gib}\n",
        "sys/fs/cgroup/job/step/memory.max": "max", "sys/fs/cgroup/job/step/memory.current": "5"})
    assert available_memory(v2) == 8 * gib  # the job's 16 GiB less 10 used, 2 of them reclaimable page cache
    v1 = write_tree(tmp_path / "v1", {
        "proc/meminfo": meminfo, "proc/self/cgroup": "4:memory:/docker/abc\n3:cpu:/\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": str(12 * gib),  # the path is the host's: the container's root
        "sys/fs/cgroup/memory/memory.usage_in_bytes": str(gib),
        "sys/fs/cgroup/memory/memory.stat": "total_inactive_file 0\n"})
    assert available_memory(v1) == 11 * gib
    unlimited = write_tree(tmp_path / "none", {"proc/meminfo": meminfo, "proc/self/cgroup": "0::/\n",
                                               "sys/fs/cgroup/memory.max": "max"})
    assert available_memory(unlimited) == 40 * gib


# ---------------------------------------------------------------- 3. a NUL in a caption

def dataset(folder: Path, captions: list[str], ensure_ascii: bool) -> Path:
    recs = [{"id": i % 2, "file_path": f"{i}.jpg", "captions": [c, "a person"], "prompt_caption": [c]}
            for i, c in enumerate(captions)]
    path = folder / "synthpedes-dataset.json"
    path.write_bytes(json.dumps(recs, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass"))
    return path


def unit_rows(n: int) -> np.ndarray:
    return np.tile(np.eye(1, IDENTITY["dim"], dtype=np.float16), (n, 1))


def written_captions(path: Path, records) -> list[str]:
    """A whole store of `records` at `path`; the caption texts it gives back."""
    writer = StoreWriter.open(path, records, IDENTITY, chunk_rows=4, batch_size=2)
    for unit in writer.pending():
        n = unit.stop - unit.start
        writer.write(unit, unit_rows(n), *((np.ones(n, np.uint8), {}) if unit.kind == "image" else ()))
    with open_store(path, records) as store:
        return store.caption_texts(np.arange(store.num_captions))


@settings(FAST, max_examples=30)
@given(captions=st.lists(st.text(st.one_of(st.characters(), st.sampled_from(["\x00", "\x01", "\x7f", "\ud800",
                                                                             "\u2028", " "])), min_size=1, max_size=8),
                         min_size=2, max_size=3), ensure_ascii=st.booleans())
def test_any_caption_loads_as_text_both_store_formats_hold_or_is_a_record_error(captions, ensure_ascii):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            records = load_records(dataset(tmp, captions, ensure_ascii))
        except RecordError as e:
            assert str(e).startswith(str(tmp / "synthpedes-dataset.json"))
            return
        texts = [t for caps, prompts in zip(records.captions, records.prompt_captions) for t in (*caps, *prompts)]
        for name in ("s.h5", "s.zarr"):
            assert written_captions(tmp / name, records) == texts


def test_a_nul_caption_is_refused_naming_the_record_and_field_before_any_store_file_exists(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    path = dataset(folder, ["a man", "a wo\x00man", "x"], ensure_ascii=True)
    with pytest.raises(RecordError, match=r"synthpedes-dataset\.json record 1: 'captions'\[0\] holds a NUL "
                                          r"character \(U\+0000\) at character 4"):
        load_records(path)
    # An earlier run's resumable store beside it, with a chunk write in progress: untouched by the refusal.
    store = tmp_path / "emb" / "s.zarr"
    partial = store / "caption_emb" / "c" / "0.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a chunk")
    with pytest.raises(RecordError, match="holds a NUL character"):
        extract_cmd.main(["--data", str(path), "--teacher", str(tmp_path / "no-teacher"), "--embedding_path",
                          str(store), "--format", "zarr"])
    assert partial.read_bytes() == b"half a chunk" and sorted(os.listdir(tmp_path / "emb")) == ["s.zarr"]


# ---------------------------------------------------------------- 4. a JPEG damaged in the middle

def damaged_jpeg(path: Path, how: str) -> Path:
    """A real JPEG whose entropy-coded data is damaged in the middle; its end-of-image marker stays."""
    pixels = np.random.default_rng(0).integers(0, 256, (128, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    data = path.read_bytes()
    scan = data.index(b"\xff\xda")
    middle = (scan + len(data)) // 2
    if how == "cut":  # a stretch of the scan gone: the data runs into the end marker early
        data = data[:middle] + data[middle + (len(data) - middle) // 2:]
    else:  # a stretch zeroed: decoding finishes early, bytes are left before the end marker
        data = data[:middle] + bytes(40) + data[middle + 40:]
    path.write_bytes(data)
    return path


def test_a_jpeg_damaged_in_the_middle_is_as_unreadable_as_a_truncated_one(tmp_path):
    path, said = damaged_jpeg(tmp_path / "0.jpg", "cut"), "premature end of data segment"
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(path.read_bytes()[:600])
    for load in (load_pixels, load_image):  # training and enrolment; extraction's teachers take PIL images
        for hint in (None, (32, 16)):
            with pytest.raises(ImageReadError, match=rf"0\.jpg: corrupt image \(Corrupt JPEG data: .*{said}"):
                load(path, hint)
        with pytest.raises(ImageReadError, match=r"t\.jpg: corrupt image"):
            load(truncated)


def test_stray_bytes_before_the_end_marker_leave_a_whole_image_readable(tmp_path):
    """libjpeg warns "N extraneous bytes before marker 0xd9" for padding some cameras write after whole pixel
    data: a common, harmless warning in real datasets, so such an image is read, with the pixels of the clean one."""
    clean = tmp_path / "clean.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(clean)
    data = clean.read_bytes()
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data[:-2] + bytes(3) + data[-2:])  # three stray bytes before FF D9
    np.testing.assert_array_equal(load_pixels(padded), load_pixels(clean))


def test_every_stage_skips_a_damaged_jpeg(tmp_path, plain_export):
    recs = [{"id": i, "file_path": f"{i}.jpg", "captions": ["c"]} for i in range(2)]
    (tmp_path / "synthpedes-dataset.json").write_text(json.dumps(recs))
    damaged_jpeg(tmp_path / "0.jpg", "cut")
    Image.new("RGB", (20, 40), (200, 30, 40)).save(tmp_path / "1.jpg")
    records = load_records(tmp_path / "synthpedes-dataset.json", eval_ids=1)
    for transform in (ImageTransform(size=(32, 16)), lambda image: np.asarray(image)):  # training, extraction
        batch = collate_images([ImageDataset(records, transform)[i] for i in range(2)])
        assert [row for row, _ in batch["skipped"]] == [0] and "premature end" in batch["skipped"][0][1]
    with pytest.raises(ImageReadError, match="premature end of data segment"):  # enrolment and search
        ExportedModels(plain_export).embed_images([tmp_path / "0.jpg"])


def test_what_else_reaches_stderr_during_a_decode_still_gets_there(capfd):
    def decode():
        os.write(2, b"another thread's log line\n")
        os.write(2, b"Corrupt JPEG data: bad Huffman code\n")
        return 7
    assert jpeg_warnings.watched(decode) == (7, "Corrupt JPEG data: bad Huffman code")
    assert jpeg_warnings.watched(lambda: 8) == (8, None)
    assert capfd.readouterr().err == "another thread's log line\n"
    results = []
    threads = [threading.Thread(target=lambda: results.append(jpeg_warnings.watched(decode))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(7, "Corrupt JPEG data: bad Huffman code")] * 8


# ---------------------------------------------------------------- 5. a run name is one path component

@settings(FAST, max_examples=100)
@given(name=st.one_of(st.text(max_size=12), st.text(st.sampled_from(string.ascii_letters + "./\\ \x00中"), max_size=8),
                      st.sampled_from(["../../x", "..", ".", "", "a/b", "/abs", "a\\b", "x" * 256, "run 1",
                                       "行人 试验"])))
def test_a_run_name_is_one_folder_under_the_experiment_folder(name):
    opts = TrainOptions(run_name=name, log_dir="logs")
    one_component = name not in ("", ".", "..") and not set(name) & {"/", "\\", "\x00"} and len(
        name.encode("utf-8", "surrogatepass")) <= 255
    if one_component:
        opts.validate()
        folder = opts.run_folder(16)
        assert folder.name == name and folder.parent.parent == Path("logs")
    else:
        with pytest.raises(OptionError, match="--run_name .*: a run name is one folder name"):
            opts.validate()


# ---------------------------------------------------------------- 6. an export killed, its killer not yet reaping it

KILLED_EXPORT = """
import os, signal, sys
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
export_checkpoint(sys.argv[1], sys.argv[2], ExportOptions(overwrite=True),
                  on_built=lambda tmp: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_an_export_killed_mid_build_is_tidied_by_the_next_one_even_while_its_killer_holds_it(trained_checkpoint,
                                                                                                 tmp_path):
    out = tmp_path / "out"
    export_checkpoint(trained_checkpoint, out, ExportOptions())
    child = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(trained_checkpoint), str(out)], cwd=ROOT)
    try:
        # Dead but not reaped, as under a harness that killed it and runs the export again before waiting.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        left = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".out.{child.pid}-")]
        assert len(left) == 1 and left[0].endswith(".tmp")
        export_checkpoint(trained_checkpoint, out, ExportOptions(overwrite=True))
        assert os.listdir(tmp_path) == ["out"]
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    card = json.loads((out / "model.json").read_text())
    assert set(card["files"]) | {"model.json"} == set(os.listdir(out))
    assert ExportedModels(out).embed_texts(["a man in a red coat"]).shape == (1, 16)


def test_a_temp_whose_pid_a_later_process_got_is_stale(tmp_path, monkeypatch):
    mine = tmp_path / f".out.{os.getpid()}-1.tmp"  # as a rerun in a container, given the killed run's pid, sees it
    mine.mkdir()
    files.clean_stale_temps(tmp_path, "out")
    assert mine.exists()  # made after this process started: it may be this process's own, still being written
    real, made = files._proc_stat, mine.lstat().st_ctime
    monkeypatch.setattr(files, "_proc_stat", lambda pid: (real(pid)[0], made + 3600))  # this process, started later
    assert files.clean_stale_temps(tmp_path, "out") == [mine] and os.listdir(tmp_path) == []
    assert files.process_alive(os.getpid())  # alive: only not the writer of a temp older than itself
