"""Char-level transformer text students: UTF-8 bytes in, no tokenizer, any language (ARCHITECTURE.md, "Text as characters").

A character is its UTF-8 bytes padded to 4, (b0, b1, b2, b3); its vector is the sum of four rows of one
byte table `[4 * 256, E]`, row = position * 256 + byte. At export that table becomes
`input_embeddings.npy` and the runtime does the lookup itself (many NPU runtimes have no Gather):

    vector[c] = table[0 * 256 + b0] + table[1 * 256 + b1] + table[2 * 256 + b2] + table[3 * 256 + b3]

The exported graph starts at `forward_embedded(char_vectors [B, L, E], mask [B, L])`: learned positions,
a strided convolution over the characters (the n-gram stem), pre-norm transformer layers whose attention
ignores padded keys, masked mean pooling, a projection to `feature_dim`. The output is the *raw* embedding;
losses, evaluation and export L2-normalise it.

Why the stem: a transformer reading single characters must first learn, through attention alone, to
assemble words, and on the demo set it spent most of a 15-minute CPU budget doing so (held-out EER 22.8%
after 750 text-only iterations). A convolution of kernel 2s+1 and stride s hands the layers character
n-grams at 1/s of the length: EER 12.1% after the same 750 iterations at stride 2, in half the time.
"""
from __future__ import annotations

import torch
from torch import nn

from person.data.text import BYTE_VALUES, BYTES_PER_CHAR, DEFAULT_MAX_SEQ_LENGTH
from person.models.registry import register

_MASKED = -1e4  # added to padded keys' scores: exp() underflows to exactly 0, and an all-padding row stays finite


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (MatMul, Softmax) so every ONNX runtime takes it."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.scale = self.head_dim ** -0.5  # a Python float: a constant in the exported graph
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """x [B, L, E], key_bias [B, 1, 1, L] (0 for real characters, _MASKED for padding)."""
        b, n = x.shape[:2]
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        scores = q @ k.transpose(-2, -1) * self.scale + key_bias
        return self.out((scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    """Pre-norm transformer layer: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_bias))
        return x + self.drop(self.mlp(self.norm2(x)))


class CharTransformer(nn.Module):
    """Char-level transformer; `depth` (layers) is a class attribute the named variants L1..L6 set.

    `width` is E, the character-vector width (default 256); `heads` defaults to width // 64; `stem_stride`
    is the n-gram stem's stride s (kernel 2s+1, padding s: L characters become ceil(L / s) positions, for any L).
    """

    depth = 3
    conv2d_stem = False  # export-safe variant of the same weights (see _stem), set by the NPU export

    def __init__(self, feature_dim: int, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH, width: int = 256,
                 heads: int | None = None, mlp_ratio: int = 4, dropout: float = 0.0, stem_stride: int = 2):
        super().__init__()
        for name, value in (("feature_dim", feature_dim), ("max_seq_length", max_seq_length), ("width", width),
                            ("stem_stride", stem_stride)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        heads = heads or max(1, width // 64)
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.feature_dim, self.max_seq_length, self.width = feature_dim, max_seq_length, width
        self.byte_embedding = nn.Embedding(BYTES_PER_CHAR * BYTE_VALUES, width)
        self.position_embedding = nn.Parameter(torch.zeros(max_seq_length, width))
        self.stem_norm = nn.LayerNorm(width)
        self.stem = nn.Conv1d(width, width, 2 * stem_stride + 1, stride=stem_stride, padding=stem_stride)
        self.stem_stride = stem_stride
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(self.depth))
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, feature_dim)
        self.register_buffer("_row_offsets", torch.arange(BYTES_PER_CHAR) * BYTE_VALUES, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # Four rows are summed per character: std 0.01 each gives a character vector of std 0.02.
        nn.init.normal_(self.byte_embedding.weight, std=0.01)
        nn.init.normal_(self.position_embedding, std=0.02)

    def byte_table(self) -> torch.Tensor:
        """The lookup table [4 * 256, E] (row = byte position * 256 + byte value), detached: what export saves."""
        return self.byte_embedding.weight.detach()

    def embed_chars(self, char_bytes: torch.Tensor) -> torch.Tensor:
        """uint8/int [B, L, 4] UTF-8 bytes -> character vectors float32 [B, L, E] (sum of four table rows)."""
        if char_bytes.dim() != 3 or char_bytes.shape[-1] != BYTES_PER_CHAR:
            raise ValueError(f"char_bytes must be [B, L, {BYTES_PER_CHAR}] (person.data.text.encode_batch), "
                             f"got shape {tuple(char_bytes.shape)}")
        return self.byte_embedding(char_bytes.long() + self._row_offsets).sum(dim=-2)

    def forward(self, char_bytes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """char_bytes [B, L, 4], mask [B, L] (True/1 = a real character) -> raw embedding [B, feature_dim]."""
        return self.forward_embedded(self.embed_chars(char_bytes), mask)

    def forward_embedded(self, char_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Looked-up character vectors float32 [B, L, E] and mask [B, L] (bool or numeric, 1 = real) -> [B, D].

        Padded characters change nothing: they enter the stem as zeros, a stem position made only of padding
        gets no attention and is left out of the mean.
        """
        if not torch.jit.is_tracing():
            self._check_embedded(char_vectors, mask)
        keep = mask.to(char_vectors.dtype)
        x = self.stem_norm(char_vectors + self.position_embedding[: char_vectors.shape[1]]) * keep[..., None]
        x = nn.functional.gelu(self._stem(x.transpose(1, 2))).transpose(1, 2)  # [B, ceil(L / s), E]
        # A stem position is real when one of its own s characters is (right-padded: ceil(L / s) positions).
        # A convolution with ones, not max-pooling, which torch.export fixes to the example's length.
        keep = self._stem_keep(keep)
        key_bias = ((1.0 - keep) * _MASKED)[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_bias)
        x = self.norm(x) * keep[..., None]
        # An all-padding row (empty text) divides a zero sum by 1 instead of 0.
        return self.proj(x.sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp(min=1.0))

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """The n-gram stem on [B, E, L]. With `conv2d_stem` the same weights run as a 2-D convolution over
        [B, E, 1, L] (1 x k kernel): the same numbers, for NPU compilers that take only 4-D convolutions."""
        if not self.conv2d_stem:
            return self.stem(x)
        s = self.stem_stride
        out = nn.functional.conv2d(x.unsqueeze(2), self.stem.weight.unsqueeze(2), self.stem.bias, stride=(1, s),
                                   padding=(0, s))
        return out.squeeze(2)  # squeeze, not [:, :, 0]: an integer index exports as a Gather

    def _stem_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """[B, L] character mask -> [B, ceil(L / s)] stem-position mask."""
        s = self.stem_stride
        if not self.conv2d_stem:
            out = nn.functional.conv1d(nn.functional.pad(keep[:, None], (0, s - 1)), keep.new_ones(1, 1, s), stride=s)
            return out[:, 0].clamp(max=1.0)
        padded = nn.functional.pad(keep.unsqueeze(1).unsqueeze(1), (0, s - 1))
        return nn.functional.conv2d(padded, keep.new_ones(1, 1, 1, s), stride=(1, s)).flatten(1).clamp(max=1.0)

    def _check_embedded(self, char_vectors: torch.Tensor, mask: torch.Tensor) -> None:
        if char_vectors.dim() != 3 or char_vectors.shape[-1] != self.width:
            raise ValueError(f"char_vectors must be [B, L, {self.width}], got shape {tuple(char_vectors.shape)}")
        if tuple(mask.shape) != tuple(char_vectors.shape[:2]):
            raise ValueError(f"mask must be [B, L] = {tuple(char_vectors.shape[:2])}, got shape {tuple(mask.shape)}")
        if char_vectors.shape[1] > self.max_seq_length:
            raise ValueError(f"{char_vectors.shape[1]} characters exceed max_seq_length={self.max_seq_length}: "
                             f"encode with person.data.text.encode_batch(texts, max_seq_length={self.max_seq_length})")


@register
class L1(CharTransformer):
    """1 layer."""

    depth = 1


@register
class L2(CharTransformer):
    """2 layers."""

    depth = 2


@register
class L3(CharTransformer):
    """3 layers: the default text student (~3.1M parameters at E=256, feature_dim 512)."""

    depth = 3


@register
class L4(CharTransformer):
    """4 layers."""

    depth = 4


@register
class L6(CharTransformer):
    """6 layers."""

    depth = 6
