"""Drawing primitives of the renderer: colour mixing, person-unit geometry and the polygon painter.

Geometry in person units: ellipses, limbs, clipping. The painter draws a polygon into the image and, with its
part label, into the label map."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()


def _mix(c: tuple, other: tuple, t: float) -> tuple[int, int, int]:
    return tuple(int(a + (b - a) * t) for a, b in zip(c, other))


def _darker(c: tuple, t: float = 0.3) -> tuple[int, int, int]:
    return _mix(c, (0, 0, 0), t)


def _lighter(c: tuple, t: float = 0.3) -> tuple[int, int, int]:
    return _mix(c, (255, 255, 255), t)


def _ellipse(cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 2 * math.pi,
             n: int = 18) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(a0 + (a1 - a0) * i / (n - 1)), cy + ry * math.sin(a0 + (a1 - a0) * i / (n - 1)))
            for i in range(n)]


def _limb(p0: tuple, p1: tuple, w0: float, w1: float) -> list[tuple[float, float]]:
    """A tapered quad from p0 (width w0) to p1 (width w1)."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    return [(p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2), (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
            (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2), (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2)]


def _along(p0: tuple, p1: tuple, t: float) -> tuple[float, float]:
    return (p0[0] + (p1[0] - p0[0]) * t, p0[1] + (p1[1] - p0[1]) * t)


def _clip(poly: list, axis: int, lo: float, hi: float) -> list:
    """Sutherland-Hodgman clip of a polygon to the slab lo <= coordinate[axis] <= hi (for stripes/checks)."""
    for bound, keep in ((lo, lambda v: v >= lo), (hi, lambda v: v <= hi)):
        out = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cin, pin = keep(cur[axis]), keep(prev[axis])
            if cin != pin:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append(_along(prev, cur, t))
            if cin:
                out.append(cur)
        poly = out
        if not poly:
            break
    return poly


class _Painter:
    """Draws person-unit polygons into the image and, with their part label, into the padded label map."""

    def __init__(self, img: Image.Image, labels: Image.Image, pad: tuple[int, int],
                 origin: tuple[float, float], scale: float, lean: float):
        self.draw = ImageDraw.Draw(img)
        self.ldraw = ImageDraw.Draw(labels)
        self.pad = pad
        self.fx, self.fy = origin
        self.s = scale
        self.cos, self.sin = math.cos(lean), math.sin(lean)

    def px(self, x: float, y: float) -> tuple[float, float]:
        dy = y - 1.0  # rotate about the feet, so a lean keeps them on the ground
        return (self.fx + self.s * (x * self.cos - dy * self.sin), self.fy + self.s * (x * self.sin + dy * self.cos))

    def poly(self, pts: list, color: tuple, part: int | None) -> None:
        if len(pts) < 3:
            return
        xy = [self.px(x, y) for x, y in pts]
        self.draw.polygon(xy, fill=color)
        if part is not None:
            px, py = self.pad
            self.ldraw.polygon([(x + px, y + py) for x, y in xy], fill=part)

    def line(self, pts: list, color: tuple, width: float, part: int | None = None) -> None:
        xy = [self.px(x, y) for x, y in pts]
        w = max(1, round(width * self.s))
        self.draw.line(xy, fill=color, width=w)
        if part is not None:
            px, py = self.pad
            self.ldraw.line([(x + px, y + py) for x, y in xy], fill=part, width=w)
