"""MobileFaceNet-like students (Chen et al., 2018): inverted residuals, PReLU, a GDC head.

`ANet2` keeps MobileFaceNet's layout (0.91M trunk parameters, about 1M with its head) at the person-crop input
224x112; `ANet2_w050` halves every channel count, `ANet2_w075` keeps three quarters. Total stride 16, so 224x112
ends on a 14x7 map, which the GDC head (a depthwise conv over the whole map) turns into one vector: the net is tied
to `image_size`. The `_relu` variants put ReLU where MobileFaceNet has PReLU: int8 runtimes fuse a ReLU into the
quantised convolution before it, while PReLU's per-channel slopes stay a float step between two quantised ones
(int8 ANet2 at 224x112 on one CPU thread, real crops: about 27 ms with PReLU, whose onnxruntime kernel is ~10x
slower on mixed-sign inputs, and 4.2 ms with ReLU; BENCHMARKS.md).
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

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, act: str = "prelu"):
        super().__init__()
        hidden = cin * expansion
        self.block = nn.Sequential(ConvBN(cin, hidden, 1, act=act),
                                   ConvBN(hidden, hidden, 3, stride, groups=hidden, act=act),
                                   ConvBN(hidden, cout, 1, act=None))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileFaceNet(ImageBackbone):
    """MobileFaceNet trunk scaled by `width`, with `activation` "prelu" or "relu" (class attributes the named
    variants set)."""

    width = 1.0
    activation = "prelu"
    fixed_size = True

    def __init__(self, feature_dim: int, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE):
        super().__init__(feature_dim, image_size)
        c = lambda n: make_divisible(n * self.width)
        act = self.activation
        layers: list[nn.Module] = [ConvBN(3, c(64), 3, 2, act=act), ConvBN(c(64), c(64), 3, groups=c(64), act=act)]
        cin, halvings = c(64), 1
        for expansion, channels, repeats, stride in _STAGES:
            for i in range(repeats):
                s = stride if i == 0 else 1
                layers.append(InvertedResidual(cin, c(channels), s, expansion, act))
                cin, halvings = c(channels), halvings + (s == 2)
        layers.append(ConvBN(cin, c(512), 1, act=act))
        self.trunk = nn.Sequential(*layers)
        self.head = EmbeddingHead(c(512), feature_dim, feature_map_size(self.image_size, halvings))


@register
class ANet2(MobileFaceNet):
    """MobileFaceNet at full width: 0.91M trunk parameters (1.1M with a 256-d head), ~0.44 GMACs at 224x112."""


@register
class ANet2_w050(MobileFaceNet):
    """MobileFaceNet at half width: 0.24M trunk parameters, ~0.12 GMACs at 224x112."""

    width = 0.5


@register
class ANet2_w075(MobileFaceNet):
    """MobileFaceNet at three-quarter width: between the two for a device that fits neither."""

    width = 0.75


@register
class ANet2_relu(ANet2):
    """ANet2 with ReLU in place of PReLU: the int8 student that meets 5 ms a crop at 224x112 on one CPU thread."""

    activation = "relu"


@register
class ANet2_w075_relu(ANet2_w075):
    """ANet2_w075 with ReLU in place of PReLU."""

    activation = "relu"


@register
class ANet2_w050_relu(ANet2_w050):
    """ANet2_w050 with ReLU in place of PReLU."""

    activation = "relu"
