"""The identity classifier (`--id_cls_weight`): IRRA's ID loss, a cosine classifier over the labelled identities
that both students' embeddings are trained to name (cross-entropy), as person re-identification trains its
embeddings. It lives only in training: the checkpoint keeps it (`head`) for --resume, the export leaves it out.

Cosine logits (both the embedding and the class weights normalised, divided by a temperature) rather than a plain
linear layer: the students' embeddings are compared by cosine, so the classifier should separate identities in
that geometry, and a plain layer would reward a larger norm instead (NormFace, Wang et al. 2017).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class IdentityClassifier(torch.nn.Module):
    """Logits [n, identities] of embeddings [n, dim]: cos(embedding, class weight) / temperature."""

    def __init__(self, identities: int, dim: int, temperature: float = 0.05, seed: int = 0) -> None:
        super().__init__()
        if identities < 2 or temperature <= 0:
            raise ValueError(f"an identity classifier needs 2 identities or more and a temperature > 0, got "
                             f"{identities} and {temperature}")
        # Its own generator: the same weights on every rank, and the students' initialisation left as it was.
        start = torch.randn(identities, dim, generator=torch.Generator().manual_seed(seed))
        self.weight = torch.nn.Parameter(start * dim ** -0.5)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1) @ F.normalize(self.weight, dim=-1).T / self.temperature

    def loss(self, s_img: torch.Tensor, s_cap: torch.Tensor, pid: torch.Tensor, cap_pid: torch.Tensor,
             modalities: set[str]) -> torch.Tensor:
        """Mean cross-entropy of the trained students' embeddings (`modalities`) against their identities."""
        parts = ([F.cross_entropy(self(s_img), pid)] if "image" in modalities else []) + \
                ([F.cross_entropy(self(s_cap), cap_pid)] if "text" in modalities else [])
        return sum(parts) / len(parts)


def average_gradients(module: torch.nn.Module) -> None:
    """Average `module`'s gradients over the ranks: the classifier sits outside DistributedDataParallel (so the
    exported students' module stays as it is), so its gradients are all-reduced here, after backward."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
