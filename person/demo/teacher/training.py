"""The demo teacher's training loop: warm-up + cosine (person.train.schedule), AdamW with person.train.optim's
decay groups, the label-matrix loss on batches of partial captions, and the validation figures as it goes."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from transformers import SiglipModel, SiglipTokenizer

from person.demo.teacher.data import TrainingSet, make_batch
from person.demo.teacher.evaluation import EvalSet, evaluate_model, figures
from person.demo.teacher.loss import label_sigmoid_loss
from person.demo.teacher.model import DemoTeacherConfig, embed
from person.train.optim import param_groups
from person.train.schedule import warmup_cosine

log = logging.getLogger(__name__)


def _optimizer(model: SiglipModel, config: DemoTeacherConfig) -> torch.optim.Optimizer:
    # Weight decay on matrices only, embedding tables included: biases, norm gains and the logit scale/bias stay free.
    return torch.optim.AdamW(param_groups(model, config.weight_decay, exempt=()), lr=config.lr)


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
                row.update({f"val_{k}": v for k, v in figures(
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
