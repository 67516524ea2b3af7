"""Blocks shared by the image students, limited to operators that camera/NPU runtimes take.

Conv, BatchNorm (folded into the conv before export by `fuse_bn`), ReLU/PReLU, Add, pooling, Linear,
Flatten: no GELU, LayerNorm, attention or hard-swish in an image net.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

_ACTIVATIONS = ("relu", "prelu", None)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of `divisor` (NPUs run aligned channel counts fastest)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def feature_map_size(image_size: tuple[int, int], halvings: int) -> tuple[int, int]:
    """(h, w) after `halvings` stride-2 layers with 'same' padding (each maps n -> ceil(n / 2))."""
    h, w = image_size
    for _ in range(halvings):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def check_args(feature_dim: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """Validated (H, W) for a backbone constructor; a clear error for a bad size or dimension."""
    if not isinstance(feature_dim, int) or isinstance(feature_dim, bool) or feature_dim < 1:
        raise ValueError(f"feature_dim must be a positive int (the teacher's dimension), got {feature_dim!r}")
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), e.g. (224, 112), got {image_size!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"image_size {h}x{w} is too small: both sides must be at least 16 pixels")
    return h, w


def _activation(name: str | None, channels: int) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {name!r}")
    if name == "relu":
        return nn.ReLU(inplace=True)
    return nn.PReLU(channels) if name == "prelu" else nn.Identity()


class _FoldableBN(nn.Module):
    """A layer (`self.layer`: Conv2d or Linear, no bias) followed by `self.bn`, foldable into one layer."""

    layer: nn.Conv2d | nn.Linear
    bn: nn.Module

    @torch.no_grad()
    def fold_bn_(self) -> None:
        """Fold the (eval-mode) BatchNorm into the layer's weight and bias, in place."""
        if isinstance(self.bn, nn.Identity):
            return
        bn = self.bn
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = self.layer.weight.double() * scale.reshape(-1, *[1] * (self.layer.weight.dim() - 1))
        bias = bn.bias.double() - bn.running_mean.double() * scale
        if self.layer.bias is not None:
            bias = bias + self.layer.bias.double() * scale
        self.layer.weight.copy_(weight.to(self.layer.weight.dtype))
        self.layer.bias = nn.Parameter(bias.to(self.layer.weight.dtype))
        self.bn = nn.Identity()


class ConvBN(_FoldableBN):
    """Conv2d (no bias) -> BatchNorm2d -> activation ("relu", "prelu" or None)."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int] = 3, stride: int = 1,
                 groups: int = 1, act: str | None = "prelu", padding: int | tuple[int, int] | None = None):
        super().__init__()
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        pad = (k[0] // 2, k[1] // 2) if padding is None else padding
        self.layer = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False)
        nn.init.kaiming_normal_(self.layer.weight, mode="fan_out", nonlinearity="relu")  # He init, as ResNet
        self.bn = nn.BatchNorm2d(cout)
        self.act = _activation(act, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.layer(x)))


class LinearBN(_FoldableBN):
    """Linear (no bias) -> BatchNorm1d: the face-recognition 'feature' layer that ends the head."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.layer = nn.Linear(cin, cout, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.layer(x))


def fuse_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every ConvBN / LinearBN folded (the original is untouched).

    The export graph then has no BatchNormalization op (many NPU compilers reject one after Gemm) and
    gives the same output as `model.eval()` up to float rounding.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, _FoldableBN):
            module.fold_bn_()
    return fused


class EmbeddingHead(nn.Module):
    """Feature map [B, C, h, w] -> raw embedding [B, D]: pool, flatten, LinearBN.

    With `feature_map` (h, w) the pool is MobileFaceNet's GDC, a depthwise conv whose kernel covers the
    whole map, so each position gets its own learned weight (needs that fixed input size); without it,
    global average pooling, which takes any input size.
    """

    def __init__(self, channels: int, feature_dim: int, feature_map: tuple[int, int] | None = None):
        super().__init__()
        self.pool = (ConvBN(channels, channels, feature_map, groups=channels, act=None, padding=0)
                     if feature_map else nn.AdaptiveAvgPool2d(1))
        self.flatten = nn.Flatten()
        self.embed = LinearBN(channels, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.flatten(self.pool(x)))


class ImageBackbone(nn.Module):
    """Base of the built-in image students: `self.trunk` (image -> feature map), then `self.head`.

    Input: float32 [B, 3, H, W], normalised as `person.data.images` does. Output: the *raw* embedding
    [B, feature_dim]; losses, evaluation and export L2-normalise it (one convention for every student).
    A subclass sets `trunk`, `head` and `fixed_size` (True when the head is a GDC tied to `image_size`).
    """

    fixed_size = False
    trunk: nn.Module
    head: nn.Module

    def __init__(self, feature_dim: int, image_size: tuple[int, int]):
        super().__init__()
        self.image_size = check_args(feature_dim, image_size)
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = tuple(images.shape[-2:])
        if self.fixed_size and not torch.jit.is_tracing() and size != self.image_size:
            raise ValueError(f"{type(self).__name__} was built for {self.image_size[0]}x{self.image_size[1]} images "
                             f"(its GDC head is tied to that size), got {size[0]}x{size[1]}: resize the input "
                             f"or build the model with image_size={size}")
        return self.head(self.trunk(images))
