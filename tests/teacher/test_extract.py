"""person.teacher.extract and tools/extract_label.py: every teacher kind through the real path, unreadable images,
resume after SIGKILL and 2-rank torchrun both ending with the bytes of one uninterrupted run."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr

from tests.teacher import tiny_teachers
from person.data.images import ImageReadError, load_image
from person.data.records import load_records
from person.demo.synthetic import write_dataset
from person.teacher import store as S
from person.teacher.hf import KINDS, load_teacher
from tests.teacher.test_store import all_arrays
from person.cli import extract as extract_label

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "extract_label.py"

CHUNK, BATCH = 3, 2  # 7 image chunks and 20 caption chunks of the 20-image set; batches split chunks unevenly
BAD_ROW = 4


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    return {kind: build(root / kind) for kind, build in tiny_teachers.BUILDERS.items()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """10 ids x 2 images (with prompt captions); image BAD_ROW's JPEG replaced by garbage bytes."""
    json_path = write_dataset(tmp_path_factory.mktemp("data"), 10, 2, seed=0, workers=1)
    records = load_records(json_path)
    records.image_path(BAD_ROW).write_bytes(b"\xff\xd8\xff garbage, not a JPEG")
    return json_path


def args(dataset, teacher, store, *extra):
    return ["--data", str(dataset), "--teacher", str(teacher), "--embedding_path", str(store),
            "--chunk_rows", str(CHUNK), "--batch-size", str(BATCH), "--workers", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset, teachers):
    """One uninterrupted single-process run per format: what every other run must equal byte for byte."""
    out = tmp_path_factory.mktemp("reference")
    return {fmt: extract_label.main(args(dataset, teachers["siglip"], out / f"ref.{fmt}")).store
            for fmt in S.FORMATS}


def fixed_batches(start, stop):
    return [range(s, min(s + BATCH, stop)) for s in range(start, stop, BATCH)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_teacher_kind_extracts_through_the_real_path(tmp_path, dataset, teachers, kind):
    summary = extract_label.main(args(dataset, teachers[kind], tmp_path))
    teacher, records = load_teacher(str(teachers[kind])), load_records(dataset)
    assert summary.store.parent == tmp_path and summary.store.suffix == ".h5"
    with S.open_store(summary.store, records, teacher) as store:
        assert store.teacher_identity == teacher.identity() and store.dim == teacher.dim
        # The teacher's own outputs on the chunk's fixed batches ([3, 4], [5]: the bad image 4 left out), in fp16.
        chunk = range(CHUNK, 2 * CHUNK)
        assert BAD_ROW in chunk
        readable = [[i for i in rows if i != BAD_ROW] for rows in fixed_batches(chunk.start, chunk.stop)]
        expected = torch.cat([teacher.encode_images([load_image(records.image_path(i)) for i in rows])
                              for rows in readable]).half().float().numpy()
        assert np.array_equal(store.images([3, 5]), expected)
        texts = S.caption_layout(records).texts
        rows = range((store.num_captions - 1) // CHUNK * CHUNK, store.num_captions)  # the last chunk
        expected = torch.cat([teacher.encode_texts(texts[b.start:b.stop]) for b in
                              fixed_batches(rows.start, rows.stop)]).half().float().numpy()
        assert np.array_equal(store.captions(np.arange(rows.start, rows.stop)), expected)
        assert np.allclose(np.linalg.norm(store.images(store.split_rows("train")), axis=1), 1, atol=2e-3)


def test_unreadable_image_is_skipped_counted_listed_and_left_out(dataset, teachers, reference, capsys, tmp_path):
    records = load_records(dataset)
    path = records.paths[BAD_ROW]
    with S.open_store(reference["h5"], records) as store:
        assert store.image_status[BAD_ROW] == S.UNREADABLE and store.image_ok.sum() == len(records) - 1
        [(row, listed, reason)] = store.skipped()
        assert (row, listed) == (BAD_ROW, path) and reason == "not an image Pillow can read"
        assert BAD_ROW not in np.concatenate([store.split_rows(s) for s in ("train", "val", "test")])
        with pytest.raises(ValueError, match="unreadable"):
            store.images([BAD_ROW])
        # Its captions are embedded all the same; consumers reach them only through readable images.
        caps = np.arange(store.caption_offsets[BAD_ROW], store.caption_offsets[BAD_ROW + 1])
        assert np.allclose(np.linalg.norm(store.captions(caps), axis=1), 1, atol=2e-3)
    summary = extract_label.main(args(dataset, teachers["siglip"], reference["h5"]))  # a finished store: no work
    assert summary.unreadable == 1 and summary.units_written == 0 and summary.skipped[0][:2] == (BAD_ROW, path)
    out = capsys.readouterr().out
    assert "skipped images: 1 (unreadable; left out)" in out and f"row {BAD_ROW}: {path}: not an image" in out
    with pytest.raises(ImageReadError, match=f"{path}: not an image Pillow can read .*drop --strict"):
        extract_label.main(args(dataset, teachers["siglip"], tmp_path / "strict.h5", "--strict"))


def test_h5_and_zarr_give_equal_arrays(reference):
    h5, zr = all_arrays(reference["h5"]), all_arrays(reference["zarr"])
    assert sorted(h5) == sorted(zr)
    for name in h5:
        assert np.array_equal(h5[name].astype(zr[name].dtype), zr[name]), name


def test_resuming_with_another_batch_size_is_refused(dataset, teachers, reference):
    with pytest.raises(S.StoreMismatchError, match=r"batch_size: 2 \(store\) vs 5 \(now\)"):
        extract_label.main(args(dataset, teachers["siglip"], reference["h5"], "--batch-size", "5"))


# The real extraction, killed (with its loader workers, as a crash would) right after chunk `kill_after` is
# marked done on disk: sys.argv is the kill point, then extract_label's arguments.
KILLED_DRIVER = """
import os, signal, sys
from person.cli.extract import parse_args
from person.teacher.extract import extract
from person.teacher.hf import load_teacher
kill_after, opts = int(sys.argv[1]), parse_args(sys.argv[2:])
def kill(units_done):
    if units_done == kill_after:
        os.killpg(os.getpid(), signal.SIGKILL)
extract(opts.load_records(), load_teacher(opts.teacher, dtype=opts.dtype, pad_to_square=opts.pad_to_square),
        opts.embedding_path, format=opts.format, batch_size=opts.batch_size, chunk_rows=opts.chunk_rows,
        workers=opts.workers, strict=opts.strict, limits=opts.image_limits(), on_chunk=kill)
"""


def done_units(path):
    """Chunks marked done."""
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return int(f["image_done"][...].sum() + f["caption_done"][...].sum())
    group = zarr.open_group(path, mode="r")
    return int(group["image_done"][:].sum() + group["caption_done"][:].sum())


def run_and_kill(argv, kill_after):
    # Its own session, so its process group is the run and its loader workers only.
    done = subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(kill_after), *argv], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          timeout=300)
    assert done.returncode == -signal.SIGKILL, f"the run was not killed: {done.stderr[-3000:]}"


@pytest.mark.parametrize("fmt, kill_after", [("h5", 2), ("zarr", 10)])  # among image / caption chunks (7 image)
def test_resume_after_sigkill_gives_the_uninterrupted_store(tmp_path, dataset, teachers, reference, fmt, kill_after):
    path = tmp_path / f"resumed.{fmt}"
    argv = args(dataset, teachers["siglip"], path)
    total = len(S.plan_units(20, 60, CHUNK))
    run_and_kill(argv, kill_after)
    done = done_units(path)
    assert done == kill_after < total
    with pytest.raises(S.StoreIncompleteError):
        S.open_store(path)
    assert extract_label.main(argv).units_written == total - done  # only what was left
    expected, got = all_arrays(reference[fmt]), all_arrays(path)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype and np.array_equal(got[name], expected[name]), name


def test_torchrun_two_ranks_give_the_single_process_store(tmp_path, dataset, teachers, reference):
    path = tmp_path / "ranks.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(TOOL), *args(dataset, teachers["siglip"], path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("skipped images: 1") == 1  # rank 0 reports, once
    expected, got = all_arrays(reference["h5"]), all_arrays(path)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name
