"""Search and enrolment speed: the gallery's scans against a bare matmul + top-k of the same matrix.

1. Per-query latency (top-10) over galleries of 10k, 100k and 1M rows at D = 512 (SigLIP2-base's width; and
   1152, so400m's, up to --max-rows-1152): person.gallery's exact scan (FAISS fp16 scalar quantizer over the
   float16 rows) and its approximate indexes (HNSW, IVF; recall@10 against exact), against torch's fp16
   matmul + topk and numpy's float32 matmul + argpartition of the same rows. The vectors have the structure
   of real embeddings: 4 rows per identity around identity centres, queries near the centres (uniform random
   vectors would defeat every approximate index). Also the text query's encoding at D = 512 (a random-weight
   char.L3 graph through the runtime's path: encode, table lookup, onnxruntime), so encode + search can be
   read against the 5 ms goal.
2. Enrolment images/s (decode workers, batched forward, segment writes) against the bare forward of the same
   exported image model on the same images already decoded, with --export (default demo/export, from
   `python demo.py`).
Goals (issue 15) at D = 512 on this machine's 2 cores: exact within 1.2x the bare matmul + top-k; a 100k-row
query (encode + top-10) under 5 ms median; 1M rows under 20 ms with an approximate index at recall@10 >= 0.95;
enrolment >= 0.8x the bare forward.
Usage: python bench/search.py [--sizes 10000 100000 1000000] [--queries 200] [--export demo/export]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
import torch

from person.demo.synthetic import write_dataset
from person.data.text import encode_batch, lookup_chars
from person.export.graphs import OUTPUT, TEXT_INPUTS, TextGraph
from person.export.onnx_files import export_onnx
from person.gallery import index as gindex
from person.gallery import sources
from person.gallery.encoders import ExportEncoder
from person.gallery.enroll import enroll
from person.models.students import create_text_student
from person.vectors import unit_rows

QUERY = "a woman in a red coat with a black bag"


def clustered(rows: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float16 rows and float32 queries, L2-normalised, with the structure of person embeddings: an identity is
    the sum of its attributes' vectors (12 attributes of 8 values each, as the demo's people are combinations of
    colours and garments), so identities that share attributes lie near each other; 4 rows per identity with
    image noise; a query is its identity's vector with more noise (a caption says less than a picture)."""
    rng = np.random.default_rng(seed)
    ids = max(1, rows // 4)
    values = rng.standard_normal((12, 8, dim), dtype=np.float32)
    picks = rng.integers(0, 8, (ids, 12))
    identity = np.empty((ids, dim), np.float32)
    for a in range(0, ids, 65536):
        block = picks[a:a + 65536]
        identity[a:a + len(block)] = unit_rows(values[np.arange(12), block].sum(axis=1)
                                               + 0.8 * rng.standard_normal((len(block), dim), dtype=np.float32))
    out = np.empty((rows, dim), np.float16)
    for a in range(0, rows, 65536):
        who = np.arange(a, min(a + 65536, rows)) % ids
        out[a:a + len(who)] = unit_rows(identity[who] + 0.02 * rng.standard_normal((len(who), dim), dtype=np.float32))
    q = identity[rng.integers(0, ids, queries)] + 0.04 * rng.standard_normal((queries, dim), dtype=np.float32)
    return out, unit_rows(q)


def per_query_ms(fn, queries: np.ndarray) -> float:
    fn(queries[:1])
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q[None])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def scan_rows(rows: int, dim: int, n_queries: int, approximate: bool) -> list[str]:
    feats, queries = clustered(rows, dim, n_queries)
    torch.set_num_threads(2)
    t16 = torch.from_numpy(feats)
    bare_torch = per_query_ms(lambda q: torch.topk(t16 @ torch.from_numpy(q).half()[0], 10), queries)
    f32 = feats.astype(np.float32) if rows <= 200_000 else None
    bare_numpy = (per_query_ms(lambda q: np.argpartition(-(f32 @ q[0]), 10)[:10], queries) if f32 is not None
                  else float("nan"))
    start = time.perf_counter()
    exact = gindex.build(feats, "exact", 0)
    exact_build = time.perf_counter() - start
    ours = per_query_ms(lambda q: exact.search(q, 10), queries)
    faiss.omp_set_num_threads(1)
    one_thread = per_query_ms(lambda q: exact.search(q, 10), queries)
    faiss.omp_set_num_threads(2)
    mask = np.ones(rows, bool)
    mask[::3] = False  # a third of the rows filtered out (deleted rows, a --where condition)
    masked = per_query_ms(lambda q: exact.search(q, 10, mask), queries)
    out = [f"| {rows:,} x {dim} | exact (FAISS fp16 scan) | {ours:.2f} ms | {ours / bare_torch:.2f}x torch fp16, "
           f"{ours / bare_numpy:.2f}x numpy fp32 | 1.000 | {exact_build:.1f} s |",
           f"| {rows:,} x {dim} | exact, FAISS on 1 thread | {one_thread:.2f} ms | {one_thread / bare_torch:.2f}x "
           f"torch fp16 | 1.000 | |",
           f"| {rows:,} x {dim} | exact, 2/3 of the rows allowed | {masked:.2f} ms | {masked / bare_torch:.2f}x torch "
           f"fp16 | 1.000 | |",
           f"| {rows:,} x {dim} | bare torch fp16 matmul + topk | {bare_torch:.2f} ms | 1.00x | | |",
           f"| {rows:,} x {dim} | bare numpy fp32 matmul + argpartition | {bare_numpy:.2f} ms | | | |"]
    if approximate:
        for kind in ("hnsw", "ivf"):
            built = gindex.build(feats, kind, 0)
            ms = per_query_ms(lambda q: built.search(q, 10), queries)
            out.append(f"| {rows:,} x {dim} | {kind} | {ms:.2f} ms | {ms / bare_torch:.2f}x torch fp16 | "
                       f"{built.info.recall_at_10:.3f} | {built.info.build_seconds:.1f} s |")
    return out


def encode_ms(dim: int, work: Path) -> float:
    """A 40-character query through the runtime's text path at `dim` (random char.L3, width 256)."""
    torch.manual_seed(0)
    graph = TextGraph(create_text_student("tbackbone.char.L3", dim, 128, width=256))
    path = work / "text.onnx"
    dynamic = {TEXT_INPUTS[0]: {0: "batch", 1: "length"}, TEXT_INPUTS[1]: {0: "batch", 1: "length"},
               OUTPUT: {0: "batch"}}
    export_onnx(graph, (torch.zeros(1, 16, 256), torch.ones(1, 16)), path, TEXT_INPUTS, OUTPUT, 17, dynamic)
    table = graph.byte_table().numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(_):
        chars, mask = encode_batch([QUERY], 128)
        session.run(None, {TEXT_INPUTS[0]: lookup_chars(table, chars), TEXT_INPUTS[1]: mask.astype(np.float32)})
    return per_query_ms(encode, np.zeros((50, 1)))


def enrolment_rows(export_dir: Path, work: Path) -> list[str]:
    encoder = ExportEncoder(export_dir)
    json_path = write_dataset(work / "set", 100, 4, seed=5, workers=2)
    source = sources.image_dir(json_path.parent)
    start = time.perf_counter()
    summary = enroll(work / "gallery", encoder, source, workers=2)
    enrol_s = time.perf_counter() - start
    models = encoder.models
    prepared = [models.preprocess(source.image_root / item.path) for item in source.items]
    start = time.perf_counter()
    for a in range(0, len(prepared), 64):
        models.embed_pixels(np.stack(prepared[a:a + 64]))
    bare_s = time.perf_counter() - start
    rate, bare = summary.added / enrol_s, len(prepared) / bare_s
    return [f"| enrolment, {summary.added} images ({export_dir}) | {rate:.0f} images/s | bare ONNX forward on "
            f"decoded images {bare:.0f} images/s | {rate / bare:.2f}x |"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--max-rows-1152", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--export", type=Path, default=Path("demo/export"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    lines = ["| gallery | scan | median per query (top-10) | ratio | recall@10 | build |", "|---|---|---|---|---|---|"]
    for dim in (512, 1152):
        for rows in args.sizes:
            if dim == 1152 and rows > args.max_rows_1152:
                continue
            lines += scan_rows(rows, dim, args.queries, approximate=rows >= 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        encode = encode_ms(512, Path(tmp))
        enrol = enrolment_rows(args.export, Path(tmp)) if (args.export / "model.json").is_file() else \
            [f"| enrolment | not measured: no export at {args.export} (run python demo.py first) | | |"]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"## Search (bench/search.py)\n\nMachine: {cpu}, 2 threads; faiss, onnxruntime {ort.__version__}, torch "
          f"{torch.__version__}; medians over {args.queries} queries.\n")
    print("\n".join(lines))
    print(f"\nText query encoding at D = 512 (char.L3 width 256, a 40-character query, encode + lookup + "
          f"onnxruntime fp32, 2 threads): {encode:.2f} ms median.\n")
    print("| enrolment | ours | reference | ratio |\n|---|---|---|---|")
    print("\n".join(enrol))


if __name__ == "__main__":
    main()
