"""A site's style: how its cameras see a pedestrian, as opposed to what the pedestrian is.

render.render_person draws one figure (body, pose, garments, occluders, the visibility it measures) through a
`Style`: the scene behind, where and how large the person stands in the crop, the projection (a painter), the
shades the named colours take, and the finish (light, white balance, blur, noise). Everything a caption can be
checked against lives outside the style, so a caption's truth means the same at every site.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from .painter import _Painter

Size = tuple[int, int]
# (image, label map, pad, origin = feet (x, y), scale, lean, rng) -> the painter that maps person units to pixels
PainterFactory = Callable[[Image.Image, Image.Image, Size, tuple[float, float], float, float, np.random.Generator],
                          _Painter]


@dataclass(frozen=True)
class Style:
    """Each callable draws from the image's rng in the order render_person calls them."""

    background: Callable[[Size, np.random.Generator], Image.Image]     # (W, H) at the drawing scale
    place: Callable[[dict, Size, np.random.Generator], tuple[float, float, float]]  # feet y, scale, centre x
    painter: PainterFactory
    colour: Callable[[dict, str], tuple[int, int, int]]                # (identity, colour key) -> RGB
    finish: Callable[[Image.Image, np.random.Generator], Image.Image]  # at the output size
