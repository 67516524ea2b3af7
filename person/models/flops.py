"""Count multiply-accumulates (MACs) of convolution and Linear layers with forward hooks.

These layers hold nearly all the work of a CNN student; pooling, activations and normalisation are
left out, as are matrix products outside Linear layers (attention scores in a transformer).
"""
from __future__ import annotations

import math

import torch
from torch import nn

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of one forward pass of `model(*inputs)` (pass batch-size-1 inputs for a per-sample figure).

    Runs in eval mode (so BatchNorm statistics are not updated) and restores the model's mode after.
    """
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            per_output = module.in_features
        total += output.numel() * per_output

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
