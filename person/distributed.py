"""One process or many: the torchrun environment read once, the process group set up and torn down.

`torchrun --nproc_per_node=N cmd.py ...` sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `python cmd.py`
sets none and runs as rank 0 of 1 with no process group. The device comes from LOCAL_RANK (never from
the global rank, which breaks on a second node); the backend is NCCL on CUDA and gloo on CPU. A stop request
reaches the ranks as it may (a signal to one of them): `agreed_stop` makes it every rank's after the same step.
"""
from __future__ import annotations

import datetime
import gc
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from person import stopping


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def pick_device(requested: str | None, local_rank: int, world_size: int = 1) -> torch.device:
    """`requested` ("cpu", "cuda", "cuda:1") or, when None, cuda:LOCAL_RANK if a GPU is present, else cpu.

    Under torchrun a GPU index is LOCAL_RANK's business: "cuda:1" would put every rank on one GPU.
    """
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is not None and world_size > 1:
        raise ValueError(f"--device {requested} under torchrun would put all {world_size} ranks on one GPU: pass "
                         f"--device cuda (each rank takes cuda:LOCAL_RANK) or set CUDA_VISIBLE_DEVICES")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} asked for, but no CUDA GPU is available here; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def init_distributed(device: str | None = None, timeout_minutes: int = 30) -> DistInfo:
    """Read the torchrun environment; with WORLD_SIZE > 1 start the process group (idempotent)."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    dev = pick_device(device, local_rank, world)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_minutes),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistInfo(rank, world, local_rank, dev)


def agreed_stop(device: torch.device) -> int | None:
    """The stop request (person.stopping) of this process or, under torchrun, of any rank: the same answer on every
    rank (the largest signal number), so all stop after the same step and none waits in a collective for one that
    left. Every rank calls it at the same points; it costs one all_reduce of one number."""
    mine = stopping.requested() or 0
    if not (dist.is_available() and dist.is_initialized()):
        return mine or None
    flag = torch.tensor([mine], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group together, once nothing uses it any more (call it in a `finally`).

    Objects still holding it (a DDP reducer in a reference cycle) are collected first: destroyed after
    the group, or during interpreter shutdown, they can abort the process ("terminate called without an
    active exception"). The barrier keeps a rank from tearing its connections down while a peer is still
    in its last collective. It waits only when every rank comes here: on the way out of a normal end or an
    agreed stop. A rank that leaves alone (an error, a stop at once: the exception in flight says so) leaves
    without it, since its peers may never come and the barrier would hang it; theirs then fail instead.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        leaving = sys.exc_info()[1]
        if leaving is None or (isinstance(leaving, stopping.Stopped) and not leaving.at_once):
            dist.barrier()
        dist.destroy_process_group()
