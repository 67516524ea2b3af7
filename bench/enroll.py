"""Enrolment speed: `person.gallery.enroll` against the bare forward of the same exported image model.

Ours: the whole enrolment of a folder of person crops into a new gallery (planning, read, sha256, decode, resize,
batched forward, segment writes and fsyncs), at each --workers setting (0: loading in the forward's thread; N: N
loading threads working ahead of the forward). Reference: the bare forward of the same export
(`ExportedModels.embed_pixels`: normalisation + onnxruntime, in enrolment's batches of EMBED_BATCH) over the same
images decoded and resized beforehand, so the ratio is what loading and bookkeeping cost on top of the forward.
Each repeat runs the reference just before each enrolment (shared, noisy CPU); figures are medians, ratios the
median of per-repeat ratios. Also the stages of one image's load, timed one at a time on one thread, beside the
forward: where the time goes. The images are the demo generator's crops (~120x60 JPEGs, the demo's size).
Goal (issue 27): enrolment >= 0.8x the bare forward on the demo export (96x48 student).
Usage: python bench/enroll.py [--export demo/export] [--images 1000] [--workers 0 1 2] [--repeat 3]
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from person.data.images import decode_pixels, read_image_bytes
from person.demo.synthetic.writer import write_dataset
from person.gallery import sources
from person.gallery.encoders import ExportEncoder
from person.gallery.enroll import EMBED_BATCH, enroll
from person.runtime import CARD_FILE


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    return (f"{model}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, OpenCV {cv2.__version__}, "
            f"Python {platform.python_version()}")


def crops(folder: Path, count: int) -> sources.Source:
    """The first `count` of the demo generator's crops (4 an identity), as the source enrolment lists them."""
    source = sources.image_dir(write_dataset(folder, math.ceil(count / 4), 4, seed=5, workers=2).parent)
    source.items = source.items[:count]
    return source


def bare_rate(encoder: ExportEncoder, prepared: list[np.ndarray]) -> float:
    """Images/s of the forward alone, in enrolment's batches, on images already decoded and resized."""
    start = time.perf_counter()
    for a in range(0, len(prepared), EMBED_BATCH):
        encoder.models.embed_pixels(np.stack(prepared[a:a + EMBED_BATCH]))
    return len(prepared) / (time.perf_counter() - start)


def enrol_rate(encoder: ExportEncoder, source: sources.Source, gallery: Path, workers: int) -> float:
    start = time.perf_counter()
    summary = enroll(gallery, encoder, source, workers=workers)
    seconds = time.perf_counter() - start
    if summary.added != len(source.items):
        raise RuntimeError(f"enrolled {summary.added} of {len(source.items)} images: {summary.lines()}")
    return summary.added / seconds


def stages(encoder: ExportEncoder, paths: list[Path]) -> list[tuple[str, float]]:
    """(stage, microseconds an image) of a load's steps one after another on one thread, and of the forward."""
    models = encoder.models
    size = models.transform.size
    out: list[tuple[str, float]] = []

    def timed(name: str, step: Callable[[], list]) -> list:
        start = time.perf_counter()
        result = step()
        out.append((name, 1e6 * (time.perf_counter() - start) / len(paths)))
        return result

    timed("stat", lambda: [os.stat(p) for p in paths])
    data = timed("read (regular files only, capped)", lambda: [read_image_bytes(p) for p in paths])
    timed("sha256 of the bytes", lambda: [hashlib.sha256(d).hexdigest() for d in data])
    pixels = timed("decode (OpenCV, corrupt-data check)", lambda: [decode_pixels(d, p, size) for d, p in zip(data, paths)])
    prepared = timed("resize to the model's size", lambda: [models.transform(np.ascontiguousarray(x)) for x in pixels])
    timed(f"forward: normalise + onnxruntime, batches of {EMBED_BATCH}",
          lambda: [models.embed_pixels(np.stack(prepared[a:a + EMBED_BATCH]))
                   for a in range(0, len(prepared), EMBED_BATCH)])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=Path("demo/export"), help="an export directory with an image model")
    ap.add_argument("--images", type=int, default=1000, help="how many crops to enrol")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="enrolment's loading threads")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not (args.export / CARD_FILE).is_file():
        raise SystemExit(f"bench/enroll.py: no export at {args.export} (no {CARD_FILE} there): run python demo.py "
                         f"first, or give --export EXPORT_DIR")
    encoder = ExportEncoder(args.export)
    if not encoder.has_image:
        raise SystemExit(f"bench/enroll.py: the export at {args.export} has no image model")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = crops(work / "set", args.images)
        paths = [source.image_root / item.path for item in source.items]
        prepared = [encoder.prepare(p) for p in paths]
        enrol_rate(encoder, source, work / "warm-up", 0)  # first-run costs (sessions, page cache) out of the figures
        rates: dict[int, list[float]] = {w: [] for w in args.workers}
        bares: dict[int, list[float]] = {w: [] for w in args.workers}
        for r in range(args.repeat):
            for w in args.workers:
                bares[w].append(bare_rate(encoder, prepared))
                rates[w].append(enrol_rate(encoder, source, work / f"g-{r}-{w}", w))
        steps = stages(encoder, paths)
    h, w_ = encoder.models.transform.size
    print(f"## Enrolment (bench/enroll.py)\n\nMachine: {machine()}. Export {args.export} (image model {h}x{w_}, "
          f"fp32); {len(paths)} demo crops; medians of {args.repeat} repeats.\n")
    print("| enrolment | ours | reference: bare forward on decoded images | ratio |\n|---|---|---|---|")
    for w in args.workers:
        ratio = statistics.median(e / b for e, b in zip(rates[w], bares[w]))
        how = "loading in the forward's thread" if w == 0 else f"{w} loading thread{'s' * (w > 1)}"
        print(f"| {len(paths)} images, --workers {w} ({how}) | {statistics.median(rates[w]):.0f} images/s | "
              f"{statistics.median(bares[w]):.0f} images/s | {ratio:.2f}x |")
    total = sum(us for _, us in steps)
    print("\n| stage (a load's steps one after another on one thread; the forward on its session's threads) "
          "| us an image | share |\n|---|---|---|")
    print("\n".join(f"| {name} | {us:.1f} | {us / total:.0%} |" for name, us in steps))


if __name__ == "__main__":
    main()
