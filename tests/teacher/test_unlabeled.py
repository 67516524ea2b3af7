"""Unlabeled stores (person.data.unlabeled, person.teacher.store.unlabeled / growth): a folder, detector boxes or
a captions file through tools/extract_label.py; the schema's NONE values, refusal by labelled readers, skips,
track ids, resume after SIGKILL, growth that keeps the old rows' bytes, and 2-rank torchrun."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from person.cli import extract as extract_label
from person.data.detections import crop
from person.data.formats import RecordError
from person.data.unlabeled import captions_file, image_folder, source_fingerprint
from person.demo.synthetic import write_dataset
from person.teacher import store as S
from person.teacher.extract import _batches
from person.teacher.hf import load_teacher
from person.teacher.store.backends import _Backend
from tests.teacher import tiny_teachers
from tests.teacher.test_store import all_arrays

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "extract_label.py"
CHUNK, BATCH = 3, 2  # 4 images: chunks [0, 3) and [3, 4), the second computed as the batch [3]


def picture(path: Path, seed: int, size: tuple[int, int] = (32, 48)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return tiny_teachers.build_tiny_siglip(tmp_path_factory.mktemp("teacher") / "siglip")


@pytest.fixture
def folder(tmp_path):
    """4 images (one unreadable), a text file that is no image, and a link leading outside the folder."""
    root = tmp_path / "photos"
    for i, name in enumerate(["b0.png", "cam/b1.png", "cam/b2.png", "b3.png"]):
        picture(root / name, i)
    (root / "cam" / "b2.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("no image")
    os.symlink(picture(tmp_path / "elsewhere.png", 9), root / "cam" / "link.png")
    return root


def args(source_flags, teacher, store, *extra):
    return [*source_flags, "--teacher", str(teacher), "--embedding_path", str(store), "--chunk_rows", str(CHUNK),
            "--batch-size", str(BATCH), "--workers", "0", "--no-progress", *extra]


def test_folder_listing_is_sorted_relative_paths_with_outside_links_counted(folder):
    source = image_folder(folder)
    assert source.paths == ["b0.png", "b3.png", "cam/b1.png", "cam/b2.png"]
    assert source.format == "image_dir" and source.split_rule == "none"
    assert source.skips.counts == {"link leading outside the folder": 1}
    assert source.fingerprint() == source_fingerprint("image_dir", folder.resolve())


def test_captions_are_normalised_and_bad_lines_counted_and_nul_refused(tmp_path):
    file = tmp_path / "captions.txt"
    file.write_bytes("a man in a red jacket\n  a woman \t wearing  a dress \n\n".encode() +
                     b"a man in a red jacket\n\xff\xfe\n")
    source = captions_file(file)
    assert source.texts == ["a man in a red jacket", "a woman wearing a dress"]
    assert source.skips.counts == {"empty line": 1, "the same text as an earlier line": 1, "not UTF-8": 1}
    file.write_text("fine\nhas a \x00 inside\n")
    with pytest.raises(RecordError, match="line 2 holds a NUL character"):
        captions_file(file)


def test_image_dir_store_schema_name_skips_and_refusal_by_labelled_readers(folder, teacher_dir, tmp_path, capsys):
    summary = extract_label.main(args(["--image-dir", str(folder)], teacher_dir, tmp_path / "stores"))
    fingerprint = source_fingerprint("image_dir", folder)
    assert summary.store.name == f"image_dir-{fingerprint[:10]}__siglip.h5"
    assert summary.unreadable == 1 and summary.source_skipped == {"link leading outside the folder": 1}
    assert "left out of the source: 1 (link leading outside the folder)" in capsys.readouterr().out
    arrays = all_arrays(summary.store)
    assert (arrays["image_pid"] == S.NONE).all() and (arrays["image_split"] == S.NONE).all()
    assert arrays["caption_offsets"].tolist() == [0] * 5 and len(arrays["caption_text"]) == 0
    assert "image_box" not in arrays
    with pytest.raises(S.StoreKindError, match="is an unlabeled store .*image_dir.*open_unlabeled"):
        S.open_store(summary.store)
    with pytest.raises(S.StoreKindError, match="unlabeled store"):
        S.open_with_records(summary.store)
    with S.open_unlabeled(summary.store, load_teacher(str(teacher_dir))) as store:
        assert store.dataset_info["format"] == "image_dir" and store.dataset_info["split_rule"] == "none"
        assert store.dataset_info["fingerprint"] == fingerprint
        assert store.image_paths == ["b0.png", "b3.png", "cam/b1.png", "cam/b2.png"]
        assert store.readable_rows().tolist() == [0, 1, 2]
        assert store.skipped()[0][:2] == (3, "cam/b2.png")
        assert np.allclose(np.linalg.norm(store.images(store.readable_rows()), axis=1), 1, atol=2e-3)
        assert store.image_tracks == [None] * 4
        with pytest.raises(S.StoreKindError):
            store.split_rows("train")


def test_detections_keep_boxes_lines_and_track_ids_and_cut_crops_as_enrolment(tmp_path, teacher_dir):
    cams = tmp_path / "cams"
    picture(cams / "frames" / "f0.png", 0, (64, 48))
    picture(cams / "frames" / "f1.png", 1, (64, 48))
    picture(tmp_path / "outside.png", 2)
    lines = [{"image": "frames/f0.png", "bbox": [2, 3, 20, 40], "score": 0.9, "track": 7},
             {"image": "frames/f0.png", "bbox": [30, 5, 60, 45], "track_id": "t-2"},
             "not json",
             {"image": "frames/f1.png", "bbox": [10, 10, 5, 5]},
             {"image": "frames/f1.png", "bbox": [-5, 0, 30, 47]},
             {"image": "frames/f1.png", "bbox": [100, 100, 120, 140]},
             {"image": "../outside.png", "bbox": [0, 0, 10, 10]}]
    file = tmp_path / "dets" / "boxes.jsonl"
    file.parent.mkdir()
    file.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    summary = extract_label.main(args(["--detections", str(file), "--image-root", str(cams)], teacher_dir,
                                      tmp_path / "stores", "--format", "zarr"))
    assert summary.store.name.startswith(f"detections-{source_fingerprint('detections', file)[:10]}__")
    assert summary.source_skipped == {"not JSON": 1, "image path outside the image root": 1,
                                      "no usable \"bbox\" ([x1, y1, x2, y2], finite, with x2 > x1 and y2 > y1)": 1}
    teacher = load_teacher(str(teacher_dir))
    with S.open_unlabeled(summary.store, teacher) as store:
        assert store.image_tracks == [7, "t-2", None, None] and store.image_lines.tolist() == [1, 2, 5, 6]
        assert store.image_boxes[2].tolist() == [-5, 0, 30, 47]
        assert store.readable_rows().tolist() == [0, 1, 2]
        assert "lies outside the 64x48 image" in store.skipped()[0][2]
        frame = np.asarray(Image.open(cams / "frames" / "f1.png").convert("RGB"))
        pixels, clipped = crop(frame, (-5, 0, 30, 47))
        assert clipped and pixels.shape == (47, 30, 3)
        expected = teacher.encode_images([Image.fromarray(pixels)]).half().float().numpy()
        assert np.allclose(store.images([2]), expected, atol=5e-3)


def test_captions_store_has_caption_rows_without_images(tmp_path, teacher_dir):
    file = tmp_path / "captions.txt"
    file.write_text("a man in a red jacket\n\na woman with a black bag\n", encoding="utf-8")
    summary = extract_label.main(args(["--captions", str(file)], teacher_dir, tmp_path / "c.h5"))
    assert summary.source_skipped == {"empty line": 1}
    teacher = load_teacher(str(teacher_dir))
    with S.open_unlabeled(summary.store, teacher) as store:
        assert store.num_images == 0 and store.num_captions == 2
        assert (store.caption_image == S.NONE).all() and store.caption_offsets.tolist() == [0]
        texts = store.all_caption_texts()
        assert texts == ["a man in a red jacket", "a woman with a black bag"]
        expected = teacher.encode_texts(texts).half().float().numpy()
        assert np.allclose(store.captions([0, 1]), expected, atol=5e-3)


def test_labelled_store_is_refused_by_open_unlabeled(tmp_path, teacher_dir):
    json_path = write_dataset(tmp_path / "data", 2, 1, seed=0, workers=1)
    summary = extract_label.main(args(["--data", str(json_path)], teacher_dir, tmp_path / "l.h5"))
    with pytest.raises(S.StoreKindError, match="is a labelled store"):
        S.open_unlabeled(summary.store)


# The real extraction, killed (with its loader workers) right after chunk `kill_after` is marked done on disk.
KILLED_DRIVER = """
import os, signal, sys
from person.cli.extract import load_source, parse_args
from person.teacher.extract import extract
from person.teacher.extract import _batches
from person.teacher.hf import load_teacher
from person.teacher.store.backends import _Backend
kill_after, opts = int(sys.argv[1]), parse_args(sys.argv[2:])
def kill(units_done):
    if units_done == kill_after:
        os.killpg(os.getpid(), signal.SIGKILL)
extract(load_source(opts), load_teacher(opts.teacher, dtype=opts.dtype), opts.embedding_path, format=opts.format,
        batch_size=opts.batch_size, chunk_rows=opts.chunk_rows, workers=opts.workers, on_chunk=kill)
"""


def run_and_kill(argv, kill_after):
    done = subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(kill_after), *argv], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          timeout=300)
    assert done.returncode == -signal.SIGKILL, f"the run was not killed: {done.stderr[-3000:]}"


def assert_same_arrays(got_path, expected_path):
    expected, got = all_arrays(expected_path), all_arrays(got_path)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype and np.array_equal(got[name], expected[name]), name


@pytest.mark.parametrize("fmt", S.FORMATS)
def test_resume_after_sigkill_gives_the_uninterrupted_store(folder, teacher_dir, tmp_path, fmt):
    reference = extract_label.main(args(["--image-dir", str(folder)], teacher_dir, tmp_path / f"ref.{fmt}")).store
    path = tmp_path / f"resumed.{fmt}"
    argv = args(["--image-dir", str(folder)], teacher_dir, path)
    run_and_kill(argv, 1)
    with pytest.raises(S.StoreIncompleteError):
        S.open_unlabeled(path)
    assert extract_label.main(argv).units_written == 1
    assert_same_arrays(path, reference)


@pytest.mark.parametrize("fmt", S.FORMATS)
def test_a_grown_folder_is_appended_to_the_same_store_keeping_old_bytes(folder, teacher_dir, tmp_path, fmt):
    first = extract_label.main(args(["--image-dir", str(folder)], teacher_dir, tmp_path / "stores",
                                    "--format", fmt)).store
    before = all_arrays(first)
    killed = tmp_path / f"killed.{fmt}"
    shutil.copytree(first, killed) if fmt == "zarr" else shutil.copy(first, killed)
    picture(folder / "a.png", 10)          # sorts first, appended after the stored rows all the same
    picture(folder / "cam" / "c0.png", 11)
    picture(folder / "cam" / "c1.png", 12)
    summary = extract_label.main(args(["--image-dir", str(folder)], teacher_dir, tmp_path / "stores",
                                      "--format", fmt))
    assert summary.store == first and summary.images == 7
    assert summary.units_written == 2  # the old partial chunk [3, 6) and the new [6, 7); [0, 3) kept
    after = all_arrays(first)
    assert after["image_path"].tolist() == ["b0.png", "b3.png", "cam/b1.png", "cam/b2.png", "a.png", "cam/c0.png",
                                            "cam/c1.png"]
    for name in ("image_emb", "image_status", "image_error", "image_pid", "image_split"):
        assert np.array_equal(after[name][:4], before[name]), name
    # Where the first run ended: the recomputed old row 3 keeps its one-row batch, hence its bytes.
    assert _attrs(first)["extraction"]["cuts"] == {"image": [4], "caption": []}
    assert extract_label.main(args(["--image-dir", str(folder)], teacher_dir, first)).units_written == 0
    # Growth killed after its first chunk, then run again: the store an uninterrupted growth makes.
    argv = args(["--image-dir", str(folder)], teacher_dir, killed)
    run_and_kill(argv, 2)  # 1 chunk kept from the first run, 1 written by this one
    assert extract_label.main(argv).units_written == 1
    assert_same_arrays(killed, first)


def _attrs(path):
    backend = _Backend(path)
    try:
        return backend.attrs
    finally:
        backend.close()


def test_batches_never_straddle_where_an_earlier_run_ended():
    unit = S.Unit("image", 1, 3, 6)
    assert _batches(unit, 2) == [range(3, 5), range(5, 6)]
    assert _batches(unit, 2, [4]) == [range(3, 4), range(4, 5), range(5, 6)]  # row 3 alone, as in the first run
    assert _batches(unit, 2, [3, 6, 9]) == _batches(unit, 2)


def test_a_grown_captions_file_is_appended(tmp_path, teacher_dir):
    file = tmp_path / "captions.txt"
    file.write_text("one\ntwo\nthree\nfour\n", encoding="utf-8")
    store = extract_label.main(args(["--captions", str(file)], teacher_dir, tmp_path / "c.zarr")).store
    before = all_arrays(store)
    file.write_text("one\ntwo\nthree\nfour\nfive\nthree\n", encoding="utf-8")
    summary = extract_label.main(args(["--captions", str(file)], teacher_dir, store))
    after = all_arrays(store)
    assert summary.captions == 5 and after["caption_text"].tolist()[4] == "five"
    assert np.array_equal(after["caption_emb"][:4], before["caption_emb"])


def test_torchrun_two_ranks_give_the_single_process_store(folder, teacher_dir, tmp_path):
    reference = extract_label.main(args(["--image-dir", str(folder)], teacher_dir, tmp_path / "ref.h5")).store
    path = tmp_path / "ranks.h5"
    two_ranks(args(["--image-dir", str(folder)], teacher_dir, path))
    assert_same_arrays(path, reference)


def two_ranks(argv):
    """tools/extract_label.py under torchrun, two ranks."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(TOOL), *argv], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_command_needs_exactly_one_source(teacher_dir, folder, tmp_path):
    with pytest.raises(SystemExit):
        extract_label.main(args(["--image-dir", str(folder), "--captions", str(tmp_path / "c.txt")], teacher_dir,
                                tmp_path / "s.h5"))


@pytest.mark.parametrize("fmt", S.FORMATS)
@pytest.mark.parametrize("case", ["short image_box", "no image_track", "short image_line"])
def test_a_detections_store_that_lost_part_of_its_box_arrays_is_refused(tmp_path, teacher_dir, fmt, case):
    from tests.teacher.test_store_damage import damage_h5, damage_zarr, drop_array, shorten
    frames = tmp_path / "frames"
    for i in range(3):
        picture(frames / f"f{i}.png", i, (64, 48))
    file = tmp_path / "boxes.jsonl"
    file.write_text("".join(json.dumps({"image": f"f{i}.png", "bbox": [2, 3, 30, 40], "track": i}) + "\n"
                            for i in range(3)))
    store = extract_label.main(args(["--detections", str(file), "--image-root", str(frames)], teacher_dir,
                                    tmp_path / f"d.{fmt}", "--format", fmt)).store
    edit, message = {"short image_box": (shorten("image_box", 2), r"array image_box has shape \(2, 4\), expected "
                                                                   r"\(3, 4\)"),
                     "no image_track": (drop_array("image_track"), "array image_track is missing"),
                     "short image_line": (shorten("image_line", 1), r"array image_line has shape \(1,\), expected "
                                                                     r"\(3,\)")}[case]
    (damage_h5 if fmt == "h5" else damage_zarr)(store, edit)
    with pytest.raises(S.StoreFormatError, match=f"^{store}: {message}"):
        S.open_unlabeled(store)
    with pytest.raises(S.StoreFormatError, match=message):  # nor is it grown or continued
        extract_label.main(args(["--detections", str(file), "--image-root", str(frames)], teacher_dir, store,
                                "--format", fmt))


def test_torchrun_two_ranks_grow_a_store_as_one_process_does(folder, teacher_dir, tmp_path):
    reference = extract_label.main(args(["--image-dir", str(folder)], teacher_dir, tmp_path / "ref.h5")).store
    path = tmp_path / "ranks.h5"
    shutil.copy(reference, path)
    picture(folder / "a.png", 10)
    picture(folder / "cam" / "c0.png", 11)
    grown = extract_label.main(args(["--image-dir", str(folder)], teacher_dir, reference)).store
    two_ranks(args(["--image-dir", str(folder)], teacher_dir, path))
    assert_same_arrays(path, grown)
