"""The quick start's main command, end to end on a tiny teacher: every step runs, writes its report, and a
second run skips what is there."""
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from person.cli import demo
from person.demo import pipeline
from person.demo.recipe import DEMO_TRAINING
from person.eval.metrics import FAR_LEVELS
from tests.servers import free_port, read_until_ready
from tests.teacher.tiny_teachers import build_tiny_siglip

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"eer", "eer_threshold", "frr_at_far", "threshold_at_far", "rank1", "rank5", "rank10", "mAP", "mINP",
        "positives", "negatives"}


def test_demo_runs_end_to_end_and_resumes_by_skipping(tmp_path, capsys, monkeypatch):
    teacher = build_tiny_siglip(tmp_path / "teacher")
    argv = ["--workdir", str(tmp_path / "w"), "--ids", "80", "--teacher", str(teacher), "--max-iters", "2"]
    first = demo.main(argv)
    out = capsys.readouterr().out
    teacher_json = json.loads((tmp_path / "w" / "reports" / "teacher.json").read_text())
    student_json = json.loads((tmp_path / "w" / "reports" / "student.json").read_text())
    assert KEYS <= set(teacher_json) and KEYS <= set(student_json)
    assert set(student_json["frr_at_far"]) == set(FAR_LEVELS)
    assert student_json["case"] == "student" and student_json["iteration"] == 2
    assert set(student_json["cases"]) == {"teacher", "student_text_teacher_image", "teacher_text_student_image"}
    # The teacher's figures come from its store alone, and the students' report scores the same pairs.
    assert student_json["cases"]["teacher"]["eer"] == teacher_json["eer"] == first["teacher"]["eer"]
    assert student_json["positives"] == teacher_json["positives"]
    assert "s.text>t.images" in out and (tmp_path / "w" / "reports" / "student_roc.png").exists()
    # The export: fp32 and int8 beside the checkpoint; fp32 scores as the checkpoint does.
    card = json.loads((tmp_path / "w" / "export" / "model.json").read_text())
    assert card["checkpoint"]["iteration"] == 2 and set(card["image"]["variants"]) == {"int8"}
    fp32 = json.loads((tmp_path / "w" / "reports" / "export_fp32.json").read_text())
    assert abs(fp32["eer"] - student_json["eer"]) <= 0.0005 and fp32["variant"] == "fp32"
    assert set(first["export"]) == {"onnx fp32", "onnx int8"} and "onnx int8" in out
    # Search: both galleries enrolled, example queries printed, the CLI path's Rank-1 equal to evaluation's.
    search = json.loads((tmp_path / "w" / "reports" / "search.json").read_text())
    assert set(search) == {"student", "teacher"} and search["student"]["rows"] == search["teacher"]["rows"] > 0
    assert search["student"]["rank1"] == pytest.approx(search["student"]["evaluation_rank1"], abs=1e-12)
    assert sum("first is right" in line or "first is wrong" in line for line in out.splitlines()) == 6

    demo.main(argv)
    again = capsys.readouterr().out
    for step in ("[data]", "[extract]", "[train]", "[export]"):
        assert any(line.startswith(step) and "skipped" in line for line in again.splitlines()), step
    assert sum(line.startswith("[search]") and " 0 added" in line for line in again.splitlines()) == 2

    # A gallery of an older format (an older checkout's workdir) is enrolled anew, not refused.
    manifest = tmp_path / "w" / "galleries" / "student" / "gallery.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 1}))
    demo.main(argv)
    third = capsys.readouterr().out
    assert "gallery format version 1 (made before images and segments were recorded by content hash), this code " \
           "reads version 2; enrolling it anew" in third
    def figures(report):  # what the galleries found, not how long they took
        return {name: {k: v for k, v in f.items() if k != "ms_per_query"} for name, f in report.items()}
    assert figures(json.loads((tmp_path / "w" / "reports" / "search.json").read_text())) == figures(search)

    # --serve: every step skipped, then the search page on the student gallery answers a query with the token the
    # demo printed once uvicorn says it listens (its log, on stderr, is read here merged into stdout); not without.
    port = free_port()
    server = subprocess.Popen([sys.executable, "demo.py", *argv, "--serve", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = read_until_ready(server, ["Uvicorn running on"], timeout=300)
        token = re.search(r"Authorization: Bearer (pst_\S+)", printed).group(1)
        search = f"http://127.0.0.1:{port}/api/search?q=a+man+in+red&k=3"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(search, timeout=60)
        asked = urllib.request.Request(search, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(asked, timeout=60) as r:
            answer = json.loads(r.read())
        assert len(answer["results"][0]["hits"]) == 3
    finally:
        server.kill()
        server.communicate()
    assert f"[serve] the search page: http://127.0.0.1:{port}/" in printed
    assert re.search(r"\[serve\] sign in as demo, password \S{16} \(made for this session\)", printed), printed

    # A workdir trained with another recipe (an older checkout's) is trained anew, not skipped as this one.
    recipe_lr = DEMO_TRAINING["lr"]
    monkeypatch.setitem(DEMO_TRAINING, "lr", recipe_lr / 4)
    store = next((tmp_path / "w" / "embeddings").glob("*.h5"))
    checkpoint = pipeline.step_train(tmp_path / "w", store, {"max_iters": 2, "eval_every": 0, "save_every": 2})
    out = capsys.readouterr().out
    assert f"holds a run of another recipe (lr {recipe_lr} -> {recipe_lr / 4}); training anew" in out
    assert "[train] 2 iterations" in out
    assert json.loads((checkpoint.parent / "options.json").read_text())["lr"] == recipe_lr / 4


def test_too_few_identities_for_the_demo_batches_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"training identities cannot fill the demo's batches of 64 identities: "
                                         r"draw more \(demo.py --ids N --workdir NEW_FOLDER\)"):
        demo.main(["--workdir", str(tmp_path / "w"), "--ids", "20", "--max-iters", "1"])
