"""The smallest student: MobileNetV1 at width 0.5 (Howard et al., 2017), cut at stride 16.

Only Conv, ReLU and global average pooling: the operator set the most limited NPUs take (no PReLU),
and any input size works. For cameras where even ANet2_w050 is too heavy.
"""
from __future__ import annotations

import torch
from torch import nn

from person.data.images import DEFAULT_IMAGE_SIZE
from person.models.backbone.layers import ConvBN, EmbeddingHead, ImageBackbone
from person.models.registry import register

# (output channels, stride) of each depthwise-separable layer after the 16-channel stride-2 stem.
_LAYERS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1), (256, 1))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + ReLU, then 1x1 pointwise conv + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.depthwise = ConvBN(cin, cin, 3, stride, groups=cin, act="relu")
        self.pointwise = ConvBN(cin, cout, 1, act="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


@register
class TinyNet(ImageBackbone):
    """0.28M trunk parameters, ~51 MMACs at 224x112."""

    def __init__(self, feature_dim: int, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE):
        super().__init__(feature_dim, image_size)
        layers: list[nn.Module] = [ConvBN(3, 16, 3, 2, act="relu")]
        cin = 16
        for cout, stride in _LAYERS:
            layers.append(DepthwiseSeparable(cin, cout, stride))
            cin = cout
        self.trunk = nn.Sequential(*layers)
        self.head = EmbeddingHead(cin, feature_dim)
