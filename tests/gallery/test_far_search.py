"""Search with a FAR: exactly the hits with score >= the threshold of the encoder pair in use, none (with a note)
when no hit reaches it, refusals that name what exists, the pair's own thresholds for a student text model on a
teacher-enrolled gallery, and the sources' order (--calibration FILE, the gallery's calibration.json, the card)."""
import shutil

import numpy as np
import pytest

from person.cli import search as api
from person.eval.operating_points import TEACHER_VARIANT, write_calibration
from person.files import sha256_file
from person.gallery import sources, store
from person.gallery.encoders import ExportEncoder
from person.gallery.enroll import enroll
from person.gallery.manifest import GalleryError, read_manifest
from person.gallery.search import Searcher
from person.gallery.thresholds import GALLERY_CALIBRATION, pair_of

QUERY = "a man in a red coat"


@pytest.fixture(scope="module")
def gallery(plain_export, trained_setup, tmp_path_factory):
    """The tiny set's 32 images enrolled with the plain export, and its photos."""
    root = tmp_path_factory.mktemp("far")
    shutil.copytree(trained_setup[0].parent / "Part1", root / "photos")
    enroll(root / "g", ExportEncoder(plain_export), sources.image_dir(root / "photos"), workers=0)
    return root / "g"


def document(space, entries):
    """A calibration document with `entries` {(direction, pair, variant): {far: threshold, or a refusal str}}."""
    doc = {"split": "eval", "store": {"path": "site.h5", "fingerprint": None}, "space": space, "rule": "",
           "fars": ["1e-2", "1e-3", "1e-4"], "text_to_image": {}, "image_to_image": {}}
    for (direction, pair, variant), at_far in entries.items():
        doc[direction].setdefault(pair, {})[variant] = {"genuine": 10, "impostor": 2000, "images": 8, "at_far": {
            far: {"refused": t} if isinstance(t, str) else {"threshold": t, "false_accepts": 0, "allowed": 20, "frr": 0}
            for far, t in at_far.items()}}
    return doc


def calibrate(path, plain_export, gallery_dir, entries, sha=None):
    write_calibration(path, document(read_manifest(gallery_dir).space, entries),
                      {"path": str(plain_export), "card_sha256": sha or sha256_file(plain_export / "model.json")})
    return path


def test_far_returns_exactly_the_hits_at_or_above_the_threshold(plain_export, gallery, tmp_path):
    searcher = Searcher(gallery, ExportEncoder(plain_export))
    [everything] = searcher.search([QUERY], k=32)
    threshold = everything.hits[4].score  # the fifth hit's score: hits equal to it pass (score >= threshold)
    path = calibrate(tmp_path / "c.json", plain_export, gallery, {
        ("text_to_image", "student", "fp32"): {"1e-2": threshold, "1e-3": "only 2,000 impostor pairs"}})
    searcher = Searcher(gallery, ExportEncoder(plain_export), calibration=path)
    [all_hits] = searcher.search([QUERY], k=32)
    [result] = searcher.search([QUERY], k=32, far=0.01)
    want = [h for h in all_hits.hits if h.score >= threshold]
    assert [(h.uid, h.score) for h in result.hits] == [(h.uid, h.score) for h in want] and len(want) >= 5
    assert [h.rank for h in result.hits] == list(range(1, len(want) + 1))
    assert (result.far, result.threshold, result.operating_points) == ("1e-2", threshold, {"1e-2": threshold})
    assert str(path) in result.calibration and "text_to_image student (fp32)" in result.calibration
    assert [h.passes for h in all_hits.hits] == [["1e-2"] if h.score >= threshold else [] for h in all_hits.hits]
    [top2] = searcher.search([QUERY], k=2, far="1e-2")  # k still caps what comes back
    assert [h.uid for h in top2.hits] == [h.uid for h in want[:2]]


def test_a_query_no_hit_reaches_returns_none_with_a_note(plain_export, gallery, tmp_path):
    path = calibrate(tmp_path / "c.json", plain_export, gallery, {("text_to_image", "student", "fp32"): {"1e-2": 1.5}})
    [result] = Searcher(gallery, ExportEncoder(plain_export), calibration=path).search([QUERY], k=5, far="1e-2")
    assert result.hits == [] and result.threshold == 1.5
    assert result.note.startswith("no hit reaches FAR 1e-2: its threshold is 1.5000")
    [nothing] = Searcher(gallery, ExportEncoder(plain_export), calibration=calibrate(
        tmp_path / "d.json", plain_export, gallery, {("text_to_image", "student", "fp32"): {"1e-2": None}})
    ).search([QUERY], k=5, far="1e-2")
    assert nothing.hits == [] and "its threshold accepts nothing" in nothing.note


def test_a_far_without_a_threshold_is_refused_naming_what_exists(plain_export, gallery, tmp_path):
    path = calibrate(tmp_path / "c.json", plain_export, gallery, {
        ("text_to_image", "student", "fp32"): {"1e-2": 0.1, "1e-3": "only 2,000 impostor pairs"}})
    searcher = Searcher(gallery, ExportEncoder(plain_export), calibration=path)
    with pytest.raises(GalleryError, match=r"no threshold at FAR 1e-3 for text_to_image student \(fp32\) from "
                                           r".*c.json: refused when measured \(only 2,000 impostor pairs\); "
                                           r"thresholds that hold: 1e-2"):
        searcher.search([QUERY], far=1e-3)
    with pytest.raises(GalleryError, match="no threshold at FAR 1e-4 .*not measured; thresholds that hold: 1e-2"):
        searcher.search([QUERY], far="1e-4")
    with pytest.raises(GalleryError, match="FAR 'often': give a rate"):
        searcher.search([QUERY], far="often")


def test_without_a_file_the_card_s_own_points_apply(plain_export, gallery):
    searcher = Searcher(gallery, ExportEncoder(plain_export))
    [result] = searcher.search([QUERY], k=3)
    assert result.operating_points == {} and "the card of" in result.calibration  # all refused on the tiny split
    assert all(h.passes == [] for h in result.hits)
    with pytest.raises(GalleryError, match=r"refused when measured \(only 16 impostor pairs: FAR 1e-2 needs at least "
                                           r"1,000"):
        searcher.search([QUERY], far="1e-2")


def test_the_file_in_the_gallery_applies_and_a_given_one_wins(plain_export, gallery, tmp_path):
    key = ("text_to_image", "student", "fp32")
    own = calibrate(gallery / GALLERY_CALIBRATION, plain_export, gallery, {key: {"1e-2": 0.2}})
    try:
        assert Searcher(gallery, ExportEncoder(plain_export)).search([QUERY], far="1e-2")[0].threshold == 0.2
        given = calibrate(tmp_path / "c.json", plain_export, gallery, {key: {"1e-2": 0.3}})
        assert Searcher(gallery, ExportEncoder(plain_export), calibration=given).search(
            [QUERY], far="1e-2")[0].threshold == 0.3
        # A file measured with another export does not apply to this one's students: the next source does.
        other = calibrate(tmp_path / "o.json", plain_export, gallery, {key: {"1e-2": 0.4}}, sha="0" * 64)
        assert Searcher(gallery, ExportEncoder(plain_export), calibration=other).search(
            [QUERY], far="1e-2")[0].threshold == 0.2
    finally:
        own.unlink()


def test_a_student_text_model_on_a_teacher_gallery_uses_its_own_pair(plain_export, gallery, tmp_path):
    encoder = ExportEncoder(plain_export)
    teacher = tmp_path / "teacher"
    store.create(teacher, {"kind": "teacher", "name": "made-up", "config_hash": "0" * 64}, dict(encoder.space), 16,
                 read_manifest(gallery).image_root)
    opened = store.Gallery.open(gallery)
    store.append(teacher, np.asarray(opened.features()), opened.rows)
    path = calibrate(tmp_path / "c.json", plain_export, gallery, {
        ("text_to_image", "student", "fp32"): {"1e-2": 0.1},
        ("text_to_image", "student_text_teacher_image", "fp32"): {"1e-2": 0.25},
        ("text_to_image", "teacher", TEACHER_VARIANT): {"1e-2": 0.5}})
    [result] = Searcher(teacher, encoder, calibration=path).search([QUERY], k=32, far="1e-2")
    assert result.threshold == 0.25 and "student_text_teacher_image (fp32)" in result.calibration
    assert all(h.score >= 0.25 for h in result.hits)
    # Without the file the card's own measurement of that pair decides: refused on the tiny split, with its count.
    with pytest.raises(GalleryError, match=r"text_to_image student_text_teacher_image \(fp32\) from the card of .*"
                                           r"only 16 impostor pairs"):
        Searcher(teacher, encoder).search([QUERY], far="1e-2")
    # Photos of a student against a teacher gallery: a pair no source measured, refused naming what exists.
    with pytest.raises(GalleryError, match=r"no image_to_image thresholds for student_image_teacher_image \(fp32\); "
                                           r"student \(fp32\) exist"):
        Searcher(teacher, encoder, encoder).search_images([np.zeros((64, 32, 3), np.uint8)], far="1e-2")


def test_pairs_of_two_exports_must_be_one_export_and_variant():
    a = {"kind": "export", "card_sha256": "a" * 64, "variant": "fp32"}
    assert pair_of("text_to_image", a, a) == ("student", "fp32", "a" * 64)
    assert pair_of("image_to_image", {"kind": "teacher"}, {"kind": "teacher"}) == ("teacher", TEACHER_VARIANT, None)
    with pytest.raises(GalleryError, match="thresholds hold for one export and variant"):
        pair_of("text_to_image", a, {**a, "variant": "int8"})


def test_similar_rows_search_image_to_image_with_the_gallery_s_encoder(plain_export, gallery, tmp_path):
    path = calibrate(tmp_path / "c.json", plain_export, gallery, {("image_to_image", "student", "fp32"): {"1e-2": 0.5}})
    searcher = Searcher(gallery, ExportEncoder(plain_export), calibration=path)
    vector = np.asarray(searcher.gallery.features()[:1], np.float32)
    [result] = searcher.search_vectors(vector, ["person #0"], k=32, far="1e-2")
    assert result.threshold == 0.5 and result.hits[0].score >= 0.99 and all(h.score >= 0.5 for h in result.hits)


def test_the_command_prints_the_threshold_and_what_each_hit_passes(plain_export, gallery, tmp_path, capsys):
    path = calibrate(tmp_path / "c.json", plain_export, gallery, {("text_to_image", "student", "fp32"): {"1e-2": -1.0}})
    [result] = api.main(["--gallery", str(gallery), "--text-model", str(plain_export), "--calibration", str(path),
                         "--queries", QUERY, "--far", "1e-2", "--top-n", "3"])
    out = capsys.readouterr().out
    assert len(result.hits) == 3 and "threshold: -1.0 at FAR 1e-2" in out and out.count("passes FAR 1e-2") == 3
