"""How much weaker the demo teacher is at the second site (person.demo.synthetic.sites) than on the demo set.

Draws the demo set (person.demo.prepare.demo_set) and the frozen second site (SECOND_SITE), extracts the shipped
demo teacher's embeddings of both (person.demo.prepare.teacher_store), and prints the teacher's EER, Rank-1 and
mAP on each set's held-out identities, beside the attribute oracle's (a model that reads every named attribute
perfectly: the ceiling the captions' own ambiguity leaves). Each step is skipped when its output is already in
WORKDIR (delete WORKDIR/second after changing the site's code).

Usage: python bench/site.py [--workdir site]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from person.data.records import load_records
from person.demo.prepare import demo_set, teacher_store
from person.demo.recipe import DEMO_IDS
from person.demo.site_data import second_site
from person.demo.synthetic.oracle import oracle_scores, read_truth
from person.demo.synthetic.writer import TRUTH_NAME
from person.demo.teacher import DEMO_TEACHER
from person.eval.evaluate import teacher_evaluation
from person.eval.metrics import evaluate_from_scores
from person.teacher.store import open_store


def held_out_figures(json_path: Path, store: Path) -> dict:
    """The teacher's figures from its store and the oracle's on the same held-out images and captions."""
    with open_store(store) as s:
        teacher = teacher_evaluation(s)[0].to_dict()
    rows = load_records(json_path).split_indices("eval")
    scores, image_pid, caption_pid, _ = oracle_scores(read_truth(json_path.parent / TRUTH_NAME), rows)
    return {"ids": len(set(image_pid.tolist())), "images": len(rows), "captions": len(caption_pid),
            "teacher": teacher, "oracle": evaluate_from_scores(scores, image_pid, caption_pid).to_dict()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("site"), help="the two sets and their stores")
    args = p.parse_args()
    rows = {}
    for name, json_path in (("demo set", demo_set(args.workdir / "demo", DEMO_IDS)),
                            ("second site", second_site(args.workdir / "second"))):
        store = teacher_store(json_path.parent / "embeddings", json_path, DEMO_TEACHER)
        rows[name] = held_out_figures(json_path, store)
    print("\nThe demo teacher on each set's held-out identities (%):\n")
    print("| set | ids / images / captions | teacher EER | teacher Rank-1 | teacher mAP | oracle EER | oracle Rank-1 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        t, o = r["teacher"], r["oracle"]
        print(f"| {name} | {r['ids']} / {r['images']} / {r['captions']} | {100 * t['eer']:.2f} | "
              f"{100 * t['rank1']:.2f} | {100 * t['mAP']:.2f} | {100 * o['eer']:.2f} | {100 * o['rank1']:.2f} |")
    demo, second = rows["demo set"]["teacher"], rows["second site"]["teacher"]
    print(f"\nAt the second site the teacher's EER is {100 * (second['eer'] - demo['eer']):+.2f} points and its "
          f"Rank-1 {100 * (second['rank1'] - demo['rank1']):+.2f} points against the demo set.")


if __name__ == "__main__":
    main()
