"""`demo.py --adapt` on a tiny teacher and a small second site: the demo's students fine-tuned with the site's
unlabeled crops and captions, exported and scored at both sets; a second run skips what is there."""
import json

from person.cli import demo
from person.data.records import load_records
from person.demo import pipeline, site_data
from person.demo.adapt import ADAPT_RUN
from person.demo.recipe import DEMO_TRAINING
from person.demo.synthetic import SECOND_SITE
from person.models.checkpoint import load_checkpoint
from person.teacher.store import open_unlabeled
from tests.teacher.tiny_teachers import build_tiny_siglip


def test_adapt_fine_tunes_the_demo_students_on_the_sites_unlabeled_rows(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "DEMO_TRAINING", DEMO_TRAINING | dict(max_iters=2, eval_every=0, save_every=2))
    monkeypatch.setattr(site_data, "SECOND_SITE", SECOND_SITE | dict(n_ids=30))
    teacher = build_tiny_siglip(tmp_path / "teacher")
    argv = ["--workdir", str(tmp_path / "w"), "--ids", "80", "--teacher", str(teacher), "--adapt", "--max-iters", "3"]
    figures = demo.main(argv)
    out = capsys.readouterr().out
    assert set(figures) == {"second site", "demo set", "export_dir"}
    for name in ("second site", "demo set"):
        assert set(figures[name]) == {"teacher", "demo students", "adapted students"}
    saved = json.loads((tmp_path / "w" / "reports" / "adapt.json").read_text())
    assert saved["second site"]["adapted students"]["eer"] == figures["second site"]["adapted students"]["eer"]
    assert "Second site, held-out identities" in out and "adapted students" in out

    adapted = next((tmp_path / "w" / "logs").glob(f"*/{ADAPT_RUN}"))
    state = load_checkpoint(adapted / "3.pt")
    students = next((tmp_path / "w" / "logs").glob("*/demo-*")) / "2.pt"
    assert state["options"]["init"] == [str(students)] and state["iteration"] == 3
    site = load_records(tmp_path / "w" / "second" / "synthpedes-dataset.json")
    crops, captions = (open_unlabeled(p) for p in state["options"]["unlabeled"])
    assert crops.num_images == len(site.split_indices("train"))  # the site's training identities only
    assert captions.num_captions > 0 and captions.num_images == 0
    card = json.loads((tmp_path / "w" / "export-second-site" / "model.json").read_text())
    assert card["checkpoint"]["iteration"] == 3

    demo.main(argv)
    again = capsys.readouterr().out
    for step in ("[data]", "[extract]", "[train]", "[export]"):
        assert any(line.startswith(step) and "skipped" in line for line in again.splitlines()), step
