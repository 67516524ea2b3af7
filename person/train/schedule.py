"""Learning-rate schedule: linear warm-up then cosine decay, a pure function of the iteration.

Being a function of the iteration alone, it needs no state in the checkpoint: a resumed run at
iteration n has exactly the learning rate an uninterrupted run had there.
"""
from __future__ import annotations

import math


def warmup_cosine(iteration: int, base_lr: float, max_iters: int, warmup_iters: int = 0,
                  min_lr_ratio: float = 0.01) -> float:
    """lr at `iteration` (0-based): base_lr * (i+1)/warmup during warm-up, then cosine to base_lr*min_lr_ratio."""
    if warmup_iters > 0 and iteration < warmup_iters:
        return base_lr * (iteration + 1) / warmup_iters
    span = max(1, max_iters - warmup_iters)
    progress = min(1.0, (iteration - warmup_iters) / span)
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
