"""The second-site benchmark (bench/domain.py): the demo students adapted to the frozen second site, a new user's
cameras (person.demo.synthetic.sites), from its unlabeled crops and captions or from some of its labels.

Every row starts from the demo students (`--init`), keeps the demo set in training, and is scored on the second
site's 100 held-out identities and on the demo set's own held-out identities (so adapting visibly costs nothing at
home, or says what it costs). Only the site's training identities feed training (person.demo.site_data). A row
without site labels is scored at its last checkpoint: nothing at the site could choose another. A row with labels
chooses best.pt on 50 validation identities of the site's (never on the reported ones).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from person.demo.recipe import ADAPT_TRAINING, DEMO_TRAINING, TRACK_TERMS
from person.demo.rows import CASES, Row

# The label terms: the memory's contrastive terms on the labelled identities, which carry the students past a
# teacher that is weak where the labels are (BENCHMARKS.md, "Your own cameras": with and without them, and + sdm).
LABEL_TERMS: dict[str, Any] = dict(id_img_weight=0.3, id_cap_weight=0.3, id_img_cap_weight=0.3, id_margin=0.2,
                                   memory_size=2048, memory_warmup=100)
SITE_VAL_IDS = 50  # the site's training identities set aside to choose label rows' checkpoints on


@dataclass(frozen=True)
class DomainRow:
    title: str
    trained_on: str
    unlabeled: tuple[str, ...] = ()  # "crops", "tracked-crops", "captions" (none: the demo set alone)
    site_ids: int | None | str = "none"  # "none": no site labels; None: all of them
    extra: tuple[tuple[str, Any], ...] = ()
    staged: bool = False  # the three-stage order: the image student alone, the text one alone, then both (a third each)

    @property
    def labelled(self) -> bool:
        return self.site_ids != "none"


ROWS: dict[str, DomainRow] = {
    "demo-longer": DomainRow("demo set only, trained longer", "the demo set only, as long as the rows below (a "
                             "control: what more training alone does)"),
    "crops": DomainRow("+ crops", "the demo set + the site's unlabeled crops (no identities, no captions)",
                       unlabeled=("crops",)),
    "crops-captions": DomainRow("+ crops and captions", "+ the site's unlabeled captions",
                                unlabeled=("crops", "captions")),
    "crops-captions-tracks": DomainRow("+ crops with tracks and captions", "as + crops and captions, each detection "
                                       "track's crops one weak identity (id_img 0.3, memory)",
                                       unlabeled=("tracked-crops", "captions"),
                                       extra=tuple(TRACK_TERMS.items())),
    "crops-captions-id": DomainRow("+ crops and captions, id_img", "as + crops and captions, with the identity term "
                                   "of the row above on the demo set's labels only (its control)",
                                   unlabeled=("crops", "captions"),
                                   extra=tuple((k, v) for k, v in TRACK_TERMS.items() if k != "unlabeled_tracks")),
    "labels-50": DomainRow("labels 50", "the demo set + 50 labelled site identities", site_ids=50,
                           extra=tuple(LABEL_TERMS.items())),
    "labels-200": DomainRow("labels 200", "the demo set + 200 labelled site identities", site_ids=200,
                            extra=tuple(LABEL_TERMS.items())),
    "labels-all": DomainRow("labels all", "the demo set + all 850 labelled site identities", site_ids=None,
                            extra=tuple(LABEL_TERMS.items())),
    # What carries the label rows past the teacher (part of the table, under the rows above):
    "labels-all-plain": DomainRow("labels all, no memory terms", "as labels all, with the demo recipe's own terms "
                                  "only (d_pos, s_neg 0.1)", site_ids=None),
    "labels-50-sdm": DomainRow("labels 50, + sdm 0.1", "as labels 50, + IRRA's sdm at 0.1", site_ids=50,
                               extra=tuple((LABEL_TERMS | dict(sdm_weight=0.1)).items())),
    "labels-all-sdm": DomainRow("labels all, + sdm 0.1", "as labels all, + IRRA's sdm at 0.1", site_ids=None,
                                extra=tuple((LABEL_TERMS | dict(sdm_weight=0.1)).items())),
    "labels-all-sdm-0.03": DomainRow("labels all, + sdm 0.03", "as labels all, + IRRA's sdm at 0.03", site_ids=None,
                                     extra=tuple((LABEL_TERMS | dict(sdm_weight=0.03)).items())),
    "labels-all-sdm-staged": DomainRow("labels all, + sdm 0.03, three stages", "as labels all + sdm 0.03, in the "
                                       "three-stage order: image student alone, text alone, then both (200 "
                                       "iterations each)", site_ids=None, staged=True,
                                       extra=tuple((LABEL_TERMS | dict(sdm_weight=0.03)).items())),
    "labels-all-sdm-cls": DomainRow("labels all, + sdm 0.03 + identity classifier 0.1", "as labels all + sdm 0.03, "
                                    "+ a cosine identity classifier (IRRA's ID loss) at 0.1", site_ids=None,
                                    extra=tuple((LABEL_TERMS | dict(sdm_weight=0.03, id_cls_weight=0.1)).items())),
}


@dataclass
class Inputs:
    """The stores and the starting checkpoint every row needs (bench/domain.py prepares them)."""

    demo_store: Path
    site_store: Path
    demo_checkpoint: Path
    unlabeled: dict[str, Path]  # "crops", "captions" -> unlabeled store
    mixes: dict[int | None, Path]  # site_ids -> labelled mix store


def domain_row(name: str, seed: int, inputs: Inputs, workdir: Path, iters: int) -> Row:
    """The training run of one row and seed, scored on the site's and the demo set's held-out identities."""
    row = ROWS[name]
    options = DEMO_TRAINING | ADAPT_TRAINING | dict(row.extra) | dict(
        max_iters=iters, seed=seed, init=[str(inputs.demo_checkpoint)], log_dir=str((workdir / "logs").resolve()),
        run_name=f"{name}-s{seed}", overwrite=True, keep_last=1)
    if row.labelled:
        options |= dict(embedding_path=str(inputs.mixes[row.site_ids]), eval_every=max(1, iters // 4))
    else:
        options |= dict(embedding_path=str(inputs.demo_store), eval_every=0,
                        unlabeled=[str(inputs.unlabeled[u]) for u in row.unlabeled] or None)
    stages: tuple[dict[str, Any], ...] = ()
    if row.staged:  # each student alone from the demo's (the teacher's embeddings stand in for the other), then both
        third = max(1, iters // 3)
        stages = tuple(options | dict(train=student, max_iters=third, run_name=f"{name}-s{seed}-{student}")
                       for student in ("image", "text"))
        options |= dict(max_iters=iters - 2 * third, init=["{stage0}", "{stage1}"])
    return Row(f"{name}/s{seed}/{iters}", options, {"site": str(inputs.site_store), "demo": str(inputs.demo_store)},
               checkpoint="best" if row.labelled else "last", stages=stages)


def _cell(values: list[float], scale: float = 100) -> str:
    mean = statistics.fmean(values) * scale
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ±{(max(values) - min(values)) * scale / 2:.2f}"


def _ratio(values: list[float], reference: float) -> str:
    return f"{statistics.fmean(values) / reference:.2f}x"


def domain_table(results: dict[str, dict], names: list[str], teacher: dict[str, dict],
                 students: dict[str, dict[str, dict]]) -> str:
    """Markdown: the teacher, the demo students and each row and length (seeds averaged, ± half their range) on the
    site's held-out identities (the pair; the two mixed cases' EER / Rank-1; ratios to the teacher) and the demo
    set's. `teacher`: set label -> the teacher's metrics; `students`: set label -> case -> the demo students'."""
    t = teacher["site"]
    head = ("| row | trained on | iterations | EER % | Rank-1 % | mAP % | EER / Rank-1 vs teacher | "
            "s.text>t.images EER / R1 % | t.text>s.images EER / R1 % | demo set EER / R1 % | train min | seeds |")
    lines = [head, "|" + "---|" * 12,
             f"| the teacher | — | | {100 * t['eer']:.2f} | {100 * t['rank1']:.2f} | {100 * t['mAP']:.2f} | 1.00x / "
             f"1.00x | | | {100 * teacher['demo']['eer']:.2f} / {100 * teacher['demo']['rank1']:.2f} | | |"]
    groups: dict[tuple[str, str], list[dict]] = {("demo-students", ""): [{"scores": students, "minutes": None}]}
    lengths = sorted({k.split("/")[2] for k in results}, key=int)
    for name in names:
        for iters in lengths:
            runs = [r for k, r in sorted(results.items()) if k.split("/")[0] == name and k.split("/")[2] == iters]
            if runs:
                groups[name, iters] = runs
    for (name, iters), runs in groups.items():
        title, trained_on = (("demo-set students", "the demo set only (the demo's run)") if name == "demo-students"
                             else (ROWS[name].title, ROWS[name].trained_on))
        site = {case: {m: [r["scores"]["site"][case][m] for r in runs] for m in ("eer", "rank1", "mAP")}
                for case, _ in CASES}
        demo = {m: [r["scores"]["demo"]["student"][m] for r in runs] for m in ("eer", "rank1")}
        pair, st, ts = (site[c] for c, _ in CASES)
        minutes = [r["minutes"] for r in runs if r["minutes"] is not None]
        threads = "/".join(sorted({str(r["threads"]) for r in runs if r["minutes"] is not None}))
        lines.append(f"| {title} | {trained_on} | {iters} | {_cell(pair['eer'])} | {_cell(pair['rank1'])} | "
                     f"{_cell(pair['mAP'])} | {_ratio(pair['eer'], t['eer'])} / {_ratio(pair['rank1'], t['rank1'])} | "
                     f"{_cell(st['eer'])} / {_cell(st['rank1'])} | {_cell(ts['eer'])} / {_cell(ts['rank1'])} | "
                     f"{_cell(demo['eer'])} / {_cell(demo['rank1'])} | "
                     f"{f'{_cell(minutes, 1)} ({threads} thr.)' if minutes else ''} | {len(runs) if minutes else ''} |")
    return "\n".join(lines)
