"""How the shipped demo teacher is trained: data, the label-matrix loss, evaluation, the whole job.

Recipe (what a prototype measured: ARCHITECTURE.md, "The demo teacher"): a small model; **partial captions** (a
share of the rows name only 1-3 attributes) with a label-matrix sigmoid loss in which every image that
has all the attributes a caption names is a positive, positives weighted 1/P per row; logit scale and
bias start at log 10 and -10.

Held-out identities. The teacher trains on its own draw (another seed), never on the demo set it is
scored on. Different seeds draw different people, but an attribute combination can recur across
draws (the wardrobes are skewed), and captions name only attributes. So every training identity whose
attribute combination equals an identity of a reserved set (the whole demo set, and the validation
set) is dropped: no caption the teacher is scored on describes a combination it trained on.

It sits above training and evaluation: it uses the schedule (person.train) and the metrics (person.eval),
and its model (person.demo.teacher.model) is what the loader reads like any user's teacher.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import SiglipImageProcessorPil, SiglipModel, SiglipTokenizer

from person import files
from person.data.records import load_records
from person.demo.synthetic.attributes import attribute_key
from person.demo.synthetic.captions import DEFAULT_CHINESE_SHARE, keyed_caption, mentionable, pick_language
from person.demo.synthetic.oracle import attribute_codes, key_mask, oracle_scores, read_truth
from person.demo.synthetic.writer import TRUTH_NAME, TRUTH_VERSION, write_dataset
from person.eval.metrics import Evaluation, evaluate, evaluate_from_scores
from person.demo.teacher.model import (DEMO_SET, VALIDATION_SET, DemoTeacherConfig, build_model, embed,
                                       encode_captions, image_processor, save_teacher, train_tokenizer)
from person.teacher.hf import load_teacher
from person.train.schedule import warmup_cosine

log = logging.getLogger(__name__)

# The demo's partial captions name 3-6 attributes (2-4 besides gender, sometimes build), its full ones
# mostly 8 or more: the report also gives its figures for each side of 6.
SHORT_CAPTION = 6


# ------------------------------------------------------------------------------------------- data
@dataclass
class TrainingSet:
    """Training images as the processor's pixels, with what their captions are checked against."""

    pixels: torch.Tensor            # [N, 3, S, S] float16, the processor's output
    identity: np.ndarray            # [N] index into attrs
    attrs: list[dict]               # per identity: its attributes
    codes: np.ndarray               # [identities, keys] attribute codes (person.demo.synthetic.oracle)
    visible: list[dict]             # per image
    captions: list[list[tuple[str, list[str]]]]  # per image: (caption, keys it names)
    dropped_identities: int = 0     # identities left out because a reserved set has their combination

    def __len__(self) -> int:
        return len(self.identity)


def reserved_combinations(truth_paths: Sequence[str | Path]) -> set[tuple]:
    """Attribute combinations of every identity of the given demo_truth.json files."""
    return {attribute_key(a) for path in truth_paths for a in read_truth(path)["identities"]}


def preprocess(processor: SiglipImageProcessorPil, paths: Sequence[Path], batch: int = 256) -> torch.Tensor:
    """The processor's pixels of every image, float16 (exact to ~1e-3; the model trains in float32)."""
    out = []
    for i in range(0, len(paths), batch):
        images = []
        for p in paths[i:i + batch]:
            with Image.open(p) as img:
                images.append(img.convert("RGB"))
        out.append(processor(images=images, return_tensors="pt")["pixel_values"].to(torch.float16))
    return torch.cat(out) if out else torch.empty(0)


def load_training_set(dataset_json: str | Path, processor: SiglipImageProcessorPil,
                      reserved: set[tuple] = frozenset()) -> TrainingSet:
    """Every image of a drawn set (its demo_truth.json beside it) whose identity's attribute combination
    is not `reserved`."""
    dataset_json = Path(dataset_json)
    truth = read_truth(dataset_json.parent / TRUTH_NAME)
    idents = truth["identities"]
    kept = [i for i, a in enumerate(idents) if attribute_key(a) not in reserved]
    new_index = {old: new for new, old in enumerate(kept)}
    images = [im for im in truth["images"] if im["identity"] in new_index]
    if not images:
        raise ValueError(f"{dataset_json}: no training image left once reserved attribute combinations are "
                         f"dropped; draw more identities")
    root = dataset_json.parent / truth["image_root"]
    attrs = [idents[i] for i in kept]
    return TrainingSet(
        pixels=preprocess(processor, [root / im["path"] for im in images]),
        identity=np.array([new_index[im["identity"]] for im in images], dtype=np.int64),
        attrs=attrs, codes=attribute_codes(attrs), visible=[im["visible"] for im in images],
        captions=[list(zip(im["captions"], im["caption_keys"])) for im in images],
        dropped_identities=len(idents) - len(kept))


def partial_caption(attrs: dict, visible: dict, rng: np.random.Generator, max_keys: int,
                    chinese: float) -> tuple[str, list[str]]:
    """A caption naming 1..max_keys of the attributes the image shows, and the keys it names."""
    shown = mentionable(attrs, visible)
    k = min(len(shown), int(rng.integers(1, max_keys + 1)))
    subset = [shown[i] for i in rng.permutation(len(shown))[:k]]
    return keyed_caption(attrs, visible, rng, pick_language(rng, chinese), subset=subset)


def positives(caption_codes: np.ndarray, named: np.ndarray, image_codes: np.ndarray) -> np.ndarray:
    """[captions, images] bool: an image is a positive of a caption exactly when it has every attribute
    the caption names (`caption_codes` are the codes of the image the caption describes)."""
    return ((caption_codes[:, None, :] == image_codes[None, :, :]) | ~named[:, None, :]).all(axis=2)


@dataclass
class Batch:
    pixels: torch.Tensor      # [B, 3, S, S] float32
    input_ids: torch.Tensor   # [B, L]
    labels: torch.Tensor      # [B captions, B images] bool


def make_batch(data: TrainingSet, rows: np.ndarray, tokenizer: SiglipTokenizer, config: DemoTeacherConfig,
               rng: np.random.Generator) -> Batch:
    """Images `rows`, each with one caption: a partial one (share config.partial_share) or one of its own."""
    texts, named = [], []
    for r in rows:
        if rng.random() < config.partial_share:
            text, keys = partial_caption(data.attrs[data.identity[r]], data.visible[r], rng,
                                         config.partial_max_keys, config.chinese)
        else:
            text, keys = data.captions[r][int(rng.integers(len(data.captions[r])))]
        texts.append(text)
        named.append(keys)
    codes = data.codes[data.identity[rows]]
    labels = positives(codes, key_mask(named), codes)
    pixels = data.pixels[torch.from_numpy(rows)].float()
    if config.flip:
        flip = torch.from_numpy(rng.random(len(rows)) < 0.5)
        pixels[flip] = pixels[flip].flip(-1)
    return Batch(pixels, encode_captions(tokenizer, texts, config.text_length), torch.from_numpy(labels))


# ------------------------------------------------------------------------------------------- loss
def label_sigmoid_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sigmoid loss over a label matrix: -1/T sum_ij w_ij log sigmoid(+-logits_ij).

    `logits` [T captions, I images], `labels` [T, I] bool. A positive counts with w = 1/P of its row (P its
    row's positives), so a vague caption with many positives weighs no more than an exact one; a
    negative with w = 1 (SigLIP's own loss when each row has one positive)."""
    if logits.shape != labels.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must be the same "
                         f"[captions, images] matrix")
    labels = labels.bool()
    per_row = labels.sum(dim=1, keepdim=True)
    if (per_row == 0).any():
        raise ValueError(f"label rows {torch.nonzero(per_row[:, 0] == 0).flatten().tolist()} have no positive: each "
                         f"caption's own image must be in the batch")
    weight = torch.where(labels, 1.0 / per_row.to(logits.dtype), torch.ones_like(logits))
    sign = labels.to(logits.dtype) * 2 - 1
    return -(weight * F.logsigmoid(sign * logits)).sum() / logits.shape[0]


def _optimizer(model: SiglipModel, config: DemoTeacherConfig) -> torch.optim.Optimizer:
    # Weight decay on matrices only: biases, norm gains and the logit scale/bias stay free.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=config.lr)


# ------------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalSet:
    """Held-out images (the processor's pixels) and their captions, with identities."""

    pixels: torch.Tensor
    image_pid: np.ndarray
    captions: list[str]
    caption_pid: np.ndarray


def eval_set(dataset_json: str | Path, processor: SiglipImageProcessorPil, split: str | None = "eval") -> EvalSet:
    """A set's split as person.data.records defines it (default: its held-out identities; None: every record),
    captions field only."""
    records = load_records(dataset_json)
    rows = np.arange(len(records)) if split is None else records.split_indices(split)
    captions = [c for r in rows for c in records.captions[r]]
    return EvalSet(pixels=preprocess(processor, [records.image_path(r) for r in rows]),
                   image_pid=records.pids[rows],
                   captions=captions,
                   caption_pid=np.array([records.pids[r] for r in rows for _ in records.captions[r]]))


@torch.no_grad()
def evaluate_model(model: SiglipModel, tokenizer: SiglipTokenizer, data: EvalSet, text_length: int,
                   batch: int = 256) -> Evaluation:
    """person.eval.metrics figures of the model in memory (during training; the report goes through load_teacher)."""
    was_training = model.training
    model.eval()
    img = torch.cat([embed(model, pixels=data.pixels[i:i + batch].float()) for i in range(0, len(data.pixels), batch)])
    cap = torch.cat([embed(model, input_ids=encode_captions(tokenizer, data.captions[i:i + batch], text_length))
                     for i in range(0, len(data.captions), batch)])
    model.train(was_training)
    return evaluate(img, data.image_pid, cap, data.caption_pid, device="cpu")


def _figures(ev: Evaluation) -> dict:
    d = ev.to_dict()
    return {"eer": d["eer"], "rank1": d["rank1"], "rank5": d["rank5"], "mAP": d["mAP"]}


@torch.no_grad()
def held_out_report(model_dir: str | Path, dataset_json: str | Path, batch: int = 128) -> dict:
    """The saved teacher, loaded by person.teacher.hf.load_teacher as a user's would be, on a drawn set's
    held-out identities and their captions, beside the attribute oracle on the same captions; also split
    into short captions (at most SHORT_CAPTION attributes named) and long ones."""
    teacher = load_teacher(model_dir, device="cpu")
    records = load_records(dataset_json)
    rows = records.split_indices("eval")
    truth = read_truth(Path(records.source).parent / TRUTH_NAME)
    if [truth["images"][r]["path"] for r in rows] != [records.paths[r] for r in rows]:
        raise ValueError(f"{records.source}: {TRUTH_NAME} beside it describes other images; redraw the set")
    images = []
    for i in range(0, len(rows), batch):
        chunk = []
        for r in rows[i:i + batch]:
            with Image.open(records.image_path(r)) as img:
                chunk.append(img.convert("RGB"))
        images.append(teacher.encode_images(chunk))
    image_emb, image_pid = torch.cat(images), records.pids[rows]
    captions = [c for r in rows for c in records.captions[r]]
    caption_pid = np.array([records.pids[r] for r in rows for _ in records.captions[r]])
    text = torch.cat([teacher.encode_texts(captions[i:i + batch]) for i in range(0, len(captions), batch)])
    oracle, _, _, named = oracle_scores(truth, rows)  # same image and caption order as the records'

    def figures(mask: np.ndarray) -> dict:
        if not mask.any():
            return {"captions": 0}
        return {"captions": int(mask.sum()),
                "model": _figures(evaluate(image_emb, image_pid, text[mask], caption_pid[mask], device="cpu")),
                "oracle": _figures(evaluate_from_scores(oracle[mask], image_pid, caption_pid[mask]))}

    short = named <= SHORT_CAPTION
    return {"dataset": str(records.source), "images": len(rows), "identities": int(np.unique(image_pid).size),
            **figures(np.ones(len(captions), dtype=bool)),
            "short_captions": figures(short), "long_captions": figures(~short)}


# ------------------------------------------------------------------------------------------- training
def _rows(n: int, batch: int, seed: int) -> Callable[[int], np.ndarray]:
    """Batch `step`'s image rows: consecutive slices of a per-epoch permutation (a pure function of step)."""
    per_epoch = max(1, n // batch)

    def rows(step: int) -> np.ndarray:
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([seed, 1, epoch]).permutation(n)
        return order[k * batch:(k + 1) * batch]
    return rows


def _progress_line(row: dict, steps: int) -> str:
    line = (f"step {row['step']}/{steps}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  {row['s_per_step']:.3f} s/step  "
            f"scale {row['scale']:.1f}  bias {row['bias']:.1f}")
    if "val_eer" in row:
        line += (f"  | validation EER {100 * row['val_eer']:.1f}%  Rank-1 {100 * row['val_rank1']:.1f}%  "
                 f"mAP {100 * row['val_mAP']:.1f}%")
    return line


def train(model: SiglipModel, tokenizer: SiglipTokenizer, data: TrainingSet, config: DemoTeacherConfig,
          validation: EvalSet | None = None, eval_every: int = 1000, log_every: int = 100) -> list[dict]:
    """Train `model` in place for config.steps steps (warm-up + cosine); return the logged rows.

    Every `log_every` steps and at the end (never when 0) a row {step, loss (smoothed), lr, s_per_step, scale,
    bias} is logged, with val_{eer,rank1,rank5,mAP} every `eval_every` steps and at the end when `validation`
    is given."""
    config.check()
    if len(data) < config.batch_size:
        raise ValueError(f"{len(data)} training images are fewer than one batch of {config.batch_size}")
    opt = _optimizer(model, config)
    rows = _rows(len(data), config.batch_size, config.seed)
    history, smoothed, start = [], None, time.perf_counter()
    model.train()
    for step in range(config.steps):
        lr = warmup_cosine(step, config.lr, config.steps, config.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = make_batch(data, rows(step), tokenizer, config, np.random.default_rng([config.seed, 2, step]))
        logits = (embed(model, input_ids=batch.input_ids) @ embed(model, pixels=batch.pixels).T
                  * model.logit_scale.exp() + model.logit_bias)
        loss = label_sigmoid_loss(logits, batch.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        last = step + 1 == config.steps
        if log_every and ((step + 1) % log_every == 0 or last):
            row = {"step": step + 1, "loss": round(smoothed, 4), "lr": lr,
                   "s_per_step": round((time.perf_counter() - start) / (step + 1), 4),
                   "scale": round(model.logit_scale.exp().item(), 2), "bias": round(model.logit_bias.item(), 2)}
            if validation is not None and ((step + 1) % eval_every == 0 or last):
                row.update({f"val_{k}": v for k, v in _figures(
                    evaluate_model(model, tokenizer, validation, config.text_length)).items()})
            history.append(row)
            log.info("%s", _progress_line(row, config.steps))
    model.eval()
    return history


def steps_for_minutes(model: SiglipModel, tokenizer: SiglipTokenizer, data: TrainingSet,
                      config: DemoTeacherConfig, minutes: float, probe: int = 20) -> int:
    """How many steps fit in `minutes` on this machine, timed on `probe` steps of a throw-away copy."""
    trial = copy.deepcopy(model)
    start = time.perf_counter()
    train(trial, tokenizer, data, replace(config, steps=probe, warmup_steps=probe), log_every=0)
    per_step = (time.perf_counter() - start) / probe
    return max(1, int(minutes * 60 / per_step))


# ------------------------------------------------------------------------------------------- the whole job
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
