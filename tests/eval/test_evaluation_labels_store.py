"""evaluation_labels.py --embedding_path: the teacher's own report on a split of a feature store."""
import json

import numpy as np
import pytest

from person.cli import evaluate_labels as evaluation_labels
from tests.teacher import tiny_teachers
from person.data.records import load_records
from person.demo.synthetic import write_dataset
from person.eval import metrics as M
from person.eval import report
from person.teacher import store as S
from person.teacher.extract import extract
from person.teacher.hf import load_teacher


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A store of 10 ids x 2 images with 4 held-out ids; one eval image unreadable."""
    tmp = tmp_path_factory.mktemp("store")
    records = load_records(write_dataset(tmp / "data", 10, 2, seed=0, workers=1), eval_ids=4)
    eval_rows = records.split_indices("eval")
    bad = int(eval_rows[0])
    records.image_path(bad).write_bytes(b"garbage")
    teacher = load_teacher(str(tiny_teachers.build_tiny_siglip(tmp / "teacher")))
    summary = extract(records, teacher, tmp / "s.h5", batch_size=4, chunk_rows=8, workers=0)
    return summary.store, records, bad


def expected_report(store, rows, fields):
    caps = np.flatnonzero(np.isin(store.caption_image, rows) & np.isin(store.caption_field, fields))
    return M.evaluate(store.images(rows), store.image_pid[rows], store.captions(caps),
                      store.image_pid[store.caption_image[caps]]).to_dict(), caps


def test_store_report_prints_the_table_and_writes_the_metrics_json(made, tmp_path, capsys):
    path, records, bad = made
    summary = evaluation_labels.main(["--embedding_path", str(path), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == report.TABLE_HEADER and out[1] == report.TABLE_RULE
    assert json.loads((tmp_path / "r.json").read_text()) == summary
    assert (tmp_path / "r_roc.png").is_file()
    assert summary.pop("operating_points")["split"] == "eval"  # the teacher's thresholds (test_operating_points)
    with S.open_store(path) as store:
        rows = store.split_rows("eval")
        assert bad not in rows and len(rows) == len(records.split_indices("eval")) - 1
        expected, caps = expected_report(store, rows, [0])
        assert summary == expected
        assert summary["queries"] == len(caps) == sum(len(records.captions[r]) for r in rows)
        assert out[4] == f"Verify Count={len(rows) * len(caps)}. Positives={expected['positives']} " \
                         f"Negatives={expected['negatives']}"
        # the worst pairs name the gallery's paths and the queries' texts
        pairs, texts = [line for line in out if "<->" in line], store.caption_texts(caps)
        assert pairs and all(any(store.image_paths[r] in line for r in rows) for line in pairs)
        assert all(any(f'"{t[:40]}' in line for t in texts) for line in pairs)


def test_prompt_captions_are_scored_only_when_asked(made, capsys):
    path, records, _ = made
    summary = evaluation_labels.main(["--embedding_path", str(path), "--split", "train", "--prompt-captions"])
    assert summary.pop("operating_points")["split"] == "train"
    with S.open_store(path) as store:
        expected, caps = expected_report(store, store.split_rows("train"), [0, 1])
    assert summary == expected and (store.caption_field[caps] == 1).any()


def test_bad_requests_are_clear_errors(made, tmp_path):
    path, records, _ = made
    with pytest.raises(SystemExit):  # argparse: --split belongs to stores
        evaluation_labels.main(["--features", str(tmp_path / "f.npz"), "--split", "eval"])
    with pytest.raises(ValueError, match="no readable image in split 'val'"):
        evaluation_labels.main(["--embedding_path", str(path), "--split", "val"])
    with pytest.raises(FileNotFoundError, match="make it with tools/extract_label.py"):
        evaluation_labels.main(["--embedding_path", str(tmp_path / "none.h5")])
