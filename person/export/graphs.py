"""The students as export graphs: what goes inside the ONNX files and what stays outside.

Image: the student with every BatchNorm folded into its convolution (no BatchNormalization node; many NPU
compilers reject one after Gemm), input the normalised image float32 [B, 3, H, W], output [B, D].
Text: the student from its looked-up character vectors on (`forward_embedded`): the byte table is
`input_embeddings.npy` and the lookup happens outside, since many NPU runtimes have no Gather; inputs
`chars` float32 [B, L, E] and `mask` float32 [B, L] (1 = a real character), output [B, D].
Both end with the L2 normalisation written as Mul, ReduceSum, Max, Sqrt, Div (no ReduceL2, which some NPU
toolchains lack), or leave it to the caller (`normalize=False`, for runtimes without a reduction).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from person.models.backbone.layers import fuse_bn

IMAGE_INPUT, TEXT_INPUTS, OUTPUT = "image", ("chars", "mask"), "embedding"
_EPS2 = 1e-24  # F.normalize divides by max(norm, 1e-12): the same floor, on the squared norm


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / max(||x||, 1e-12) along the last axis, in ops every runtime has."""
    return x / torch.sqrt(torch.clamp((x * x).sum(dim=-1, keepdim=True), min=_EPS2))


class ImageGraph(nn.Module):
    """A copy of the image student with BatchNorm folded, optionally L2-normalising its output."""

    def __init__(self, student: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.student, self.normalize = fuse_bn(student).eval(), normalize

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.student(image)
        return l2_normalize(out) if self.normalize else out


class TextGraph(nn.Module):
    """The text student from looked-up character vectors on, optionally L2-normalising its output."""

    def __init__(self, student: nn.Module, normalize: bool = True, conv2d_stem: bool = False) -> None:
        super().__init__()
        if not hasattr(student, "forward_embedded") or not hasattr(student, "byte_table"):
            raise TypeError(f"{type(student).__name__} has no forward_embedded / byte_table: the export keeps the "
                            f"character lookup outside the graph (see person.models.tbackbone.char)")
        self.student, self.normalize = copy.deepcopy(student).eval(), normalize
        if conv2d_stem:  # the same weights as 4-D convolutions, for NPU compilers (person.models.tbackbone.char)
            self.student.conv2d_stem = True

    def forward(self, chars: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.student.forward_embedded(chars, mask)
        return l2_normalize(out) if self.normalize else out

    def byte_table(self) -> torch.Tensor:
        return self.student.byte_table().float()
