"""The second site's sentence shapes: sighting logs rather than descriptions, naming exactly the keys given.

Where the demo's annotators write "A woman with long brown hair wearing a red T-shirt ...", this site's staff
log "Female, lean. Hair: flowing, chestnut. Torso: crimson tee shirt. ..." or "On camera: a lean female in
...", in the words of person.demo.synthetic.second.words. As in person.demo.synthetic.sentences, what a
caption names is decided by its caller, and every choice is a draw from the caller's rng in a fixed order.
"""
from __future__ import annotations

import numpy as np

from ..attributes import GROUPS
from ..words import join_en, join_zh, pick
from .words import (EN_BAG_WAY, EN_BUILD, EN_COLOR, EN_GENERIC, EN_HAIR_COLOR, EN_HAIR_LENGTH, EN_LABEL, EN_NOUN,
                    EN_PATTERN, EN_POSSESSIVE, EN_SLEEVE, EN_SUBJECT, ZH_BUILD, ZH_COLOR, ZH_GENERIC, ZH_HAIR_COLOR,
                    ZH_HAIR_LENGTH, ZH_LABEL, ZH_NOUN, ZH_PATTERN, ZH_SLEEVE, ZH_SUBJECT)

_PARTS = ("hat", "upper", "lower", "shoes")


# ------------------------------------------------------------------------------------------- English
def _a(phrase: str, plural: bool) -> str:
    if plural:
        return phrase
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _en_part(group: str, a: dict, keys: set, rng: np.random.Generator) -> tuple[str, bool] | None:
    """A body part's description (no article), e.g. "half-sleeve crimson banded tee shirt", and whether it is
    plural; None when the part names nothing."""
    if not any(k in keys for k in GROUPS[group]):
        return None
    tkey, ckey = f"{group}_type", f"{group}_color"
    words, plural = EN_NOUN[a[tkey]] if tkey in keys else EN_GENERIC[group]
    noun = pick(rng, words)
    colour = pick(rng, EN_COLOR[a[ckey]]) if ckey in keys else None
    sleeve = pattern = None
    post: list[str] = []
    if group == "upper":
        if "upper_pattern" in keys:
            word = pick(rng, EN_PATTERN[a["upper_pattern"]])
            if word.startswith("with "):
                post.append(word)
            else:
                pattern = word
        if "sleeve" in keys:
            if post or rng.random() < 0.6:
                sleeve = pick(rng, EN_SLEEVE[a["sleeve"]])
            else:
                post.append("with half sleeves" if a["sleeve"] == "short" else "with full-length sleeves")
    if colour is not None and not post and rng.random() < 0.3:  # "a tee shirt in crimson"
        post.append(f"in {colour}")
        colour = None
    return " ".join([x for x in (sleeve, colour, pattern) if x] + [noun] + post), plural


def _en_hair(a: dict, keys: set, rng: np.random.Generator, report: bool) -> str | None:
    length = pick(rng, EN_HAIR_LENGTH[a["hair_length"]]) if "hair_length" in keys else None
    colour = pick(rng, EN_HAIR_COLOR[a["hair_color"]]) if "hair_color" in keys else None
    if not (length or colour):
        return None
    if report:  # "Hair: cropped, jet-black"
        return ", ".join(x for x in (length, colour) if x)
    return " ".join(x for x in (length, colour) if x) + " hair"


def _en_bag(a: dict, keys: set, rng: np.random.Generator) -> str | None:
    part = _en_part("bag", a, keys, rng)
    if part is None:
        return None
    phrase = _a(*part)
    if "bag_type" in keys and rng.random() < 0.5:
        phrase += " " + pick(rng, EN_BAG_WAY[a["bag_type"]])
    return phrase


def caption_en(a: dict, keys: set, rng: np.random.Generator) -> str:
    gender = a["gender"] if "gender" in keys else None
    noun = pick(rng, EN_SUBJECT[gender])
    build = pick(rng, EN_BUILD[a["build"]]) if "build" in keys else None
    report = rng.random() < 0.3
    hair = _en_hair(a, keys, rng, report)
    parts = {g: _en_part(g, a, keys, rng) for g in _PARTS}
    bag = _en_bag(a, keys, rng)
    if report:  # Male, lean. Hair: cropped, jet-black. Torso: crimson tee shirt. Carrying: a knapsack.
        lines = [", ".join(x for x in (noun, build) if x)]
        if hair:
            lines.append(f"Hair: {hair}")
        lines += [f"{pick(rng, EN_LABEL[g])}: {p[0]}" for g, p in parts.items() if p]
        if bag:
            lines.append(f"{pick(rng, EN_LABEL['bag'])}: {bag}")
        text = ". ".join(lines) + "."
        return text[0].upper() + text[1:]
    who = _a(f"{build} {noun}" if build else noun, False)
    wear = [_a(*p) for p in parts.values() if p]
    style = int(rng.random() * 3)
    if style == 0:  # On camera: a lean male with cropped hair, in a crimson tee shirt and chinos, a knapsack.
        text = f"{pick(rng, ['On camera:', 'Sighted:', 'Camera shows'])} {who}"
        text += f" with {hair}" if hair else ""
        text += f", in {join_en(wear)}" if wear else ""
        text += f", {bag}" if bag else ""
        return text + "."
    if style == 1:  # Observed a male with cropped hair. His outfit: ... Bag: ...
        poss = EN_POSSESSIVE[gender].capitalize()
        out = [f"Observed {who}" + (f" with {hair}" if hair else "")]
        if wear:
            out.append(f"{poss} outfit: {join_en(wear)}")
        if bag:
            out.append(f"{poss} bag: {bag}")
        return ". ".join(out) + "."
    # Crimson tee shirt + chinos + a knapsack; a lean male with cropped hair.
    items = [p[0] for p in parts.values() if p] + ([bag] if bag else [])
    who_hair = who + (f" with {hair}" if hair else "")
    text = " + ".join(items) + f"; {who_hair}" if items else f"Logged: {who_hair}"
    return text[0].upper() + text[1:] + "."


# ------------------------------------------------------------------------------------------- Chinese
def _zh_part(group: str, a: dict, keys: set, rng: np.random.Generator) -> str | None:
    if not any(k in keys for k in GROUPS[group]):
        return None
    tkey, ckey = f"{group}_type", f"{group}_color"
    noun = pick(rng, ZH_NOUN[a[tkey]]) if tkey in keys else pick(rng, ZH_GENERIC[group])
    pattern = a["upper_pattern"] if group == "upper" and "upper_pattern" in keys else None
    out = ZH_PATTERN["logo"][0] if pattern == "logo" else ""  # 带印花的 + 短袖 + 大红色 + 横条纹 + 圆领T恤
    if group == "upper" and "sleeve" in keys:
        out += pick(rng, ZH_SLEEVE[a["sleeve"]])
    if ckey in keys:
        out += pick(rng, ZH_COLOR[a[ckey]])
    if pattern in ("striped", "checked", "plain"):
        out += pick(rng, ZH_PATTERN[pattern])
    return out + noun


def _zh_hair(a: dict, keys: set, rng: np.random.Generator) -> str | None:
    length = pick(rng, ZH_HAIR_LENGTH[a["hair_length"]]) if "hair_length" in keys else None
    colour = pick(rng, ZH_HAIR_COLOR[a["hair_color"]]) if "hair_color" in keys else None
    if length:
        return (colour or "") + length
    return colour + "头发" if colour else None


def caption_zh(a: dict, keys: set, rng: np.random.Generator) -> str:
    subject = pick(rng, ZH_SUBJECT[a["gender"] if "gender" in keys else None])
    build = pick(rng, ZH_BUILD[a["build"]]) if "build" in keys else None
    hair = _zh_hair(a, keys, rng)
    parts = {g: _zh_part(g, a, keys, rng) for g in _PARTS + ("bag",)}
    if rng.random() < 0.5:  # 目标：男性，偏瘦；发型：乌黑短发；上身：大红色圆领T恤；携带：双肩背包。
        fields = [f"目标：{subject}" + (f"，{build}" if build else "")]
        if hair:
            fields.append(f"{ZH_LABEL['hair']}：{hair}")
        fields += [f"{ZH_LABEL[g]}：{p}" for g, p in parts.items() if p]
        return "；".join(fields) + "。"
    # 监控中出现一名男性，偏瘦，乌黑短发，头戴鸭舌帽，穿着……，脚蹬板鞋，携带书包。
    clauses = [f"{pick(rng, ['监控中出现一名', '画面里有一名'])}{subject}"] + [x for x in (build, hair) if x]
    if parts["hat"]:
        clauses.append(f"头戴{parts['hat']}")
    clothes = [p for p in (parts["upper"], parts["lower"]) if p]
    if clothes:
        clauses.append(f"穿着{join_zh(clothes)}")
    if parts["shoes"]:
        clauses.append(f"脚蹬{parts['shoes']}")
    if parts["bag"]:
        clauses.append(f"携带{parts['bag']}")
    return "，".join(clauses) + "。"
