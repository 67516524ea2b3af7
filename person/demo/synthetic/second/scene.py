"""The second site's background: a lit indoor concourse (a station or a mall) seen from a camera near the ceiling.

Busier and more colourful than the demo's muted street: a tiled floor whose joints run to a vanishing point,
shop fronts with coloured signs and glass, ceiling lamps and small far-off people. A high camera sees more floor,
so the floor's edge (the horizon of the picture) sits high.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..painter import _darker, _lighter, _mix, _u

_FLOORS = ((196, 188, 170), (170, 170, 166), (150, 140, 128), (206, 200, 192), (122, 118, 112), (184, 160, 136))
_WALLS = ((88, 84, 92), (210, 206, 196), (120, 104, 92), (64, 70, 80), (170, 176, 180))
_SIGNS = ((206, 34, 46), (28, 92, 188), (244, 192, 26), (24, 146, 92), (236, 110, 24), (150, 56, 170),
          (244, 244, 238), (28, 28, 34))
_GLASS = (150, 178, 196)


def _pick(options: tuple, rng: np.random.Generator) -> tuple:
    return options[int(rng.random() * len(options))]


def _jitter(color: tuple, rng: np.random.Generator, spread: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + _u(rng, -spread, spread), 0, 255)) for c in color)


def background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    wall, floor = _jitter(_pick(_WALLS, rng), rng, 14), _jitter(_pick(_FLOORS, rng), rng, 10)
    img = Image.new("RGB", size, wall)
    d = ImageDraw.Draw(img)
    horizon = h * _u(rng, 0.18, 0.42)
    for _ in range(int(rng.integers(1, 4))):  # shop fronts: glass with a bright sign above and a dark door
        x0, sw = _u(rng, -0.3, 0.9) * w, _u(rng, 0.3, 0.8) * w
        top = _u(rng, 0.0, 0.5) * horizon
        d.rectangle([x0, top, x0 + sw, horizon], fill=_mix(_GLASS, wall, _u(rng, 0.0, 0.5)))
        sign = _mix(_jitter(_pick(_SIGNS, rng), rng, 20), wall, _u(rng, 0.3, 0.6))
        d.rectangle([x0, top, x0 + sw, top + _u(rng, 0.04, 0.09) * h], fill=sign)
        door = x0 + _u(rng, 0.1, 0.7) * sw
        d.rectangle([door, top + 0.35 * (horizon - top), door + 0.15 * sw, horizon],
                    fill=_darker(wall, _u(rng, 0.4, 0.7)))
    d.rectangle([0, horizon, w, h], fill=floor)
    vx = _u(rng, -0.2, 1.2) * w  # tile joints: lines to one vanishing point on the floor's far edge
    joint = _darker(floor, _u(rng, 0.06, 0.18))
    for i in range(-6, 13):
        d.line([(vx, horizon), (vx + (i / 6 - 0.5) * 3 * w, h)], fill=joint, width=int(rng.integers(1, 3)))
    rows = int(rng.integers(4, 9))
    for j in range(1, rows):
        y = horizon + (h - horizon) * (j / rows) ** 1.6
        d.line([(0, y), (w, y)], fill=joint, width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, 4))):  # ceiling lamps (the camera hangs beside them)
        x, y = _u(rng, 0, 1) * w, _u(rng, 0.0, 0.6) * horizon
        d.ellipse([x - 0.08 * w, y - 0.015 * h, x + 0.08 * w, y + 0.015 * h], fill=_lighter(wall, 0.85))
    for _ in range(int(rng.integers(0, 3))):  # people far off, near the floor's edge: blobs of any colour
        x, foot = _u(rng, 0, 1) * w, horizon + _u(rng, 0.0, 0.25) * (h - horizon)
        ph = _u(rng, 0.06, 0.16) * h
        coat = _mix(_jitter(_pick(_SIGNS, rng), rng, 30), floor, 0.4)
        d.rectangle([x - 0.12 * ph, foot - 0.8 * ph, x + 0.12 * ph, foot], fill=coat)
        d.ellipse([x - 0.07 * ph, foot - ph, x + 0.07 * ph, foot - 0.8 * ph], fill=(200, 160, 130))
    return img
