"""The teacher's own image preprocessing, plus the one change a person crop may ask for: pad to square.

Person crops are tall (about 1:2). A FixRes processor resizes to a square and so stretches them
sideways (CLIP's shortest-edge resize + centre crop cuts off head and feet instead). With
`pad_to_square` the crop is first centred on a square canvas of the processor's mean colour (which
normalises to zero), so the processor's resize keeps the body's proportions.
"""
from __future__ import annotations

import enum
from typing import Any

from PIL import Image

GREY = (128, 128, 128)
# Processor settings that change the pixels the model sees; recorded in the teacher's identity.
_RECORDED = ("size", "crop_size", "do_resize", "do_center_crop", "resample", "do_rescale", "rescale_factor",
             "do_normalize", "image_mean", "image_std", "do_convert_rgb", "patch_size", "max_num_patches")


def mean_colour(image_processor: Any) -> tuple[int, int, int]:
    """The processor's mean as 0..255 RGB (pads normalise to 0); grey when it has none."""
    mean = getattr(image_processor, "image_mean", None)
    if mean is None or len(mean) != 3:
        return GREY
    return tuple(int(round(float(m) * 255)) for m in mean)


def pad_to_square(img: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Centre `img` on a square canvas of colour `fill` (the long side stays as it is)."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def resize_mode(image_processor: Any) -> str:
    """How the processor fits an image: 'naflex' (aspect kept, patch budget), 'shortest-edge+center-crop'
    (CLIP) or 'stretch' (straight to a fixed height x width)."""
    if getattr(image_processor, "max_num_patches", None) is not None:
        return "naflex"
    size = getattr(image_processor, "size", None) or {}
    if "shortest_edge" in size and getattr(image_processor, "do_center_crop", False):
        return "shortest-edge+center-crop"
    if "shortest_edge" in size:
        return "shortest-edge"
    return "stretch"


def describe_image_processor(image_processor: Any, pad: bool) -> dict[str, Any]:
    """JSON-ready summary of what happens to a crop before the model sees it."""
    settings = image_processor.to_dict()
    out = {key: _jsonable(settings[key]) for key in _RECORDED if settings.get(key) is not None}
    out["image_processor"] = type(image_processor).__name__
    out["resize_mode"] = resize_mode(image_processor)
    out["pad_to_square"] = pad
    out["pad_fill"] = list(mean_colour(image_processor)) if pad else None
    return out
