"""The demo teacher's figures: the model in memory on a validation set while it trains, and the saved directory
(loaded as a user's teacher) on the demo set's held-out identities, beside the attribute oracle."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import SiglipImageProcessorPil, SiglipModel, SiglipTokenizer

from person.data.records import load_records
from person.demo.synthetic.oracle import oracle_scores, read_truth
from person.demo.synthetic.writer import TRUTH_NAME
from person.demo.teacher.data import preprocess
from person.demo.teacher.model import embed, encode_captions
from person.eval.metrics import Evaluation, evaluate, evaluate_from_scores
from person.teacher.hf import load_teacher

# The demo's partial captions name 3-6 attributes (2-4 besides gender, sometimes build), its full ones
# mostly 8 or more: the report also gives its figures for each side of 6.
SHORT_CAPTION = 6


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


def figures(ev: Evaluation) -> dict:
    """The four figures the report and the progress lines give."""
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

    def part(mask: np.ndarray) -> dict:
        if not mask.any():
            return {"captions": 0}
        return {"captions": int(mask.sum()),
                "model": figures(evaluate(image_emb, image_pid, text[mask], caption_pid[mask], device="cpu")),
                "oracle": figures(evaluate_from_scores(oracle[mask], image_pid, caption_pid[mask]))}

    short = named <= SHORT_CAPTION
    return {"dataset": str(records.source), "images": len(rows), "identities": int(np.unique(image_pid).size),
            **part(np.ones(len(captions), dtype=bool)),
            "short_captions": part(short), "long_captions": part(~short)}
