"""person.eval.operating_points: thresholds at a FAR from genuine and impostor scores (hand-computed lists), the
refusal below 10 / FAR impostor pairs, image-to-image pairs, and the teacher's report carrying its own."""
import numpy as np
import pytest

from person.cli import evaluate_labels
from person.eval import operating_points as op


def f32(x: float) -> float:
    return float(np.float32(x))


def test_the_threshold_is_the_lowest_score_letting_at_most_floor_far_x_impostors_through():
    # 1000 impostors: FAR 1e-2 allows 10. The ten highest are above 0.2, the 11th is 0.2 (five tie there), so the
    # threshold is the lowest score above 0.2: the genuine 0.25; ten impostors reach it, and the genuine 0.15 not.
    top = [0.95, 0.85, 0.8, 0.75, 0.65, 0.6, 0.55, 0.5, 0.35, 0.3]
    impostor = top + [0.2] * 5 + [0.1] * 985
    entry = op.from_scores([0.9, 0.7, 0.25, 0.15], impostor, ("1e-2",))
    assert (entry["genuine"], entry["impostor"]) == (4, 1000)
    assert entry["at_far"]["1e-2"] == {"threshold": 0.25, "false_accepts": 10, "allowed": 10, "frr": 0.25}
    # Without the genuine 0.25 the next score above 0.2 is the impostor 0.3.
    assert op.from_scores([0.9, 0.7, 0.15], impostor, ("1e-2",))["at_far"]["1e-2"]["threshold"] == f32(0.3)


def test_ties_at_the_cut_move_the_threshold_above_them():
    # Twelve impostors tie at 0.5 and only ten may pass: the threshold is the next score up, 0.75; no impostor passes.
    entry = op.from_scores([0.75, 0.5], [0.5] * 12 + [0.0] * 988, ("1e-2",))
    assert entry["at_far"]["1e-2"] == {"threshold": 0.75, "false_accepts": 0, "allowed": 10, "frr": 0.5}
    # Nothing above the cut at all: a threshold that accepts nothing (null), not a number.
    assert op.from_scores([0.25], [0.5] * 12 + [0.0] * 988, ("1e-2",))["at_far"]["1e-2"]["threshold"] is None


def test_a_far_resting_on_fewer_than_10_over_far_impostors_is_refused_with_the_count():
    rng = np.random.default_rng(0)
    entry = op.from_scores(rng.random(5), rng.random(999), ("1e-2", "1e-3"))
    assert entry["at_far"]["1e-2"] == {"refused": "only 999 impostor pairs: FAR 1e-2 needs at least 1,000 (10 / FAR) "
                                                  "for its threshold to rest on 10 false accepts"}
    assert "only 999 impostor pairs: FAR 1e-3 needs at least 10,000" in entry["at_far"]["1e-3"]["refused"]
    assert "threshold" in op.from_scores(rng.random(5), rng.random(1000), ("1e-2",))["at_far"]["1e-2"]
    assert op.refusal("1e-4", 99_999) is not None and op.refusal("1e-4", 100_000) is None


def test_no_genuine_or_no_impostor_pair_is_an_error():
    with pytest.raises(op.OperatingPointError, match="0 genuine and 3 impostor pairs"):
        op.from_scores([], [0.1, 0.2, 0.3])


def test_far_keys():
    assert op.far_key(0.001) == op.far_key("1e-3") == op.far_key("0.001") == "1e-3"
    assert op.far_key(0.05) == "0.05"
    for bad in ("often", 0, 1, -1e-3):
        with pytest.raises(op.OperatingPointError, match="FAR"):
            op.far_key(bad)


def test_image_to_image_pairs_every_two_images_once_and_never_an_image_with_itself():
    emb = np.eye(6, dtype=np.float32)
    emb[1] = emb[0]  # identity 0's two images are the same vector (score 1); every other pair scores 0
    pid = np.array([0, 0, 1, 1, 2, 2])
    entry = op.image_to_image(emb, pid, ("1e-2",))
    # 15 pairs, none of an image with itself
    assert (entry["genuine"], entry["impostor"], entry["images"]) == (3, 12, 6)
    scores = (emb @ emb.T)[np.triu_indices(6, 1)]
    same = (pid[:, None] == pid[None, :])[np.triu_indices(6, 1)]
    assert entry == op.from_scores(scores[same], scores[~same], ("1e-2",), images=6)


def test_image_to_image_keeps_whole_identities_under_the_cap():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    entry = op.image_to_image(emb, np.repeat(np.arange(10), 4), ("1e-2",), max_images=10)
    assert entry["images"] == 8 and entry["genuine"] == 2 * 6  # two identities of four images


def test_text_to_image_equals_the_score_lists_of_every_caption_image_pair():
    rng = np.random.default_rng(2)
    img, cap = rng.normal(size=(30, 8)), rng.normal(size=(60, 8))
    img, cap = [(x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32) for x in (img, cap)]
    ipid, cpid = np.arange(30) // 3, np.arange(60) // 6
    scores = cap @ img.T
    same = cpid[:, None] == ipid[None, :]
    streamed = op.text_to_image(img, ipid, cap, cpid, ("1e-2",), device="cpu")
    assert streamed == op.from_scores(scores[same], scores[~same], ("1e-2",), images=30)
    assert streamed["impostor"] == 1620 and "threshold" in streamed["at_far"]["1e-2"]


def test_the_teacher_s_report_carries_its_operating_points(trained_setup, tmp_path):
    summary = evaluate_labels.main(["--embedding_path", str(trained_setup[1]), "--top-k", "0", "--json",
                                    str(tmp_path / "t.json")])
    points = summary["operating_points"]
    entry = points["text_to_image"]["teacher"]["teacher"]
    assert points["split"] == "eval" and (entry["genuine"], entry["impostor"]) == (16, 16)
    assert "only 16 impostor pairs" in entry["at_far"]["1e-2"]["refused"]
    assert points["image_to_image"]["teacher"]["teacher"]["impostor"] == 4
    assert op.read_calibration(tmp_path / "t.json") == (points, None)  # a report serves as a calibration file


def test_false_accepts_counts_what_a_threshold_lets_through_as_it_was_measured():
    rng = np.random.default_rng(3)
    img, cap = rng.normal(size=(60, 8)), rng.normal(size=(80, 8))
    img, cap = [(x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32) for x in (img, cap)]
    ipid, cpid = np.arange(60) // 4, np.arange(80) // 8
    at = op.text_to_image(img, ipid, cap, cpid, ("1e-2",), device="cpu")["at_far"]["1e-2"]
    assert op.false_accepts(img, ipid, cap, cpid, [at["threshold"], None], strip=7) == ([at["false_accepts"], 0], 4480)
    same = op.image_to_image(img, ipid, ("1e-2",))
    assert op.false_accepts(img, ipid, img, ipid, [same["at_far"]["1e-2"]["threshold"]], same_set=True, strip=5) == (
        [same["at_far"]["1e-2"]["false_accepts"]], same["impostor"])
