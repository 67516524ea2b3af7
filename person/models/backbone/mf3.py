"""MobileFaceNet-like students (Chen et al., 2018): inverted residuals, PReLU, a GDC head.

`ANet2` keeps MobileFaceNet's layout (0.91M trunk parameters, about 1M with its head) at the person-crop input
224x112; `ANet2_w050` halves every channel count. Total stride 16, so 224x112 ends on a 14x7 map, which
the GDC head (a depthwise conv over the whole map) turns into one vector: the net is tied to `image_size`.
"""
from __future__ import annotations

import torch
from torch import nn

from person.data.images import DEFAULT_IMAGE_SIZE
from person.models.backbone.layers import ConvBN, EmbeddingHead, ImageBackbone, feature_map_size, make_divisible
from person.models.registry import register

# (expansion, channels, repeats, first stride) as in MobileFaceNet's Table 1.
_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class InvertedResidual(nn.Module):
    """1x1 expand + PReLU, 3x3 depthwise + PReLU, 1x1 linear projection; Add when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.block = nn.Sequential(ConvBN(cin, hidden, 1), ConvBN(hidden, hidden, 3, stride, groups=hidden),
                                   ConvBN(hidden, cout, 1, act=None))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileFaceNet(ImageBackbone):
    """MobileFaceNet trunk scaled by `width` (a class attribute the named variants set)."""

    width = 1.0
    fixed_size = True

    def __init__(self, feature_dim: int, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE):
        super().__init__(feature_dim, image_size)
        c = lambda n: make_divisible(n * self.width)
        layers: list[nn.Module] = [ConvBN(3, c(64), 3, 2), ConvBN(c(64), c(64), 3, groups=c(64))]
        cin, halvings = c(64), 1
        for expansion, channels, repeats, stride in _STAGES:
            for i in range(repeats):
                s = stride if i == 0 else 1
                layers.append(InvertedResidual(cin, c(channels), s, expansion))
                cin, halvings = c(channels), halvings + (s == 2)
        layers.append(ConvBN(cin, c(512), 1))
        self.trunk = nn.Sequential(*layers)
        self.head = EmbeddingHead(c(512), feature_dim, feature_map_size(self.image_size, halvings))


@register
class ANet2(MobileFaceNet):
    """MobileFaceNet at full width: 0.91M trunk parameters (1.1M with a 256-d head), ~0.44 GMACs at 224x112."""


@register
class ANet2_w050(MobileFaceNet):
    """MobileFaceNet at half width: 0.24M trunk parameters, ~0.12 GMACs at 224x112."""

    width = 0.5
