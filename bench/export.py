"""Inference speed of the exported students against PyTorch eager and the teachers.

For each student (the default image student ANet2 at 224x112 and the demo's ANet2_w050 at 96x48; the default
text student L3 width 256 and the demo's L2 width 128; random weights: speed does not depend on them), the
same graph person.export writes (BatchNorm folded, L2-normalised output, onnxsim), run through onnxruntime in
fp32, fp16 and int8 (static QDQ, calibrated on random inputs of the right shapes), against the PyTorch student
in eager mode (eval, no_grad). Latency: batch 1 on one thread (a camera's crop, a user's query; for text the
runtime's whole path, encode + lookup + graph, at a 40-character query). Throughput: batch 64 on two threads.
Beside them, the teachers at their own sizes through transformers: the shipped demo teacher (64 px) and the
SigLIP2-base architecture (random weights, 224 px, 12+12 layers). Medians of --repeat runs after a warm-up.

Goals (issue 14): ONNX fp32 >= 1.5x PyTorch eager at batch 1; int8 >= 1.5x ONNX fp32; the default image
student at 224x112 under 5 ms a crop and the text student under 2 ms a query on this machine (int8 allowed).
Usage: python bench/export.py [--repeat 30]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
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
from person.export.variants import to_fp16, to_int8
from person.models.students import create_image_student, create_text_student
from person.teacher.hf import load_teacher

ROOT = Path(__file__).resolve().parents[1]
QUERY = "a woman in a red coat with a black bag"  # ~40 characters, a typical query
DIM = 512  # SigLIP2-base's width: the students output the teacher's dimension

IMAGE_STUDENTS = (("backbone.mf3.ANet2", (224, 112)), ("backbone.mf3.ANet2_w050", (96, 48)))
TEXT_STUDENTS = (("tbackbone.char.L3", 256), ("tbackbone.char.L2", 128))


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def write_variants(graph: torch.nn.Module, example: tuple, names: tuple[str, ...], dynamic: dict, folder: Path,
                   calibration: list[dict[str, np.ndarray]]) -> dict[str, Path]:
    """fp32 / fp16 / int8 files of one graph, made as person.export makes them."""
    fp32 = folder / "fp32.onnx"
    model, _ = simplify(export_onnx(graph, example, fp32, names, OUTPUT, 17, dynamic))
    onnx.save(constants_to_initializers(model), str(fp32))
    onnx.save(to_fp16(onnx.load(str(fp32))), str(folder / "fp16.onnx"))
    to_int8(fp32, folder / "int8.onnx", calibration)
    return {v: folder / f"{v}.onnx" for v in ("fp32", "fp16", "int8")}


def image_rows(name: str, size: tuple[int, int], repeat: int, work: Path) -> list[str]:
    torch.manual_seed(0)
    student = create_image_student(name, DIM, size).eval()
    rng = np.random.default_rng(0)
    calib = [{IMAGE_INPUT: rng.standard_normal((8, 3, *size)).astype(np.float32)} for _ in range(4)]
    folder = work / name
    folder.mkdir()
    files = write_variants(ImageGraph(student), (torch.zeros(1, 3, *size),), (IMAGE_INPUT,),
                           {IMAGE_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, folder, calib)
    one, many = np.zeros((1, 3, *size), np.float32), np.zeros((64, 3, *size), np.float32)
    rows = {}
    with torch.no_grad():
        torch.set_num_threads(1)
        eager1 = median_ms(lambda: student(torch.from_numpy(one)), repeat)
        torch.set_num_threads(2)
        eager64 = median_ms(lambda: student(torch.from_numpy(many)), max(3, repeat // 10))
    rows["PyTorch eager"] = (eager1, 64000 / eager64)
    for variant, path in files.items():
        s1, s2 = session(path, 1), session(path, 2)
        rows[f"ONNX {variant}"] = (median_ms(lambda: s1.run(None, {IMAGE_INPUT: one}), repeat),
                                   64000 / median_ms(lambda: s2.run(None, {IMAGE_INPUT: many}), max(3, repeat // 10)))
    kib = {v: p.stat().st_size / 1024 for v, p in files.items()}
    return _rows(f"image `{name}` {size[0]}x{size[1]}", rows, kib, "crop")


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
    files = write_variants(graph, (torch.zeros(1, 16, width), torch.ones(1, 16)), TEXT_INPUTS, dynamic, folder,
                           calib)
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
    for variant, path in files.items():
        s1, s2 = session(path, 1), session(path, 2)
        # batch 1: the runtime's whole path for one query (encode, look up, run)
        rows[f"ONNX {variant}"] = (median_ms(lambda: s1.run(None, feeds(*encode_batch([QUERY], 128))), repeat),
                                   64000 / median_ms(lambda: s2.run(None, feeds(chars64, mask64)),
                                                     max(3, repeat // 10)))
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
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    lines = ["| model | run | batch 1, 1 thread | speed-up | batch 64, 2 threads | file |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, size in IMAGE_STUDENTS:
            lines += image_rows(name, size, args.repeat, work)
        for name, width in TEXT_STUDENTS:
            lines += text_rows(name, width, args.repeat, work)
        lines += teacher_rows(args.repeat, work)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"## Export and inference (bench/export.py)\n\nMachine: {cpu}, torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}; medians of {args.repeat} runs.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
