"""The long memory: a FIFO ring of past embeddings and identity labels (XBM, Wang et al., CVPR 2020).

`XBMemory` is one ring; `CrossModalMemory` holds an image ring and a caption ring plus the step count
that decides the warm-up. Both save their contents, write pointer and filled count in `state_dict()`,
so a resumed run continues with exactly the memory an uninterrupted run has.

Under DDP every rank enqueues the whole global batch (`gather_for_memory`, in rank order), so all
ranks hold identical memories and any rank's `state_dict()` is the run's memory.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_offset(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' `tensor` (detached) concatenated in rank order, and where this rank's rows start.

    Ranks may hold different numbers of rows: sizes are gathered first and the rows padded to the
    largest, because `all_gather` needs equal shapes. Without an initialised process group (or with
    one rank) this is the identity and the offset is 0.
    """
    local = tensor.detach()
    if not _distributed():
        return local, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([local.shape[0]], dtype=torch.int64, device=local.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]), sum(sizes[:rank])


def gather_for_memory(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' `tensor` rows (detached) in rank order; the tensor itself outside DDP."""
    return gather_with_offset(tensor)[0]


class XBMemory:
    """A ring of `size` embeddings [dim] and int64 labels; `enqueue` overwrites the oldest entries.

    `get()` returns the filled part in storage order (not oldest-first: the losses do not care about
    order, and rolling the ring each step would copy the whole memory). The returned tensors are views
    of the ring: copy them if you keep them across an `enqueue`. The ring moves to the device of the
    first embeddings enqueued on another device, so it follows the model without a `.to()` call.
    """

    def __init__(self, size: int, dim: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"memory size ({size}) and dim ({dim}) must both be >= 1")
        self.size, self.dim, self.dtype = size, dim, dtype
        self.emb = torch.zeros(size, dim, dtype=dtype, device=device)
        self.labels = torch.zeros(size, dtype=torch.int64, device=device)
        self.ptr = 0     # next slot to write
        self.filled = 0  # number of valid slots, at most size

    def enqueue(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        """Append rows (detached) and their labels, overwriting the oldest when full."""
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"memory expects embeddings [N, {self.dim}], got {list(emb.shape)}")
        if labels.shape != (emb.shape[0],):
            raise ValueError(f"memory expects one label per embedding ({emb.shape[0]}), got labels "
                             f"of shape {list(labels.shape)}")
        if self.emb.device != emb.device:
            self.emb, self.labels = self.emb.to(emb.device), self.labels.to(emb.device)
        n = emb.shape[0]
        # Only the last `size` rows survive a long enqueue; they land where a row-by-row FIFO puts them.
        keep = min(n, self.size)
        slots = (self.ptr + torch.arange(n - keep, n, device=emb.device)) % self.size
        self.emb[slots] = emb.detach()[n - keep:].to(self.dtype)
        self.labels[slots] = labels.detach()[n - keep:].to(device=emb.device, dtype=torch.int64)
        self.ptr = (self.ptr + n) % self.size
        self.filled = min(self.size, self.filled + n)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [filled, dim], labels [filled]) of the filled slots."""
        return self.emb[: self.filled], self.labels[: self.filled]

    def state_dict(self) -> dict[str, Any]:
        # Slots past `filled` are never read, so only the filled part is saved (it is also exactly the
        # ring's storage up to `filled`, since an unfilled ring has written slots 0..filled-1).
        return {"size": self.size, "dim": self.dim, "ptr": self.ptr, "filled": self.filled,
                "emb": self.emb[: self.filled].detach().cpu().clone(),
                "labels": self.labels[: self.filled].detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"size", "dim", "ptr", "filled", "emb", "labels"} - set(state)
        if missing:
            raise ValueError(f"memory state lacks {', '.join(sorted(missing))}: not a saved XBMemory state")
        if state["size"] != self.size or state["dim"] != self.dim:
            raise ValueError(f"saved memory is {state['size']} x {state['dim']} but this memory is "
                             f"{self.size} x {self.dim}: use the same --memory_size and feature dim as the "
                             f"saved run")
        filled, ptr = int(state["filled"]), int(state["ptr"])
        if not (0 <= filled <= self.size and 0 <= ptr < self.size) or state["emb"].shape != (filled, self.dim) \
                or state["labels"].shape != (filled,):
            raise ValueError(f"saved memory state is inconsistent (ptr {ptr}, filled {filled}, "
                             f"emb {list(state['emb'].shape)}, labels {list(state['labels'].shape)})")
        self.emb.zero_()
        self.labels.zero_()
        self.emb[:filled] = state["emb"].to(self.emb.device, self.dtype)
        self.labels[:filled] = state["labels"].to(self.labels.device, torch.int64)
        self.ptr, self.filled = ptr, filled


class CrossModalMemory:
    """An image ring and a caption ring, used and filled only after `warmup_iters` updates.

    Warm-up follows the original XBM: before `warmup_iters` steps nothing is enqueued and the memory
    is not read, because embeddings from the first iterations drift fast and would be stale negatives
    and positives; the memory fills from the first step after warm-up. `steps` (the number of `update` calls: steps
    taken, so a skipped step does not count) is saved with the contents, so warm-up survives a resume.
    """

    def __init__(self, size: int, dim: int, dtype: torch.dtype = torch.float32, warmup_iters: int = 0,
                 device: torch.device | str | None = None) -> None:
        if warmup_iters < 0:
            raise ValueError(f"memory warm-up must be >= 0 iterations, got {warmup_iters}")
        self.image = XBMemory(size, dim, dtype, device)
        self.text = XBMemory(size, dim, dtype, device)
        self.warmup_iters = warmup_iters
        self.steps = 0

    @property
    def active(self) -> bool:
        """Whether this step reads (and then fills) the memory."""
        return self.steps >= self.warmup_iters

    def update(self, image: tuple[torch.Tensor, torch.Tensor] | None,
               text: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """End one training step: enqueue the (global) batch's `(embeddings, labels)` of each modality
        given (None: that ring is left as it is) if past warm-up, then count the step."""
        if self.active:
            for ring, rows in ((self.image, image), (self.text, text)):
                if rows is not None:
                    ring.enqueue(*rows)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"image": self.image.state_dict(), "text": self.text.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not {"image", "text", "steps"} <= set(state):
            raise ValueError("memory state lacks image/text/steps: not a saved CrossModalMemory state")
        self.image.load_state_dict(state["image"])
        self.text.load_state_dict(state["text"])
        self.steps = int(state["steps"])
