"""Inference speed of the exported students against PyTorch eager and the teachers.

For each student (the default image student ANet2 at 224x112 and its ReLU variant ANet2_relu, the demo's
ANet2_w050 at 96x48 and ANet2_w050_relu; the default text student L3 width 256 and the demo's L2 width 128;
random weights), the same graph person.export writes (BatchNorm folded, L2-normalised output, onnxsim), run
through onnxruntime in fp32, fp16 and int8 (person.export.variants.to_int8's defaults, calibrated on random
inputs of the right shapes), against the PyTorch student in eager mode (eval, no_grad). Latency: batch 1 on one
thread (a camera's crop, a user's query; for text the runtime's whole path, encode + lookup + graph, at a
40-character query). Throughput: batch 64 on two threads. Beside them, the teachers at their own sizes through
transformers: the shipped demo teacher (64 px) and the SigLIP2-base architecture (random weights, 224 px, 12+12
layers). Medians of --repeat runs after a warm-up; the ONNX variants of one student are run interleaved, so a
busy machine slows them alike.

The images are standard-normal noise, not zeros: onnxruntime's PRelu kernel is ten times slower on activations of
mixed sign than on constant ones, so all-zero crops hide most of a PReLU student's cost (real crops cost what
noise does; ReLU students do not care). Speed does not depend on the weights; int8 agreement does, and is
measured on trained students (tests/export/test_int8.py, BENCHMARKS.md), not here.

--int8-study prints, in place of the table above, the int8 settings grid for ANet2 and ANet2_relu at 224x112:
QDQ or QOperator, per-channel or per-tensor weights, which op types are quantised (Conv/MatMul/Gemm, + Relu
(the export's default), + Relu + Add, or every op type the quantiser knows), each run at the four onnxruntime
graph optimisation levels; with the Quantize/Dequantize nodes left after onnxruntime's own optimisation (each
pair is a float step between int8 ops). Batch 1 shows wall and thread CPU time (on a shared machine the CPU time
is the steadier one); batch 64 runs at level "all" only, onnxruntime's default and what person.runtime uses.

Goals (issue 14): ONNX fp32 >= 1.5x PyTorch eager at batch 1; int8 >= 1.5x ONNX fp32; the default image
student at 224x112 under 5 ms a crop and the text student under 2 ms a query on this machine (int8 allowed).
Usage: python bench/export.py [--repeat 30] [--int8-study]
"""
from __future__ import annotations

import argparse
import itertools
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from transformers import SiglipConfig, SiglipModel

from person.data.text import encode_batch, lookup_chars
from person.demo.teacher import DEMO_TEACHER
from person.export.graphs import IMAGE_INPUT, OUTPUT, TEXT_INPUTS, ImageGraph, TextGraph
from person.export.onnx_files import constants_to_initializers, export_onnx, simplify
from person.export.variants import QUANTIZED_OPS, Int8Settings, to_fp16, to_int8
from person.models.students import create_image_student, create_text_student
from person.teacher.hf import load_teacher

ROOT = Path(__file__).resolve().parents[1]
QUERY = "a woman in a red coat with a black bag"  # ~40 characters, a typical query
DIM = 512  # SigLIP2-base's width: the students output the teacher's dimension

IMAGE_STUDENTS = (("backbone.mf3.ANet2", (224, 112)), ("backbone.mf3.ANet2_relu", (224, 112)),
                  ("backbone.mf3.ANet2_w050", (96, 48)), ("backbone.mf3.ANet2_w050_relu", (96, 48)))
TEXT_STUDENTS = (("tbackbone.char.L3", 256), ("tbackbone.char.L2", 128))
STUDY_STUDENTS = (("backbone.mf3.ANet2", (224, 112)), ("backbone.mf3.ANet2_relu", (224, 112)))
STUDY_OPS = {"Conv/MatMul/Gemm": ("Conv", "MatMul", "Gemm"), "+ Relu": QUANTIZED_OPS,
             "+ Relu + Add": (*QUANTIZED_OPS, "Add"), "all it knows": ()}
LEVELS = {"off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def interleaved_ms(fns: dict[Hashable, Callable[[], object]], repeat: int) -> dict[Hashable, tuple[float, float]]:
    """(median wall ms, median thread-CPU ms) of each fn: `repeat` rounds, each calling every fn once in a shuffled
    order, so a machine that gets busier mid-run slows every fn alike. The CPU time is the calling thread's: the
    whole run only when onnxruntime runs on one thread (it then runs on the caller's)."""
    wall: dict[Hashable, list[float]] = {k: [] for k in fns}
    cpu: dict[Hashable, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    order, rng = list(fns), random.Random(0)
    for _ in range(repeat):
        rng.shuffle(order)
        for k in order:
            c, t = time.thread_time(), time.perf_counter()
            fns[k]()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.thread_time() - c)
    return {k: (1000 * statistics.median(wall[k]), 1000 * statistics.median(cpu[k])) for k in fns}


def session(path: Path, threads: int, level: ort.GraphOptimizationLevel = LEVELS["all"],
            save: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = level
    if save is not None:  # the graph as onnxruntime runs it; at level "all" that is hardware-specific (it warns)
        options.optimized_model_filepath = str(save)
        options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def write_fp32(graph: torch.nn.Module, example: tuple, names: tuple[str, ...], dynamic: dict, path: Path) -> Path:
    """The fp32 file of one graph, made as person.export makes it."""
    model, _ = simplify(export_onnx(graph, example, path, names, OUTPUT, 17, dynamic))
    onnx.save(constants_to_initializers(model), str(path))
    return path


def write_variants(fp32: Path, calibration: list[dict[str, np.ndarray]]) -> dict[str, Path]:
    """The fp32 file with its fp16 and int8 variants beside it, made as person.export makes them."""
    onnx.save(to_fp16(onnx.load(str(fp32))), str(fp32.with_name("fp16.onnx")))
    to_int8(fp32, fp32.with_name("int8.onnx"), calibration)
    return {v: fp32.with_name(f"{v}.onnx") for v in ("fp32", "fp16", "int8")}


def image_student(name: str, size: tuple[int, int], folder: Path
                  ) -> tuple[torch.nn.Module, Path, list[dict[str, np.ndarray]], np.ndarray, np.ndarray]:
    """(eager student, its fp32 file, int8 calibration batches, a batch-1 and a batch-64 input), all seeded."""
    torch.manual_seed(0)
    student = create_image_student(name, DIM, size).eval()
    rng = np.random.default_rng(0)
    calib = [{IMAGE_INPUT: rng.standard_normal((8, 3, *size)).astype(np.float32)} for _ in range(4)]
    one, many = (rng.standard_normal((n, 3, *size)).astype(np.float32) for n in (1, 64))
    folder.mkdir()
    fp32 = write_fp32(ImageGraph(student), (torch.zeros(1, 3, *size),), (IMAGE_INPUT,),
                      {IMAGE_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, folder / "fp32.onnx")
    return student, fp32, calib, one, many


def image_rows(name: str, size: tuple[int, int], repeat: int, work: Path) -> list[str]:
    student, fp32, calib, one, many = image_student(name, size, work / name)
    files = write_variants(fp32, calib)
    rows = {}
    with torch.no_grad():
        torch.set_num_threads(1)
        eager1 = median_ms(lambda: student(torch.from_numpy(one)), repeat)
        torch.set_num_threads(2)
        eager64 = median_ms(lambda: student(torch.from_numpy(many)), max(3, repeat // 10))
    rows["PyTorch eager"] = (eager1, 64000 / eager64)
    s1 = {v: session(p, 1) for v, p in files.items()}
    s2 = {v: session(p, 2) for v, p in files.items()}
    b1 = interleaved_ms({v: (lambda s=s: s.run(None, {IMAGE_INPUT: one})) for v, s in s1.items()}, repeat)
    b64 = interleaved_ms({v: (lambda s=s: s.run(None, {IMAGE_INPUT: many})) for v, s in s2.items()},
                         max(3, repeat // 10))
    for v in files:
        rows[f"ONNX {v}"] = (b1[v][0], 64000 / b64[v][0])
    kib = {v: p.stat().st_size / 1024 for v, p in files.items()}
    return _rows(f"image `{name}` {size[0]}x{size[1]}", rows, kib, "crop")


def _float_steps(path: Path, level: str, folder: Path) -> int:
    """QuantizeLinear + DequantizeLinear nodes left once onnxruntime has optimised the graph at `level`."""
    saved = folder / f"{path.stem}.{level}.optimized.onnx"
    session(path, 1, LEVELS[level], save=saved)
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(saved)).graph.node)


def int8_study_rows(name: str, size: tuple[int, int], repeat: int, work: Path) -> list[str]:
    """One row per int8 setting x optimisation level (and fp32 at each level) of one image student."""
    _, fp32, calib, one, many = image_student(name, size, work / f"study-{name}")
    files = {("fp32", "", ""): fp32}
    for qdq, per_channel, ops in itertools.product((True, False), (True, False), STUDY_OPS):
        key = ("QDQ" if qdq else "QOperator", "per-channel" if per_channel else "per-tensor", ops)
        files[key] = fp32.with_name(f"{'-'.join(key).replace('/', '').replace(' ', '')}.onnx")
        # one calibration batch: speed does not depend on the ranges, and 32 files are quantised
        to_int8(fp32, files[key], calib[:1], Int8Settings(qdq, per_channel, STUDY_OPS[ops]))
    b1_sessions = {(k, level): session(p, 1, LEVELS[level]) for k, p in files.items() for level in LEVELS}
    b1 = interleaved_ms({k: (lambda s=s: s.run(None, {IMAGE_INPUT: one})) for k, s in b1_sessions.items()}, repeat)
    del b1_sessions

    # Batch 64: a fresh session each call, so only one batch-64 arena is held at a time; its first run (arena
    # growth) is not timed.
    b64: dict[tuple[str, str, str], list[float]] = {k: [] for k in files}
    order, rng = list(files), random.Random(1)
    for _ in range(max(3, repeat // 10)):
        rng.shuffle(order)
        for k in order:
            s = session(files[k], 2)
            s.run(None, {IMAGE_INPUT: many})
            start = time.perf_counter()
            s.run(None, {IMAGE_INPUT: many})
            b64[k].append(time.perf_counter() - start)
    out = []
    for (k, level), (wall, cpu) in b1.items():
        steps = "" if k[0] == "fp32" else f"{_float_steps(files[k], level, fp32.parent)}"
        per_s = f"{64 / statistics.median(b64[k]):,.0f} crops/s" if level == "all" else ""
        out.append(f"| `{name.split('.')[-1]}` | {' | '.join(k)} | {level} | {wall:.2f} ms ({cpu:.2f} CPU) | "
                   f"{per_s} | {steps} | {files[k].stat().st_size / 1024:,.0f} KiB |")
    return out


def text_rows(name: str, width: int, repeat: int, work: Path) -> list[str]:
    torch.manual_seed(0)
    student = create_text_student(name, DIM, 128, width=width).eval()
    graph = TextGraph(student)
    table = graph.byte_table().numpy()
    rng = np.random.default_rng(0)
    calib = []
    for n in (12, 40, 90, 128):
        chars = rng.integers(32, 127, (8, n, 4)).astype(np.uint8)
        chars[..., 1:] = 0
        calib.append({TEXT_INPUTS[0]: lookup_chars(table, chars), TEXT_INPUTS[1]: np.ones((8, n), np.float32)})
    folder = work / name
    folder.mkdir()
    dynamic = {TEXT_INPUTS[0]: {0: "batch", 1: "length"}, TEXT_INPUTS[1]: {0: "batch", 1: "length"},
               OUTPUT: {0: "batch"}}
    files = write_variants(write_fp32(graph, (torch.zeros(1, 16, width), torch.ones(1, 16)), TEXT_INPUTS, dynamic,
                                      folder / "fp32.onnx"), calib)
    chars64, mask64 = encode_batch([QUERY] * 64, 128)
    rows = {}
    with torch.no_grad():
        torch.set_num_threads(1)
        # batch 1 includes encoding the query, as the ONNX rows include encode + lookup
        eager1 = median_ms(lambda: student(*map(torch.from_numpy, encode_batch([QUERY], 128))), repeat)
        torch.set_num_threads(2)
        eager64 = median_ms(lambda: student(torch.from_numpy(chars64), torch.from_numpy(mask64)),
                            max(3, repeat // 10))
    rows["PyTorch eager"] = (eager1, 64000 / eager64)

    def feeds(chars: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        return {TEXT_INPUTS[0]: lookup_chars(table, chars), TEXT_INPUTS[1]: mask.astype(np.float32)}
    s1 = {v: session(p, 1) for v, p in files.items()}
    s2 = {v: session(p, 2) for v, p in files.items()}
    # batch 1: the runtime's whole path for one query (encode, look up, run)
    b1 = interleaved_ms({v: (lambda s=s: s.run(None, feeds(*encode_batch([QUERY], 128)))) for v, s in s1.items()},
                        repeat)
    b64 = interleaved_ms({v: (lambda s=s: s.run(None, feeds(chars64, mask64))) for v, s in s2.items()},
                         max(3, repeat // 10))
    for v in files:
        rows[f"ONNX {v}"] = (b1[v][0], 64000 / b64[v][0])
    kib = {v: p.stat().st_size / 1024 for v, p in files.items()}
    return _rows(f"text `{name}` width {width}", rows, kib, "query")


def _rows(title: str, rows: dict[str, tuple[float, float]], kib: dict[str, float], unit: str) -> list[str]:
    eager = rows["PyTorch eager"][0]
    fp32 = rows["ONNX fp32"][0]
    out = []
    for how, (ms, per_s) in rows.items():
        size = kib.get(how.removeprefix("ONNX "), None)
        ratio = f"{eager / ms:.2f}x eager" + (f", {fp32 / ms:.2f}x fp32" if how == "ONNX int8" else "")
        out.append(f"| {title} | {how} | {ms:.2f} ms / {unit} | {ratio} | {per_s:,.0f} {unit}s/s | "
                   f"{'' if size is None else f'{size:,.0f} KiB'} |")
    return out


def teacher_rows(repeat: int, work: Path) -> list[str]:
    from PIL import Image
    out = []
    demo = load_teacher(DEMO_TEACHER, device="cpu")
    base_cfg = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
    torch.manual_seed(0)
    base = SiglipModel(SiglipConfig(text_config={**base_cfg, "vocab_size": 256000, "max_position_embeddings": 64},
                                    vision_config={**base_cfg, "image_size": 224, "patch_size": 16})).eval()
    crop = Image.new("RGB", (64, 128), (120, 60, 30))
    with torch.no_grad():
        torch.set_num_threads(1)
        out.append(f"| demo teacher (SigLIP 64 px, {sum(p.numel() for p in demo.model.parameters()) / 1e6:.2f}M) "
                   f"| PyTorch eager, its processor | {median_ms(lambda: demo.encode_images([crop]), repeat):.2f} ms / "
                   f"crop, {median_ms(lambda: demo.encode_texts([QUERY]), repeat):.2f} ms / query | | | |")
        pixels = torch.zeros(1, 3, 224, 224)
        ids = torch.zeros(1, 64, dtype=torch.long)
        image_ms = median_ms(lambda: base.get_image_features(pixel_values=pixels), max(3, repeat // 5))
        text_ms = median_ms(lambda: base.get_text_features(input_ids=ids), max(3, repeat // 5))
        out.append(f"| SigLIP2-base architecture (224 px, 64 tokens, random weights, "
                   f"{sum(p.numel() for p in base.parameters()) / 1e6:.0f}M) | PyTorch eager | {image_ms:.1f} ms / "
                   f"crop, {text_ms:.1f} ms / query | | | |")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--int8-study", action="store_true",
                    help="print the int8 settings grid for ANet2 and ANet2_relu at 224x112 instead")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.int8_study:
            title = "int8 settings (bench/export.py --int8-study)"
            lines = ["| student | format | weights | ops quantised | optimisation level | batch 1, 1 thread | "
                     "batch 64, 2 threads | Q/DQ nodes at run time | file |", "|---|---|---|---|---|---|---|---|---|"]
            for name, size in STUDY_STUDENTS:
                lines += int8_study_rows(name, size, args.repeat, work)
        else:
            title = "Export and inference (bench/export.py)"
            lines = ["| model | run | batch 1, 1 thread | speed-up | batch 64, 2 threads | file |",
                     "|---|---|---|---|---|---|"]
            for name, size in IMAGE_STUDENTS:
                lines += image_rows(name, size, args.repeat, work)
            for name, width in TEXT_STUDENTS:
                lines += text_rows(name, width, args.repeat, work)
            lines += teacher_rows(args.repeat, work)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"## {title}\n\nMachine: {cpu}, torch {torch.__version__}, onnxruntime {ort.__version__}; medians of "
          f"{args.repeat} runs.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
