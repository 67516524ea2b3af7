"""The shipped demo teacher: its model (`model`), how it is made (`recipe`: the whole job and the model card, over
`data`, `loss`, `training` and `evaluation`), and its weights.

`DEMO_TEACHER` is the trained teacher's directory, shipped as package data beside this code: a normal Hugging Face
SigLIP directory that `person.teacher.hf.load_teacher` reads like any user's checkpoint.
"""
from pathlib import Path

DEMO_TEACHER = Path(__file__).resolve().parent / "demo_teacher"
