"""The second site: the same people as the demo set, seen by a new user's cameras.

It changes everything that belongs to the cameras and the people who write the captions, and nothing about the
people: camera height and scale with perspective (camera.py), lighting and white balance, blur and JPEG
quality (camera.py), backgrounds (scene.py), the shades the named colours take (palette.py), and the captions'
sentence shapes and words (sentences.py, words.py). The attributes, their visibility and what each caption
names are decided as at the demo site, so the captions are as true here as there.
"""
from ..style import Style
from . import camera, palette, scene, sentences

STYLE = Style(background=scene.background, place=camera.place, painter=camera.painter, colour=palette.colour,
              finish=camera.finish)
SENTENCES = {"en": sentences.caption_en, "zh": sentences.caption_zh}
jpeg_quality = camera.jpeg_quality

__all__ = ["SENTENCES", "STYLE", "jpeg_quality"]
