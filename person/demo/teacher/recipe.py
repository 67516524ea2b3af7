"""How the shipped demo teacher is made: the sets drawn, the whole training job, and its model card.

Recipe (what a prototype measured: ARCHITECTURE.md, "The demo teacher"): a small model; **partial captions** (a
share of the rows name only 1-3 attributes) with a label-matrix sigmoid loss in which every image that
has all the attributes a caption names is a positive, positives weighted 1/P per row; logit scale and
bias start at log 10 and -10. Its parts: the data and the held-out identities (`data`), the loss (`loss`),
the loop (`training`), the figures (`evaluation`); the model is `model`, what the loader reads like any
user's teacher.

It sits above training and evaluation: it uses the schedule and optimiser (person.train) and the metrics
(person.eval).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import transformers

from person import files
from person.demo.synthetic.captions import DEFAULT_CHINESE_SHARE
from person.demo.synthetic.writer import TRUTH_NAME, TRUTH_VERSION, write_dataset
from person.demo.teacher.data import load_training_set, reserved_combinations
from person.demo.teacher.evaluation import SHORT_CAPTION, eval_set, held_out_report
from person.demo.teacher.model import (DEMO_SET, VALIDATION_SET, DemoTeacherConfig, build_model, image_processor,
                                       save_teacher, train_tokenizer)
from person.demo.teacher.training import steps_for_minutes, train

log = logging.getLogger(__name__)


def draw(out_dir: str | Path, n_ids: int, images_per_id: int, seed: int) -> Path:
    """write_dataset(out_dir, ...) unless a finished draw with the same arguments is there; the JSON's path.

    write_dataset writes demo_truth.json last, so a truth file with these arguments means a finished draw."""
    out_dir = Path(out_dir)
    truth = out_dir / TRUTH_NAME
    if truth.is_file():
        t = json.loads(truth.read_text(encoding="utf-8"))
        if (t.get("version"), t.get("ids"), t.get("images_per_id"), t.get("seed"), t.get("chinese")) == \
                (TRUTH_VERSION, n_ids, images_per_id, seed, DEFAULT_CHINESE_SHARE):
            return out_dir / t["json"]
    return write_dataset(out_dir, n_ids, images_per_id, seed)


def make_demo_teacher(out_dir: str | Path, work_dir: str | Path, config: DemoTeacherConfig,
                      minutes: float | None = None) -> dict:
    """Draw the sets into `work_dir`, train the teacher, save it to `out_dir` and return the held-out report.

    `minutes` (instead of config.steps) sizes the run to this machine's measured speed. The report has
    the demo set's held-out figures (model and attribute oracle), the validation history and the run."""
    config.check()
    work = Path(work_dir)
    demo = draw(work / "demo", **DEMO_SET)
    validation = draw(work / "validation", **VALIDATION_SET)
    train_json = draw(work / f"train-{config.ids}x{config.images_per_id}-seed{config.seed}", config.ids,
                      config.images_per_id, config.seed)
    processor = image_processor(config)
    reserved = reserved_combinations([demo.parent / TRUTH_NAME, validation.parent / TRUTH_NAME])
    data = load_training_set(train_json, processor, reserved)
    log.info("demo teacher: %d training images; %d identities dropped (attribute combination of a demo or "
             "validation identity)", len(data), data.dropped_identities)
    tokenizer = train_tokenizer([c for caps in data.captions for c, _ in caps], work / "tokenizer", config)
    model = build_model(config, tokenizer)
    if minutes is not None:
        config = replace(config, steps=steps_for_minutes(model, tokenizer, data, config, minutes))
        log.info("demo teacher: %d steps fit in %.1f minutes here", config.steps, minutes)
    start = time.perf_counter()
    history = train(model, tokenizer, data, config, validation=eval_set(validation, processor, split=None))
    train_minutes = (time.perf_counter() - start) / 60
    out_dir = save_teacher(model, tokenizer, processor, config, out_dir)
    report = held_out_report(out_dir, demo)
    report.update({
        "dataset": "demo set: write_dataset(out, {n_ids}, {images_per_id}, seed={seed})".format(**DEMO_SET),
        "config": asdict(config), "train_minutes": round(train_minutes, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "megabytes": round(sum(f.stat().st_size for f in out_dir.iterdir()) / 2 ** 20, 2),
        "training_images": len(data), "training_identities": len(data.attrs),
        "dropped_identities": data.dropped_identities, "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "validation_history": history,
    })
    files.write_json(out_dir / "training_report.json", report)
    return report


def model_card(report: dict, command: str) -> str:
    """The README.md of a saved demo teacher: what it is, how it was made, what it measured."""
    c, r = report["config"], report
    facts = {
        "model": f"transformers `SiglipModel`: vision ViT {c['vision_width']} wide x {c['vision_layers']} layers on "
                 f"{c['image_size']}x{c['image_size']} crops (patch {c['patch_size']}, stretched to square), text "
                 f"{c['text_width']} x {c['text_layers']}, embedding dim {c['vision_width']}; {r['parameters']:,} "
                 f"parameters, float16 weights; {r['megabytes']} MB in all",
        "tokenizer": f"SentencePiece BPE ({c['vocab_size']} pieces) trained on the training captions, one piece per "
                     f"Chinese character; captions right-padded to {c['text_length']} tokens, no attention mask "
                     f"(SigLIP's way)",
        "training data": f"its own draw, `write_dataset(out, {c['ids']}, {c['images_per_id']}, seed={c['seed']})`, "
                         f"less the {r['dropped_identities']} identities whose attribute combination is one of the "
                         f"demo set's (seed 0) or the validation set's (seed 2): {r['training_identities']:,} "
                         f"identities, {r['training_images']:,} images",
        "recipe": f"{c['steps']:,} steps of {c['batch_size']} image-caption pairs; {100 * c['partial_share']:.0f}% of "
                  f"the rows a partial caption naming 1-{c['partial_max_keys']} attributes; label-matrix sigmoid "
                  f"loss (every image with all of a caption's named attributes is a positive, weighted 1/P per "
                  f"row); logit scale/bias from log 10 / -10; AdamW lr {c['lr']:g}, {c['warmup_steps']} warm-up "
                  f"steps then cosine, weight decay {c['weight_decay']:g}; horizontal flips",
        "run": f"{r['train_minutes']} minutes of training on {r['machine']} ({r['torch_threads']} torch threads, "
               f"shared with other jobs), torch {r['versions']['torch']}, transformers {r['versions']['transformers']}",
    }
    figures = {"demo teacher": r["model"], "attribute oracle": r["oracle"]}
    for part, name in (("short_captions", f"short captions (<= {SHORT_CAPTION} attributes named"),
                       ("long_captions", "long captions (the rest")):
        for who in ("model", "oracle") if r[part]["captions"] else ():
            figures[f"{name}, {r[part]['captions']}): {'demo teacher' if who == 'model' else 'oracle'}"] = \
                r[part][who]
    return "\n".join([
        "# Demo teacher: a small SigLIP trained on the project's synthetic pedestrians",
        "",
        "Not a real vision-language model: it knows only the pedestrians of `person.demo.synthetic` (16 attributes,",
        "English and Chinese captions). It lets the quick start run offline end to end in place of",
        "SigLIP2 / MEXMA-SigLIP2, and loads like them: `person.teacher.hf.load_teacher(\"person/demo/teacher/demo_teacher\")`.",
        "Made by `tools/train_demo_teacher.py` (library: `person/demo/teacher/model.py`, `person/demo/teacher/recipe.py`).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        "",
        "```",
        command,
        "```",
        "",
        "## Held-out figures",
        "",
        "The demo set (`tools/make_demo_data.py`: 1000 identities x 4 images, seed 0), its held-out split",
        f"(`load_records(...).split_indices(\"eval\")`: {r['identities']} identities, {r['images']} images) and their "
        f"{r['captions']} captions;",
        "the directory loaded through `load_teacher` and scored by `person.eval.metrics` over every image x caption",
        "pair (same identity = positive):",
        "",
        "| | EER | Rank-1 | Rank-5 | mAP |",
        "|---|---|---|---|---|",
        *(f"| {name} | {100 * f['eer']:.1f}% | {100 * f['rank1']:.1f}% | {100 * f['rank5']:.1f}% | "
          f"{100 * f['mAP']:.1f}% |" for name, f in figures.items()),
        "",
        "The attribute oracle (`person/demo/synthetic/oracle.py`) knows every image's attributes and which attributes",
        "each caption names, and scores a pair by the share of named attributes the image's identity has. About a",
        "third of the demo captions name only some of what an image shows, and many identities differ in one or",
        "two attributes, so even the oracle cannot tell them all apart: its figures are the ceiling that caption",
        "ambiguity leaves, and the gap to them is the model's. A short caption sits near many identities'",
        "images at once, so its true matches score lower than a long caption's: most of the model's EER is",
        "there, where one global threshold serves both.",
        "",
    ])
