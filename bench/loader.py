"""Image pipeline throughput: the project's whole per-image path against bare Pillow decode, same files, same run.

Reference: `PIL.Image.open(p).convert('RGB')`. Ours, measured in cumulative stages so a reader sees
where the time goes:
  1a. `load_image(p, size_hint)`: Pillow decode with JPEG draft (reduced-scale decode) for large files;
      what a teacher's extraction gets, shown for comparison: the pipeline decodes with 1b;
  1b. `load_pixels(p, size_hint)`: the same pixels (OpenCV's libjpeg-turbo for plain JPEGs, same draft scale);
  2. + `ImageTransform(train=True)` via `ImageDataset` (random crop, flip, resize to 224x112, CHW view);
  3. + `collate_images` + `normalize_batch` (the whole pipeline a training step consumes).
Two sets: the demo generator's crops (~128x256 JPEGs, like real pedestrian crops) and the same images
re-encoded at a larger size (default 512x1024, where draft matters). Single process, and through a
torch DataLoader with worker processes. Stages alternate within each repeat (shared, noisy CPU);
figures are medians, ratios are the median of per-repeat ratios against the reference.
Usage: python bench/loader.py [--data DIR] [--repeat 7] [--batch 64] [--workers 2] [--large 512x1024]
       [--large-images 200] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import PIL
import torch
from PIL import Image, features
from torch.utils.data import DataLoader, Dataset


from person.data.datasets import ImageDataset, collate_images
from person.data.datasets import normalize_batch
from person.data.images import DEFAULT_IMAGE_SIZE, ImageTransform, load_image, load_pixels
from person.data.records import RecordSet, load_records
from person.demo.synthetic.writer import write_dataset

Item = tuple[int, int]  # (row, augmentation seed), as IdentityBatchSampler yields them


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    turbo = "libjpeg-turbo" if features.check_feature("libjpeg_turbo") else "libjpeg"
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, Pillow {PIL.__version__} "
            f"({turbo}), OpenCV {cv2.__version__}, Python {platform.python_version()}")


def enlarge(small_json: Path, out: Path, size: tuple[int, int], count: int) -> Path:
    """Re-encode the first `count` records' images at W x H = `size` under `out`, with a matching JSON."""
    records = json.loads(small_json.read_text(encoding="utf-8"))[:count]
    for rec in records:
        src, dst = small_json.parent / rec["file_path"], out / rec["file_path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(src).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(dst, "JPEG", quality=90)
    path = out / small_json.name
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def batches_of(n: int, batch: int) -> list[list[Item]]:
    """Every row once, in order, each with its own augmentation seed (what the sampler hands out)."""
    items = [(row, row) for row in range(n)]
    return [items[i:i + batch] for i in range(0, n, batch)]


class BareDecode(Dataset):
    """The reference inside a DataLoader: decode only, nothing returned (so nothing crosses the queue)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: Item) -> int:
        Image.open(self.paths[item[0]]).convert("RGB")
        return 0


def single_process_stages(records: RecordSet, batches: list[list[Item]]) -> dict[str, Callable[[], None]]:
    paths = [records.image_path(i) for i in range(len(records))]
    hint = DEFAULT_IMAGE_SIZE
    dataset = ImageDataset(records, ImageTransform(train=True), size_hint=hint)

    def reference() -> None:
        for p in paths:
            Image.open(p).convert("RGB")

    def pillow_decode() -> None:
        for p in paths:
            load_image(p, hint)

    def decode() -> None:
        for p in paths:
            load_pixels(p, hint)

    def transform() -> None:
        for b in batches:
            for item in b:
                dataset[item]

    def whole() -> None:
        for b in batches:
            normalize_batch(collate_images([dataset[item] for item in b])["images"])

    return {"reference: `Image.open(p).convert('RGB')`": reference,
            "1a. `load_image` (Pillow, draft; not in the pipeline)": pillow_decode,
            "1b. `load_pixels` (same pixels; the pipeline's decode)": decode,
            "2. + `ImageTransform(train=True)` (crop, flip, resize, CHW view)": transform,
            "3. + `collate_images` + `normalize_batch` (whole pipeline)": whole}


def loader_stages(records: RecordSet, batches: list[list[Item]], workers: int) -> dict[str, Callable[[], None]]:
    """Persistent workers, so worker start-up is paid once (in the warm-up pass), as in a long training run."""
    paths = [records.image_path(i) for i in range(len(records))]
    ours = DataLoader(ImageDataset(records, ImageTransform(train=True), size_hint=DEFAULT_IMAGE_SIZE),
                      batch_sampler=batches, collate_fn=collate_images, num_workers=workers,
                      persistent_workers=True)
    bare = DataLoader(BareDecode(paths), batch_sampler=batches, collate_fn=len, num_workers=workers,
                      persistent_workers=True)

    def reference() -> None:
        for _ in bare:
            pass

    def whole() -> None:
        for b in ours:
            normalize_batch(b["images"])

    return {f"reference: bare decode, {workers} workers": reference,
            f"whole pipeline, {workers} workers (normalise in the main process)": whole}


def measure(stages: dict[str, Callable[[], None]], repeat: int) -> dict[str, tuple[float, float]]:
    """Median seconds per stage and median per-repeat ratio (reference time / stage time)."""
    for fn in stages.values():  # warm-up: file cache, worker start-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(repeat):
        for name, fn in stages.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ref = times[next(iter(stages))]
    return {name: (statistics.median(ts), statistics.median(r / t for r, t in zip(ref, ts)))
            for name, ts in times.items()}


def table(title: str, n: int, results: dict[str, tuple[float, float]]) -> list[str]:
    rows = [f"**{title}** ({n} images)", "", "| stage | images/s | ratio vs reference |", "|---|---|---|"]
    rows += [f"| {name} | {n / secs:,.0f} | {ratio:.2f} |" for name, (secs, ratio) in results.items()]
    return rows + [""]


def profile(records: RecordSet, batches: list[list[Item]], title: str) -> list[str]:
    whole = list(single_process_stages(records, batches).values())[-1]
    prof = cProfile.Profile()
    prof.runcall(whole)
    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = [f"Profile of the whole pipeline, {title} (cProfile, own time, top 10):", "", "```"]
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]  # type: ignore[attr-defined]
    for (file, line, func), (_, calls, tottime, _, _) in entries:
        rows.append(f"{100 * tottime / total:5.1f}%  {calls:7d} calls  {func} ({Path(file).name}:{line})")
    return rows + ["```", ""]


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def sets(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, RecordSet]]:
    small_json = args.data / "synthpedes-dataset.json" if args.data else None
    if small_json is None or not small_json.is_file():
        small_json = write_dataset(args.data or tmp / "small", 200, 4, seed=0)
    small = load_records(small_json)
    paths = [small.image_path(i) for i in range(len(small))]
    w = statistics.median(Image.open(p).width for p in paths)
    h = statistics.median(Image.open(p).height for p in paths)
    yield f"demo crops (median {w:.0f}x{h:.0f} JPEG, W x H)", small
    large_json = enlarge(small_json, tmp / "large", args.large, args.large_images)
    yield f"demo crops upscaled to {args.large[0]}x{args.large[1]} (JPEG q90)", load_records(large_json)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="demo set folder (made with 200 ids x 4 images, seed 0, if absent)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers; 0 skips the DataLoader case")
    p.add_argument("--large", type=parse_size, default=(512, 1024), help="W x H of the large set")
    p.add_argument("--large-images", type=int, default=200, help="how many images the large set holds")
    p.add_argument("--profile", action="store_true", help="also print where the whole pipeline spends its time")
    args = p.parse_args(argv)
    # One intra-op thread: the reference is single-threaded, so the single-process ratio is per core.
    torch.set_num_threads(1)
    out = [f"### Image loader ({machine()})", "",
           f"Median of {args.repeat} repeats; batches of {args.batch}; target {DEFAULT_IMAGE_SIZE[0]}x"
           f"{DEFAULT_IMAGE_SIZE[1]} (H x W); torch intra-op threads 1, OpenCV threads {cv2.getNumThreads()}. "
           "Ratio = reference time / stage time (higher is faster; goal for the whole pipeline >= 0.7). "
           "In the DataLoader case the reference returns nothing, while ours also moves every batch to the "
           "main process (shared memory).", ""]
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for title, records in sets(args, Path(tmp)):
            batches = batches_of(len(records), args.batch)
            single = measure(single_process_stages(records, batches), args.repeat)
            out += table(f"{title}, single process", len(records), single)
            ratio = list(single.values())[-1][1]
            decode = next(r for name, (_, r) in single.items() if name.startswith("1b."))
            verdicts.append(f"{title}: {ratio:.2f} ({'met' if ratio >= 0.7 else 'not met'}; "
                            f"its decode alone: {decode:.2f})")
            if args.workers:
                out += table(f"{title}, DataLoader", len(records),
                             measure(loader_stages(records, batches, args.workers), args.repeat))
            if args.profile:
                out += profile(records, batches, title)
    out.append("Goal, whole pipeline >= 0.7 x bare decode (single process): " + "; ".join(verdicts) + ".")
    print("\n".join(out).rstrip())


if __name__ == "__main__":
    main()
