"""The training loop: distil the cached teacher into the students, on one process or under torchrun.

`Trainer(opts)` builds everything from `TrainOptions` (records, feature store, students, optimiser,
memory, loader) or restores it from a checkpoint (`--resume`); `fit()` runs to `max_iters`, logging
(person.train.logs), evaluating and keeping best.pt (person.train.selection), checkpointing; `train_step(batch)`
is one iteration (tests drive it directly).

What makes a resumed run continue exactly: the batches are a pure function of (seed, batch number),
the learning rate a pure function of the iteration, and the checkpoint holds the weights, optimiser,
scaler, long memory, meters and RNG state. Under DDP every rank draws its own batches, the gradients
are averaged, and a step is skipped on every rank or on none (a non-finite loss anywhere skips it).
"""
from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, NoReturn

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from person import files, stopping
from person.data.datasets import SkipReport, normalize_batch
from person.data.images import ImageTransform, parse_image_size
from person.data.sampler import IdentityBatchSampler
from person.distributed import DistInfo, agreed_stop, barrier, init_distributed
from person.errors import PersonError
from person.models.checkpoint import load_checkpoint, save_checkpoint
from person.options import from_dict, to_dict
from person.teacher import store as feature_store
from person.train import logs, runs
from person.train.batches import DistillCollate, DistillDataset, teacher_targets
from person.train.budget import check_training_memory
from person.train.losses import DistillLoss
from person.train.classifier import IdentityClassifier, average_gradients
from person.train.memory import CrossModalMemory, gather_for_memory
from person.train.meters import Meters
from person.train.optim import make_optimizer
from person.train.options import OPTIONS_FILE, RESUMABLE_CHANGES, TrainOptions
from person.train.schedule import warmup_cosine
from person.train.selection import BEST_NAME, Selection, selection_split
from person.train.unlabeled import MixedBatchSampler, UnlabeledPool, track_identities
from person.train.warm_start import check_init_teacher, init_options, load_init

log = logging.getLogger(__name__)


class TrainingStopped(stopping.Stopped):
    """A run stopped on request after a step, its checkpoint written: `run_dir` continues with --resume."""

    def __init__(self, signum: int, what: str, run_dir: Path) -> None:
        super().__init__(signum, what)
        self.run_dir = run_dir


class NonFiniteLossError(PersonError, RuntimeError):
    """Too many non-finite losses in a row: the run is diverging."""


class UnreadableBatchesError(PersonError, RuntimeError):
    """Too many batches in a row without one readable image: the images are gone or unreadable."""


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    last_checkpoint: Path
    best_checkpoint: Path | None
    best: dict[str, Any] | None
    final: dict[str, dict] | None  # evaluation case -> metrics summary, from the end of training
    skipped_steps: int
    skipped_images: int


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA GPU; on CPU use --amp bf16 or --amp none")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def resolve_resume(opts: TrainOptions, given: set[str]) -> tuple[TrainOptions, dict[str, Any] | None]:
    """With --resume: the run's saved options (plus the few that may change) and its checkpoint state."""
    if not opts.resume:
        return opts, None
    state = load_checkpoint(opts.resume)
    saved = from_dict(TrainOptions, state["options"])
    changed = sorted(k for k in given - RESUMABLE_CHANGES if getattr(opts, k) != getattr(saved, k))
    if changed:
        diffs = ", ".join(f"--{k} {getattr(opts, k)!r} (run: {getattr(saved, k)!r})" for k in changed)
        raise ValueError(f"--resume {opts.resume} continues a run with its own options, but {diffs} differ: drop "
                         f"them to continue the run, or start a new run without --resume")
    keep = {k: getattr(opts, k) for k in given & RESUMABLE_CHANGES}
    return replace(saved, **(keep | {"resume": opts.resume})), state


class Trainer(Selection):
    def __init__(self, opts: TrainOptions, given: set[str] | None = None, info: DistInfo | None = None, *,
                 on_checkpoint: Callable[[Path], None] | None = None) -> None:
        """`on_checkpoint(path)` is called after each checkpoint file is written (tests stop a run there)."""
        opts, resumed = resolve_resume(opts, set(given or ()))
        init = None
        if opts.init and not resumed:
            opts, init = init_options(opts, set(given or ()))
        opts.validate()
        self.opts, self.info = opts, info or init_distributed(opts.device)
        self.on_checkpoint = on_checkpoint
        self.device = self.info.device
        # Each rank of a node holds its own copy in RAM: share the budget (beyond it, the page cache is shared),
        # and the stores of one rank share its part.
        ram = feature_store.default_ram_bytes() // _local_world_size() // (1 + len(opts.unlabeled or ()))
        self.store, self.records = feature_store.open_with_records(opts.embedding_path, opts, max_ram_bytes=ram)
        if resumed:  # the run's students learned this teacher's space; another store must be from it too
            feature_store.check_teacher(self.store.path, self.store.teacher_identity, resumed["teacher"])
        if init is not None:  # the same for the students it starts from, before anything else is checked
            check_init_teacher(init, self.store)
        self.pool = UnlabeledPool(opts.unlabeled, self.store, ram) if opts.unlabeled else None
        self.picker = (self.pool.picker(opts.unlabeled_share, opts.p, opts.k, opts.captions_per_image, opts.seed,
                                        self.info.rank, self.info.world_size, tracks=opts.unlabeled_tracks)
                       if self.pool else None)
        self.track_pid = track_identities(self.picker.tracks) if opts.unlabeled_tracks else None
        if self.track_pid is not None and (self.track_pid == -1).all():
            raise ValueError(f"--unlabeled_tracks: no crop of --unlabeled {' '.join(opts.unlabeled)} has a track "
                             f"(extract detections whose lines carry \"track\"), or drop --unlabeled_tracks")
        self.mean, self.std = self.store.image_normalisation
        self.train_rows = self.store.split_rows("train")
        if len(self.train_rows) == 0:
            raise ValueError(f"{self.store.path}: no readable training image in the store")
        if opts.train != "text":
            self.records.check_image_root()
        self.select_split = selection_split(self.store)

        self.feature_dim = self.store.dim if opts.feature_dim is None else opts.feature_dim
        self.image_size = parse_image_size(opts.image_size)
        self.spec = opts.student_spec(self.feature_dim)
        self.head = (IdentityClassifier(self.records.num_ids, self.feature_dim, opts.id_cls_temperature, opts.seed)
                     if opts.id_cls_weight else None)
        self.loss = DistillLoss(opts.loss_weights(), opts.rel_temperature, opts.id_margin, opts.train,
                                opts.sdm_temperature, self.head)
        self._check_losses()
        torch.manual_seed(opts.seed)  # the same initial weights on every rank
        # A resumed or --init run's names come from a checkpoint: modules outside the project only where the command
        # line names them again (person.models.registry.resolve).
        trusted = None if not (resumed or init) else {getattr(opts, k).rpartition(".")[0]
                                                      for k in ("backbone", "tbackbone") if k in (given or ())}
        self.students = self.spec.build(trusted)
        if init is not None:
            load_init(self.students, init)
        self.students = self.students.to(self.device)
        check_training_memory(self.students, opts, self.feature_dim, uses_memory=self.loss.uses_memory,
                              device=self.device, ranks_here=_local_world_size(),
                              unlabeled=self.picker.counts if self.picker else (0, 0))
        if opts.channels_last and self.students.image is not None:
            self.students.image.to(memory_format=torch.channels_last)
        self.model = self._wrap(self.students)
        if self.head is not None:
            self.head.to(self.device)
        self.optimizer = make_optimizer(self.students if self.head is None else
                                        torch.nn.ModuleDict({"students": self.students, "head": self.head}), opts)
        self.autocast_dtype = amp_dtype(opts.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.memory = (CrossModalMemory(opts.memory_size, self.feature_dim, warmup_iters=opts.memory_warmup,
                                        device=self.device) if self.loss.uses_memory else None)
        self.meters = Meters()
        self.iteration, self.skipped_steps, self.nonfinite_run, self.empty_run = 0, 0, 0, 0
        self.skipped_images, self.skipped_unlabeled, self.unlabeled_empty_run = SkipReport(), SkipReport(), 0
        self.best: dict[str, Any] | None = None
        self.run_dir = Path(resumed["path"]).parent if resumed else opts.run_folder(self.feature_dim)
        if resumed:
            self._restore(resumed)
        else:
            runs.check_new_run(self.run_dir, opts.overwrite)

    # ------------------------------------------------------------------ setup
    def _check_losses(self) -> None:
        unused = self.loss.trained - self.loss.students_used
        if unused:
            student = unused.pop()
            other = "image" if student == "text" else "text"
            raise ValueError(f"no active loss term trains the {student} student: give one of its terms a weight "
                             f"(e.g. --{'dist_img' if student == 'image' else 'dist_cap'}_weight 1) or train only "
                             f"the other one (--train {other})")
        if self.feature_dim == self.store.dim:
            return
        # Student and teacher embeddings meet directly in these terms, and in every cross-modal term when
        # the teacher stands in for an untrained student: they need the teacher's width.
        direct = [t for t in self.loss.terms if t in ("dist_img", "dist_cap", "mix_rel")]
        if self.opts.train != "both" or direct:
            raise ValueError(f"--feature_dim {self.feature_dim} differs from the teacher's {self.store.dim}: that "
                             f"works only with --train both and relation terms alone (set --dist_img_weight 0 "
                             f"--dist_cap_weight 0 --mix_rel_weight 0); drop --feature_dim to learn the "
                             f"teacher's space")

    def _wrap(self, students: torch.nn.Module) -> torch.nn.Module:
        model: torch.nn.Module = students
        if self.info.distributed:
            # SyncBatchNorm runs on GPUs only; on CPU ranks normalise by their own batch and DDP's
            # buffer broadcast keeps the running statistics identical (rank 0's) on every rank.
            if self.opts.sync_bn and self.device.type == "cuda":
                students = torch.nn.SyncBatchNorm.convert_sync_batchnorm(students)
                self.students = students
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(students, device_ids=ids)
        if self.opts.compile:
            model = torch.compile(model)
        return model

    def loader(self) -> DataLoader:
        """This rank's batches from the current iteration on (an endless iterator's source)."""
        o = self.opts
        transform = (ImageTransform(self.image_size, o.resize, self.mean, train=True)
                     if self.students.image is not None else None)
        dataset = DistillDataset(self.records, self.store.caption_offsets, transform, o.caption_fields,
                                 o.strict_images, o.captions_per_image, o.image_limits(),
                                 self.pool.files() if self.pool else None)
        sampler = IdentityBatchSampler(self.records.pids, self.train_rows, o.p, o.k, o.seed, self.info.rank,
                                       self.info.world_size, start=self.iteration)
        if self.picker:
            sampler = MixedBatchSampler(sampler, self.picker)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=o.num_workers,
                          collate_fn=DistillCollate(o.max_seq_length), pin_memory=self.device.type == "cuda",
                          persistent_workers=o.num_workers > 0, prefetch_factor=4 if o.num_workers else None)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"iteration": self.iteration, "options": to_dict(self.opts), "feature_dim": self.feature_dim,
                "students": self.spec.to_dict(),
                "model": self.students.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "memory": self.memory.state_dict() if self.memory else None,
                "meters": self.meters.state_dict(), "rng": rng, "best": self.best,
                "skipped_steps": self.skipped_steps, "normalisation": {"mean": list(self.mean), "std": list(self.std)},
                "teacher": self.store.teacher_identity, "dataset": self.store.dataset_info,
                "unlabeled_rows": [self.pool.num_images, self.pool.num_captions] if self.pool else None,
                "head": self.head.state_dict() if self.head is not None else None}

    def _restore(self, state: dict[str, Any]) -> None:
        self.students.load_state_dict(state["model"])
        if self.head is not None:
            self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.memory is not None and state["memory"] is not None:
            self.memory.load_state_dict(state["memory"])
        self.meters.load_state_dict(state["meters"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.iteration, self.best, self.skipped_steps = state["iteration"], state["best"], state["skipped_steps"]
        now = [self.pool.num_images, self.pool.num_captions] if self.pool else None
        if state.get("unlabeled_rows") != now:  # a store that grew: the picks from here on are drawn anew
            log.warning("the unlabeled stores hold %s (image, caption) rows, %s when %s was saved: the run goes on, "
                        "but its batches from here differ from an uninterrupted run's", now,
                        state.get("unlabeled_rows"), state["path"])
        log.info("resumed %s at iteration %d", state["path"], self.iteration)

    def save(self, name: str | None = None) -> Path:
        path = save_checkpoint(self.state_dict(), self.run_dir / (name or f"{self.iteration}.pt"))
        if name is None and self.opts.keep_last > 0:
            numbered = sorted((int(p.stem), p) for p in self.run_dir.glob("*.pt") if p.stem.isdigit())
            for _, old in numbered[:-self.opts.keep_last]:
                old.unlink(missing_ok=True)
        if self.on_checkpoint:
            self.on_checkpoint(path)
        return path

    # ------------------------------------------------------------------ one step
    def _all_ranks(self, ok: bool) -> bool:
        """True only if `ok` on every rank: a step is taken everywhere or nowhere."""
        return self._agree(ok)[0]

    def _agree(self, *oks: bool) -> list[bool]:
        """Each of `oks` True only if it is on every rank, in one collective."""
        if not self.info.distributed:
            return list(oks)
        flags = torch.tensor([1 if ok else 0 for ok in oks], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        return [bool(f) for f in flags.tolist()]

    def train_step(self, batch: dict[str, Any]) -> dict[str, float] | None:
        """One iteration on `batch` (a DistillCollate batch); None when the step was skipped."""
        o, dev = self.opts, self.device
        lr = warmup_cosine(self.iteration, o.lr, o.max_iters, o.warmup_iters, o.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.skipped_images.add(batch["skipped"])
        rows = batch["rows"]
        # Both decided by every rank together: a rank that stopped or skipped alone would leave the others waiting.
        readable, crops_left = self._agree(len(rows) > 0, self._count_unlabeled_skips(batch))
        if not crops_left:
            raise UnreadableBatchesError(
                f"{self.opts.max_nonfinite} batches in a row without one readable unlabeled image (on this rank or "
                f"another): are the images still under {', '.join(self.pool.roots())}? "
                f"{self.skipped_unlabeled.summary(3)}")
        if not readable:  # every image of a batch unreadable, here or on another rank
            return self._skip(empty=True)
        t_img, t_cap = (t.to(dev, non_blocking=True) for t in teacher_targets(self.store, batch, self.pool))
        labelled = (len(rows), len(batch["captions"]))  # the leading rows; unlabeled ones follow
        pid = torch.from_numpy(self.records.pids[rows.numpy()]).to(dev)
        cap_pid = pid[batch["caption_owner"].to(dev)]
        images = (normalize_batch(batch["images"].to(dev, non_blocking=True), self.mean, self.std)
                  if batch["images"] is not None else None)
        if images is not None and o.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(dev.type, dtype=self.autocast_dtype) if self.autocast_dtype else nullcontext())
        # BatchNorm statistics move in the forward; a skipped step must leave them as they were (a NaN
        # batch would otherwise poison them for good). They are a few KB: copying them is free.
        buffers = [b.detach().clone() for b in self.students.buffers()]
        with autocast:
            out = self.model(images, batch["chars"].to(dev), batch["mask"].to(dev))
        track_pid = (torch.from_numpy(self.track_pid[batch["u_rows"].numpy()]).to(dev)
                     if self.track_pid is not None else None)
        losses = self.loss(out.get("image"), out.get("text"), t_img, t_cap, pid, self.memory, cap_pid, labelled,
                           track_pid)
        if not self._all_ranks(bool(torch.isfinite(losses["total"]))):
            with torch.no_grad():
                for b, saved in zip(self.students.buffers(), buffers):
                    b.copy_(saved)
            return self._skip(empty=False)
        self.nonfinite_run = self.empty_run = 0
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        if self.head is not None:
            average_gradients(self.head)
        if o.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.students.parameters(), o.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.memory is not None:  # rows with identities only (tracks' crops too): the memory compares them
            rows = {"image": out.get("image"), "text": out.get("text")}
            labels = {"image": pid, "text": cap_pid}
            rows = {m: r[:len(labels[m])] if r is not None else None for m, r in rows.items()}
            if track_pid is not None and out.get("image") is not None:
                tracked = track_pid != -1
                rows["image"] = torch.cat([rows["image"], out["image"][len(pid):][tracked]])
                labels["image"] = torch.cat([pid, track_pid[tracked]])
            self.memory.update(*((gather_for_memory(rows[m]), gather_for_memory(labels[m]))
                                 if rows[m] is not None else None for m in ("image", "text")))
        self.iteration += 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        self.meters.update(values)
        return values | {"lr": lr}

    def _count_unlabeled_skips(self, batch: dict[str, Any]) -> bool:
        """Count the batch's unreadable crops; False after `max_nonfinite` batches in a row without one readable crop:
        the images are gone (moved, unmounted), and training on without them is not what the user asked for."""
        if self.pool is None:
            return True
        skipped = batch["u_skipped"]
        self.skipped_unlabeled.add(skipped)
        self.unlabeled_empty_run = self.unlabeled_empty_run + 1 if skipped and not len(batch["u_rows"]) else 0
        return self.unlabeled_empty_run < self.opts.max_nonfinite

    def _skip(self, empty: bool) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.iteration += 1
        if empty:
            self.empty_run += 1
            log.warning("iteration %d: no readable image in the batch on some rank; step skipped (%d so far)",
                        self.iteration, self.skipped_steps)
            if self.empty_run >= self.opts.max_nonfinite:
                raise UnreadableBatchesError(
                    f"{self.empty_run} batches in a row without one readable image: are the images still under "
                    f"{self.records.image_root}? {self.skipped_images.summary(3)}")
            return None
        self.nonfinite_run += 1
        log.warning("iteration %d: non-finite loss on some rank; step skipped (%d so far)", self.iteration,
                    self.skipped_steps)
        if self.nonfinite_run >= self.opts.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_run} non-finite losses in a row at iteration {self.iteration}: training diverged. "
                f"Lower --lr (now {self.opts.lr}), keep --clip_grad on, try --amp none, or resume from an earlier "
                f"checkpoint in {self.run_dir}")
        return None

    # ------------------------------------------------------------------ the loop
    def _stop(self, signum: int, saved: bool) -> NoReturn:
        """A stop was requested (on any rank): rank 0 checkpoints the step just finished (unless `saved` already),
        every rank stops."""
        path = self.run_dir / f"{self.iteration}.pt"
        if self.info.is_main:
            if not saved:
                self.save()
            log.info("stopped on request (%s) at iteration %d; %s written", signal.Signals(signum).name,
                     self.iteration, path)
        barrier()
        raise TrainingStopped(signum, f"at iteration {self.iteration}: checkpoint {path}", self.run_dir)

    def fit(self) -> TrainResult:
        o, main = self.opts, self.info.is_main
        if main:
            if o.overwrite and not o.resume:
                runs.clear_run(self.run_dir)
            files.make_folder(self.run_dir)
            files.clean_stale_temps(self.run_dir)
            files.write_json(self.run_dir / OPTIONS_FILE, to_dict(o))
        writer = logs.tensorboard(self.run_dir / "tb", self.iteration) if main else None
        handler = logs.file_log(self.run_dir / "train.log") if main else None
        try:
            with logging_redirect_tqdm():
                last, final = self._loop(writer)
        finally:
            if writer:
                writer.close()
            if handler:
                logs.close_file_log(handler)
        barrier()
        return TrainResult(self.run_dir, self.iteration, last, self.run_dir / BEST_NAME if self.best else None,
                           self.best, final, self.skipped_steps, len(self.skipped_images))

    def _loop(self, writer: SummaryWriter | None) -> tuple[Path | None, dict[str, dict] | None]:
        """Train to max_iters; returns the last checkpoint and (rank 0) the final evaluation of every case."""
        o, main = self.opts, self.info.is_main
        if main:
            log.info("training %s from iteration %d to %d: %d train images, world size %d, device %s",
                     self.run_dir, self.iteration, o.max_iters, len(self.train_rows), self.info.world_size,
                     self.device)
            if self.picker:
                log.info("unlabeled: %s; each batch adds %d of their images and %d captions per rank",
                         self.pool.describe(), *self.picker.counts)
        batches = iter(self.loader()) if self.iteration < o.max_iters else iter(())
        seen, tick = 0, time.perf_counter()
        last = final = None
        with tqdm(total=o.max_iters, initial=self.iteration, disable=not main, dynamic_ncols=True, unit="it") as bar, \
                stopping.safe_points("after this step"):
            while self.iteration < o.max_iters:
                batch = next(batches)
                values = self.train_step(batch)
                seen += (len(batch["rows"]) + len(batch.get("u_rows", ()))) * self.info.world_size
                bar.update(1)
                it = self.iteration
                if main and values is not None and (it % o.log_every == 0 or it == o.max_iters):
                    rate = seen / (time.perf_counter() - tick)
                    log.info(self.meters.line(it, values["lr"], rate))
                    for key, value in values.items():
                        writer.add_scalar(f"train/{key}", value, it)
                    writer.add_scalar("train/images_per_s", rate, it)
                    seen, tick = 0, time.perf_counter()
                if main and o.eval_every and it % o.eval_every == 0 and it < o.max_iters:
                    self._evaluate_and_keep_best(writer)
                saved = it % o.save_every == 0 or it == o.max_iters
                if saved:
                    if main:
                        last = self.save()  # before the final evaluation: nothing trained is lost if it fails
                    barrier()
                signum = agreed_stop(self.device)  # after the step's evaluation and save, as a resumed run expects
                if signum:
                    self._stop(signum, saved)
        if main:  # past the safe points: every step is done, and a stop request comes at once
            if last is not None:
                final = self._final_evaluation(writer)
            else:  # nothing left to train: evaluate and keep what the resumed run holds
                last, final = self.save(), self.evaluate(self.final_cases)
        if len(self.skipped_images):
            log.warning("training %s", self.skipped_images.summary())
        if len(self.skipped_unlabeled):
            log.warning("training, unlabeled %s", self.skipped_unlabeled.summary())
        return last, final


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def train(opts: TrainOptions, given: set[str] | None = None) -> TrainResult:
    """Train (or continue, with opts.resume) a run to opts.max_iters."""
    return Trainer(opts, given).fit()
