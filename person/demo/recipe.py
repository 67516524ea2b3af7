"""The demo's set and the students' training recipe, shared by demo.py and bench/ablation.py.

Why each value is what it is: bench/ablation.py's table in BENCHMARKS.md (the loss terms, memory, widths and
cheaper steps, each against the recipe as it stood before it), and the measurements noted beside each line.
"""
from __future__ import annotations

from typing import Any

DEMO_IDS, DEMO_IMAGES_PER_ID, DEMO_SEED = 1000, 4, 0

# The students the demo trains on 2 CPU cores (~11 minutes on a slow day: see README). A CPU run uses a smaller
# input than the 224x112 default for real data; everything else is main.py's defaults unless named.
# - 64 identities x 1 image a batch, 2 captions each: the text student learns from how many different
#   captions it sees (750 text-only iterations: 9.6% held-out EER, against 11.2% with 32 x 2 images).
# - rel_temperature 0.1 instead of main.py's 0.02 (for SigLIP2's similarities, ~0..0.25; the demo teacher's
#   spread over -0.6..0.5): 7.4% against 9.6% (0.05: 8.3%).
# - mix_rel instead of dist_rel: in equal 750-iteration joint runs dist_rel (both students chasing each
#   other) left the pair at EER 36.1%, mix_rel (each student against the teacher's other side) at 29.8%.
# - images at 96x48 in channels-last layout: the demo teacher itself sees 64x64; image-only runs of 750
#   iterations scored teacher text vs student images at 7.62% (128x64), 7.87% (96x48), 8.87% (64x32), and
#   96x48 with channels-last makes a joint step 0.37 s instead of 0.58 s.
# - weight decay 0.5 instead of 0.05: at 0.05 the pair scored like the teacher on the training identities
#   (EER 6.03% vs 6.07%) but 7.78% on the held-out ones; 0.2 gave 7.62%, 0.5 gave 7.41% (2100 iterations).
# - text stem stride 3, learning rate 4e-3, d_pos and s_neg at 0.1 (bench/ablation.py, 500 iterations, two
#   seeds each, BENCHMARKS.md): stride 3 scores as stride 2 (held-out EER 10.98 +-0.43% against 11.39 +-0.30%)
#   with a step 0.72x as long; lr 4e-3 instead of 2e-3 brings it to 10.12 +-0.34%, the pair terms to 9.63
#   +-0.16%. So 1300 cheaper iterations replace 2100: the demo's 15 minutes hold on a slow day.
DEMO_TRAINING: dict[str, Any] = dict(
    backbone="backbone.mf3.ANet2_w050", tbackbone="tbackbone.char.L2", text_width=128, text_stride=3,
    image_size="96x48", channels_last=True, p=64, k=1, captions_per_image=2, caption_fields="captions",
    max_iters=1300, warmup_iters=100, lr=4e-3, weight_decay=0.5, dist_rel_weight=0.0, mix_rel_weight=1.0,
    d_pos_weight=0.1, s_neg_weight=0.1, rel_temperature=0.1, eval_every=260, save_every=260, log_every=50,
    num_workers=1)

# Adapting the demo students to another site (demo.py --adapt, bench/domain.py) is fine-tuning from them
# (`--init`): a shorter run of the same recipe (its rate, warm-up and batches) with the site's unlabeled crops and
# captions beside the demo set (`--unlabeled`, half as many unlabeled rows as labelled ones a batch).
ADAPT_TRAINING: dict[str, Any] = dict(max_iters=600, save_every=150, log_every=50, unlabeled_share=0.5)
# With the crops' detection tracks: each track one weak identity of the image student's memory term (id_img), which
# also contrasts the demo set's labelled images (BENCHMARKS.md, "Your own cameras": the tracks row and its control).
TRACK_TERMS: dict[str, Any] = dict(unlabeled_tracks=True, id_img_weight=0.3, id_margin=0.2, memory_size=2048,
                                   memory_warmup=100)
