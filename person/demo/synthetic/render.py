"""Draw one pedestrian crop with Pillow and say which attributes can be seen in it.

The figure is built from polygons in person units (top of the head y=0, soles y=1, body centred on x=0),
mapped to pixels by one transform that carries the scale, the position and a slight lean. It is drawn
at twice the output size and reduced, which anti-aliases the edges. What belongs to the camera and the place
(scene, placement, projection, the named colours' shades, finish) comes from a Style (style.py): DEMO_STYLE
here is the demo set's, person.demo.synthetic.second holds another site's.

Visibility is measured, not guessed: every polygon is also drawn into a part-label map on a padded
canvas, so a part that is cut off by the crop still counts in the full figure. Occluders then paint the
label map with background; an attribute is visible when at least half of its part's pixels survive.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .attributes import ATTRIBUTE_KEYS, color_rgb
from .painter import _Painter, _along, _clip, _darker, _ellipse, _lighter, _limb, _mix, _u
from .style import Style

# Part labels of the label map (0 = background / occluder).
SKIN, HAIR, HAT, UPPER, PATTERN, LOWER, SHOES, BAG = range(1, 9)
_PARTS = 9
_PART_OF = {"hair_color": HAIR, "hair_length": HAIR, "hat_type": HAT, "hat_color": HAT,
            "upper_type": UPPER, "upper_color": UPPER, "sleeve": UPPER, "upper_pattern": PATTERN,
            "lower_type": LOWER, "lower_color": LOWER, "shoes_type": SHOES, "shoes_color": SHOES,
            "bag_type": BAG, "bag_color": BAG}
VISIBLE_SHARE = 0.5   # an attribute is visible when this share of its part's pixels is left
_MIN_PIXELS = 24      # at the 2x drawing scale; below this a part is a speck, not an attribute

DEFAULT_SIZE = (128, 256)  # W x H
_SS = 2  # supersampling factor



# --------------------------------------------------------------------------------------------- background
_WALLS = ((150, 150, 146), (170, 164, 150), (138, 146, 152), (160, 154, 158), (136, 140, 128), (178, 172, 162),
          (120, 122, 124), (158, 150, 136))


def _background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A muted street scene: wall and ground in low-contrast tones with a few building shapes."""
    w, h = size
    wall = _mix(_WALLS[int(rng.random() * len(_WALLS))], (140, 140, 140), _u(rng, 0.0, 0.4))
    wall = tuple(int(np.clip(c + _u(rng, -12, 12), 0, 255)) for c in wall)
    ground = _mix(wall, (110, 108, 104) if rng.random() < 0.5 else (175, 172, 166), _u(rng, 0.3, 0.7))
    img = Image.new("RGB", size, wall)
    d = ImageDraw.Draw(img)
    horizon = int(h * _u(rng, 0.42, 0.7))
    d.rectangle([0, horizon, w, h], fill=ground)
    for _ in range(int(rng.integers(2, 7))):  # windows, doors, shop signs, far cars: low contrast blocks
        x0, y0 = _u(rng, -0.2, 1.0) * w, _u(rng, -0.1, 0.9) * horizon
        bw, bh = _u(rng, 0.1, 0.6) * w, _u(rng, 0.05, 0.35) * h
        tone = _mix(wall, (0, 0, 0) if rng.random() < 0.6 else (255, 255, 255), _u(rng, 0.08, 0.3))
        if rng.random() < 0.25:  # a faint colour, as a sign or a parked car would be
            tone = _mix(tone, ((150, 60, 50), (50, 80, 140), (60, 120, 70), (170, 150, 60))[int(rng.random() * 4)],
                        _u(rng, 0.15, 0.35))
        d.rectangle([x0, y0, x0 + bw, min(y0 + bh, h)], fill=tone)
    for _ in range(int(rng.integers(0, 4))):  # building edges, lamp posts far away, kerb lines
        if rng.random() < 0.5:
            x = _u(rng, 0, 1) * w
            d.line([(x, 0), (x, horizon)], fill=_darker(wall, _u(rng, 0.1, 0.25)), width=int(rng.integers(1, 5)))
        else:
            y = _u(rng, horizon, h)
            d.line([(0, y), (w, y + _u(rng, -10, 10))], fill=_darker(ground, _u(rng, 0.05, 0.2)),
                   width=int(rng.integers(1, 4)))
    return img


# ----------------------------------------------------------------------------------------------- figure
def _body(attrs: dict, rng: np.random.Generator) -> dict:
    """Body proportions and this image's pose, in person units."""
    look = attrs.get("look", {})
    build = {"slim": 0.092, "average": 0.104, "heavy": 0.122}[attrs["build"]] * look.get("width", 1.0)
    woman = attrs["gender"] == "woman"
    sw = build * (0.92 if woman else 1.0)       # shoulder half-width
    b = {"sw": sw, "ww": sw * (0.78 if attrs["build"] != "heavy" else 0.95),
         "hw": sw * (0.92 if woman else 0.84), "woman": woman}
    b["lean"] = _u(rng, -0.05, 0.05)
    spread = _u(rng, 0.0, 0.16)
    b["legs"] = [(-1, -spread + _u(rng, -0.04, 0.04)), (1, spread + _u(rng, -0.04, 0.04))]
    b["arms"] = [(-1, _u(rng, 0.04, 0.32)), (1, _u(rng, 0.04, 0.32))]
    return b


def _leg_points(b: dict) -> list[tuple]:
    """(hip, knee, ankle) per leg; both ankles sit on the ground line so the feet stand."""
    out = []
    for side, ang in b["legs"]:
        hip = (side * b["hw"] / 2, 0.53)
        knee = (hip[0] + math.sin(ang) * 0.21, hip[1] + math.cos(ang) * 0.21)
        out.append((hip, knee, (knee[0] + math.sin(ang * 0.7) * 0.21, 0.955)))
    return out


def _arm_points(b: dict) -> list[tuple]:
    """(shoulder, elbow, wrist) per arm."""
    out = []
    for side, ang in b["arms"]:
        sh = (side * (b["sw"] - 0.012), 0.195)
        el = (sh[0] + side * math.sin(ang) * 0.165, sh[1] + math.cos(ang) * 0.165)
        ang2 = ang * 0.6
        wr = (el[0] + side * math.sin(ang2) * 0.15, el[1] + math.cos(ang2) * 0.15)
        out.append((sh, el, wr))
    return out


def _torso_poly(b: dict, hem: float, flare: float) -> list[tuple]:
    sw, ww, hw = b["sw"], b["ww"], b["hw"] * flare
    return [(-0.04, 0.158), (-sw, 0.18), (-sw * 1.02, 0.215), (-sw * 0.9, 0.29), (-ww, 0.40), (-hw, hem),
            (hw, hem), (ww, 0.40), (sw * 0.9, 0.29), (sw * 1.02, 0.215), (sw, 0.18), (0.04, 0.158)]


_HEMS = {"t-shirt": (0.55, 1.0), "shirt": (0.555, 1.0), "sweater": (0.55, 1.0), "hoodie": (0.56, 1.02),
         "jacket": (0.555, 1.02), "coat": (0.74, 1.22), "dress": (0.72, 1.65)}


def _draw_figure(p: _Painter, attrs: dict, b: dict, view: str, rng: np.random.Generator,
                 colour: Callable[[dict, str], tuple[int, int, int]]) -> None:
    look = attrs.get("look", {})
    skin = tuple(look.get("skin", (222, 177, 138)))
    hair = colour(attrs, "hair_color")
    upper = colour(attrs, "upper_color")
    accent = _lighter(upper, 0.75) if look.get("accent", "light") == "light" else _darker(upper, 0.6)
    if sum(upper) > 600 or sum(upper) < 120:  # white / black garments: a clearly different accent
        accent = (40, 40, 60) if sum(upper) > 600 else (220, 220, 215)
    back = view == "back"
    legs, arms = _leg_points(b), _arm_points(b)
    utype, bag = attrs["upper_type"], attrs["bag_type"]
    hem, flare = _HEMS[utype]
    long_hair = attrs["hair_length"] == "long"
    hair_end = 0.33 if b["woman"] else 0.25

    # behind the body (front view): backpack, long hair, hood
    if bag == "backpack" and not back:
        p.poly(_ellipse(0, 0.31, b["sw"] + 0.03, 0.13), colour(attrs, "bag_color"), BAG)
    if long_hair and not back:
        p.poly([(-0.058, 0.06), (0.058, 0.06), (0.075, hair_end), (-0.075, hair_end)], hair, HAIR)
    if utype == "hoodie" and not back:
        p.poly(_ellipse(0, 0.165, 0.075, 0.035), _darker(upper, 0.15), UPPER)

    # legs: skin, then the lower garment, then shoes
    for hip, knee, ankle in legs:
        p.poly(_limb(hip, knee, 0.085, 0.06), skin, SKIN)
        p.poly(_limb(knee, ankle, 0.06, 0.042), skin, SKIN)
    lower_type = attrs["lower_type"]
    if lower_type is not None:
        lower = colour(attrs, "lower_color")
        p.poly([(-b["hw"], 0.48), (b["hw"], 0.48), (b["hw"] * 1.05, 0.58), (-b["hw"] * 1.05, 0.58)], lower, LOWER)
        if lower_type == "skirt":
            end = 0.82 if utype == "coat" else 0.72  # below a long coat's hem, so the skirt still shows
            p.poly([(-b["hw"], 0.48), (b["hw"], 0.48), (b["hw"] * 1.7, end), (-b["hw"] * 1.7, end)], lower, LOWER)
        else:
            for hip, knee, ankle in legs:
                if lower_type == "shorts":
                    p.poly(_limb(hip, _along(hip, knee, 0.75), 0.1, 0.085), lower, LOWER)
                else:
                    p.poly(_limb(hip, knee, 0.095, 0.07), lower, LOWER)
                    p.poly(_limb(knee, ankle, 0.07, 0.058), lower, LOWER)
                    if lower_type == "jeans":  # an outer seam and a lighter cuff tell denim from trousers
                        p.line([_along(hip, knee, 0.1), knee, ankle], _lighter(lower, 0.2), 0.006)
                        p.poly(_limb(_along(knee, ankle, 0.9), ankle, 0.06, 0.058), _lighter(lower, 0.18), LOWER)
    shoes_type, shoes = attrs["shoes_type"], colour(attrs, "shoes_color")
    for (hip, knee, ankle), side in zip(legs, (-1, 1)):
        top = 0.875 if shoes_type == "boots" else 0.94
        x = ankle[0] + side * 0.006
        p.poly([(x - 0.03, top), (x + 0.03, top), (x + 0.036, 0.99), (x + 0.025, 1.0), (x - 0.033, 1.0),
                (x - 0.036, 0.975)], shoes, SHOES)
        if shoes_type == "sneakers":
            sole = (150, 150, 150) if sum(shoes) > 600 else (236, 236, 232)
            p.poly([(x - 0.036, 0.985), (x + 0.036, 0.985), (x + 0.034, 1.0), (x - 0.034, 1.0)], sole, SHOES)
        elif shoes_type == "leather shoes":
            p.poly(_ellipse(x + 0.008, 0.962, 0.01, 0.006, n=8), _lighter(shoes, 0.35), SHOES)

    # torso garment with its details and pattern
    torso = _torso_poly(b, hem, flare)
    p.poly(torso, upper, UPPER)
    _garment_details(p, attrs, b, torso, upper, accent, view)

    # arms: skin, sleeves, hands
    sleeve_len = 0.55 if attrs["sleeve"] == "short" else 0.94
    for sh, el, wr in arms:
        p.poly(_limb(sh, el, 0.06, 0.048), skin, SKIN)
        p.poly(_limb(el, wr, 0.048, 0.04), skin, SKIN)
        hand = _along(el, wr, 1.12)
        p.poly(_ellipse(hand[0], hand[1], 0.024, 0.03, n=10), skin, SKIN)
        if sleeve_len < 0.6:
            p.poly(_limb(sh, _along(sh, el, 0.6), 0.068, 0.058), upper, UPPER)
        else:
            p.poly(_limb(sh, el, 0.068, 0.056), upper, UPPER)
            p.poly(_limb(el, _along(el, wr, 0.9), 0.056, 0.05), upper, UPPER)
            if utype in ("sweater", "hoodie"):  # ribbed cuffs
                p.poly(_limb(_along(el, wr, 0.8), _along(el, wr, 0.92), 0.052, 0.05), _darker(upper, 0.2), UPPER)
        if attrs["upper_pattern"] == "striped":
            end = el if sleeve_len > 0.6 else _along(sh, el, 0.6)
            _stripes(p, _limb(sh, end, 0.068, 0.056), accent)

    # neck, head, face, hair, hat
    p.poly([(-0.024, 0.12), (0.024, 0.12), (0.026, 0.17), (-0.026, 0.17)], _darker(skin, 0.08), SKIN)
    head = _ellipse(0, 0.072, 0.047, 0.06, n=22)
    p.poly(head, skin, SKIN)
    if back:
        p.poly(_ellipse(0, 0.068, 0.05, 0.062, n=22), hair, HAIR)
        if long_hair:
            p.poly([(-0.05, 0.07), (0.05, 0.07), (0.066, hair_end), (-0.066, hair_end)], hair, HAIR)
    else:
        eye = (40, 30, 28)
        p.poly(_ellipse(-0.017, 0.075, 0.006, 0.005, n=8), eye, SKIN)
        p.poly(_ellipse(0.017, 0.075, 0.006, 0.005, n=8), eye, SKIN)
        p.poly([(-0.012, 0.104), (0.012, 0.104), (0.01, 0.108), (-0.01, 0.108)], _darker(skin, 0.3), SKIN)
        fringe = 0.05 if look.get("bangs") else 0.036
        p.poly(_ellipse(0, 0.065, 0.051, 0.058, a0=math.pi, a1=2 * math.pi, n=14)
               + [(0.05, fringe), (-0.05, fringe)], hair, HAIR)
        if long_hair:  # strands framing the face
            p.poly([(-0.051, 0.05), (-0.036, 0.05), (-0.04, 0.17), (-0.062, 0.17)], hair, HAIR)
            p.poly([(0.036, 0.05), (0.051, 0.05), (0.062, 0.17), (0.04, 0.17)], hair, HAIR)
        else:  # sideburns
            p.poly([(-0.05, 0.04), (-0.042, 0.04), (-0.044, 0.085), (-0.049, 0.085)], hair, HAIR)
            p.poly([(0.042, 0.04), (0.05, 0.04), (0.049, 0.085), (0.044, 0.085)], hair, HAIR)
    if attrs["hat_type"] is not None:
        hat = colour(attrs, "hat_color")
        if attrs["hat_type"] == "cap":
            p.poly(_ellipse(0, 0.05, 0.053, 0.052, a0=math.pi, a1=2 * math.pi, n=14), hat, HAT)
            brim = [(-0.045, 0.042), (0.045, 0.042), (0.05, 0.056), (-0.05, 0.056)] if not back else \
                [(-0.053, 0.045), (0.053, 0.045), (0.053, 0.053), (-0.053, 0.053)]
            p.poly(brim, _darker(hat, 0.25), HAT)
        else:
            p.poly(_ellipse(0, 0.055, 0.054, 0.058, a0=math.pi, a1=2 * math.pi, n=14), hat, HAT)
            p.poly([(-0.055, 0.04), (0.055, 0.04), (0.055, 0.058), (-0.055, 0.058)], _darker(hat, 0.2), HAT)
            p.poly(_ellipse(0, -0.006, 0.016, 0.012, n=10), _lighter(hat, 0.2), HAT)

    # in front: backpack (back view), straps, shoulder bag, handbag
    if bag is not None:
        bagc = colour(attrs, "bag_color")
        if bag == "backpack":
            if back:
                bp = [(-b["sw"] * 0.8, 0.2), (b["sw"] * 0.8, 0.2), (b["sw"] * 0.85, 0.46), (-b["sw"] * 0.85, 0.46)]
                p.poly(bp, bagc, BAG)
                p.poly([(-b["sw"] * 0.6, 0.36), (b["sw"] * 0.6, 0.36), (b["sw"] * 0.62, 0.44), (-b["sw"] * 0.62, 0.44)],
                       _darker(bagc, 0.2), BAG)
            else:
                for side in (-1, 1):
                    x = side * b["sw"] * 0.55
                    p.poly([(x - 0.017, 0.175), (x + 0.017, 0.175), (x + 0.02 * side + 0.017, 0.37),
                            (x + 0.02 * side - 0.017, 0.37)], bagc, BAG)
        elif bag == "shoulder bag":
            side = 1 if rng.random() < 0.5 else -1
            p.line([(-side * b["sw"] * 0.7, 0.18), (side * b["hw"] * 0.95, 0.47)], _darker(bagc, 0.15), 0.014, BAG)
            x = side * b["hw"] * 1.05
            p.poly([(x - 0.06, 0.44), (x + 0.06, 0.44), (x + 0.06, 0.55), (x - 0.06, 0.55)], bagc, BAG)
            p.poly([(x - 0.06, 0.44), (x + 0.06, 0.44), (x + 0.06, 0.48), (x - 0.06, 0.48)], _darker(bagc, 0.2), BAG)
        else:  # handbag hangs from one hand
            sh, el, wr = arms[0 if rng.random() < 0.5 else 1]
            hx, hy = _along(el, wr, 1.15)
            p.line(_ellipse(hx, hy + 0.03, 0.025, 0.03, a0=math.pi, a1=2 * math.pi, n=8), _darker(bagc, 0.2), 0.008)
            p.poly([(hx - 0.045, hy + 0.03), (hx + 0.045, hy + 0.03), (hx + 0.055, hy + 0.11),
                    (hx - 0.055, hy + 0.11)], bagc, BAG)


def _stripes(p: _Painter, poly: list, color: tuple, period: float = 0.04, width: float = 0.016,
             start: float = 0.16) -> None:
    """Horizontal bands across a garment polygon."""
    v = start
    while v < 1.0:
        p.poly(_clip(poly, 1, v, v + width), color, PATTERN)
        v += period


def _garment_details(p: _Painter, attrs: dict, b: dict, torso: list, upper: tuple, accent: tuple, view: str) -> None:
    utype, pattern = attrs["upper_type"], attrs["upper_pattern"]
    back = view == "back"
    dark = _darker(upper, 0.3)
    if pattern == "striped":
        _stripes(p, torso, accent, period=0.045, width=0.02, start=0.2)
    elif pattern == "checked":
        _stripes(p, torso, accent, period=0.05, width=0.011, start=0.19)
        v = -0.2
        while v < 0.2:  # vertical lines of the check
            p.poly(_clip(torso, 0, v, v + 0.011), accent, PATTERN)
            v += 0.05
    if utype == "dress":
        p.poly(_clip(torso, 1, 0.38, 0.395), dark, UPPER)  # waistline
    if back:
        if utype == "hoodie":
            p.poly(_ellipse(0, 0.2, 0.06, 0.05, n=14), _darker(upper, 0.15), UPPER)
        return
    if pattern == "logo":
        shape = attrs.get("look", {}).get("logo", "circle")
        if shape == "circle":
            p.poly(_ellipse(0, 0.28, 0.03, 0.03, n=14), accent, PATTERN)
        elif shape == "square":
            p.poly([(-0.03, 0.25), (0.03, 0.25), (0.03, 0.31), (-0.03, 0.31)], accent, PATTERN)
        else:
            p.poly([(-0.05, 0.26), (0.05, 0.26), (0.05, 0.29), (-0.05, 0.29)], accent, PATTERN)
    if utype == "shirt":
        p.poly([(-0.035, 0.155), (0.0, 0.19), (-0.012, 0.2), (-0.045, 0.175)], _lighter(upper, 0.2), UPPER)
        p.poly([(0.035, 0.155), (0.0, 0.19), (0.012, 0.2), (0.045, 0.175)], _lighter(upper, 0.2), UPPER)
        for i in range(5):
            p.poly(_ellipse(0, 0.23 + i * 0.06, 0.005, 0.005, n=6), dark, UPPER)
    elif utype in ("jacket", "coat"):
        inner = (58, 58, 62) if sum(upper) > 330 else (205, 205, 200)
        p.poly([(-0.036, 0.16), (0.036, 0.16), (0.0, 0.25)], inner, UPPER)  # the open neck
        p.line([(0, 0.25), (0, _HEMS[utype][0])], dark, 0.007, UPPER)
        p.line([(-0.036, 0.16), (0.0, 0.25), (0.036, 0.16)], dark, 0.01, UPPER)  # lapel edges
        p.poly([(-0.036, 0.16), (-0.05, 0.17), (-0.018, 0.24), (-0.004, 0.25)], _lighter(dark, 0.15), UPPER)
        p.poly([(0.036, 0.16), (0.05, 0.17), (0.018, 0.24), (0.004, 0.25)], _lighter(dark, 0.15), UPPER)
        if utype == "coat":
            for i in range(3):
                p.poly(_ellipse(0.018, 0.32 + i * 0.08, 0.007, 0.007, n=6), dark, UPPER)
    elif utype == "hoodie":
        p.poly([(-0.06, 0.42), (0.06, 0.42), (0.075, 0.5), (-0.075, 0.5)], _darker(upper, 0.15), UPPER)
        p.line([(-0.018, 0.17), (-0.02, 0.26)], _lighter(upper, 0.4), 0.006, UPPER)
        p.line([(0.018, 0.17), (0.02, 0.26)], _lighter(upper, 0.4), 0.006, UPPER)
    elif utype in ("t-shirt", "sweater"):
        p.line(_ellipse(0, 0.152, 0.04, 0.022, a0=0.1, a1=math.pi - 0.1, n=8), dark, 0.008, UPPER)
        if utype == "sweater":
            p.poly(_clip(torso, 1, _HEMS[utype][0] - 0.03, _HEMS[utype][0]), _darker(upper, 0.18), UPPER)


# -------------------------------------------------------------------------------------------- occluders
def _occlude(draw: ImageDraw.ImageDraw, ldraw: ImageDraw.ImageDraw, pad: tuple[int, int], size: tuple[int, int],
             figure_x: tuple[float, float], rng: np.random.Generator) -> None:
    """Sometimes put something between camera and person; it is painted as background in the label map."""
    w, h = size
    r = rng.random()
    shapes: list[tuple[list, tuple]] = []
    if r < 0.09:  # a pole or tree trunk
        x = _u(rng, figure_x[0], figure_x[1])
        pw = _u(rng, 0.05, 0.11) * w
        tone = (int(_u(rng, 50, 120)),) * 3 if rng.random() < 0.6 else (int(_u(rng, 80, 110)), int(_u(rng, 60, 80)), 50)
        shapes.append(([(x - pw / 2, 0), (x + pw / 2, 0), (x + pw / 2, h), (x - pw / 2, h)], tone))
    elif r < 0.18:  # a car, a bench or a low wall in front of the legs
        top = _u(rng, 0.6, 0.84) * h
        x0, x1 = (-0.1 * w, _u(rng, 0.6, 1.1) * w) if rng.random() < 0.5 else (_u(rng, -0.1, 0.4) * w, 1.1 * w)
        tone = ((90, 92, 98), (150, 40, 40), (40, 60, 120), (200, 200, 196), (60, 60, 62), (120, 110, 90))[
            int(rng.random() * 6)]
        shapes.append(([(x0, top + 0.04 * h), (x0 + 0.05 * w, top), (x1 - 0.05 * w, top), (x1, top + 0.04 * h),
                        (x1, h), (x0, h)], tone))
    elif r < 0.23:  # another pedestrian passing at one side
        side = 1 if rng.random() < 0.5 else -1
        cx = w / 2 + side * _u(rng, 0.38, 0.55) * w
        coat = ((70, 70, 75), (120, 100, 80), (60, 70, 100), (150, 150, 150))[int(rng.random() * 4)]
        body = [(cx - 0.28 * w, 0.2 * h), (cx + 0.28 * w, 0.2 * h), (cx + 0.3 * w, h), (cx - 0.3 * w, h)]
        shapes.append((body, coat))
        shapes.append((_ellipse(cx, 0.12 * h, 0.11 * w, 0.08 * h), (200, 165, 135)))
    else:
        return
    px, py = pad
    for pts, color in shapes:
        draw.polygon(pts, fill=color)
        ldraw.polygon([(x + px, y + py) for x, y in pts], fill=0)


# ------------------------------------------------------------------------------------------- the image
def _finish(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Moderate lighting, blur and noise: enough variety to learn from, never enough to change a colour."""
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(_u(rng, 0.3, 0.8)))
    a = np.asarray(img, dtype=np.float32)
    mean = a.mean()
    contrast, bright = _u(rng, 0.9, 1.08), _u(rng, 0.88, 1.12)
    cast = np.array([_u(rng, 0.96, 1.04) for _ in range(3)], dtype=np.float32)
    a = ((a - mean) * contrast + mean) * bright * cast
    sigma = _u(rng, 0.0, 3.0)
    if sigma > 0.5:
        a += rng.normal(0.0, sigma, size=a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


def _place(attrs: dict, size: tuple[int, int], rng: np.random.Generator) -> tuple[float, float, float]:
    """A tight detector crop at eye level: the person fills most of the height; sometimes feet or head are cut."""
    W, H = size
    cut = rng.random()
    if cut < 0.07:  # feet below the crop
        feet = H * _u(rng, 1.02, 1.07)
    elif cut < 0.11:  # head above the crop
        feet = H * _u(rng, 0.99, 1.0)
    else:
        feet = H * _u(rng, 0.955, 0.985)
    scale = H * _u(rng, 0.84, 0.93) * attrs.get("look", {}).get("height", 1.0)
    if 0.07 <= cut < 0.11:
        scale = feet + H * _u(rng, 0.03, 0.08)
    else:
        scale = min(scale, feet - H * 0.01)
    return feet, scale, W * (0.5 + _u(rng, -0.07, 0.07))


def _flat_painter(img: Image.Image, labels: Image.Image, pad: tuple[int, int], origin: tuple[float, float],
                  scale: float, lean: float, rng: np.random.Generator) -> _Painter:
    return _Painter(img, labels, pad, origin, scale, lean)  # a level camera: no perspective, no draw


DEMO_STYLE = Style(background=_background, place=_place, painter=_flat_painter, colour=color_rgb, finish=_finish)


def render_person(attrs: dict, rng: np.random.Generator, size: tuple[int, int] = DEFAULT_SIZE,
                  style: Style = DEMO_STYLE) -> tuple[Image.Image, dict[str, bool]]:
    """Draw one crop (W x H = `size`) of the identity `attrs` as `style`'s cameras see it; return it and
    {attribute: visible}.

    Per image the view (front/back), pose, scale, position, background, occluder, lighting, blur and noise
    vary with `rng`. An attribute the identity lacks (value None) is never visible.
    """
    w, h = size
    if w < 16 or h < 32:
        raise ValueError(f"image size {w}x{h} is too small: use at least 16x32 (W x H)")
    W, H = w * _SS, h * _SS
    img = style.background((W, H), rng)
    pad = (W // 2, H // 3)
    labels = Image.new("L", (W + 2 * pad[0], H + 2 * pad[1]), 0)

    b = _body(attrs, rng)
    view = "back" if rng.random() < 0.3 else "front"
    feet, scale, cx = style.place(attrs, (W, H), rng)
    p = style.painter(img, labels, pad, (cx, feet), scale, b["lean"], rng)
    _draw_figure(p, attrs, b, view, rng, style.colour)

    lab = np.asarray(labels)
    full = np.bincount(lab.ravel(), minlength=_PARTS)
    _occlude(p.draw, p.ldraw, pad, (W, H), (cx - 0.12 * scale, cx + 0.12 * scale), rng)
    lab = np.asarray(labels)[pad[1]:pad[1] + H, pad[0]:pad[0] + W]
    seen = np.bincount(lab.ravel(), minlength=_PARTS)
    part_ok = (full >= _MIN_PIXELS) & (seen >= _MIN_PIXELS) & (seen >= VISIBLE_SHARE * full)

    visible = {}
    for key in ATTRIBUTE_KEYS:
        if attrs.get(key) is None:
            visible[key] = False
        elif key in ("gender", "build"):
            visible[key] = bool(part_ok[UPPER] or part_ok[HAIR] or part_ok[LOWER])
        elif key == "upper_pattern" and attrs[key] == "plain":
            visible[key] = bool(part_ok[UPPER])
        else:
            visible[key] = bool(part_ok[_PART_OF[key]])
    return style.finish(img.reduce(_SS), rng), visible
