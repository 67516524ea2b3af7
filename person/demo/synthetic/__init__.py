"""Synthetic pedestrians: a demo set that is a real retrieval problem, written in the real datasets' layouts.

Each identity is a combination of attributes (attributes.py); many identities differ in only one or two,
so captions alone cannot separate them all. Each image varies view, pose, scale, crop, background,
lighting, blur and occlusion (render.py), and its captions name only what it shows (captions.py).
A set is drawn at a site (sites.py): the demo's style, or a second one standing for a new user's cameras
(second/), with the same people seen and described differently; SECOND_SITE is its frozen benchmark draw.
writer.py writes SYNTH-PEDES, CUHK-PEDES, ICFG-PEDES or RSTPReid layout (README.md, "Datasets it reads").

`demo_truth.json` (next to the dataset JSON) holds the ground truth the captions were made from:
    {"version": 2, "format": "synthpedes" | "cuhk-pedes" | "icfg-pedes" | "rstpreid",
     "json": dataset JSON file name, "image_root": folder the image paths are relative to ("." or "imgs"),
     "seed": int, "ids": int, "images_per_id": int, "chinese": float,
     "site": "second",                                  # only at another site than the demo's (absent: "demo")
     "attribute_keys": [key, ...],                      # ATTRIBUTE_KEYS, in order
     "vocabulary": {key: [value, ..., null]},           # every value a key can take; null = absent
     "identities": [{key: value | null, ..., "look": {...}}],   # index = identity (0-based); look = traits
                                                                # no caption names (skin, shades, height)
     "images": [{"path": str (exactly as in the dataset JSON), "id": the dataset JSON's id,
                 "identity": int (index into identities), "image": int (0-based within the identity),
                 "split": "train" | "val" | "test" | null, "size": [W, H],
                 "attributes": {key: value | null},      # the identity's attributes
                 "visible": {key: bool},                  # present and seen in this image
                 "captions": [str],                       # the record's captions, whitespace not roughened
                 "caption_keys": [[key, ...]]}]}          # per caption, the attribute keys it names
The "images" list is in the dataset JSON's record order. Version 1 files lack `caption_keys`.
"""
from .attributes import ATTRIBUTE_KEYS, GROUPS, sample_identities, vocabulary
from .captions import keyed_caption, keyed_image_captions, make_caption, make_image_captions, prompt_caption
from .render import render_person
from .sites import SECOND_SITE, SITES
from .writer import FORMATS, write_dataset

__all__ = ["ATTRIBUTE_KEYS", "FORMATS", "GROUPS", "SECOND_SITE", "SITES", "keyed_caption", "keyed_image_captions",
           "make_caption", "make_image_captions", "prompt_caption", "render_person", "sample_identities",
           "vocabulary", "write_dataset"]
