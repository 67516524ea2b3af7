"""The words synthetic captions are made of: per language, the synonyms of every attribute value and garment.

Tables are keyed by attribute value (person.demo.synthetic.attributes); a value's list holds the synonyms an
annotator may pick (repeats weigh a word). GROUP_WORDS lists, per language, every noun a caption can use for a
body part (hair, hat, upper, lower, shoes, bag): a test can then check that a hidden part is never mentioned.
`pick`, `article` and the joins are the little grammar both sentence builders share.
"""
from __future__ import annotations

import numpy as np

from .attributes import vocabulary

EN_COLOR = {"black": ["black"], "white": ["white"], "grey": ["grey", "gray"], "red": ["red"], "blue": ["blue"],
            "green": ["green"], "yellow": ["yellow"], "orange": ["orange"], "pink": ["pink"],
            "purple": ["purple", "violet"], "brown": ["brown"], "beige": ["beige", "khaki", "tan"]}
EN_HAIR_COLOR = {"black": ["black", "dark"], "brown": ["brown"], "blond": ["blond", "blonde", "fair"],
                 "grey": ["grey", "gray", "silver"], "red": ["red", "ginger", "auburn"]}
EN_SUBJECT = {"man": ["man", "man", "guy", "gentleman", "male pedestrian"],
              "woman": ["woman", "woman", "lady", "female pedestrian"], None: ["person", "pedestrian", "individual"]}
EN_BUILD = {"slim": ["slim", "thin", "slender"], "average": ["medium-build", "average-sized"],
            "heavy": ["heavy-set", "stocky", "chubby"]}
# (synonyms, plural?)
EN_NOUN = {
    "t-shirt": (["T-shirt", "t-shirt", "tee"], False), "shirt": (["shirt", "button-up shirt"], False),
    "jacket": (["jacket"], False), "coat": (["coat", "long coat", "overcoat"], False),
    "hoodie": (["hoodie", "hooded sweatshirt"], False), "sweater": (["sweater", "jumper", "pullover"], False),
    "dress": (["dress"], False),
    "trousers": (["trousers", "pants", "slacks"], True), "jeans": (["jeans", "denim jeans"], True),
    "shorts": (["shorts"], True), "skirt": (["skirt"], False),
    "sneakers": (["sneakers", "trainers", "sports shoes", "running shoes"], True),
    "boots": (["boots", "ankle boots"], True), "leather shoes": (["leather shoes", "formal shoes"], True),
    "backpack": (["backpack", "rucksack"], False), "handbag": (["handbag", "purse"], False),
    "shoulder bag": (["shoulder bag", "messenger bag", "crossbody bag"], False),
    "cap": (["cap", "baseball cap"], False), "beanie": (["beanie", "knit hat", "woolly hat"], False),
}
EN_GENERIC = {"upper": (["top"], False), "lower": (["bottoms"], True), "shoes": (["shoes", "footwear"], True),
              "bag": (["bag"], False), "hat": (["hat"], False)}
EN_PATTERN = {"striped": ["striped", "stripy"], "checked": ["checked", "plaid", "checkered"],
              "plain": ["plain", "solid-coloured"]}
EN_SLEEVE = {"short": ["short-sleeved", "short-sleeve"], "long": ["long-sleeved", "long-sleeve"]}

ZH_COLOR = {"black": ["黑色", "黑"], "white": ["白色", "白"], "grey": ["灰色", "灰"], "red": ["红色", "红"],
            "blue": ["蓝色", "蓝"], "green": ["绿色", "绿"], "yellow": ["黄色", "黄"], "orange": ["橙色", "橘色"],
            "pink": ["粉色", "粉红色"], "purple": ["紫色"], "brown": ["棕色", "咖啡色"], "beige": ["米色", "卡其色"]}
ZH_HAIR_COLOR = {"black": ["黑色", "乌黑"], "brown": ["棕色"], "blond": ["金色", "金黄色"], "grey": ["灰白色", "花白"],
                 "red": ["红色", "红棕色"]}
ZH_SUBJECT = {"man": ["男子", "男士", "男人", "男性"], "woman": ["女子", "女士", "女人", "女性"], None: ["人", "行人"]}
ZH_BUILD = {"slim": ["身材苗条的", "瘦瘦的"], "average": ["中等身材的", "身材适中的"], "heavy": ["体型偏胖的", "微胖的"]}
ZH_NOUN = {
    "t-shirt": ["T恤", "T恤衫"], "shirt": ["衬衫", "衬衣"], "jacket": ["夹克", "短外套"], "coat": ["大衣", "长外套"],
    "hoodie": ["卫衣", "套头衫"], "sweater": ["毛衣", "针织衫"], "dress": ["连衣裙"],
    "trousers": ["长裤", "裤子", "西裤"], "jeans": ["牛仔裤"], "shorts": ["短裤"], "skirt": ["裙子", "半身裙", "短裙"],
    "sneakers": ["运动鞋", "球鞋"], "boots": ["靴子", "短靴"], "leather shoes": ["皮鞋"],
    "backpack": ["双肩包", "背包"], "handbag": ["手提包", "手袋"], "shoulder bag": ["单肩包", "斜挎包"],
    "cap": ["鸭舌帽", "棒球帽"], "beanie": ["毛线帽", "针织帽"],
}
ZH_GENERIC = {"upper": ["上衣"], "lower": ["下装"], "shoes": ["鞋子", "鞋"], "bag": ["包"], "hat": ["帽子"]}
ZH_PATTERN = {"striped": ["条纹"], "checked": ["格子"], "plain": ["纯色"]}
ZH_SLEEVE = {"short": ["短袖"], "long": ["长袖"]}
ZH_BAG_VERB = {"backpack": ["背着"], "handbag": ["提着", "拎着"], "shoulder bag": ["挎着", "背着"], None: ["带着"]}
ZH_MEASURE = {"upper": "一件", "lower": "一条", "shoes": "一双", "bag": "一个", "hat": "一顶"}


def _group_words() -> dict[str, dict[str, tuple[str, ...]]]:
    out: dict[str, dict[str, tuple[str, ...]]] = {"en": {}, "zh": {}}
    vocab = vocabulary()
    for group in ("hat", "upper", "lower", "shoes", "bag"):
        types = [t for t in vocab[f"{group}_type"] if t is not None]
        en = [w for t in types for w in EN_NOUN[t][0]] + EN_GENERIC[group][0]
        zh = [w for t in types for w in ZH_NOUN[t]] + ZH_GENERIC[group]
        if group == "upper":  # pattern and sleeve words only ever describe the upper garment
            en += ["logo", "print", "printed", "sleeve", "short-sleeved", "long-sleeved", "short-sleeve",
                   "long-sleeve"] + [w for ws in EN_PATTERN.values() for w in ws]
            zh += ["图案", "袖"] + [w for ws in ZH_PATTERN.values() for w in ws]
        out["en"][group], out["zh"][group] = tuple(en), tuple(zh)
    out["en"]["hair"], out["zh"]["hair"] = ("hair",), ("发",)
    return out


GROUP_WORDS = _group_words()


# ------------------------------------------------------------------------------------------- grammar
def pick(rng: np.random.Generator, options: list):
    """One of `options`, drawn with one rng.random() (the draw every caption's bytes depend on)."""
    return options[int(rng.random() * len(options))]


def article(phrase: str) -> str:
    """"a" or "an" before an English phrase."""
    return ("an " if phrase[:1].lower() in "aeio" else "a ") + phrase


def join_en(items: list[str]) -> str:
    """"a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def join_zh(items: list[str]) -> str:
    """"a、b和c"."""
    if len(items) <= 1:
        return "".join(items)
    return "、".join(items[:-1]) + "和" + items[-1]
