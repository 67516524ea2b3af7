"""Stage 5, training: a feature store -> distilled students, on one process or under torchrun.

`options` (every flag of main.py, typed), `batches` (images, captions and the teacher's targets), `losses`
and `memory` (the distillation terms and the XBM ring), `schedule`, `optim` (the optimiser and its weight-decay
groups), `budget` (a step's memory, refused before the first when it cannot fit), `meters`, `logs`, `runs` (run
folders), `selection` (held-out scoring and best.pt) and `trainer` (the loop: AMP, DDP, clipping, exact resume,
a clean stop on Ctrl-C).
"""
