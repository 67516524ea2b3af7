"""The second site's clothing palette: other shades of the same named colours.

The people are the demo's (person.demo.synthetic.attributes), so every garment keeps its colour's name; what
differs is what that name looks like here: each name has two shades of its own (a crimson or a scarlet red, a
cobalt or a royal blue, a mustard or a lemon yellow, ...), away from the demo's single shade. Which of the two
an identity wears follows from its own look, so a person wears the same shade in every image of the site.
"""
from __future__ import annotations

import numpy as np

SHADES = {
    "black": ((20, 22, 30), (46, 40, 36)), "white": ((226, 230, 240), (242, 236, 218)),
    "grey": ((96, 104, 114), (156, 150, 140)), "red": ((148, 18, 42), (222, 58, 36)),
    "blue": ((26, 84, 196), (56, 62, 150)), "green": ((18, 112, 84), (84, 128, 36)),
    "yellow": ((212, 172, 30), (244, 226, 84)), "orange": ((232, 96, 16), (206, 128, 54)),
    "pink": ((214, 96, 142), (246, 176, 204)), "purple": ((104, 40, 118), (148, 98, 180)),
    "brown": ((78, 46, 28), (146, 96, 56)), "beige": ((192, 158, 108), (220, 206, 166)),
}
HAIR_SHADES = {"black": ((14, 14, 18), (40, 30, 26)), "brown": ((120, 70, 36), (70, 44, 30)),
               "blond": ((232, 204, 128), (190, 150, 80)), "grey": ((150, 152, 156), (206, 204, 198)),
               "red": ((184, 76, 30), (150, 50, 22))}


def colour(attrs: dict, key: str) -> tuple[int, int, int]:
    """The RGB the identity's `key` colour is drawn with at this site: its shade of the name, plus its own
    small offset (as person.demo.synthetic.attributes.color_rgb adds it at the demo site)."""
    name = attrs[key]
    offset = attrs.get("look", {}).get("shade", {}).get(key, (0, 0, 0))
    shades = (HAIR_SHADES if key == "hair_color" else SHADES)[name]
    base = shades[int(sum(offset)) % len(shades)]
    if name in ("white", "black"):  # keep white white and black black
        offset = [int(s * 0.4) for s in offset]
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(base, offset))
