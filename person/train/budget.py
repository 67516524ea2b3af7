"""The memory one training step needs, estimated before the first step and refused when it is not there.

A batch too large for the machine is otherwise ended by the kernel's OOM killer (or CUDA's allocator) with no word
of why, and on a shared machine only after taking everyone's memory. `check_training_memory` adds up one step:
- the parameters, their gradients and the optimiser's state (Adam / AdamW: two more copies; SGD: one);
- activations: what autograd keeps for the backward pass of one image and one caption at --max_seq_length,
  measured by running a copy of the students on the meta device (shapes only: no memory, no arithmetic) under
  saved-tensor hooks, times the batch, times BACKWARD_FACTOR for the gradients the backward pass holds meanwhile;
- the batch (uint8 pixels and their float copy, character bytes, the teacher's targets), the losses' similarity
  matrices, the long memory's rings and the batches the loader workers prefetch.
It is an estimate in float32 (mixed precision needs less): what it refuses needs well over what is there.
`available_memory` is what the process may still take: MemAvailable, or its cgroup's limit less the cgroup's use
where that is smaller (cgroup v2 memory.max, v1 memory.limit_in_bytes; a container's or a slurm job's limit).
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from person.data.images import parse_image_size
from person.data.text import BYTES_PER_CHAR
from person.errors import PersonError
from person.models.students import Students
from person.train.options import TrainOptions

log = logging.getLogger(__name__)

GIB = 1 << 30
# The kept activations plus the gradients flowing through them: a CPU step of ANet2 + L3 at 224x112 peaked at
# 1.0-1.2x the kept activations; the rest is margin.
BACKWARD_FACTOR = 1.5
LOSS_COPIES = 8  # [N, M] matrices a step holds per pair of embedding sets: student, teacher, softmax, grads
PREFETCH = 4  # batches each loader worker holds ahead (the trainer's DataLoader prefetch_factor)
_F32 = 4


class TrainingMemoryError(PersonError, MemoryError):
    """A training step would need more memory than there is; the message says how much, and what to lower."""


@dataclass(frozen=True)
class StepMemory:
    """Bytes one training step needs, by what holds them."""

    parameters: int   # weights, gradients, optimiser state
    activations: int  # kept for the backward pass, and the gradients flowing through them
    batch: int        # pixels (uint8 and float), character bytes, the teacher's targets
    losses: int       # similarity matrices of the loss terms
    long_memory: int  # the rings of past embeddings (--memory_size), when a term reads them
    loader: int       # batches prefetched by the loader workers

    @property
    def total(self) -> int:
        return sum(astuple(self))

    def parts(self) -> str:
        """The parts, largest first: "activations 401.2 GiB, batch 3.1 GiB, ..."."""
        sized = sorted(((getattr(self, f.name), f.name.replace("_", " ")) for f in fields(self)), reverse=True)
        return ", ".join(f"{name} {gib(size)} GiB" for size, name in sized if size)


def gib(n: float) -> str:
    return f"{n / GIB:.1f}" if n >= GIB / 10 else f"{n / GIB:.3f}"


def activation_bytes(students: Students, image_size: tuple[int, int], seq_len: int) -> tuple[int, int]:
    """(bytes autograd keeps for one image through the image student, for one caption of `seq_len` characters
    through the text student); 0 for a student the pair lacks. Measured on a meta-device copy: nothing is
    allocated or computed, only shapes flow."""
    meta = copy.deepcopy(students).to("meta").train()
    image = text = 0
    if meta.image is not None:  # batch 2, halved: BatchNorm refuses a batch of one in training mode
        image = _saved_bytes(meta.image, torch.zeros(2, 3, *image_size, device="meta")) // 2
    if meta.text is not None:
        chars = torch.zeros(2, seq_len, BYTES_PER_CHAR, dtype=torch.uint8, device="meta")
        text = _saved_bytes(meta.text, chars, torch.ones(2, seq_len, dtype=torch.bool, device="meta")) // 2
    return image, text


def _saved_bytes(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves in one forward of `model` (parameters, counted elsewhere, left out),
    plus its output."""
    params = {id(p) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in params and (t._base is None or id(t._base) not in params):  # a weight, or a view of one
            saved[id(t)] = t.numel() * t.element_size()  # by identity: one tensor saved by two ops counts once
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(*inputs)
        total = sum(saved.values()) + out.numel() * out.element_size()
    return total


def estimate_step_memory(students: Students, opts: TrainOptions, feature_dim: int, uses_memory: bool,
                         unlabeled: tuple[int, int] = (0, 0)) -> StepMemory:
    """What one step of `opts`' batch (P x K images, their captions, and `unlabeled` (images, captions) rows of
    unlabeled stores) needs on one rank."""
    h, w = parse_image_size(opts.image_size)
    images = opts.p * opts.k + unlabeled[0]
    captions = opts.p * opts.k * opts.captions_per_image + unlabeled[1]
    per_image, per_caption = activation_bytes(students, (h, w), opts.max_seq_length)
    weights = sum(p.numel() for p in students.parameters() if p.requires_grad) * _F32
    states = 1 if opts.optimizer == "sgd" else 2
    pixels, chars = images * 3 * h * w, captions * opts.max_seq_length * (BYTES_PER_CHAR + 1)
    rows = opts.memory_size if uses_memory else 0
    embeddings = images + captions
    return StepMemory(
        parameters=weights * (2 + states),
        activations=int((per_image * images + per_caption * captions) * BACKWARD_FACTOR),
        batch=pixels * (1 + _F32) + chars + embeddings * feature_dim * _F32,
        losses=LOSS_COPIES * _F32 * (images * captions + images ** 2 + captions ** 2 + embeddings * rows),
        long_memory=2 * rows * (feature_dim * _F32 + 8),
        loader=opts.num_workers * PREFETCH * (pixels + chars),
    )


def check_training_memory(students: Students, opts: TrainOptions, feature_dim: int, *, uses_memory: bool,
                          device: torch.device | str = "cpu", ranks_here: int = 1,
                          available: int | None = None, unlabeled: tuple[int, int] = (0, 0)) -> StepMemory:
    """Refuse (TrainingMemoryError) a run whose step would not fit: on a CUDA device its free memory, else the
    host's `available_memory()` shared by the `ranks_here` ranks of this machine. `available` replaces the
    measured figure (tests). Returns the estimate."""
    need = estimate_step_memory(students, opts, feature_dim, uses_memory, unlabeled)
    device = torch.device(device)
    if device.type == "cuda":  # the loader's batches wait in host memory, the rest is on the GPU
        total, ranks = need.total - need.loader, 1
        room = torch.cuda.mem_get_info(device)[0] if available is None else available
        where = f"free on {device}"
    else:
        total, ranks = need.total * ranks_here, ranks_here
        room = available_memory() if available is None else available
        where = "in this machine's memory (the smaller of MemAvailable and the cgroup's limit)"
    h, w = parse_image_size(opts.image_size)
    batch = (f"a batch of {opts.p} x {opts.k} images at {h}x{w} and {opts.p * opts.k * opts.captions_per_image} "
             f"captions of up to {opts.max_seq_length} characters" +
             (f", plus {unlabeled[0]} unlabeled images and {unlabeled[1]} captions" if any(unlabeled) else ""))
    if total > room:
        each = f", for each of the {ranks} ranks here" if ranks > 1 else ""
        raise TrainingMemoryError(
            f"a training step needs about {gib(total)} GiB for {batch} ({need.parts()}{each}); {gib(room)} GiB "
            f"available {where}; lower --p/--k/--image_size/--max_seq_length" +
            (" or --unlabeled_share" if any(unlabeled) else ""))
    log.debug("a training step needs about %s GiB for %s; %s GiB available", gib(total), batch, gib(room))
    return need


def available_memory(root: Path = Path("/")) -> int:
    """Bytes this process may still take: the smallest of MemAvailable and, for its cgroup and each cgroup above
    it, the limit less what the cgroup uses (its inactive page cache counted as free: the kernel reclaims it).
    `root` is where /proc and /sys are found (tests). Without /proc: the physical memory."""
    known = [v for v in (_mem_available(root), *_cgroup_rooms(root)) if v is not None]
    if known:
        return min(known)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # nothing to go by: no refusal


def _mem_available(root: Path) -> int | None:
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "MemAvailable":
                return int(value.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


# (controller mount, limit file, usage file, memory.stat key of the inactive page cache) for cgroup v2 and v1
_V2 = ("sys/fs/cgroup", "memory.max", "memory.current", "inactive_file")
_V1 = ("sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def _cgroup_rooms(root: Path) -> list[int]:
    """limit - usage + inactive page cache, for this process's memory cgroup and those above it that set a limit."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or not (parts[1] == "" or "memory" in parts[1].split(",")):
            continue
        mount, *names = _V2 if parts[1] == "" else _V1
        base = root / mount
        folder = base / parts[2].lstrip("/")
        if not folder.is_dir():  # a container sees its own cgroup at the mount's root
            folder = base
        while True:
            room = _room(folder, *names)
            if room is not None:
                rooms.append(room)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return rooms


def _room(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    try:
        limit = (folder / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= 1 << 60:  # no limit (v1 writes it as nearly 2^63)
            return None
        used = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, int(limit) - used + inactive)
