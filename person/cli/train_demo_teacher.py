"""Train the shipped demo teacher (person/demo/teacher/demo_teacher/) and report it on the demo set's held-out identities.

    python tools/train_demo_teacher.py --out person/demo/teacher/demo_teacher [--steps 14000 | --minutes M] [--work DIR]

The defaults are the shipped teacher's recipe (person/demo/teacher/demo_teacher/README.md).

Draws the demo set, a validation set and the teacher's own training set into --work, trains a small
SigLIP from scratch (the model: person/demo/teacher/model.py; the recipe: person/demo/teacher/recipe.py),
saves it as a Hugging Face directory with a model card, and prints its figures beside the attribute
oracle's. Every DemoTeacherConfig field is an option.
"""
from __future__ import annotations

import os

# The machine is shared: OpenMP threads that spin while waiting for a busy core made steps ~5x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from person import files
from person.demo.teacher.model import DemoTeacherConfig
from person.demo.teacher.recipe import make_demo_teacher, model_card
from person.options import add_options, from_namespace, given_options, run_command


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: given_options must see --steps as written, to tell it apart from --minutes.
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the drawn sets (reused by a rerun); default: a temporary folder")
    p.add_argument("--minutes", type=float, default=None, help="size the run to this many minutes (not with --steps)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    add_options(p, DemoTeacherConfig)
    return p


def _report(r: dict) -> str:
    lines = [f"held out: {r['identities']} identities, {r['images']} images, {r['captions']} captions of the "
             f"{r['dataset']}",
             f"{'':18}{'EER':>8}{'Rank-1':>9}{'Rank-5':>9}{'mAP':>8}"]
    for part, title in ((r, "all captions"), (r["short_captions"], "short captions"),
                        (r["long_captions"], "long captions")):
        lines.append(f"{title} ({part['captions']}):")
        for name in ("model", "oracle") if part["captions"] else ():
            f = part[name]
            lines.append(f"  {'demo teacher' if name == 'model' else 'attribute oracle':16}{100 * f['eer']:7.1f}%"
                         f"{100 * f['rank1']:8.1f}%{100 * f['rank5']:8.1f}%{100 * f['mAP']:7.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if "steps" in given_options(parser, argv) and args.minutes is not None:
            raise ValueError("give --steps or --minutes, not both")
        if args.minutes is not None and args.minutes <= 0:
            raise ValueError(f"--minutes {args.minutes}: must be > 0")
        config = from_namespace(DemoTeacherConfig, args)
        config.check()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    with tempfile.TemporaryDirectory() as tmp:
        report = make_demo_teacher(args.out, args.work or tmp, config, minutes=args.minutes)
    command = "python tools/train_demo_teacher.py " + shlex.join(argv)
    files.write_text(args.out / "README.md", model_card(report, command))
    print(_report(report))
    print(f"{report['config']['steps']} steps in {report['train_minutes']} minutes -> {args.out}")
    return 0


def run() -> None:
    """`person-demo-teacher`, and the script at the top of the repository."""
    run_command(main)
