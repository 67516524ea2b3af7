"""ResNet-like students (He et al., 2016): basic blocks, ReLU, global average pooling.

`ResNet18` is the classic 11M-parameter layout: a strong, heavier reference next to the MobileFaceNet
family. Global average pooling makes it run at any input size.
"""
from __future__ import annotations

import torch
from torch import nn

from person.data.images import DEFAULT_IMAGE_SIZE
from person.models.backbone.layers import ConvBN, EmbeddingHead, ImageBackbone
from person.models.registry import register

_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut (a strided 1x1 conv where the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(ConvBN(cin, cout, 3, stride, act="relu"), ConvBN(cout, cout, 3, act=None))
        self.shortcut = ConvBN(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(ImageBackbone):
    """7x7 stem + max pool, four stages of `blocks` (a class attribute the named variants set)."""

    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)

    def __init__(self, feature_dim: int, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE):
        super().__init__(feature_dim, image_size)
        layers: list[nn.Module] = [ConvBN(3, _WIDTHS[0], 7, 2, act="relu"), nn.MaxPool2d(3, 2, 1)]
        cin = _WIDTHS[0]
        for stage, (width, repeats) in enumerate(zip(_WIDTHS, self.blocks)):
            for i in range(repeats):
                layers.append(BasicBlock(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
        self.trunk = nn.Sequential(*layers)
        self.head = EmbeddingHead(cin, feature_dim)


@register
class ResNet18(ResNet):
    """ResNet-18: 11.2M trunk parameters, ~0.9 GMACs at 224x112."""
