"""The optimiser and its weight-decay rule, shared by the students' trainer and the demo teacher's recipe."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from person.train.options import TrainOptions


def param_groups(model: torch.nn.Module, weight_decay: float, exempt: Sequence[str] = ("embedding",)
                 ) -> list[dict[str, Any]]:
    """Two groups: decay on matrices, none on vectors (norms, biases, logit scales: decay would shrink them to 0)
    nor on parameters whose name holds one of `exempt` (embedding tables and position vectors, by default)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if p.ndim < 2 or any(part in name for part in exempt) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    """The run's optimiser (--optimizer) over `param_groups` at --lr and --weight_decay."""
    groups = param_groups(model, opts.weight_decay)
    if opts.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=opts.lr)
    if opts.optimizer == "adam":
        return torch.optim.Adam(groups, lr=opts.lr)
    return torch.optim.SGD(groups, lr=opts.lr, momentum=0.9, nesterov=True)
