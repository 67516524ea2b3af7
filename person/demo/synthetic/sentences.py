"""The sentence shapes of synthetic captions: an English or a Chinese sentence naming a given set of attribute keys.

`caption_en` and `caption_zh` draw one of several shapes, synonyms and orders (person.demo.synthetic.words),
the way human annotators write, and name exactly the keys given: what a caption names is decided by its caller
(person.demo.synthetic.captions). Every choice is a draw from the caller's rng, in a fixed order: the same rng
state gives the same sentence.
"""
from __future__ import annotations

import numpy as np

from .attributes import GROUPS
from .words import (EN_BUILD, EN_COLOR, EN_GENERIC, EN_HAIR_COLOR, EN_NOUN, EN_PATTERN, EN_SLEEVE, EN_SUBJECT,
                    ZH_BAG_VERB, ZH_BUILD, ZH_COLOR, ZH_GENERIC, ZH_HAIR_COLOR, ZH_MEASURE, ZH_NOUN, ZH_PATTERN,
                    ZH_SLEEVE, ZH_SUBJECT, article, join_en, join_zh, pick)


# ------------------------------------------------------------------------------------------- English
def _en_garment(group: str, a: dict, keys: set, rng: np.random.Generator) -> tuple[str, bool] | None:
    """Noun phrase (no article) for a group's named keys, or None when the group names nothing."""
    gkeys = [k for k in GROUPS[group] if k in keys]
    if not gkeys:
        return None
    tkey, ckey = f"{group}_type", f"{group}_color"
    if tkey in keys:
        words, plural = EN_NOUN[a[tkey]]
        noun = pick(rng, words)
    else:
        words, plural = EN_GENERIC[group]
        noun = pick(rng, words)
    pre, post = [], []
    if ckey in keys:
        pre.append(pick(rng, EN_COLOR[a[ckey]]))
    if group == "upper":
        pat = a["upper_pattern"] if "upper_pattern" in keys else None
        if pat == "logo":
            if rng.random() < 0.3:
                pre.insert(0, "printed")
            else:
                post.append(pick(rng, ["with a logo", "with a logo on it", "with a print on the front"]))
        elif pat == "plain":
            pre.insert(0, pick(rng, EN_PATTERN["plain"]))  # "a plain red shirt"
        elif pat is not None:
            pre.append(pick(rng, EN_PATTERN[pat]))  # "a red striped shirt"
        if "sleeve" in keys:
            if post or rng.random() < 0.6:  # one "with ..." per garment is enough
                pre.insert(0, pick(rng, EN_SLEEVE[a["sleeve"]]))
            else:
                post.append(f"with {a['sleeve']} sleeves")
    phrase = " ".join(pre + [noun] + post)
    return phrase, plural


def _en_np(g: tuple[str, bool] | None) -> str | None:
    if g is None:
        return None
    return g[0] if g[1] else article(g[0])


def _en_hair(a: dict, keys: set, rng: np.random.Generator) -> str | None:
    parts = []
    if "hair_length" in keys:
        parts.append(a["hair_length"])
    if "hair_color" in keys:
        parts.append(pick(rng, EN_HAIR_COLOR[a["hair_color"]]))
    if not parts:
        return None
    return " ".join(parts) + " hair"


def _en_with_wearing(noun: str, hair: str | None, wear: list[str], bag: str | None, carry: str) -> str:
    """"A woman with long brown hair wearing ..., carrying ...": one sentence, any part may be missing."""
    s = article(noun)
    if hair:
        s += f" with {hair}"
    if wear:
        s += f" wearing {join_en(wear)}"
    if bag:
        s += f", {carry} {bag}" if wear else f" {carry} {bag}"
    return s + "."


def caption_en(a: dict, keys: set, rng: np.random.Generator) -> str:
    gender = a["gender"] if "gender" in keys else None
    noun = pick(rng, EN_SUBJECT[gender])
    if "build" in keys:
        noun = f"{pick(rng, EN_BUILD[a['build']])} {noun}"
    pron = {"man": "He", "woman": "She", None: "This person"}[gender]  # singular verbs throughout
    hair = _en_hair(a, keys, rng)
    worn = {g: _en_np(_en_garment(g, a, keys, rng)) for g in ("hat", "upper", "lower", "shoes")}
    wear = [n for n in worn.values() if n]
    shuffled = len(wear) > 2 and rng.random() < 0.25  # annotators do not always go top to bottom
    if shuffled:
        wear = [wear[i] for i in rng.permutation(len(wear))]
    bag = _en_np(_en_garment("bag", a, keys, rng))
    carry = "carrying" if bag is None or rng.random() < 0.7 else ("holding" if a["bag_type"] == "handbag" else "with")
    style = int(rng.random() * 5)
    if style == 0:  # A woman with long brown hair wearing ..., carrying ...
        out = [_en_with_wearing(noun, hair, wear, bag, carry)]
    elif style == 1:  # This man has short black hair. He wears ... He carries ...
        subj = f"{pick(rng, ['This', 'The'])} {noun}"
        out = []
        if hair:
            out.append(f"{subj} has {hair}.")
            subj = pron
        if wear:
            # "a grey coat over dark trousers": only an outer garment goes over the rest
            over = ("upper_type" in keys and a["upper_type"] in ("coat", "jacket", "hoodie") and worn["lower"]
                    and not worn["hat"] and not shuffled and rng.random() < 0.5)
            if over:
                out.append(f"{subj} wears {wear[0]} over {join_en(wear[1:])}.")
            else:
                out.append(f"{subj} {pick(rng, ['wears', 'is wearing', 'is dressed in'])} "
                           f"{join_en(wear)}.")
            subj = pron
        if bag:
            out.append(f"{subj} {pick(rng, ['carries', 'is carrying'])} {bag}.")
        if not out:
            out.append(f"{article(noun)}.")
    elif style == 2:  # The person is wearing ... and carrying ... . She has ...
        subj = f"The {noun}"
        out = []
        if wear:
            s = f"{subj} is wearing {join_en(wear)}"
            s += f" and {'carrying' if carry == 'with' else carry} {bag}." if bag else "."
            out.append(s)
        elif bag:
            out.append(f"{subj} is carrying {bag}.")
        if hair:
            out.append(f"{pron if out else subj} has {hair}.")
        if not out:
            out.append(f"{article(noun)}.")
    elif style == 3:  # A man in a grey coat and dark trousers, with a black backpack.
        s = article(noun)
        if wear:
            s += f" in {join_en(wear)}"
        extras = [x for x in (hair, bag) if x]
        if extras:
            s += f"{',' if wear else ''} with {join_en(extras)}"
        out = [s + "."]
    else:  # Wearing ..., the woman has ... and carries ...
        if wear and (hair or bag):
            s = f"Wearing {join_en(wear)}, the {noun}"
            tail = []
            if hair:
                tail.append(f"has {hair}")
            if bag:
                tail.append(f"carries {bag}")
            s += " " + " and ".join(tail)
            out = [s + "."]
        else:
            out = [_en_with_wearing(noun, hair, wear, bag, carry)]
    text = " ".join(out)
    return text[0].upper() + text[1:]


# ------------------------------------------------------------------------------------------- Chinese
def _zh_garment(group: str, a: dict, keys: set, rng: np.random.Generator) -> str | None:
    if not any(k in keys for k in GROUPS[group]):
        return None
    tkey, ckey = f"{group}_type", f"{group}_color"
    noun = pick(rng, ZH_NOUN[a[tkey]]) if tkey in keys else pick(rng, ZH_GENERIC[group])
    pre = ""  # 印有图案的 + 短袖 + 红色 + 条纹 + T恤
    upper = group == "upper"
    pattern = a["upper_pattern"] if upper and "upper_pattern" in keys else None
    if pattern == "logo":
        pre += "印有图案的"
    if upper and "sleeve" in keys:
        pre += pick(rng, ZH_SLEEVE[a["sleeve"]])
    if ckey in keys:
        pre += pick(rng, ZH_COLOR[a[ckey]])
        if pre.endswith("色") and not pattern and not (upper and "sleeve" in keys) and rng.random() < 0.25:
            pre += "的"  # 红色的T恤
    if pattern in ("striped", "checked", "plain"):
        pre += pick(rng, ZH_PATTERN[pattern])
    phrase = pre + noun
    if rng.random() < 0.25:
        phrase = ZH_MEASURE[group] + phrase
    return phrase


def _zh_hair(a: dict, keys: set, rng: np.random.Generator) -> str | None:
    length = {"short": "短发", "long": "长发"}[a["hair_length"]] if "hair_length" in keys else None
    color = pick(rng, ZH_HAIR_COLOR[a["hair_color"]]) if "hair_color" in keys else None
    if length and color:
        return color + length
    if length:
        return length
    if color:
        return color + "头发"
    return None


def caption_zh(a: dict, keys: set, rng: np.random.Generator) -> str:
    gender = a["gender"] if "gender" in keys else None
    noun = pick(rng, ZH_SUBJECT[gender])
    if "build" in keys:
        noun = pick(rng, ZH_BUILD[a["build"]]) + noun
    pron = {"man": "他", "woman": "她", None: "此人"}[gender]
    hair = _zh_hair(a, keys, rng)
    hat = _zh_garment("hat", a, keys, rng)
    clothes = [x for x in (_zh_garment("upper", a, keys, rng), _zh_garment("lower", a, keys, rng)) if x]
    shoes = _zh_garment("shoes", a, keys, rng)
    bag = _zh_garment("bag", a, keys, rng)
    bag_verb = pick(rng, ZH_BAG_VERB[a["bag_type"] if "bag_type" in keys else None])
    clauses = []
    if hat:
        clauses.append(f"戴着{hat}")
    if clothes:
        clauses.append(f"{pick(rng, ['穿着', '身穿', '穿了'])}{join_zh(clothes)}")
    if shoes:
        clauses.append(f"{pick(rng, ['脚穿', '脚上穿着'])}{shoes}")
    if bag:
        clauses.append(f"{bag_verb}{bag}")
    if len(clauses) > 2 and rng.random() < 0.2:
        order = rng.permutation(len(clauses))
        clauses = [clauses[i] for i in order]
    style = int(rng.random() * 3)
    if style == 0:  # 一位留着黑色长发的女子，穿着……，背着……。
        head = f"一位留着{hair}的{noun}" if hair else f"一位{noun}"
        text = "，".join([head] + clauses)
    elif style == 1:  # 这名男子留着短发，身穿……。
        head = f"{pick(rng, ['这名', '这位', '图中的'])}{noun}"
        text = head + (f"留着{hair}" if hair else "")
        if clauses:
            text += ("，" if hair else "") + "，".join(clauses)
    else:  # 一个穿着……的男人。他留着……，……
        if clauses:
            text = f"{pick(rng, ['画面中是', '这是'])}一个{clauses[0]}的{noun}"
            rest = clauses[1:]
            if hair:
                rest.insert(0, f"留着{hair}")
            if rest:
                text += "。" + pron + "，".join(rest)
        else:
            text = f"这是一个留着{hair}的{noun}" if hair else f"这是一个{noun}"
    return text + "。"
