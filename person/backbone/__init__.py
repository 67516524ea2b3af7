"""Image students (CNNs), one family a file, named by dotted path: `backbone.mf3.ANet2`.

`registry` resolves names, `layers` holds the shared blocks and `fuse_bn` (fold BatchNorm before export).
Create a student with `person.model.create_image_student`.
"""
