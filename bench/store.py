"""Feature store speed; prints a markdown section for BENCHMARKS.md.

(a) Random reads: batches of 256 random rows (unsorted, repeats allowed) from a ~2 GB store opened with
    in_memory=False, h5 and zarr, against np.load(mmap_mode="r") of the same data in the same run: as
    float32 rows (FeatureStore.images/captions' default; the memmap reference pays the same fp16 ->
    fp32 conversion) and as the stored float16 (dtype=np.float16; the memmap's bare gather). Rounds are
    interleaved and the best round of each source is kept (the machine may be shared). The files sit in
    the page cache, so this measures the reader's own cost, not the disk.
(b) Extraction overhead: person.teacher.extract.extract() wall time against the teacher's bare forward passes on
    the same batches (inputs decoded, resized and tokenised beforehand). The teacher is a SiglipModel
    with google/siglip2-base-patch16-224's sizes (randomly initialised; vocabulary 256000), 224 px,
    saved with the demo teacher's SentencePiece tokenizer (person/demo/teacher/demo_teacher) and loaded through
    load_teacher. The overhead is measured inside each extraction (the time its teacher spends in the
    model's forward, against its wall time: no outside load can skew that), and against separate bare
    passes alternating with the extractions for a few rounds (fastest vs fastest; on a shared machine
    the rounds' spread says how far to trust it).

Usage: python bench/store.py [--gb 2] [--images 96] [--rounds 3] [--batch-size 32] [--workers 2] [--keep DIR]
                             [--only read|extract]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from person.data.images import load_image
from person.data.records import RecordSet, load_records
from person.demo.synthetic import write_dataset
from person.demo.teacher import DEMO_TEACHER
from person.teacher import store as S
from person.teacher.extract import extract
from person.teacher.hf import load_teacher
from person.vectors import unit_rows

DIM = 1152  # so400m / MEXMA width: the SYNTH-PEDES store the reader is for
READ_BATCH = 256
SIGLIP2_BASE = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM; torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}")


# ---------------------------------------------------------------- (a) random reads

def read_records(folder: Path, images: int) -> RecordSet:
    """A stand-in dataset of `images` records with two captions each (no files are read)."""
    return RecordSet(source=folder / "bench.json", format="synthpedes", image_root=folder,
                     paths=[f"{i}.jpg" for i in range(images)],
                     captions=[(f"caption {i} a", f"caption {i} b") for i in range(images)],
                     prompt_captions=[()] * images, pids=np.arange(images) // 4, orig_ids=np.arange(images) // 4,
                     splits=np.zeros(images, dtype=np.int8), split_rule="bench")


def random_rows(unit: S.Unit) -> np.ndarray:
    """A unit's rows: random unit vectors, float16 as a store holds them, the same for the same unit."""
    rng = np.random.default_rng([unit.kind == "image", unit.index])
    return unit_rows(rng.random((unit.stop - unit.start, DIM), dtype=np.float32) - 0.5, np.float16)


def build_read_stores(folder: Path, gb: float) -> dict[str, Path]:
    images = int(gb * 1e9 / (3 * 2 * DIM))  # one image and two captions per record
    records = read_records(folder, images)
    identity = {"teacher": "bench/random", "kind": "siglip", "config_hash": "bench", "dim": DIM,
                "dtype": "float16", "preprocessing": {}}
    writers = {fmt: S.StoreWriter.open(folder / f"read.{fmt}", records, identity, chunk_rows=S.DEFAULT_CHUNK_ROWS,
                                       batch_size=1) for fmt in S.FORMATS}
    counts = writers["h5"].attrs["counts"]
    maps = {kind: np.lib.format.open_memmap(folder / f"{kind}.npy", mode="w+", dtype=np.float16,
                                            shape=(counts[f"{kind}s"], DIM)) for kind in ("image", "caption")}
    ok = np.full(S.DEFAULT_CHUNK_ROWS, S.OK, dtype=np.uint8)
    for unit in writers["h5"].pending():
        rows = random_rows(unit)
        status = ok[:len(rows)] if unit.kind == "image" else None
        for writer in writers.values():
            writer.write(unit, rows, status)
        maps[unit.kind][unit.start:unit.stop] = rows
    for m in maps.values():
        m.flush()
    return {fmt: w.path for fmt, w in writers.items()}


def best_rows_per_second(readers: dict, n: int, rounds: int, batches: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    best = dict.fromkeys(readers, 0.0)
    for read in readers.values():  # warm-up: every page of every source mapped, so rounds compare steady states
        for start in range(0, n, 1 << 16):
            read(np.arange(start, min(start + (1 << 16), n)))
    for _ in range(rounds):
        rows = [rng.integers(0, n, READ_BATCH) for _ in range(batches)]
        for name, read in readers.items():
            start = time.perf_counter()
            for r in rows:
                read(r)
            best[name] = max(best[name], batches * READ_BATCH / (time.perf_counter() - start))
    return best


def bench_reads(folder: Path, gb: float, rounds: int = 7, batches: int = 200) -> list[str]:
    paths = build_read_stores(folder, gb)
    stores = {fmt: S.open_store(p, in_memory=False) for fmt, p in paths.items()}
    size = sum(s.size_bytes() for s in stores.values()) / len(stores) / 1e9
    out = [f"### (a) Random reads: batches of {READ_BATCH} random rows, not in RAM",
           f"Store: {stores['h5'].num_images} images + {stores['h5'].num_captions} captions, dim {DIM}, float16, "
           f"{size:.2f} GB, chunk_rows {S.DEFAULT_CHUNK_ROWS}; {rounds} interleaved rounds of {batches} batches, "
           f"best round kept.", "",
           "| source | image rows/s | vs memmap, same dtype | caption rows/s | vs memmap, same dtype |",
           "|---|---|---|---|---|"]
    results = {}
    for kind in ("image", "caption"):
        mm = np.load(folder / f"{kind}.npy", mmap_mode="r").view(np.ndarray)  # the fastest memmap indexing
        readers = {"numpy memmap -> float32": lambda r, mm=mm: mm[r].astype(np.float32),
                   **{f"{fmt} store -> float32": getattr(s, f"{kind}s") for fmt, s in stores.items()},
                   "numpy memmap, float16": lambda r, mm=mm: mm[r],
                   **{f"{fmt} store, float16": lambda r, s=s, kind=kind: getattr(s, f"{kind}s")(r, np.float16)
                      for fmt, s in stores.items()}}
        probe = np.array([5, 0, len(mm) - 1, 5])
        for fmt, s in stores.items():  # same data, same rows
            assert np.array_equal(getattr(s, f"{kind}s")(probe), mm[probe].astype(np.float32)), fmt
        results[kind] = best_rows_per_second(readers, len(mm), rounds, batches)
    for name in results["image"]:
        ref = "numpy memmap -> float32" if name.endswith("float32") else "numpy memmap, float16"
        cells = [f"{results[k][name]:,.0f} | {results[k][name] / results[k][ref]:.2f}x" for k in ("image", "caption")]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    for s in stores.values():
        s.close()
    return out


# ---------------------------------------------------------------- (b) extraction overhead

def build_base_teacher(folder: Path) -> Path:
    """SiglipModel with google/siglip2-base-patch16-224's sizes, random weights, 224 px, the demo teacher's
    SentencePiece tokenizer (the vocabulary size is SigLIP2's all the same)."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor, SiglipTokenizer
    tokenizer = SiglipTokenizer.from_pretrained(DEMO_TEACHER)
    config = SiglipConfig(
        text_config={**SIGLIP2_BASE, "vocab_size": 256000, "max_position_embeddings": 64,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={**SIGLIP2_BASE, "image_size": 224, "patch_size": 16})
    torch.manual_seed(0)
    SiglipModel(config).save_pretrained(folder)
    SiglipProcessor(image_processor=SiglipImageProcessorPil(size={"height": 224, "width": 224}),
                    tokenizer=tokenizer).save_pretrained(folder)
    return folder


def fixed_batches(n: int, batch: int) -> list[range]:
    return [range(s, min(s + batch, n)) for s in range(0, n, batch)]


@torch.no_grad()
def bare_forward(teacher, image_inputs: list[dict], text_inputs: list[dict]) -> tuple[float, float]:
    start = time.perf_counter()
    for inputs in image_inputs:
        teacher.model.get_image_features(**inputs)
    middle = time.perf_counter()
    for inputs in text_inputs:
        teacher.model.get_text_features(**inputs)
    return middle - start, time.perf_counter() - middle


class Timed:
    """Wraps a model method and adds up the seconds spent in it."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def bench_extraction(folder: Path, images: int, batch_size: int, workers: int, rounds: int) -> list[str]:
    start, load = time.perf_counter(), os.getloadavg()
    teacher_dir = build_base_teacher(folder / "teacher")
    records = load_records(write_dataset(folder / "data", images // 2, 2, seed=0, fmt="icfg-pedes"))
    teacher = load_teacher(str(teacher_dir), device="cpu", dtype="float32")
    setup = time.perf_counter() - start
    texts = S.caption_layout(records).texts
    image_inputs = [teacher.image_inputs([load_image(records.image_path(i)) for i in rows])
                    for rows in fixed_batches(len(records), batch_size)]
    text_inputs = [teacher.text_inputs(texts[b.start:b.stop]) for b in fixed_batches(len(texts), batch_size)]
    bare_forward(teacher, image_inputs[:1], text_inputs[:1])  # warm-up
    model = teacher.model
    bare, wall, inside = [], [], []
    for r in range(rounds):  # interleaved, so load from other processes falls on both alike
        bare.append(sum(bare_forward(teacher, image_inputs, text_inputs)))
        model.get_image_features, model.get_text_features = (Timed(model.get_image_features),
                                                             Timed(model.get_text_features))
        wall.append(extract(records, teacher, folder / f"extract-{r}.h5", batch_size=batch_size,
                            workers=workers).seconds)
        inside.append(model.get_image_features.seconds + model.get_text_features.seconds)
        del model.get_image_features, model.get_text_features  # back to the model's own methods
    params = sum(p.numel() for p in model.parameters()) / 1e6

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {min(values):.1f} | {float(np.median(values)):.1f} | " + \
            " / ".join(f"{v:.1f}" for v in values) + " |"

    return [
        "### (b) Extraction overhead",
        f"Teacher: SiglipModel with google/siglip2-base-patch16-224's sizes ({params:.0f}M parameters, random "
        f"weights), 224 px, float32 on CPU. {len(records)} images ({records.format} drawn by person.demo.synthetic) "
        f"and {len(texts)} captions, batch {batch_size}, {workers} decoding workers, h5 store; {rounds} rounds of "
        f"(bare forward, extraction) (setup: {setup:.0f} s).", "",
        "| seconds | min | median | rounds |", "|---|---|---|---|",
        row("bare forward, inputs prepared beforehand", bare),
        row("extract() wall time: store creation, decoding, preprocessing, tokenising, forward, writes", wall),
        row("forward time inside that extraction", inside), "",
        "Overhead = extraction wall time over the forward time on the same batches. Measured inside each "
        "extraction (immune to other load on the machine): **"
        + " / ".join(f"{100 * (w / i - 1):+.1f}%" for w, i in zip(wall, inside)) + "** (goal <= 10%). "
        f"Against the separate bare passes, fastest vs fastest: {100 * (min(wall) / min(bare) - 1):+.1f}%; "
        f"the load average was {load[0]:.1f} before and {os.getloadavg()[0]:.1f} after on {os.cpu_count()} cores, "
        f"so compare that figure with the spread of the rounds above."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="size of the store read in (a)")
    ap.add_argument("--images", type=int, default=96, help="images (and as many captions) extracted in (b)")
    ap.add_argument("--rounds", type=int, default=3, help="(bare forward, extraction) rounds in (b)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=("read", "extract"), help="run one part")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["## Feature store (bench/store.py)", f"Machine: {machine()}.", ""]
        if args.only != "extract":
            lines += bench_reads(folder, args.gb) + [""]
        if args.only != "read":
            lines += bench_extraction(folder, args.images, args.batch_size, args.workers, args.rounds)
        print("\n".join(lines))


if __name__ == "__main__":
    main()
