"""The demo teacher's loss: SigLIP's sigmoid loss over a label matrix, where a caption may have many positives."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_sigmoid_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sigmoid loss over a label matrix: -1/T sum_ij w_ij log sigmoid(+-logits_ij).

    `logits` [T captions, I images], `labels` [T, I] bool. A positive counts with w = 1/P of its row (P its
    row's positives), so a vague caption with many positives weighs no more than an exact one; a
    negative with w = 1 (SigLIP's own loss when each row has one positive)."""
    if logits.shape != labels.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must be the same "
                         f"[captions, images] matrix")
    labels = labels.bool()
    per_row = labels.sum(dim=1, keepdim=True)
    if (per_row == 0).any():
        raise ValueError(f"label rows {torch.nonzero(per_row[:, 0] == 0).flatten().tolist()} have no positive: each "
                         f"caption's own image must be in the batch")
    weight = torch.where(labels, 1.0 / per_row.to(logits.dtype), torch.ones_like(logits))
    sign = labels.to(logits.dtype) * 2 - 1
    return -(weight * F.logsigmoid(sign * logits)).sum() / logits.shape[0]
