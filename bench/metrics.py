"""Verification metrics: speed and exactness against sklearn, and the 400M-pair case's time and memory.

1. Seed size (5000 images x 2500 captions = 12.5M pairs, 5000 positives), in this process:
   - reference: `sklearn.metrics.roc_curve(drop_intermediate=False)` on the precomputed scores, plus
     reading the EER and FAR thresholds off it (the same definitions as person.eval.metrics);
   - ours: `metrics.verification` from the same scores, and from the embeddings (scoring included),
     beside the float32 matmul alone: the floor of the from-embeddings time;
   - `retrieval` and `evaluate` from the embeddings.
   Every row runs once per round, in turn, so the load of a shared machine hits them alike.
   EER, its threshold and every FAR threshold/FRR must be identical.
2. Large (20000 x 20000 = 400M pairs) in a fresh subprocess each, so its peak RSS is its own:
   `metrics.verification` and `metrics.evaluate` (verification + retrieval).
Usage: python bench/metrics.py [--dim 1152] [--repeat 5] [--big 20000] [--device cpu]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from person.eval import metrics


def embeddings(n_images: int, n_captions: int, n_ids: int, dim: int, seed: int = 0):
    """Identities with a shared centre; images and captions are noisy views of it (cosines ~0..0.5).
    Made in chunks, so the inputs cost their own size and no more."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_ids, dim, generator=g), dim=1)
    image_pid = np.arange(n_images) % n_ids
    caption_pid = np.arange(n_captions) % n_ids

    def views(pid: np.ndarray) -> np.ndarray:
        out = np.empty((len(pid), dim), np.float32)
        for i in range(0, len(pid), 1024):
            p = torch.from_numpy(pid[i:i + 1024])
            x = 0.3 * centres[p] + torch.randn(len(p), dim, generator=g) / dim ** 0.5
            out[i:i + 1024] = torch.nn.functional.normalize(x, dim=1).numpy()
        return out

    return views(image_pid), image_pid, views(caption_pid), caption_pid


def sklearn_verification(scores: np.ndarray, mask: np.ndarray) -> dict:
    """EER and FAR thresholds read off sklearn's ROC with person.eval.metrics' definitions."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(mask.ravel(), scores.ravel(), drop_intermediate=False)
    n_pos = int(mask.sum())
    n_neg = mask.size - n_pos
    fp = np.rint(fpr * n_neg).astype(np.int64)  # exact counts back from the rates
    fn = n_pos - np.rint(tpr * n_pos).astype(np.int64)
    d = fp * n_pos - fn * n_neg
    a = int(np.flatnonzero(d >= 0)[0])
    i = a - 1 if abs(d[a - 1]) <= abs(d[a]) else a  # tie: the higher threshold
    far = {}
    for level in metrics.FAR_LEVELS:
        j = int(np.flatnonzero(fp <= math.floor(Fraction(level) * n_neg))[-1])
        far[level] = (float(thr[j]), fn[j] / n_pos)
    return {"eer": (fp[i] / n_neg + fn[i] / n_pos) / 2, "eer_threshold": float(thr[i]), "far": far}


def ours(result: metrics.VerificationResult) -> dict:
    return {"eer": result.eer, "eer_threshold": result.eer_threshold,
            "far": {lv: (p.threshold, p.frr) for lv, p in result.at_far.items()}}


def rounds(steps: dict, repeat: int) -> tuple[dict, dict]:
    """Run every step once per round, `repeat` rounds, so a change in the machine's load hits all of
    them alike. Returns each step's seconds, round by round, and its last output."""
    times: dict = {name: [] for name in steps}
    out: dict = {}
    for _ in range(repeat):
        for name, fn in steps.items():
            t = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t)
    return times, out


def matmul_alone(img: torch.Tensor, cap: torch.Tensor) -> None:
    """The float32 score strips `verification` makes (same strip size), and nothing else."""
    per = metrics.DEFAULT_BLOCK_PAIRS // len(img)
    for c0 in range(0, len(cap), per):
        cap[c0:c0 + per] @ img.T
    if img.is_cuda:
        torch.cuda.synchronize()


def seed_size(args) -> list[str]:
    img, ipid, cap, cpid = embeddings(5000, 2500, 2500, args.dim)
    scores = metrics.cosine_scores(img, cap, device=args.device)
    mask = cpid[:, None] == ipid[None, :]
    img_t, cap_t = torch.from_numpy(img).to(args.device), torch.from_numpy(cap).to(args.device)
    steps = {
        "sklearn": lambda: sklearn_verification(scores, mask),
        "emb": lambda: metrics.verification(img, ipid, cap, cpid, device=args.device),
        "scores": lambda: metrics.verification_from_scores(scores, ipid, cpid,
                                                           block_pairs=metrics.DEFAULT_BLOCK_PAIRS),
        "matmul": lambda: matmul_alone(img_t, cap_t),
        "retrieval": lambda: metrics.retrieval(cap, cpid, img, ipid, device=args.device),
        "evaluate": lambda: metrics.evaluate(img, ipid, cap, cpid, device=args.device),
    }
    times, out = rounds(steps, args.repeat)
    t = {name: statistics.median(ts) for name, ts in times.items()}

    def ratio(name: str) -> str:  # median over rounds of (sklearn / this), both timed in the same round
        return f"{statistics.median(r / x for r, x in zip(times['sklearn'], times[name])):.1f}x"

    res = out["emb"]
    same = ours(res) == out["sklearn"] and ours(out["scores"]) == out["sklearn"]
    return [
        f"Seed size: 5000 images x 2500 captions, dim {args.dim}: {res.positives} positives, "
        f"{res.negatives} negatives; EER {100 * res.eer:.4f}% at {res.eer_threshold:g}. {args.repeat} rounds, "
        "each running every row once in turn; seconds are medians, 'vs sklearn' the median of the per-round "
        "ratios.",
        "",
        "| what | seconds | vs sklearn |",
        "|---|---|---|",
        f"| sklearn roc_curve + EER/FAR thresholds (on precomputed scores) | {t['sklearn']:.3f} | 1.0x |",
        f"| ours, `verification` on the same precomputed scores (strip-wise path) | {t['scores']:.3f} "
        f"| {ratio('scores')} |",
        f"| ours, `verification` from embeddings (scoring included) | {t['emb']:.3f} | {ratio('emb')} |",
        f"| the float32 matmul alone (the scoring inside the row above: its floor) | {t['matmul']:.3f} "
        f"| {ratio('matmul')} |",
        f"| ours, `retrieval` (Rank-k, mAP, mINP) from embeddings | {t['retrieval']:.3f} | |",
        f"| ours, `evaluate` (verification + retrieval) from embeddings | {t['evaluate']:.3f} | |",
        "",
        f"EER, EER threshold and every FAR threshold and FRR identical to sklearn's: {'yes' if same else 'NO'}",
    ]


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it (a VM may say only "AMD EPYC": family and model pin it down)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    info = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    simd = "AVX-512" if "avx512f" in info.get("flags", "").split() else "no AVX-512"
    return (f"{info.get('model name', platform.machine())} (family {info.get('cpu family', '?')}, "
            f"model {info.get('model', '?')}, {simd})")


CHILD = """
import resource, time
from bench.metrics import embeddings
from person.eval import metrics
img, ipid, cap, cpid = embeddings({n}, {n}, {n} // 2, {dim})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if {what!r} == "verification":
    r = metrics.verification(img, ipid, cap, cpid, device={device!r})
else:
    r = metrics.evaluate(img, ipid, cap, cpid, device={device!r}).verification
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(time.perf_counter() - t, base, peak, r.positives, r.negatives, r.eer)
"""


def large(args) -> list[str]:
    rows = ["", f"Large: {args.big} images x {args.big} captions = {args.big ** 2 / 1e6:.0f}M pairs, "
            f"dim {args.dim} (scores recomputed in pass 2: too big to cache). Peak RSS of a fresh process "
            "(ru_maxrss); 'inputs' is the peak before the call (Python, torch and the two embedding arrays).",
            "", "| what | seconds | peak RSS | inputs | positives | negatives | EER |",
            "|---|---|---|---|---|---|---|"]
    for what in ("verification", "evaluate"):
        code = CHILD.format(n=args.big, dim=args.dim, what=what, device=args.device)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=ROOT).stdout  # `-c` imports from the working directory: bench.metrics
        secs, base, peak, pos, neg, eer = out.split()
        label = "`verification`" if what == "verification" else "`evaluate` (verification + retrieval)"
        rows.append(f"| {label} | {float(secs):.1f} | {int(peak) / 1024:.0f} MB | {int(base) / 1024:.0f} MB "
                    f"| {pos} | {neg} | {100 * float(eer):.4f}% |")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=1152, help="embedding width (the teacher's is 1152)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--big", type=int, default=20000, help="images = captions of the large case; 0 skips it")
    p.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    # The large case first: a child inherits its parent's ru_maxrss at fork, so the parent must still be small.
    big = large(args) if args.big else []
    seed = seed_size(args)
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} on {torch.get_num_threads()} "
               f"threads for the matmul, numpy {np.__version__}; 1-minute load average {load:.1f} at the "
               f"start, {os.getloadavg()[0]:.1f} at the end")
    print("\n".join([f"### Verification metrics ({args.device}; {machine})", ""] + seed + big))


if __name__ == "__main__":
    main()
