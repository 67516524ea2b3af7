"""The sites a synthetic set can be drawn at: one population of people, seen by different cameras and described
by different annotators (write_dataset's `site`).

"demo" is the demo set's style, byte for byte what it always drew. "second" stands for a new user's own cameras
(person.demo.synthetic.second): higher and further away, warm-lit, blurred and more compressed, indoors, with
other shades of the same colours and captions in other words. A seed draws the same identities at every site.

SECOND_SITE is the frozen benchmark draw of the second site: write_dataset(out, **SECOND_SITE). FROZEN, the
constant and the second site's code (second/) alike: committed before any training run was scored on it, so the
site is not tuned to the goals; change either and every figure measured on it is void. Its SYNTH-PEDES JSON has no split field, so person.data.records' default split
holds out 100 of its 1000 identities (900 train), as it does for the demo set. Seed 7 draws no other reserved set
(demo 0, demo teacher training 1, validation 2: person.demo.teacher.model).

The shipped demo teacher on each set's 100 held-out identities (bench/site.py; EER / Rank-1 / mAP, %): demo set
6.03 / 70.75 / 69.97, second site 26.57 / 26.62 / 23.85. The attribute oracle's Rank-1 is 84.50 and 87.75: the
second site's captions say as much; the teacher reads its cameras and its annotators worse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import second
from .captions import DEMO_SENTENCES, Sentences
from .render import DEMO_STYLE
from .style import Style

DEMO_JPEG_QUALITY = 90


@dataclass(frozen=True)
class Site:
    """What a site draws differently: the pictures (a Style), the captions' sentences and the JPEG quality."""

    style: Style
    sentences: Sentences
    jpeg_quality: Callable[[np.random.Generator], int]  # drawn from the image's rng after the image


SITES = {
    "demo": Site(DEMO_STYLE, DEMO_SENTENCES, lambda rng: DEMO_JPEG_QUALITY),  # no draw: the demo's bytes stay
    "second": Site(second.STYLE, second.SENTENCES, second.jpeg_quality),
}

SECOND_SITE = {"n_ids": 1000, "images_per_id": 4, "seed": 7, "fmt": "synthpedes", "chinese": 0.2, "site": "second"}
