"""Attribute vocabulary of the synthetic pedestrians and the sampling of identities.

An identity is a plain JSON-ready dict: one value per key of ATTRIBUTE_KEYS (None where the person has
no such thing: no hat, no bag, no lower garment under a dress) plus `look`, the traits the captions never
name (skin tone, exact shades, height, stripe colour), so two identities with the same attributes still
look a little different, as two real people in the same clothes do.

Identities are distinct attribute combinations with heavy overlap: most are a copy of an earlier one with
one or two attributes changed, and the value distributions are skewed the way real wardrobes are (black,
white, grey and blue everywhere), so captions alone cannot tell every identity apart.
"""
from __future__ import annotations

import numpy as np

ATTRIBUTE_KEYS = ("gender", "build", "hair_color", "hair_length", "hat_type", "hat_color",
                  "upper_type", "upper_color", "upper_pattern", "sleeve",
                  "lower_type", "lower_color", "shoes_type", "shoes_color", "bag_type", "bag_color")

# Which body part shows an attribute; captions group their phrases the same way.
GROUPS = {
    "subject": ("gender", "build"),
    "hair": ("hair_color", "hair_length"),
    "hat": ("hat_type", "hat_color"),
    "upper": ("upper_type", "upper_color", "upper_pattern", "sleeve"),
    "lower": ("lower_type", "lower_color"),
    "shoes": ("shoes_type", "shoes_color"),
    "bag": ("bag_type", "bag_color"),
}
GROUP_OF = {key: group for group, keys in GROUPS.items() for key in keys}

# Named colours and the RGB they are drawn with; an identity's shade varies a little around it.
COLORS = {
    "black": (32, 32, 35), "white": (236, 236, 232), "grey": (128, 128, 130), "red": (196, 32, 38),
    "blue": (38, 72, 176), "green": (40, 134, 62), "yellow": (232, 200, 40), "orange": (236, 122, 28),
    "pink": (236, 140, 176), "purple": (118, 56, 150), "brown": (112, 70, 40), "beige": (204, 184, 142),
}
HAIR_COLORS = {"black": (24, 22, 22), "brown": (96, 58, 32), "blond": (214, 182, 108),
               "grey": (176, 176, 172), "red": (160, 62, 28)}

_W = dict  # weights: value -> relative frequency
_UPPER_COLORS = _W(black=17, white=16, grey=12, blue=12, red=9, green=6, yellow=5, pink=5, purple=4,
                   orange=4, brown=5, beige=5)
_LOWER_COLORS = _W(black=30, grey=18, blue=13, beige=15, brown=10, white=7, green=4, red=3)
_BAG_COLORS = _W(black=40, brown=16, grey=12, blue=10, red=10, pink=5, white=7)
_HAT_COLORS = _W(black=30, white=15, red=14, blue=16, grey=15, beige=10)


def _dist(key: str, a: dict) -> dict:
    """The distribution of `key` given the keys before it (ATTRIBUTE_KEYS order)."""
    woman = a.get("gender") == "woman"
    if key == "gender":
        return _W(man=1, woman=1)
    if key == "build":
        return _W(slim=3, average=5, heavy=2)
    if key == "hair_color":
        return _W(black=45, brown=25, blond=12, grey=10, red=8)
    if key == "hair_length":
        return _W(short=25, long=75) if woman else _W(short=85, long=15)
    if key == "hat_type":
        return {None: 70, "cap": 18, "beanie": 12}
    if key == "hat_color":
        return {None: 1} if a.get("hat_type") is None else _HAT_COLORS
    if key == "upper_type":
        base = {"t-shirt": 28, "shirt": 18, "jacket": 16, "coat": 13, "hoodie": 9, "sweater": 9}
        return {**base, "dress": 17} if woman else base
    if key == "upper_color":
        return _UPPER_COLORS
    if key == "upper_pattern":
        if a.get("upper_type") == "coat":
            return _W(plain=75, checked=25)
        return _W(plain=55, striped=17, checked=13, logo=15)
    if key == "sleeve":
        return {"t-shirt": _W(short=1), "shirt": _W(short=4, long=6),
                "dress": _W(short=6, long=4)}.get(a.get("upper_type"), _W(long=1))
    if key == "lower_type":
        if a.get("upper_type") == "dress":
            return {None: 1}
        dist = (_W(trousers=30, jeans=30, shorts=15, skirt=25) if woman
                else _W(trousers=45, jeans=35, shorts=20))
        if a.get("upper_type") == "coat":  # a long coat would hide shorts entirely
            del dist["shorts"]
        return dist
    if key == "lower_color":
        if a.get("lower_type") is None:
            return {None: 1}
        return _W(blue=70, black=20, grey=10) if a["lower_type"] == "jeans" else _LOWER_COLORS
    if key == "shoes_type":
        return {"sneakers": 50, "leather shoes": 30, "boots": 20}
    if key == "shoes_color":
        return {"sneakers": _W(white=40, black=25, grey=10, red=8, blue=10, pink=7),
                "leather shoes": _W(black=60, brown=40),
                "boots": _W(black=50, brown=40, grey=10)}[a["shoes_type"]]
    if key == "bag_type":
        return ({None: 35, "backpack": 25, "handbag": 22, "shoulder bag": 18} if woman
                else {None: 45, "backpack": 35, "handbag": 4, "shoulder bag": 16})
    if key == "bag_color":
        return {None: 1} if a.get("bag_type") is None else _BAG_COLORS
    raise KeyError(key)


def vocabulary() -> dict[str, tuple]:
    """Every value each attribute can take (None = absent)."""
    both = [{"gender": "man"}, {"gender": "woman"}]
    contexts = [dict(g, upper_type=u, lower_type=l, shoes_type=s, hat_type="cap", bag_type="backpack")
                for g in both for u in ("t-shirt", "coat", "dress") for l in ("jeans", "trousers", None)
                for s in ("sneakers", "leather shoes", "boots")]
    contexts += [dict(c, hat_type=None, bag_type=None) for c in contexts]
    out = {}
    for key in ATTRIBUTE_KEYS:
        values = {v for c in contexts for v in _dist(key, c)}
        out[key] = tuple(sorted(values, key=lambda v: (v is None, str(v))))
    return out


def _draw(dist: dict, rng: np.random.Generator):
    values = list(dist)
    w = np.fromiter(dist.values(), dtype=float)
    # One uniform per draw (not rng.choice) keeps the stream cheap and stable across numpy versions.
    return values[min(int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right")), len(values) - 1)]


def _repair(a: dict, rng: np.random.Generator) -> dict:
    """Resample every key whose value became impossible after an earlier key changed (e.g. a man's skirt)."""
    for key in ATTRIBUTE_KEYS:
        if a.get(key, "?") not in _dist(key, a):
            a[key] = _draw(_dist(key, a), rng)
    return a


def _fresh(rng: np.random.Generator) -> dict:
    a: dict = {}
    for key in ATTRIBUTE_KEYS:
        a[key] = _draw(_dist(key, a), rng)
    return a


# Keys a near-copy may change; a changed hat/shoes/bag type or an upper type redraws what depends on it.
_MUTABLE = ("build", "hair_color", "hair_length", "hat_type", "hat_color", "upper_type", "upper_color",
            "upper_pattern", "lower_type", "lower_color", "shoes_type", "shoes_color", "bag_type", "bag_color",
            "gender")


def _mutate(base: dict, rng: np.random.Generator) -> dict:
    a = {k: base[k] for k in ATTRIBUTE_KEYS}
    for _ in range(1 if rng.random() < 0.6 else 2):
        key = _MUTABLE[int(rng.random() * len(_MUTABLE))]
        options = {v: w for v, w in _dist(key, a).items() if v != a[key]}
        if options:
            a[key] = _draw(options, rng)
            if key.endswith("_type"):  # a new garment/bag/hat gets its own colour too, not the old one's
                a[key.replace("_type", "_color")] = "?"
        _repair(a, rng)
    return a


def _shade(rng: np.random.Generator, spread: int) -> list[int]:
    return [int(v) for v in rng.integers(-spread, spread + 1, size=3)]


_SKIN = ((247, 215, 190), (236, 196, 162), (222, 177, 138), (196, 146, 106), (160, 112, 80), (112, 76, 54))


def sample_look(rng: np.random.Generator) -> dict:
    """Identity traits the captions never name: skin, exact shades, body proportions, accent colour."""
    skin = _SKIN[int(rng.random() * len(_SKIN))]
    return {
        "skin": [int(np.clip(c + d, 0, 255)) for c, d in zip(skin, _shade(rng, 8))],
        "shade": {key: _shade(rng, 14) for key in ("hair_color", "hat_color", "upper_color", "lower_color",
                                                    "shoes_color", "bag_color")},
        "height": round(float(rng.uniform(0.92, 1.04)), 3),
        "width": round(float(rng.uniform(0.94, 1.06)), 3),
        "accent": "light" if rng.random() < 0.5 else "dark",  # stripes/checks/logo lighter or darker
        "logo": ("circle", "square", "bar")[int(rng.random() * 3)],
        "bangs": bool(rng.random() < 0.5),
    }


def attribute_key(attrs: dict) -> tuple:
    """What makes two identities the same: their attribute values (the look is not part of it)."""
    return tuple(attrs.get(k) for k in ATTRIBUTE_KEYS)


def sample_identities(n: int, rng: np.random.Generator, copy_share: float = 0.6) -> list[dict]:
    """`n` identities with distinct attribute combinations; `copy_share` of them are near-copies
    (one or two attributes changed) of an earlier identity, which is what makes them hard to tell apart."""
    if n < 0:
        raise ValueError(f"number of identities must be >= 0, got {n}")
    out: list[dict] = []
    seen: set[tuple] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:  # the space holds millions of combinations; this only trips on a bug
            raise RuntimeError(f"could not draw {n} distinct identities (got {len(out)})")
        if out and rng.random() < copy_share:
            a = _mutate(out[int(rng.random() * len(out))], rng)
        else:
            a = _fresh(rng)
        key = attribute_key(a)
        if key in seen:
            continue
        seen.add(key)
        a["look"] = sample_look(rng)
        out.append(a)
    return out


def color_rgb(attrs: dict, key: str) -> tuple[int, int, int]:
    """The RGB an identity's `key` colour is drawn with: the named colour plus the identity's shade."""
    name = attrs[key]
    base = HAIR_COLORS[name] if key == "hair_color" else COLORS[name]
    shade = attrs.get("look", {}).get("shade", {}).get(key, (0, 0, 0))
    if name in ("white", "black"):  # keep white white and black black
        shade = [int(s * 0.4) for s in shade]
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(base, shade))
