"""Text students, named by dotted path: `tbackbone.char.L3` (char-level transformer, 3 layers).

Create one with `person.models.students.create_text_student`.
"""
