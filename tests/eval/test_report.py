"""person.eval.report and evaluation_labels.py: the seed's table character for character, JSON, ROC, top lists."""
import json

import numpy as np
import pytest

from person.cli import evaluate_labels as evaluation_labels
from person.eval import metrics as M
from person.eval import report
from person.eval.features import FeatureFileError

SEED_TABLE = """\
        EER      FAR=1e-3  FAR=1e-4  FAR=1e-5  FAR=1e-6  FAR=0
----------------------------------------------------------------
FRR    12.2132%  90.5400%  98.5000%  99.9200%  100.0000%  100.0000%
SCORE   0.0641772 0.153719  0.180852  0.201203  0.213413  0.217483
Verify Count=12466498. Positives=5000 Negatives=12461498"""

SEED_SUMMARY = {
    "eer": 0.122132, "eer_threshold": 0.0641772,
    "frr_at_far": {"1e-3": 0.9054, "1e-4": 0.985, "1e-5": 0.9992, "1e-6": 1.0, "0": 1.0},
    "threshold_at_far": {"1e-3": 0.153719, "1e-4": 0.180852, "1e-5": 0.201203, "1e-6": 0.213413,
                         "0": 0.217483},
    "positives": 5000, "negatives": 12461498,
}


def test_table_reproduces_the_seed_layout_exactly():
    assert report.format_table(SEED_SUMMARY) == SEED_TABLE


def test_table_prints_a_threshold_that_passes_nothing_as_inf():
    summary = json.loads(json.dumps(SEED_SUMMARY))
    summary["threshold_at_far"]["0"] = None
    assert report.format_table(summary).splitlines()[3].endswith("0.213413  inf")


def small_result(top_k=3):
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(0.2, 0.2, (12, 20)), 3).astype(np.float32)
    image_pid, caption_pid = rng.integers(0, 4, 20), rng.integers(0, 4, 12)
    return M.verification_from_scores(scores, image_pid, caption_pid, top_k=top_k)


def test_operating_points_say_how_few_false_accepts_decide_them():
    lines = report.format_operating_points(small_result()).splitlines()
    assert len(lines) == 5 and lines[0].startswith("FAR=1e-3: threshold ")
    assert "fewer than 1000 negatives, so this is FAR=0" in lines[0]  # 12 x 20 pairs, under 1000 negatives
    assert lines[4].startswith("FAR=0: ") and "at most 0 allowed" in lines[4]


def test_top_errors_show_paths_and_captions():
    result = small_result(top_k=2)
    paths = [f"cam/{i}.jpg" for i in range(20)]
    texts = [f"caption text {c}" for c in range(12)]
    out = report.format_top_errors(result, image_paths=paths, caption_texts=texts).splitlines()
    assert out[0].startswith("Top-2 false rejects (lowest-scoring positive pairs; EER threshold ")
    fr = result.false_rejects[0]
    assert f"image {fr.image} cam/{fr.image}.jpg  <->  caption {fr.caption} \"caption text {fr.caption}\"" in out[1]
    assert out[3].startswith("Top-2 false accepts")
    by_image = report.format_top_errors(result, caption_images=list(range(12))).splitlines()
    assert by_image[1].endswith(f"caption {fr.caption} of image {fr.caption}")


def test_retrieval_line_in_percent():
    line = report.format_retrieval({"rank1": 0.5, "rank5": 0.75, "rank10": 1.0, "mAP": 0.25, "mINP": 0.125,
                                    "queries": 8, "queries_without_positive": 0})
    assert line == ("Retrieval text->image (8 queries): Rank-1=50.000%  Rank-5=75.000%  Rank-10=100.000%  "
                    "mAP=25.000%  mINP=12.500%")


def test_json_round_trip_and_roc_png_next_to_it(tmp_path):
    result = small_result()
    summary = M.summary(result)
    path = report.write_json(summary, tmp_path / "sub" / "teacher.json")
    assert json.loads(path.read_text()) == summary
    png = report.plot_roc(result, report.roc_path(path))
    assert png == tmp_path / "sub" / "teacher_roc.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        report.write_json({"eer": float("nan")}, tmp_path / "bad.json")


def write_features(path, n_ids=6, per_id=3, dim=8, **extra):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((n_ids, dim))
    image_pid = np.repeat(np.arange(n_ids), per_id)
    caption_image = np.arange(len(image_pid))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    arrays = {"image_emb": unit(centres[image_pid] + rng.standard_normal((len(image_pid), dim))),
              "image_pid": image_pid,
              "caption_emb": unit(centres[image_pid] + rng.standard_normal((len(image_pid), dim))),
              "caption_image": caption_image,
              "image_path": np.array([f"img/{i}.jpg" for i in range(len(image_pid))])}
    arrays.update(extra)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_command_prints_the_report_and_writes_json_and_roc(tmp_path, capsys):
    arrays = write_features(tmp_path / "f.npz")
    summary = evaluation_labels.main(["--features", str(tmp_path / "f.npz"), "--json", str(tmp_path / "r.json"),
                                      "--block-pairs", "40"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == report.TABLE_HEADER and out[1] == report.TABLE_RULE
    assert out[4] == "Verify Count=324. Positives=54 Negatives=270"  # 18 x 18 pairs, 6 identities of 3
    assert any(line.startswith("Retrieval text->image (18 queries)") for line in out)
    assert any("img/" in line and "<->  caption" in line for line in out)
    assert json.loads((tmp_path / "r.json").read_text()) == summary
    assert (tmp_path / "r_roc.png").is_file()
    expected = M.evaluate(arrays["image_emb"], arrays["image_pid"], arrays["caption_emb"],
                          arrays["image_pid"][arrays["caption_image"]], block_pairs=40).to_dict()
    assert summary == expected


def test_command_names_what_is_wrong_with_the_features_file(tmp_path):
    write_features(tmp_path / "f.npz", caption_image=None)
    missing = r"missing array\(s\) caption_pid \(or caption_image\)"
    with pytest.raises(FeatureFileError, match=missing):
        evaluation_labels.main(["--features", str(tmp_path / "f.npz")])
    write_features(tmp_path / "g.npz", caption_text=np.array(["a", None], dtype=object))
    with pytest.raises(FeatureFileError, match="caption_text is stored as Python objects"):
        evaluation_labels.main(["--features", str(tmp_path / "g.npz")])
    with pytest.raises(FileNotFoundError, match="no such features file"):
        evaluation_labels.main(["--features", str(tmp_path / "none.npz")])


@pytest.mark.parametrize("key, bad, message", [
    ("image_pid", lambda a: a[:-1], r"image_pid has shape \(17,\), but image_emb has 18 rows"),
    ("image_path", lambda a: a[:5], r"image_path has shape \(5,\), but image_emb has 18 rows"),
    ("caption_text", lambda a: a[:, None], r"caption_text has shape \(18, 1\), but caption_emb has 18 rows"),
    ("caption_emb", lambda a: a[:, :3], "image_emb has dimension 8 but caption_emb 3"),
    ("image_emb", lambda a: a[0], r"image_emb must be a float array \[N, D\], got float32 \(8,\)"),
])
def test_arrays_that_disagree_in_length_are_named(tmp_path, key, bad, message):
    arrays = write_features(tmp_path / "f.npz", caption_text=np.array([f"caption {i}" for i in range(18)]))
    arrays[key] = bad(arrays[key])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FeatureFileError, match=message):
        evaluation_labels.main(["--features", str(tmp_path / "bad.npz")])


def test_command_normalises_only_when_asked(tmp_path, capsys):
    arrays = write_features(tmp_path / "f.npz")
    arrays["image_emb"] = arrays["image_emb"] * 3
    np.savez(tmp_path / "big.npz", **arrays)
    with pytest.raises(M.MetricInputError, match="image_emb row 0 has L2 norm 3"):
        evaluation_labels.main(["--features", str(tmp_path / "big.npz")])
    assert evaluation_labels.main(["--features", str(tmp_path / "big.npz"), "--normalize"])["positives"] == 54
