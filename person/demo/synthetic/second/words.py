"""The second site's caption words: other synonyms for the same attribute values, per language.

Written by other annotators: security staff logging sightings, in their own words. Every word still names the
attribute value it is listed under (a crimson shirt is a red one, a knapsack a backpack), so the captions stay
true. The plain words stay the likeliest, the others are words the demo's captions (person.demo.synthetic.words)
never use; with the log shapes of sentences.py about 29% of an English caption's words (24% of a Chinese one's
characters) are new to a reader of the demo's captions (tests/demo/test_second_site.py). GROUP_WORDS lists, per
language, every word that can only be said of a body part, labels included, so a test can check that a hidden
part is never mentioned.
"""
from __future__ import annotations

from ..attributes import vocabulary

# The plain name stays the likeliest word (repeats weigh a word, as in person.demo.synthetic.words): these
# annotators know the same colours, they only sometimes say them otherwise.
EN_COLOR = {name: [name] * 12 + other for name, other in {
    "black": ["jet-black", "ebony"], "white": ["snow-white", "ivory"], "grey": ["ash-grey", "slate"],
    "red": ["crimson", "scarlet"], "blue": ["cobalt", "royal-blue"], "green": ["emerald", "forest-green"],
    "yellow": ["mustard", "lemon"], "orange": ["tangerine", "amber"], "pink": ["rose", "salmon-pink"],
    "purple": ["plum", "lilac"], "brown": ["chocolate", "coffee-coloured"], "beige": ["camel", "sand-coloured"],
}.items()}
EN_HAIR_COLOR = {name: [name] * 4 + other for name, other in {
    "black": ["jet-black", "raven"], "brown": ["chestnut", "brunette"], "blond": ["golden", "flaxen"],
    "grey": ["greying", "silvery"], "red": ["copper", "carrot-red"]}.items()}
EN_HAIR_LENGTH = {"short": ["short"] * 4 + ["cropped", "close-cut"], "long": ["long"] * 4 + ["shoulder-length", "flowing"]}
EN_SUBJECT = {"man": ["man"] * 4 + ["male", "adult male", "gent"], "woman": ["woman"] * 4 + ["female", "adult female"],
              None: ["subject", "individual", "someone"]}
EN_POSSESSIVE = {"man": "his", "woman": "her", None: "their"}
EN_BUILD = {"slim": ["slim", "lean", "slight"], "average": ["medium-build", "normal-build", "mid-size"],
            "heavy": ["stocky", "broad", "bulky"]}
# value -> (synonyms, plural?): the demo's own noun three times as often as this site's two
EN_NOUN = {value: ([noun] * 6 + other, plural) for value, (noun, other, plural) in {
    "t-shirt": ("T-shirt", ["tee shirt", "crew-neck tee"], False),
    "shirt": ("shirt", ["collared shirt", "button-down"], False),
    "jacket": ("jacket", ["zip jacket", "windcheater"], False),
    "coat": ("coat", ["topcoat", "greatcoat"], False),
    "hoodie": ("hoodie", ["hooded top", "hoody"], False),
    "sweater": ("sweater", ["knit sweater", "jersey"], False),
    "dress": ("dress", ["frock", "one-piece dress"], False),
    "trousers": ("trousers", ["long trousers", "chinos"], True),
    "jeans": ("jeans", ["denims", "denim pants"], True),
    "shorts": ("shorts", ["short pants", "bermudas"], True),
    "skirt": ("skirt", ["A-line skirt", "flared skirt"], False),
    "sneakers": ("sneakers", ["athletic shoes", "kicks"], True),
    "boots": ("boots", ["booties", "lace-up boots"], True),
    "leather shoes": ("leather shoes", ["oxfords", "brogues"], True),
    "backpack": ("backpack", ["knapsack", "daypack"], False),
    "handbag": ("handbag", ["tote", "carry bag"], False),
    "shoulder bag": ("shoulder bag", ["satchel", "sling bag"], False),
    "cap": ("cap", ["peaked cap", "ball cap"], False),
    "beanie": ("beanie", ["bobble hat", "toque"], False),
}.items()}
EN_GENERIC = {"upper": (["upper garment", "top layer"], False), "lower": (["legwear", "bottom garments"], True),
              "shoes": (["footwear"], True), "bag": (["bag", "carried item"], False),
              "hat": (["head covering"], False)}
EN_PATTERN = {"striped": ["striped", "banded", "with horizontal stripes"], "checked": ["checked", "tartan", "gingham"],
              "plain": ["plain", "unpatterned", "single-colour"],
              "logo": ["with a logo", "with a chest graphic", "with a printed emblem"]}
EN_SLEEVE = {"short": ["short-sleeved", "half-sleeve"], "long": ["long-sleeved", "full-sleeve"]}
# Report lines name a body part before its description; only said when that part is described.
EN_LABEL = {"upper": ["Upper body", "Torso", "Top half"], "lower": ["Lower body", "Legs", "Bottom half"],
            "shoes": ["Feet", "Footwear"], "bag": ["Carrying", "Luggage"], "hat": ["Head", "Headwear"]}
# Where a bag is carried: only said when its type is named.
EN_BAG_WAY = {"backpack": ["on the back", "over both shoulders"], "handbag": ["in one hand", "by the handle"],
              "shoulder bag": ["over one shoulder", "across the body"]}

ZH_COLOR = {"black": ["黑色", "乌黑色", "墨黑色"], "white": ["白色", "雪白色", "乳白色"], "grey": ["灰色", "深灰色", "浅灰色"],
            "red": ["红色", "大红色", "酒红色"], "blue": ["蓝色", "宝蓝色", "钴蓝色"], "green": ["绿色", "墨绿色", "翠绿色"],
            "yellow": ["黄色", "明黄色", "姜黄色"], "orange": ["橙色", "橘黄色", "亮橙色"], "pink": ["粉色", "桃粉色", "玫粉色"],
            "purple": ["紫色", "深紫色", "淡紫色"], "brown": ["棕色", "褐色", "巧克力色"], "beige": ["米色", "驼色", "沙色"]}
ZH_HAIR_COLOR = {"black": ["乌黑", "黑"], "brown": ["褐色", "栗色"], "blond": ["金黄", "亚麻色"], "grey": ["灰白", "银灰"],
                 "red": ["红褐", "橘红"]}
ZH_HAIR_LENGTH = {"short": ["短发", "寸头短发"], "long": ["长发", "及肩长发"]}
ZH_SUBJECT = {"man": ["男性", "男子", "成年男子"], "woman": ["女性", "女子", "成年女子"], None: ["人员", "路人"]}
ZH_BUILD = {"slim": ["偏瘦", "清瘦"], "average": ["体型中等", "身形一般"], "heavy": ["体型偏大", "壮实"]}
ZH_NOUN = {
    "t-shirt": ["圆领T恤", "短T"], "shirt": ["翻领衬衫", "衬衣"], "jacket": ["拉链夹克", "短款外套"],
    "coat": ["长款大衣", "呢子大衣"], "hoodie": ["连帽衫", "带帽卫衣"], "sweater": ["针织毛衣", "羊毛衫"],
    "dress": ["连身裙", "长裙装"], "trousers": ["长裤", "休闲裤"], "jeans": ["牛仔长裤", "牛仔裤"], "shorts": ["短裤", "五分裤"],
    "skirt": ["A字裙", "半裙"], "sneakers": ["运动鞋", "板鞋"], "boots": ["短靴", "马丁靴"], "leather shoes": ["皮鞋", "系带皮鞋"],
    "backpack": ["双肩背包", "书包"], "handbag": ["手拎包", "拎包"], "shoulder bag": ["斜挎包", "挎包"],
    "cap": ["鸭舌帽", "遮阳帽"], "beanie": ["毛线帽", "绒线帽"],
}
ZH_GENERIC = {"upper": ["上装"], "lower": ["下身衣物"], "shoes": ["鞋"], "bag": ["随身包"], "hat": ["帽子"]}
ZH_PATTERN = {"striped": ["横条纹"], "checked": ["格纹"], "plain": ["无图案"], "logo": ["带印花的"]}
ZH_SLEEVE = {"short": ["短袖"], "long": ["长袖"]}
ZH_LABEL = {"upper": "上身", "lower": "下身", "shoes": "鞋", "bag": "携带", "hat": "头戴", "hair": "发型"}


def _group_words() -> dict[str, dict[str, tuple[str, ...]]]:
    out: dict[str, dict[str, tuple[str, ...]]] = {"en": {}, "zh": {}}
    vocab = vocabulary()
    for group in ("hat", "upper", "lower", "shoes", "bag"):
        values = [t for t in vocab[f"{group}_type"] if t is not None]
        en = [w for v in values for w in EN_NOUN[v][0]] + EN_GENERIC[group][0] + EN_LABEL[group]
        zh = [w for v in values for w in ZH_NOUN[v]] + ZH_GENERIC[group] + [ZH_LABEL[group]]
        if group == "upper":  # pattern and sleeve words only ever describe the upper garment
            en += ([w for ws in EN_PATTERN.values() for w in ws] + [w for ws in EN_SLEEVE.values() for w in ws]
                   + ["sleeves"])
            zh += [w for ws in ZH_PATTERN.values() for w in ws] + [w for ws in ZH_SLEEVE.values() for w in ws]
        if group == "bag":
            en += [w for ws in EN_BAG_WAY.values() for w in ws]
        out["en"][group], out["zh"][group] = tuple(en), tuple(zh)
    out["en"]["hair"], out["zh"]["hair"] = ("hair",), ("发",)  # the "Hair:" and "发型" labels hold them
    return out


GROUP_WORDS = _group_words()
