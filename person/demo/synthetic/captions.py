"""Captions of the synthetic pedestrians, in English and Chinese, naming only what an image shows.

A caption names a set of attribute keys: the ones both present and visible in the image, or a chosen
`subset` of them (partial captions for training); this module decides which, the sentence is made by
person.demo.synthetic.sentences from the words of person.demo.synthetic.words. `prompt_caption` and the
SYNTH-PEDES attribute string follow one fixed shape, as PLIP's generated ones do; `tokenize` gives CUHK-PEDES'
`processed_tokens`.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np

from .attributes import ATTRIBUTE_KEYS, GROUPS
from .sentences import caption_en, caption_zh
from .words import EN_GENERIC, EN_NOUN, article, join_en

LANGS = ("en", "zh")
DEFAULT_CHINESE_SHARE = 0.2
# A site's sentence builders, per language: (attributes, keys to name, rng) -> the sentence.
Sentences = Mapping[str, Callable[[dict, set, np.random.Generator], str]]
DEMO_SENTENCES: Sentences = {"en": caption_en, "zh": caption_zh}


def mentionable(attrs: dict, visible: dict | None, keys=ATTRIBUTE_KEYS) -> list[str]:
    """The keys among `keys` that the identity has and the image shows (visible=None: all it has)."""
    return [k for k in keys if attrs.get(k) is not None and (visible is None or visible.get(k, False))]


def _default_keys(attrs: dict, visible: dict | None, rng: np.random.Generator) -> list[str]:
    """What a human would write: usually most visible attributes, sometimes only 2-4 of them."""
    keys = mentionable(attrs, visible)
    rest = [k for k in keys if k not in ("gender", "build")]
    if rng.random() < 0.35 and len(rest) > 2:  # a partial caption
        order = rng.permutation(len(rest))
        chosen = {rest[i] for i in order[:int(rng.integers(2, min(4, len(rest)) + 1))]}
    else:
        chosen = set(rest)
        if attrs.get("upper_pattern") == "plain" and rng.random() < 0.8:
            chosen.discard("upper_pattern")
        if rng.random() < 0.5:
            chosen.discard("sleeve")
    if "build" in keys and rng.random() < 0.25:
        chosen.add("build")
    if "gender" in keys:
        chosen.add("gender")
    return [k for k in ATTRIBUTE_KEYS if k in chosen]


def keyed_caption(attrs: dict, visible: dict | None, rng: np.random.Generator, lang: str = "en",
                  subset: list[str] | None = None, sentences: Sentences = DEMO_SENTENCES) -> tuple[str, list[str]]:
    """`make_caption`'s caption (in the words of `sentences`, a site's builders) and the attribute keys it
    names (ATTRIBUTE_KEYS order).

    The keys are what a caption can be checked against: an image matches it when its attributes
    equal the caption's on every named key.
    """
    if lang not in LANGS:
        raise ValueError(f"caption language {lang!r}: use one of {', '.join(LANGS)}")
    if subset is None:
        keys = _default_keys(attrs, visible, rng)
    else:
        unknown = [k for k in subset if k not in ATTRIBUTE_KEYS]
        if unknown:
            raise ValueError(f"subset names unknown attributes {unknown}: use keys of ATTRIBUTE_KEYS")
        keys = mentionable(attrs, visible, [k for k in ATTRIBUTE_KEYS if k in subset])
    return sentences[lang](attrs, set(keys), rng), keys


def make_caption(attrs: dict, visible: dict | None, rng: np.random.Generator, lang: str = "en",
                 subset: list[str] | None = None) -> str:
    """One caption of an image of `attrs`.

    Names the keys of `subset` (default: what a human would pick, usually most of the visible attributes)
    that the identity has and `visible` marks as seen; visible=None counts everything as seen.
    """
    return keyed_caption(attrs, visible, rng, lang, subset)[0]


def pick_language(rng: np.random.Generator, chinese: float) -> str:
    """'zh' with probability `chinese`, else 'en'."""
    return "zh" if rng.random() < chinese else "en"


def keyed_image_captions(attrs: dict, visible: dict | None, rng: np.random.Generator, n: int = 2,
                         chinese: float = DEFAULT_CHINESE_SHARE, sentences: Sentences = DEMO_SENTENCES
                         ) -> list[tuple[str, list[str]]]:
    """`n` different captions of one image, each with the keys it names; each is Chinese with
    probability `chinese`."""
    out: list[tuple[str, list[str]]] = []
    for _ in range(n):
        lang = pick_language(rng, chinese)
        text, keys = keyed_caption(attrs, visible, rng, lang, sentences=sentences)
        for _retry in range(4):  # two annotators rarely write the very same sentence
            if all(text != t for t, _ in out):
                break
            text, keys = keyed_caption(attrs, visible, rng, lang, sentences=sentences)
        out.append((text, keys))
    return out


def make_image_captions(attrs: dict, visible: dict | None, rng: np.random.Generator, n: int = 2,
                        chinese: float = DEFAULT_CHINESE_SHARE) -> list[str]:
    """`n` different captions of one image; each is Chinese with probability `chinese`."""
    return [text for text, _ in keyed_image_captions(attrs, visible, rng, n, chinese)]


def prompt_caption(attrs: dict, visible: dict | None) -> str:
    """SYNTH-PEDES' `prompt_caption`: one fixed English shape over every visible attribute."""
    keys = set(mentionable(attrs, visible))
    subj = {"man": "man", "woman": "woman"}.get(attrs["gender"] if "gender" in keys else None, "person")
    parts = []
    if "hair_length" in keys or "hair_color" in keys:
        hair = " ".join(x for x in (attrs["hair_length"] if "hair_length" in keys else None,
                                    attrs["hair_color"] if "hair_color" in keys else None) if x)
        parts.append(f"has {hair} hair")
    wear = []
    for group in ("hat", "upper", "lower", "shoes"):
        gkeys = [k for k in GROUPS[group] if k in keys]
        if not gkeys:
            continue
        words = []
        if group == "upper" and "sleeve" in keys:
            words.append(f"{attrs['sleeve']}-sleeved")
        if f"{group}_color" in keys:
            words.append(attrs[f"{group}_color"])
        if group == "upper" and "upper_pattern" in keys and attrs["upper_pattern"] in ("striped", "checked"):
            words.append(attrs["upper_pattern"])
        tkey = f"{group}_type"
        words_, plural = EN_NOUN[attrs[tkey]] if tkey in keys else EN_GENERIC[group]
        noun = words_[0]
        phrase = " ".join(words + [noun])
        if group == "upper" and "upper_pattern" in keys and attrs["upper_pattern"] == "logo":
            phrase += " with a logo"
        wear.append(phrase if plural else article(phrase))
    if wear:
        parts.append(f"wears {join_en(wear)}")
    if "bag_type" in keys or "bag_color" in keys:
        g = _en_garment_fixed(attrs, keys)
        parts.append(f"carries {g}")
    return f"The {subj} {join_en(parts)}." if parts else f"A {subj}."


def _en_garment_fixed(attrs: dict, keys: set) -> str:
    words = [attrs["bag_color"]] if "bag_color" in keys else []
    words.append(attrs["bag_type"] if "bag_type" in keys else "bag")
    return article(" ".join(words))


def attribute_string(attrs: dict, visible: dict | None) -> str:
    """SYNTH-PEDES' attribute string: gender, hair colour, hair length, upper, sleeve, lower, bag ("unknown"
    where hidden or absent), e.g. 'man,black hair,short hair,white shirt,short sleeve,black trousers,unknown'."""
    keys = set(mentionable(attrs, visible))

    def both(ckey: str, tkey: str) -> str:
        if ckey in keys and tkey in keys:
            return f"{attrs[ckey]} {attrs[tkey]}"
        return "unknown"

    return ",".join([
        attrs["gender"] if "gender" in keys else "unknown",
        f"{attrs['hair_color']} hair" if "hair_color" in keys else "unknown",
        f"{attrs['hair_length']} hair" if "hair_length" in keys else "unknown",
        both("upper_color", "upper_type"),
        f"{attrs['sleeve']} sleeve" if "sleeve" in keys else "unknown",
        both("lower_color", "lower_type"),
        both("bag_color", "bag_type"),
    ])


_CJK = re.compile(r"[\u3400-\u9fff]")
_EN_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def is_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


def tokenize(text: str) -> list[str]:
    """CUHK-PEDES `processed_tokens`: lowercase words; a Chinese caption gives its characters."""
    if is_chinese(text):
        return [ch.lower() for ch in text if ch.isalnum()]
    return _EN_TOKEN.findall(text.lower())
