"""Erasure from unlabeled stores (person.teacher.store.erase, search/forget.py --store): the erased rows' fp16 bytes
are nowhere in the store file or folder after (and are found there before), the rest keep their bytes, counts and
chunks follow, training reads the store, and labelled stores, selectors that do not fit and values that match
nothing are refused."""
import json
from pathlib import Path

import numpy as np
import pytest

from person.cli import extract as extract_label, forget as forget_cmd
from person.demo.synthetic import write_dataset
from person.teacher import store as S
from person.teacher.store.erase import StoreSelector, erase_rows
from person.train.unlabeled import UnlabeledPool
from tests.teacher import tiny_teachers
from tests.teacher.test_store import all_arrays
from tests.teacher.test_unlabeled import args, picture

TRACKS = [7, 7, "t-2", None, 8, 7]  # six boxes on three frames; chunks of 3 rows: [0, 3) and [3, 6)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return tiny_teachers.build_tiny_siglip(tmp_path_factory.mktemp("teacher") / "siglip")


def detections_store(tmp_path, teacher_dir, fmt):
    cams = tmp_path / "cams"
    lines = []
    for i, track in enumerate(TRACKS):
        image = picture(cams / f"f{i // 2}.png", i // 2, (64, 48)).relative_to(cams).as_posix()
        lines.append({"image": image, "bbox": [2 + 30 * (i % 2), 3, 30 + 30 * (i % 2), 45]} |
                     ({"track": track} if track is not None else {}))
    file = tmp_path / "boxes.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    argv = args(["--detections", str(file), "--image-root", str(cams)], teacher_dir, tmp_path / f"s.{fmt}")
    return extract_label.main(argv).store, argv, file


def holding(pattern, store):
    paths = [store] if store.is_file() else [p for p in store.rglob("*") if p.is_file()]
    return [p for p in paths if pattern in p.read_bytes()]


@pytest.mark.parametrize("fmt", S.FORMATS)
def test_erased_rows_bytes_leave_the_store_and_the_rest_keep_theirs(tmp_path, teacher_dir, fmt):
    path, argv, file = detections_store(tmp_path, teacher_dir, fmt)
    before = all_arrays(path)
    erased = [0, 1, 5]  # track 7
    for row in erased:  # every erased row is there, byte for byte: the search below can fail
        assert holding(before["image_emb"][row].tobytes(), path), row
    events = []
    report = erase_rows(path, StoreSelector(tracks=("7",)), audit=events.append)
    assert report.image_rows == erased and (report.images, report.captions) == (3, 0)
    for row in erased:
        assert not holding(before["image_emb"][row].tobytes(), path), row
    after = all_arrays(path)
    keep = [2, 3, 4]
    for name in ("image_emb", "image_status", "image_error", "image_box", "image_line", "image_track", "image_path"):
        assert np.array_equal(after[name], before[name][keep]), name
    assert after["image_done"].tolist() == [1] and after["caption_offsets"].tolist() == [0] * 4
    assert [e["ids"] for e in events] == [erased] and json.loads(json.dumps(events[0]))
    with S.open_unlabeled(path) as store:  # complete, with its new counts
        assert store.num_images == 3 and store.image_tracks == ["t-2", None, 8]
        assert store.image_lines.tolist() == [3, 4, 5]
    backend = S.backends._Backend(path)
    assert backend.attrs["counts"]["erased"] == 3 and backend.attrs["counts"]["images"] == 3
    backend.close()
    # The detections file still lists them: its next extraction appends them again (as the command says).
    assert extract_label.main(argv).images == 6
    assert erase_rows(path, StoreSelector(lines=(1, 2, 6))).image_rows == [3, 4, 5]
    file.write_text("".join(line for n, line in enumerate(file.read_text().splitlines(True)) if n not in (0, 1, 5)))
    assert extract_label.main(argv).units_written == 0  # without them: nothing to extract again


def test_training_reads_a_store_rows_were_erased_from(tmp_path, teacher_dir):
    path, _, _ = detections_store(tmp_path, teacher_dir, "h5")
    erase_rows(path, StoreSelector(images=("f0.png",)))
    json_path = write_dataset(tmp_path / "data", 2, 1, seed=0, workers=1)
    labelled = extract_label.main(args(["--data", str(json_path)], teacher_dir, tmp_path / "l.h5")).store
    with S.open_store(labelled) as store:
        pool = UnlabeledPool([str(path)], store)
        assert pool.num_images == 4 and pool.images(np.arange(4)).shape[0] == 4
        tracks = pool.tracks()  # "t-2", none, 8, 7: the rows left, numbered
        assert tracks[1] == -1 and len(set(tracks[[0, 2, 3]].tolist())) == 3
        with pytest.raises(S.StoreKindError, match="is a labelled store.*extract it again"):
            erase_rows(labelled, StoreSelector(images=("x.png",)))


def test_a_captions_store_erases_by_text_and_refuses_what_does_not_fit(tmp_path, teacher_dir):
    file = tmp_path / "captions.txt"
    file.write_text("a man in a red jacket\na woman with a black bag\na child in yellow\n", encoding="utf-8")
    path = extract_label.main(args(["--captions", str(file)], teacher_dir, tmp_path / "c.zarr")).store
    before = all_arrays(path)
    with pytest.raises(S.StoreFormatError, match="has no --image, --line to erase by; erase its rows by --caption"):
        erase_rows(path, StoreSelector(images=("a.png",), lines=(1,)))
    with pytest.raises(S.StoreFormatError, match="--caption nobody match"):
        erase_rows(path, StoreSelector(captions=("a woman with a black bag", "nobody")))
    report = erase_rows(path, StoreSelector(captions=("  a woman with a   black bag",)))
    assert report.caption_rows == [1] and not holding(before["caption_emb"][1].tobytes(), path)
    with S.open_unlabeled(path) as store:
        assert store.all_caption_texts() == ["a man in a red jacket", "a child in yellow"]


def test_the_command_erases_from_a_store_and_names_misfits(tmp_path, teacher_dir, capsys):
    folder = tmp_path / "photos"
    for i, name in enumerate(["a.png", "cam/b.png", "c.png"]):
        picture(folder / name, i)
    path = extract_label.main(args(["--image-dir", str(folder)], teacher_dir, tmp_path / "s.h5")).store
    events = []
    report = forget_cmd.main(["--store", str(path), "--image", str(folder / "cam" / "b.png")], audit=events.append)
    assert report.image_rows == [2] and len(events) == 1
    assert "erased 1 image row(s)" in capsys.readouterr().out
    with pytest.raises(S.StoreFormatError, match="a store of image_dir has no --track to erase by"):
        forget_cmd.main(["--store", str(path), "--track", "3"])
    with pytest.raises(S.StoreFormatError, match="--image cam/b.png match"):
        forget_cmd.main(["--store", str(path), "--image", "cam/b.png"])
    assert Path(path).is_file()
