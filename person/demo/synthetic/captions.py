"""Captions of the synthetic pedestrians, in English and Chinese, naming only what an image shows.

A caption names a set of attribute keys: the ones both present and visible in the image, or a chosen
`subset` of them (partial captions for training). Phrases come from many sentence shapes, synonyms and
orders, the way human annotators write; `prompt_caption` and the SYNTH-PEDES attribute string follow one
fixed shape, as PLIP's generated ones do.

GROUP_WORDS lists, per language, every noun a caption can use for a body part (hair, hat, upper, lower,
shoes, bag): a test can then check that a hidden part is never mentioned.
"""
from __future__ import annotations

import re

import numpy as np

from .attributes import ATTRIBUTE_KEYS, GROUPS, vocabulary

LANGS = ("en", "zh")
DEFAULT_CHINESE_SHARE = 0.2

# ------------------------------------------------------------------------------------------ vocabulary
_EN_COLOR = {"black": ["black"], "white": ["white"], "grey": ["grey", "gray"], "red": ["red"], "blue": ["blue"],
             "green": ["green"], "yellow": ["yellow"], "orange": ["orange"], "pink": ["pink"],
             "purple": ["purple", "violet"], "brown": ["brown"], "beige": ["beige", "khaki", "tan"]}
_EN_HAIR_COLOR = {"black": ["black", "dark"], "brown": ["brown"], "blond": ["blond", "blonde", "fair"],
                  "grey": ["grey", "gray", "silver"], "red": ["red", "ginger", "auburn"]}
_EN_SUBJECT = {"man": ["man", "man", "guy", "gentleman", "male pedestrian"],
               "woman": ["woman", "woman", "lady", "female pedestrian"], None: ["person", "pedestrian", "individual"]}
_EN_BUILD = {"slim": ["slim", "thin", "slender"], "average": ["medium-build", "average-sized"],
             "heavy": ["heavy-set", "stocky", "chubby"]}
# (synonyms, plural?)
_EN_NOUN = {
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
_EN_GENERIC = {"upper": (["top"], False), "lower": (["bottoms"], True), "shoes": (["shoes", "footwear"], True),
               "bag": (["bag"], False), "hat": (["hat"], False)}
_EN_PATTERN = {"striped": ["striped", "stripy"], "checked": ["checked", "plaid", "checkered"],
               "plain": ["plain", "solid-coloured"]}
_EN_SLEEVE = {"short": ["short-sleeved", "short-sleeve"], "long": ["long-sleeved", "long-sleeve"]}

_ZH_COLOR = {"black": ["黑色", "黑"], "white": ["白色", "白"], "grey": ["灰色", "灰"], "red": ["红色", "红"],
             "blue": ["蓝色", "蓝"], "green": ["绿色", "绿"], "yellow": ["黄色", "黄"], "orange": ["橙色", "橘色"],
             "pink": ["粉色", "粉红色"], "purple": ["紫色"], "brown": ["棕色", "咖啡色"], "beige": ["米色", "卡其色"]}
_ZH_HAIR_COLOR = {"black": ["黑色", "乌黑"], "brown": ["棕色"], "blond": ["金色", "金黄色"], "grey": ["灰白色", "花白"],
                  "red": ["红色", "红棕色"]}
_ZH_SUBJECT = {"man": ["男子", "男士", "男人", "男性"], "woman": ["女子", "女士", "女人", "女性"], None: ["人", "行人"]}
_ZH_BUILD = {"slim": ["身材苗条的", "瘦瘦的"], "average": ["中等身材的", "身材适中的"], "heavy": ["体型偏胖的", "微胖的"]}
_ZH_NOUN = {
    "t-shirt": ["T恤", "T恤衫"], "shirt": ["衬衫", "衬衣"], "jacket": ["夹克", "短外套"], "coat": ["大衣", "长外套"],
    "hoodie": ["卫衣", "套头衫"], "sweater": ["毛衣", "针织衫"], "dress": ["连衣裙"],
    "trousers": ["长裤", "裤子", "西裤"], "jeans": ["牛仔裤"], "shorts": ["短裤"], "skirt": ["裙子", "半身裙", "短裙"],
    "sneakers": ["运动鞋", "球鞋"], "boots": ["靴子", "短靴"], "leather shoes": ["皮鞋"],
    "backpack": ["双肩包", "背包"], "handbag": ["手提包", "手袋"], "shoulder bag": ["单肩包", "斜挎包"],
    "cap": ["鸭舌帽", "棒球帽"], "beanie": ["毛线帽", "针织帽"],
}
_ZH_GENERIC = {"upper": ["上衣"], "lower": ["下装"], "shoes": ["鞋子", "鞋"], "bag": ["包"], "hat": ["帽子"]}
_ZH_PATTERN = {"striped": ["条纹"], "checked": ["格子"], "plain": ["纯色"]}
_ZH_SLEEVE = {"short": ["短袖"], "long": ["长袖"]}
_ZH_BAG_VERB = {"backpack": ["背着"], "handbag": ["提着", "拎着"], "shoulder bag": ["挎着", "背着"], None: ["带着"]}
_ZH_MEASURE = {"upper": "一件", "lower": "一条", "shoes": "一双", "bag": "一个", "hat": "一顶"}


def _group_words() -> dict[str, dict[str, tuple[str, ...]]]:
    out: dict[str, dict[str, tuple[str, ...]]] = {"en": {}, "zh": {}}
    vocab = vocabulary()
    for group in ("hat", "upper", "lower", "shoes", "bag"):
        types = [t for t in vocab[f"{group}_type"] if t is not None]
        en = [w for t in types for w in _EN_NOUN[t][0]] + _EN_GENERIC[group][0]
        zh = [w for t in types for w in _ZH_NOUN[t]] + _ZH_GENERIC[group]
        if group == "upper":  # pattern and sleeve words only ever describe the upper garment
            en += ["logo", "print", "printed", "sleeve", "short-sleeved", "long-sleeved", "short-sleeve",
                   "long-sleeve"] + [w for ws in _EN_PATTERN.values() for w in ws]
            zh += ["图案", "袖"] + [w for ws in _ZH_PATTERN.values() for w in ws]
        out["en"][group], out["zh"][group] = tuple(en), tuple(zh)
    out["en"]["hair"], out["zh"]["hair"] = ("hair",), ("发",)
    return out


GROUP_WORDS = _group_words()


# ------------------------------------------------------------------------------------------- helpers
def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.random() * len(options))]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeio" else "a ") + phrase


def _join_en(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _join_zh(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return "、".join(items[:-1]) + "和" + items[-1]


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


# ------------------------------------------------------------------------------------------- English
def _en_garment(group: str, a: dict, keys: set, rng: np.random.Generator) -> tuple[str, bool] | None:
    """Noun phrase (no article) for a group's named keys, or None when the group names nothing."""
    gkeys = [k for k in GROUPS[group] if k in keys]
    if not gkeys:
        return None
    tkey, ckey = f"{group}_type", f"{group}_color"
    if tkey in keys:
        words, plural = _EN_NOUN[a[tkey]]
        noun = _pick(rng, words)
    else:
        words, plural = _EN_GENERIC[group]
        noun = _pick(rng, words)
    pre, post = [], []
    if ckey in keys:
        pre.append(_pick(rng, _EN_COLOR[a[ckey]]))
    if group == "upper":
        pat = a["upper_pattern"] if "upper_pattern" in keys else None
        if pat == "logo":
            if rng.random() < 0.3:
                pre.insert(0, "printed")
            else:
                post.append(_pick(rng, ["with a logo", "with a logo on it", "with a print on the front"]))
        elif pat == "plain":
            pre.insert(0, _pick(rng, _EN_PATTERN["plain"]))  # "a plain red shirt"
        elif pat is not None:
            pre.append(_pick(rng, _EN_PATTERN[pat]))  # "a red striped shirt"
        if "sleeve" in keys:
            if post or rng.random() < 0.6:  # one "with ..." per garment is enough
                pre.insert(0, _pick(rng, _EN_SLEEVE[a["sleeve"]]))
            else:
                post.append(f"with {a['sleeve']} sleeves")
    phrase = " ".join(pre + [noun] + post)
    return phrase, plural


def _en_np(g: tuple[str, bool] | None) -> str | None:
    if g is None:
        return None
    return g[0] if g[1] else _article(g[0])


def _en_hair(a: dict, keys: set, rng: np.random.Generator) -> str | None:
    parts = []
    if "hair_length" in keys:
        parts.append(a["hair_length"])
    if "hair_color" in keys:
        parts.append(_pick(rng, _EN_HAIR_COLOR[a["hair_color"]]))
    if not parts:
        return None
    return " ".join(parts) + " hair"


def _en_with_wearing(noun: str, hair: str | None, wear: list[str], bag: str | None, carry: str) -> str:
    """"A woman with long brown hair wearing ..., carrying ...": one sentence, any part may be missing."""
    s = _article(noun)
    if hair:
        s += f" with {hair}"
    if wear:
        s += f" wearing {_join_en(wear)}"
    if bag:
        s += f", {carry} {bag}" if wear else f" {carry} {bag}"
    return s + "."


def _caption_en(a: dict, keys: set, rng: np.random.Generator) -> str:
    gender = a["gender"] if "gender" in keys else None
    noun = _pick(rng, _EN_SUBJECT[gender])
    if "build" in keys:
        noun = f"{_pick(rng, _EN_BUILD[a['build']])} {noun}"
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
        subj = f"{_pick(rng, ['This', 'The'])} {noun}"
        out = []
        if hair:
            out.append(f"{subj} has {hair}.")
            subj = pron
        if wear:
            # "a grey coat over dark trousers": only an outer garment goes over the rest
            over = ("upper_type" in keys and a["upper_type"] in ("coat", "jacket", "hoodie") and worn["lower"]
                    and not worn["hat"] and not shuffled and rng.random() < 0.5)
            if over:
                out.append(f"{subj} wears {wear[0]} over {_join_en(wear[1:])}.")
            else:
                out.append(f"{subj} {_pick(rng, ['wears', 'is wearing', 'is dressed in'])} "
                           f"{_join_en(wear)}.")
            subj = pron
        if bag:
            out.append(f"{subj} {_pick(rng, ['carries', 'is carrying'])} {bag}.")
        if not out:
            out.append(f"{_article(noun)}.")
    elif style == 2:  # The person is wearing ... and carrying ... . She has ...
        subj = f"The {noun}"
        out = []
        if wear:
            s = f"{subj} is wearing {_join_en(wear)}"
            s += f" and {'carrying' if carry == 'with' else carry} {bag}." if bag else "."
            out.append(s)
        elif bag:
            out.append(f"{subj} is carrying {bag}.")
        if hair:
            out.append(f"{pron if out else subj} has {hair}.")
        if not out:
            out.append(f"{_article(noun)}.")
    elif style == 3:  # A man in a grey coat and dark trousers, with a black backpack.
        s = _article(noun)
        if wear:
            s += f" in {_join_en(wear)}"
        extras = [x for x in (hair, bag) if x]
        if extras:
            s += f"{',' if wear else ''} with {_join_en(extras)}"
        out = [s + "."]
    else:  # Wearing ..., the woman has ... and carries ...
        if wear and (hair or bag):
            s = f"Wearing {_join_en(wear)}, the {noun}"
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
    noun = _pick(rng, _ZH_NOUN[a[tkey]]) if tkey in keys else _pick(rng, _ZH_GENERIC[group])
    pre = ""  # 印有图案的 + 短袖 + 红色 + 条纹 + T恤
    upper = group == "upper"
    pattern = a["upper_pattern"] if upper and "upper_pattern" in keys else None
    if pattern == "logo":
        pre += "印有图案的"
    if upper and "sleeve" in keys:
        pre += _pick(rng, _ZH_SLEEVE[a["sleeve"]])
    if ckey in keys:
        pre += _pick(rng, _ZH_COLOR[a[ckey]])
        if pre.endswith("色") and not pattern and not (upper and "sleeve" in keys) and rng.random() < 0.25:
            pre += "的"  # 红色的T恤
    if pattern in ("striped", "checked", "plain"):
        pre += _pick(rng, _ZH_PATTERN[pattern])
    phrase = pre + noun
    if rng.random() < 0.25:
        phrase = _ZH_MEASURE[group] + phrase
    return phrase


def _zh_hair(a: dict, keys: set, rng: np.random.Generator) -> str | None:
    length = {"short": "短发", "long": "长发"}[a["hair_length"]] if "hair_length" in keys else None
    color = _pick(rng, _ZH_HAIR_COLOR[a["hair_color"]]) if "hair_color" in keys else None
    if length and color:
        return color + length
    if length:
        return length
    if color:
        return color + "头发"
    return None


def _caption_zh(a: dict, keys: set, rng: np.random.Generator) -> str:
    gender = a["gender"] if "gender" in keys else None
    noun = _pick(rng, _ZH_SUBJECT[gender])
    if "build" in keys:
        noun = _pick(rng, _ZH_BUILD[a["build"]]) + noun
    pron = {"man": "他", "woman": "她", None: "此人"}[gender]
    hair = _zh_hair(a, keys, rng)
    hat = _zh_garment("hat", a, keys, rng)
    clothes = [x for x in (_zh_garment("upper", a, keys, rng), _zh_garment("lower", a, keys, rng)) if x]
    shoes = _zh_garment("shoes", a, keys, rng)
    bag = _zh_garment("bag", a, keys, rng)
    bag_verb = _pick(rng, _ZH_BAG_VERB[a["bag_type"] if "bag_type" in keys else None])
    clauses = []
    if hat:
        clauses.append(f"戴着{hat}")
    if clothes:
        clauses.append(f"{_pick(rng, ['穿着', '身穿', '穿了'])}{_join_zh(clothes)}")
    if shoes:
        clauses.append(f"{_pick(rng, ['脚穿', '脚上穿着'])}{shoes}")
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
        head = f"{_pick(rng, ['这名', '这位', '图中的'])}{noun}"
        text = head + (f"留着{hair}" if hair else "")
        if clauses:
            text += ("，" if hair else "") + "，".join(clauses)
    else:  # 一个穿着……的男人。他留着……，……
        if clauses:
            text = f"{_pick(rng, ['画面中是', '这是'])}一个{clauses[0]}的{noun}"
            rest = clauses[1:]
            if hair:
                rest.insert(0, f"留着{hair}")
            if rest:
                text += "。" + pron + "，".join(rest)
        else:
            text = f"这是一个留着{hair}的{noun}" if hair else f"这是一个{noun}"
    return text + "。"


# ------------------------------------------------------------------------------------------- public
def keyed_caption(attrs: dict, visible: dict | None, rng: np.random.Generator, lang: str = "en",
                  subset: list[str] | None = None) -> tuple[str, list[str]]:
    """`make_caption`'s caption and the attribute keys it names (ATTRIBUTE_KEYS order).

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
    return (_caption_en if lang == "en" else _caption_zh)(attrs, set(keys), rng), keys


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
                         chinese: float = DEFAULT_CHINESE_SHARE) -> list[tuple[str, list[str]]]:
    """`n` different captions of one image, each with the keys it names; each is Chinese with
    probability `chinese`."""
    out: list[tuple[str, list[str]]] = []
    for _ in range(n):
        lang = pick_language(rng, chinese)
        text, keys = keyed_caption(attrs, visible, rng, lang)
        for _retry in range(4):  # two annotators rarely write the very same sentence
            if all(text != t for t, _ in out):
                break
            text, keys = keyed_caption(attrs, visible, rng, lang)
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
        words_, plural = _EN_NOUN[attrs[tkey]] if tkey in keys else _EN_GENERIC[group]
        noun = words_[0]
        phrase = " ".join(words + [noun])
        if group == "upper" and "upper_pattern" in keys and attrs["upper_pattern"] == "logo":
            phrase += " with a logo"
        wear.append(phrase if plural else _article(phrase))
    if wear:
        parts.append(f"wears {_join_en(wear)}")
    if "bag_type" in keys or "bag_color" in keys:
        g = _en_garment_fixed(attrs, keys)
        parts.append(f"carries {g}")
    return f"The {subj} {_join_en(parts)}." if parts else f"A {subj}."


def _en_garment_fixed(attrs: dict, keys: set) -> str:
    words = [attrs["bag_color"]] if "bag_color" in keys else []
    words.append(attrs["bag_type"] if "bag_type" in keys else "bag")
    return _article(" ".join(words))


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
