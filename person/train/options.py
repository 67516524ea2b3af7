"""Every option of a training run, typed, in one place (main.py's flags are built from it).

The resolved `TrainOptions` is saved in every checkpoint and beside the run (`options.json`), so
`evaluation_model.py CKPT`, `export_model.py CKPT OUTDIR` and `--resume` use exactly these settings.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from person.data.formats import quote
from person.data.images import MAX_IMAGE_SIDE, parse_image_size
from person.data.records import DatasetOptions
from person.data.text import MAX_SEQ_LENGTH
from person.models.students import MAX_FEATURE_DIM, MAX_TEXT_WIDTH, StudentSpec
from person.options import OptionError, check_values, option
from person.train.losses import TERMS, LossWeights
from person.train.runs import run_dir

_DEFAULT_WEIGHTS = LossWeights()
# Caps where no real run needs more (a typo there would exhaust memory before the first step): person crops per
# identity in a batch, identities per rank, captions per image, rows of the long memory per modality.
MAX_K, MAX_P, MAX_CAPTIONS_PER_IMAGE, MAX_MEMORY_ROWS = 256, 4096, 64, 1 << 19


@dataclass
class TrainOptions(DatasetOptions):
    """DatasetOptions (--data and the split) are read from the store when --embedding_path is a store file:
    give them only where files moved, or to find the store in a folder."""

    embedding_path: str = option("embeddings", "the teacher's feature store (tools/extract_label.py), or the "
                                               "folder holding it")
    caption_fields: str = option("all", "captions a student trains on: all (captions and prompt_caption) or "
                                        "captions", choices=("all", "captions"))
    captions_per_image: int = option(1, "captions each image brings to a batch (all of them when it has fewer): the "
                                        "text student sees N times the images' batch, for little more time",
                                     at_least=1, at_most=MAX_CAPTIONS_PER_IMAGE)
    strict_images: bool = option(False, "stop on an unreadable image instead of skipping and counting it")
    unlabeled: list[str] | None = option(None, "unlabeled stores of the same teacher (tools/extract_label.py "
                                               "--image-dir, --detections, --captions): their images and captions "
                                               "join every batch, trained by the terms that need no identity")
    unlabeled_share: float = option(0.5, "unlabeled rows in a batch per labelled row: share x P x K images and "
                                         "share x P x K x captions_per_image captions", at_least=0, at_most=16)
    unlabeled_tracks: bool = option(False, "crops of one detection track are one person: the image student's "
                                           "identity term (--id_img_weight) and the memory take each track of the "
                                           "--unlabeled detections as an identity, dealt K crops at a time")
    init: list[str] | None = option(None, "start the students from an earlier run's checkpoint (its weights; the "
                                          "optimiser, schedule and memory start anew; the student options default "
                                          "to its own); two checkpoints: each student from the first that has it")
    # students
    backbone: str = option("backbone.mf3.ANet2", "image student, by dotted path")
    tbackbone: str = option("tbackbone.char.L3", "text student, by dotted path")
    text_width: int = option(256, "character-vector width E of the text student", at_least=1, at_most=MAX_TEXT_WIDTH)
    text_stride: int = option(2, "the text student's n-gram stem reads L characters as ceil(L / stride) positions",
                              at_least=1)
    image_size: str = option("224x112", "student input, HxW")
    resize: str = option("stretch", "fit images to HxW by stretching or by padding", choices=("stretch", "pad"))
    feature_dim: int | None = option(None, "output dimension (default: the teacher's, read from the store)", at_least=1,
                                     at_most=MAX_FEATURE_DIM)
    max_seq_length: int = option(128, "characters read per caption (longer ones are truncated)", at_least=1,
                                 at_most=MAX_SEQ_LENGTH)
    train: str = option("both", "which student(s) to train", choices=("image", "text", "both"))
    # optimisation
    p: int = option(32, "identities per batch (per rank)", at_least=1, at_most=MAX_P)
    k: int = option(2, "images per identity in a batch", at_least=1, at_most=MAX_K)
    max_iters: int = option(20000, "training iterations", at_least=1)
    optimizer: str = option("adamw", "optimiser", choices=("adamw", "adam", "sgd"))
    lr: float = option(2e-3, "peak learning rate", above=0)
    weight_decay: float = option(0.05, "weight decay (not applied to norms, biases and embeddings)", at_least=0)
    warmup_iters: int = option(500, "linear warm-up iterations before the cosine decay", at_least=0)
    min_lr_ratio: float = option(0.01, "final learning rate as a fraction of --lr", at_least=0, at_most=1)
    clip_grad: float = option(5.0, "clip the gradients' global L2 norm to this (0: no clipping)", at_least=0)
    amp: str = option("auto", "mixed precision: auto (bf16 on CUDA, none on CPU), none, bf16, fp16 (CUDA)",
                      choices=("auto", "none", "bf16", "fp16"))
    compile: bool = option(False, "torch.compile the students")
    channels_last: bool = option(False, "the image student and its batches in channels-last memory layout (faster "
                                        "convolutions with oneDNN on CPU and with tensor cores on CUDA)")
    sync_bn: bool = option(True, "SyncBatchNorm across GPU ranks under torchrun (CPU ranks keep per-rank batch statistics)")
    seed: int = option(0, "seed of weights, batches and augmentation", at_least=0)
    max_nonfinite: int = option(20, "stop after this many non-finite losses in a row (each one skips its step)",
                                at_least=1)
    # losses
    dist_img_weight: float = option(_DEFAULT_WEIGHTS.dist_img, "image embedding distillation (1 - cos)", at_least=0)
    dist_cap_weight: float = option(_DEFAULT_WEIGHTS.dist_cap, "caption embedding distillation (1 - cos)", at_least=0)
    dist_rel_weight: float = option(_DEFAULT_WEIGHTS.dist_rel, "cross-modal similarity-matrix distillation", at_least=0)
    mix_rel_weight: float = option(_DEFAULT_WEIGHTS.mix_rel, "each student's similarities to the teacher's other "
                                   "modality follow the teacher's own", at_least=0)
    rel_img_weight: float = option(_DEFAULT_WEIGHTS.rel_img, "image x image relation distillation", at_least=0)
    rel_cap_weight: float = option(_DEFAULT_WEIGHTS.rel_cap, "caption x caption relation distillation", at_least=0)
    rkda_weight: float = option(_DEFAULT_WEIGHTS.rkda, "RKD angle loss within each modality", at_least=0)
    id_img_weight: float = option(_DEFAULT_WEIGHTS.id_img, "long-memory contrastive, images", at_least=0)
    id_cap_weight: float = option(_DEFAULT_WEIGHTS.id_cap, "long-memory contrastive, captions", at_least=0)
    id_img_cap_weight: float = option(_DEFAULT_WEIGHTS.id_img_cap, "long-memory contrastive, across modalities",
                                      at_least=0)
    d_pos_weight: float = option(_DEFAULT_WEIGHTS.d_pos, "pull same-identity image/caption pairs together", at_least=0)
    s_neg_weight: float = option(_DEFAULT_WEIGHTS.s_neg, "push other identities' pairs below the teacher's", at_least=0)
    sdm_weight: float = option(_DEFAULT_WEIGHTS.sdm, "IRRA's similarity-distribution matching against the identity "
                                                     "labels", at_least=0)
    sdm_temperature: float = option(0.02, "temperature of the sdm term (IRRA: 0.02)", above=0)
    id_cls_weight: float = option(_DEFAULT_WEIGHTS.id_cls, "identity classifier: cross-entropy of a cosine classifier "
                                                           "over the labelled identities (IRRA's ID loss)", at_least=0)
    id_cls_temperature: float = option(0.05, "temperature of the identity classifier's cosine logits", above=0)
    rel_temperature: float = option(0.02, "temperature of the relation terms (the teacher's similarities are small)",
                                    above=0)
    id_margin: float = option(0.5, "negatives above this similarity count in the contrastive terms", at_least=-1,
                              at_most=1)
    memory_size: int = option(8192, "rows of the long memory, per modality", at_least=1, at_most=MAX_MEMORY_ROWS)
    memory_warmup: int = option(1000, "iterations before the memory is filled and used (XBM's warm-up)", at_least=0)
    # run
    log_dir: str = option("logs", "runs go to LOG_DIR/expModel-<backbone>-<H>x<W>-<dim>/<run_name>/")
    # Not "--run": torchrun would read it as an abbreviation of its own --run-path and stop.
    run_name: str | None = option(None, "name of the run folder (default: date and time)")
    log_every: int = option(20, "log every N iterations", at_least=1)
    save_every: int = option(1000, "checkpoint every N iterations (and at the end)", at_least=1)
    eval_every: int = option(1000, "evaluate on the held-out split every N iterations (0: only at the end)", at_least=0)
    keep_last: int = option(3, "iteration checkpoints kept (best.pt is always kept)", at_least=0)
    num_workers: int = option(4, "image loading processes per rank", at_least=0)
    device: str | None = option(None, "torch device (default: cuda:LOCAL_RANK when a GPU is present, else cpu)")
    resume: str | None = option(None, "continue a run: a checkpoint file or a run folder (its last checkpoint)")
    overwrite: bool = option(False, "start a new run in a --run_name folder that holds an earlier run, deleting its "
                                    "checkpoints and logs (without it, such a run is refused)")

    def validate(self) -> None:
        """Clear errors for values no run can use: every number in its declared range, then what ties options."""
        check_values(self)
        h, w = parse_image_size(self.image_size)
        if max(h, w) > MAX_IMAGE_SIDE:
            raise OptionError(f"--image_size {self.image_size}: sides above {MAX_IMAGE_SIDE} pixels are not a "
                              f"student's input (the default is 224x112); give HxW with both sides <= {MAX_IMAGE_SIDE}")
        if self.run_name is not None:
            check_run_name(self.run_name)
        if self.unlabeled_tracks and not (self.unlabeled and self.id_img_weight > 0 and self.train != "text"):
            raise OptionError("--unlabeled_tracks takes the tracks of --unlabeled detections as identities of the "
                              "image student's identity term: give --unlabeled STORE and --id_img_weight > 0 "
                              "(e.g. 0.3), and train the image student")

    def run_folder(self, feature_dim: int) -> Path:
        """LOG_DIR/expModel-<student>-<H>x<W>-<dim>/<run_name or the date and time>/ (person.train.runs)."""
        return run_dir(self.log_dir, self.backbone if self.train != "text" else self.tbackbone,
                       parse_image_size(self.image_size), feature_dim, self.run_name or time.strftime("%Y%m%d-%H%M%S"))

    def student_spec(self, feature_dim: int) -> StudentSpec:
        """The students this run trains (only the image or the text one with --train image|text)."""
        return StudentSpec(feature_dim, self.backbone if self.train != "text" else None,
                           self.tbackbone if self.train != "image" else None, parse_image_size(self.image_size),
                           self.resize, self.max_seq_length, self.text_width, self.text_stride)

    def loss_weights(self) -> LossWeights:
        return LossWeights(**{t: getattr(self, f"{t}_weight") for t in TERMS})


def check_run_name(name: str) -> None:
    """A run name is one folder name under its experiment folder: `..` or a separator would put the run (and
    --overwrite's deletions) outside --log_dir. Spaces and any language are fine."""
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if name in ("", ".", "..") or "\x00" in name or any(s in name for s in separators) or len(name.encode(
            "utf-8", "surrogatepass")) > 255:
        raise OptionError(f"--run_name {quote(name)}: a run name is one folder name: not empty, '.' or '..', without "
                          f"'/', '\\' or NUL, at most 255 bytes (e.g. --run_name 'baseline 224x112')")


# Options that may differ when a run is resumed: how it is watched, where its files are, where and in which
# memory layout it runs, and how far it goes. (A larger --max_iters stretches the cosine schedule from the
# resumed iteration on: the rate rises again from where it had decayed to, as in any schedule restart.)
RESUMABLE_CHANGES = frozenset({"resume", "max_iters", "log_every", "save_every", "eval_every", "keep_last",
                               "num_workers", "device", "channels_last", "log_dir", "max_nonfinite", "data",
                               "image_root", "embedding_path", "unlabeled", "overwrite", "max_image_pixels",
                               "max_image_bytes"})


OPTIONS_FILE = "options.json"  # beside a run's checkpoints: its resolved options, as the trainer saved them


def saved_options(folder: str | Path) -> dict[str, Any]:
    """A run folder's saved options, with TrainOptions' defaults for the keys an older run did not save."""
    path = Path(folder) / OPTIONS_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not there: {folder} is not a run folder of main.py") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OptionError(f"{path}: unreadable run options ({e}); the run folder is damaged") from None
    if not isinstance(saved, dict):
        raise OptionError(f"{path}: holds {type(saved).__name__}, not a run's options; the run folder is damaged")
    return {f.name: f.default for f in fields(TrainOptions)} | saved


def recipe_changes(folder: str | Path, recipe: Mapping[str, Any]) -> list[str]:
    """'name saved -> wanted' for each option of `recipe` that the run in `folder` was trained with otherwise (how
    far and how it runs, which a resumed run may change, aside); [] when the folder holds no options."""
    if not (Path(folder) / OPTIONS_FILE).is_file():
        return []
    saved = saved_options(folder)
    return [f"{k} {saved[k]} -> {v}" for k, v in recipe.items() if k not in RESUMABLE_CHANGES and saved[k] != v]
