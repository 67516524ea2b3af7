"""Text backbones, the students' text encoders; still named `tbackbone` because checkpoints and `--tbackbone` use it.

By dotted path, as the image students are: `tbackbone.char.L3` is the char-level transformer with 3 layers
(person.models.tbackbone.char). Create one with `person.models.students.create_text_student`.
"""
