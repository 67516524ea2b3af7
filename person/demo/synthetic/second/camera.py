"""The second site's cameras: mounted higher and looking down, under warm lamps, cheaper sensors, more compression.

- Placement: loose detector boxes around a person further away: the figure fills 74-88% of the crop's height
  (the demo: 84-93%) and stands anywhere across it.
- Perspective: the head is nearer the camera than the feet, so the upper body comes out larger and the legs
  foreshortened (a projective map of the person's height; tilt drawn per image).
- Finish: warm sodium or greenish fluorescent white balance, dim exposure with a light fall-off, flat contrast,
  always some blur (sometimes motion blur along the walk), sensor noise, and JPEG quality 45-75 (the demo: 90).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ..painter import _Painter, _u

# Channel gains of the site's two kinds of lamp: warm sodium (most of the site) and fluorescent tubes.
_WARM, _FLUORESCENT = (1.07, 1.0, 0.86), (0.95, 1.04, 0.97)
JPEG_QUALITY = (45, 75)


def place(attrs: dict, size: tuple[int, int], rng: np.random.Generator) -> tuple[float, float, float]:
    """Feet y, scale (the person's height in pixels) and centre x of a person further from the camera."""
    W, H = size
    feet = H * (_u(rng, 1.01, 1.06) if rng.random() < 0.08 else _u(rng, 0.88, 0.97))  # sometimes feet cut off
    scale = H * _u(rng, 0.74, 0.88) * attrs.get("look", {}).get("height", 1.0)
    return feet, scale, W * (0.5 + _u(rng, -0.1, 0.1))


class TiltedPainter(_Painter):
    """A camera above the person: person-unit height y maps to y(1+t)/(1+ty), so the head (y=0) is magnified
    1+t times and the feet (y=1) 1/(1+t) times; widths scale with the same nearness."""

    def __init__(self, *args, tilt: float):
        super().__init__(*args)
        self.tilt = tilt

    def px(self, x: float, y: float) -> tuple[float, float]:
        near = (1 + self.tilt) / (1 + self.tilt * y)
        return super().px(x * near / (1 + self.tilt / 2), y * near)


def painter(img: Image.Image, labels: Image.Image, pad: tuple[int, int], origin: tuple[float, float],
            scale: float, lean: float, rng: np.random.Generator) -> _Painter:
    return TiltedPainter(img, labels, pad, origin, scale, lean, tilt=_u(rng, 0.1, 0.25))


def _motion_blur(a: np.ndarray, length: int) -> np.ndarray:
    """A horizontal smear over `length` pixels (the walk across the view during the exposure)."""
    padded = np.pad(a, ((0, 0), (length // 2, length - 1 - length // 2), (0, 0)), mode="edge")
    return sum(padded[:, i:i + a.shape[1]] for i in range(length)) / length


def finish(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    img = img.filter(ImageFilter.GaussianBlur(_u(rng, 0.35, 0.8)))
    a = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.25:
        a = _motion_blur(a, int(rng.integers(2, 4)))
    lamp = np.array(_WARM if rng.random() < 0.7 else _FLUORESCENT, dtype=np.float32)
    gains = lamp * np.array([_u(rng, 0.94, 1.06) for _ in range(3)], dtype=np.float32)
    h = a.shape[0]
    falloff = np.linspace(1.0, _u(rng, 0.8, 0.95), h, dtype=np.float32)  # lamps overhead: darker towards the feet
    if rng.random() < 0.5:
        falloff = falloff[::-1]
    exposure, contrast = _u(rng, 0.8, 0.95), _u(rng, 0.85, 0.95)
    mean = a.mean()
    a = ((a - mean) * contrast + mean) * exposure * gains * falloff[:, None, None]
    a += 18.0 * (1.0 - contrast)  # flat contrast lifts the blacks, as a hazy cheap lens does
    a += rng.normal(0.0, _u(rng, 1.0, 3.5), size=a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


def jpeg_quality(rng: np.random.Generator) -> int:
    return int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
