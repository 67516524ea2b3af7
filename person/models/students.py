"""Create the students by name: `backbone.mf3.ANet2` (image), `tbackbone.char.L3` (text).

A name is a dotted path to an nn.Module class (see `person.models.registry`): the project's own models
by short name, or any importable `module.Class` of the user's. The contract a class must meet:

- image: `Class(feature_dim=D, image_size=(H, W), **kwargs)`; forward float32 [B, 3, H, W] -> [B, D].
- text: `Class(feature_dim=D, max_seq_length=L, **kwargs)`; forward(char_bytes [B, L, 4], mask [B, L])
  -> [B, D], plus `embed_chars`, `forward_embedded` and `byte_table` for export (see `person.models.tbackbone.char`).

Every student returns the raw embedding; losses, evaluation and export L2-normalise it. D is the
teacher's dimension by default, so student and teacher embeddings live in one space.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from person.data.images import DEFAULT_IMAGE_SIZE, MAX_IMAGE_SIDE, RESIZE_MODES
from person.data.text import BYTES_PER_CHAR, DEFAULT_MAX_SEQ_LENGTH, MAX_SEQ_LENGTH
from person.errors import PersonError
from person.models.registry import available, resolve

IMAGE_PACKAGE = "person.models.backbone"
TEXT_PACKAGE = "person.models.tbackbone"
# Beyond any teacher's dimension (SigLIP2 giant: 1536) and any character-vector width a student uses: larger values,
# from a typo or an edited checkpoint, would allocate hundreds of GB before a message could say why.
MAX_FEATURE_DIM, MAX_TEXT_WIDTH = 16384, 4096


class StudentContractError(PersonError, ValueError):
    """A class named as a student that cannot be built or run as one; the message says what the contract is."""


def _check_runs(model: nn.Module, name: str, kind: str, shape: tuple[int, ...],
                inputs: Callable[[], tuple[torch.Tensor, ...]], feature_dim: int, contract: str) -> nn.Module:
    """One eval-mode forward on a small batch of `shape`: the output must be float [2, feature_dim]. Catches a
    class that is not a student (torch.nn.Identity, torch.nn.Linear) and a size that cannot be allocated."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs())
    except (RuntimeError, TypeError, ValueError, MemoryError) as e:
        raise StudentContractError(f"{kind} {name!r} failed on a {list(shape)} input ({type(e).__name__}: "
                                   f"{str(e)[:300]}); {contract}") from None
    finally:
        model.train(was_training)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (shape[0], feature_dim) or not out.is_floating_point():
        raise StudentContractError(f"{kind} {name!r} gave {got} for a {list(shape)} input, expected a float "
                                   f"[{shape[0]}, {feature_dim}] embedding; {contract}")
    return model


def _build(cls: type[nn.Module], name: str, kind: str, contract: str, **kwargs: Any) -> nn.Module:
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise StudentContractError(f"{kind} {name!r} cannot be built ({e}); {contract}") from None


_IMAGE_CONTRACT = "an image student is Class(feature_dim=D, image_size=(H, W)) with forward [B, 3, H, W] -> [B, D]"
_TEXT_CONTRACT = ("a text student is Class(feature_dim=D, max_seq_length=L, ...) with forward(char_bytes [B, L, 4], "
                  "mask [B, L]) -> [B, D]")


def create_image_student(name: str, feature_dim: int, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                         trusted: Collection[str] | None = None, **kwargs: Any) -> nn.Module:
    """The image student `name` (e.g. "backbone.mf3.ANet2") for `image_size` (H, W) with output dim `feature_dim`,
    checked to run (person.models.registry.resolve says what `trusted` allows)."""
    cls = resolve(name, IMAGE_PACKAGE, "image backbone", trusted)
    model = _build(cls, name, "image backbone", _IMAGE_CONTRACT, feature_dim=feature_dim,
                   image_size=tuple(image_size), **kwargs)
    shape = (2, 3, *image_size)
    return _check_runs(model, name, "image backbone", shape, lambda: (torch.zeros(shape),), feature_dim,
                       _IMAGE_CONTRACT)


def create_text_student(name: str, feature_dim: int, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
                        trusted: Collection[str] | None = None, **kwargs: Any) -> nn.Module:
    """The text student `name` (e.g. "tbackbone.char.L3"); kwargs such as `width=128` go to its constructor."""
    cls = resolve(name, TEXT_PACKAGE, "text backbone", trusted)
    model = _build(cls, name, "text backbone", _TEXT_CONTRACT, feature_dim=feature_dim,
                   max_seq_length=max_seq_length, **kwargs)
    shape = (2, min(8, max_seq_length), BYTES_PER_CHAR)
    return _check_runs(model, name, "text backbone", shape,
                       lambda: (torch.zeros(shape, dtype=torch.uint8), torch.ones(shape[:2], dtype=torch.bool)),
                       feature_dim, _TEXT_CONTRACT)


def image_students() -> list[str]:
    """Names of the project's image students (for --help and the tests)."""
    return available(IMAGE_PACKAGE)


def text_students() -> list[str]:
    """Names of the project's text students."""
    return available(TEXT_PACKAGE)


class Students(nn.Module):
    """The image and/or text student as one module (one DDP wrapper, one state dict).

    `forward` returns a dict of L2-normalised embeddings, "image" [B, D] and "text" [B, D], for the
    inputs given and the students present (a run may train only one of them).
    """

    def __init__(self, image: nn.Module | None, text: nn.Module | None) -> None:
        super().__init__()
        if image is None and text is None:
            raise ValueError("Students needs an image student, a text student, or both")
        self.image, self.text = image, text

    def forward(self, images: torch.Tensor | None = None, chars: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = {}
        if images is not None and self.image is not None:
            out["image"] = F.normalize(self.image(images).float(), dim=-1)
        if chars is not None and self.text is not None:
            out["text"] = F.normalize(self.text(chars, mask).float(), dim=-1)
        return out


@dataclass(frozen=True)
class StudentSpec:
    """What rebuilds a trained pair and feeds it, without the training options: saved in every checkpoint,
    read by evaluation and export. A student left out (a run that trains only one) is None."""

    feature_dim: int
    backbone: str | None = None
    tbackbone: str | None = None
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    resize: str = "stretch"
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    text_width: int = 256
    text_stride: int = 2

    def __post_init__(self) -> None:
        if self.backbone is None and self.tbackbone is None:
            raise ValueError("a student spec needs an image student (backbone), a text student (tbackbone), or both")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize {self.resize!r}: use one of {', '.join(RESIZE_MODES)}")
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if len(self.image_size) != 2:
            raise ValueError(f"image_size {list(self.image_size)}: a student's is [height, width]")
        sizes = {"feature_dim": (self.feature_dim, 1, MAX_FEATURE_DIM),
                 "text_width": (self.text_width, 1, MAX_TEXT_WIDTH),
                 "max_seq_length": (self.max_seq_length, 1, MAX_SEQ_LENGTH),
                 "text_stride": (self.text_stride, 1, MAX_SEQ_LENGTH),
                 **{f"image_size[{i}]": (side, 8, MAX_IMAGE_SIDE) for i, side in enumerate(self.image_size)}}
        for name, (value, low, high) in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} {value!r}: a student's is a whole number in {low}..{high}")

    @property
    def trained(self) -> str:
        """"both", "image" or "text": which students the pair has (the --train value that made it)."""
        return "both" if self.backbone and self.tbackbone else "image" if self.backbone else "text"

    def build(self, trusted: Collection[str] | None = None) -> Students:
        """Fresh students of this spec (weights from the global RNG); `trusted` as for
        person.models.registry.resolve (a spec read from a checkpoint passes the modules the user vouched for)."""
        image = (create_image_student(self.backbone, self.feature_dim, self.image_size, trusted)
                 if self.backbone else None)
        text = (create_text_student(self.tbackbone, self.feature_dim, self.max_seq_length, trusted,
                                    width=self.text_width, stem_stride=self.text_stride) if self.tbackbone else None)
        return Students(image, text)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudentSpec:
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"student spec has fields this version does not know: {', '.join(unknown)}")
        return cls(**values)
