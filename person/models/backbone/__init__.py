"""Image students (CNNs), one family a file, named by dotted path: `backbone.mf3.ANet2`.

`layers` holds the shared blocks and `fuse_bn` (fold BatchNorm before export); `person.models.registry` resolves names.
Create a student with `person.models.students.create_image_student`.
"""
