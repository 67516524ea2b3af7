"""Printing and saving the metrics report: the seed's verification table, retrieval line, worst pairs,
the JSON file and the ROC plot. Pure formatting over `person.eval.metrics` results; nothing is computed here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from person import files
from person.eval.metrics import FAR_LEVELS, Evaluation, ScoredPair, VerificationResult

TABLE_HEADER = "        EER      FAR=1e-3  FAR=1e-4  FAR=1e-5  FAR=1e-6  FAR=0"
TABLE_RULE = "-" * 64
FEW_FALSE_ACCEPTS = 10  # below this many allowed false accepts a FAR point rests on a handful of pairs


def format_table(summary: Mapping) -> str:
    """The seed's verification table from a report dict (`metrics.summary` or its JSON file).

    FRR in percent with 4 decimals; thresholds with 6 significant digits in 10-wide columns; a threshold
    of None (nothing passes) prints as inf.
    """
    frr = [summary["eer"]] + [summary["frr_at_far"][lv] for lv in FAR_LEVELS]
    thr = [summary["eer_threshold"]] + [summary["threshold_at_far"][lv] for lv in FAR_LEVELS]
    pos, neg = summary["positives"], summary["negatives"]
    return "\n".join([
        TABLE_HEADER,
        TABLE_RULE,
        "FRR    " + "  ".join(f"{100 * v:.4f}%" for v in frr),
        ("SCORE   " + "".join(f"{np.inf if t is None else t:<10g}" for t in thr)).rstrip(),
        f"Verify Count={pos + neg}. Positives={pos} Negatives={neg}",
    ])


def format_operating_points(result: VerificationResult) -> str:
    """How many false accepts each FAR level allows and lets through, flagging the ones that rest on few."""
    lines = []
    for level in FAR_LEVELS:
        p, allowed = result.at_far[level], result.false_accepts_allowed[level]
        line = (f"FAR={level}: threshold {p.threshold:g} accepts {p.false_accepts} of {result.negatives} "
                f"negatives (at most {allowed} allowed), rejects {p.false_rejects} of {result.positives} positives")
        if level != "0" and allowed == 0:
            line += f"; fewer than {1 / float(level):g} negatives, so this is FAR=0"
        elif level != "0" and allowed < FEW_FALSE_ACCEPTS:
            line += f"; only {allowed} false accepts decide this point: a rough estimate"
        lines.append(line)
    return "\n".join(lines)


def format_retrieval(summary: Mapping) -> str:
    """One line of text-to-image retrieval figures, in percent as IRRA prints them."""
    ranks = sorted((int(k[4:]), v) for k, v in summary.items() if k.startswith("rank") and k[4:].isdigit())
    parts = [f"Rank-{k}={100 * v:.3f}%" for k, v in ranks]
    parts += [f"mAP={100 * summary['mAP']:.3f}%", f"mINP={100 * summary['mINP']:.3f}%"]
    head = f"Retrieval text->image ({summary['queries']} queries"
    if summary.get("queries_without_positive"):
        head += f"; {summary['queries_without_positive']} without an image of their identity left out"
    return head + "): " + "  ".join(parts)


def format_top_errors(result: VerificationResult, image_paths: Sequence[str] | None = None,
                      caption_texts: Sequence[str] | None = None,
                      caption_images: Sequence[int] | None = None) -> str:
    """The hardest pairs: lowest-scoring positives (false rejects) and highest-scoring negatives (false
    accepts), each with its image path and its caption (text, or the caption's own image)."""
    def image(i: int) -> str:
        return f"image {i}" + (f" {image_paths[i]}" if image_paths is not None else "")

    def caption(c: int) -> str:
        if caption_texts is not None:
            text = caption_texts[c]
            return f"caption {c} \"{text[:77] + '...' if len(text) > 80 else text}\""
        if caption_images is not None:
            return f"caption {c} of {image(int(caption_images[c]))}"
        return f"caption {c}"

    def block(title: str, pairs: tuple[ScoredPair, ...]) -> list[str]:
        return [title] + [f"  {p.score:<10.6g} {image(p.image)}  <->  {caption(p.caption)}" for p in pairs]

    thr = f"{result.eer_threshold:g}"
    lines = block(f"Top-{len(result.false_rejects)} false rejects (lowest-scoring positive pairs; "
                  f"EER threshold {thr}):", result.false_rejects)
    lines += block(f"Top-{len(result.false_accepts)} false accepts (highest-scoring negative pairs; "
                   f"EER threshold {thr}):", result.false_accepts)
    return "\n".join(lines)


def roc_path(json_path: str | Path) -> Path:
    """Where the ROC plot goes: next to the JSON, same stem + `_roc.png`."""
    p = Path(json_path)
    return p.with_name(p.stem + "_roc.png")


def write_json(summary: Mapping, path: str | Path) -> Path:
    """The report dict as indented JSON (strict: no NaN/inf, so any JSON reader takes it), written atomically."""
    return files.write_json(path, summary)


def write_report(summary: Mapping, verification: VerificationResult, path: str | Path,
                 title: str = "Verification ROC") -> tuple[Path, Path]:
    """A report as every command writes it: the summary as JSON at `path`, its ROC plot beside it (`roc_path`)."""
    out = write_json(summary, path)
    return out, plot_roc(verification, roc_path(out), title=title)


def plot_roc(result: VerificationResult, path: str | Path, title: str = "Verification ROC") -> Path:
    """TAR (1 - FRR) against FAR on a log axis, with the EER and FAR-level points marked, as a PNG."""
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = result.roc_far > 0  # FAR = 0 has no place on a log axis
    ax.plot(result.roc_far[shown], 1 - result.roc_frr[shown], lw=1.5, label="ROC")
    ax.plot(result.eer_point.far, 1 - result.eer_point.frr, "o", label=f"EER {100 * result.eer:.4f}%")
    for level in FAR_LEVELS[:-1]:
        p = result.at_far[level]
        if p.far > 0:
            ax.plot(p.far, 1 - p.frr, "s", ms=4, label=f"FAR={level}: FRR {100 * p.frr:.2f}%")
    ax.set_xscale("log")
    ax.set_xlim(max(1.0 / result.negatives, 1e-7) / 2, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("TAR = 1 - FRR")
    ax.set_title(f"{title}: {result.positives} positives, {result.negatives} negatives")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path = Path(path)
    with files.atomic_file(path) as f:
        fig.savefig(f, format="png")
    return path


def format_report(evaluation: Evaluation, image_paths: Sequence[str] | None = None,
                  caption_texts: Sequence[str] | None = None, caption_images: Sequence[int] | None = None,
                  top_errors: bool = True) -> str:
    """The whole report of one evaluation: table, operating points, retrieval line and the worst pairs."""
    summary = evaluation.to_dict()
    parts = [format_table(summary), "", format_operating_points(evaluation.verification)]
    if evaluation.retrieval is not None:
        parts.append(format_retrieval(summary))
    if top_errors:
        parts += ["", format_top_errors(evaluation.verification, image_paths, caption_texts, caption_images)]
    return "\n".join(parts)


_COMPARED = (("EER", "eer"), ("FRR@1e-3", ("frr_at_far", "1e-3")), ("FRR@1e-4", ("frr_at_far", "1e-4")),
             ("Rank-1", "rank1"), ("Rank-5", "rank5"), ("Rank-10", "rank10"), ("mAP", "mAP"), ("mINP", "mINP"))


def format_comparison(summaries: Mapping[str, Mapping]) -> str:
    """Several reports side by side (columns: e.g. teacher, student, mixed cases), figures in percent."""
    names = list(summaries)
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["metric    " + "".join(f"{n:>{width}}" for n in names), "-" * (10 + width * len(names))]
    for label, key in _COMPARED:
        cells = []
        for name in names:
            value = summaries[name]
            for part in (key if isinstance(key, tuple) else (key,)):
                value = value.get(part) if isinstance(value, Mapping) else None
            cells.append(f"{'-':>{width}}" if value is None else f"{100 * value:>{width - 1}.2f}%")
        lines.append(f"{label:<10}" + "".join(cells))
    return "\n".join(lines)
