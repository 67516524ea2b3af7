"""Stage 5, training: a feature store -> distilled students, on one process or under torchrun.

`options` (every flag of main.py, typed), `batches` (images, captions and the teacher's targets), `losses`
and `memory` (the distillation terms and the XBM ring), `schedule`, `meters`, `runs` (run folders) and
`trainer` (the loop: AMP, DDP, clipping, exact resume, periodic evaluation through person.eval).
"""
