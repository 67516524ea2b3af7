"""Training throughput and model sizes.

1. Steps/s of `Trainer.train_step` fed by the real loader (decode + augment in DataLoader workers, store
   lookups, caption encoding) against the same steps on batches already in memory, in the same run: the
   ratio says whether loading is the bottleneck (1.0 = it costs nothing); and the in-memory steps again with
   the image student in channels-last layout (`--channels_last`). Data: a drawn demo-like set,
   its store extracted with the shipped demo teacher (person/demo/teacher/demo_teacher) through the real path.
2. Parameters and multiply-accumulates (Conv2d + Linear, person.models.flops) of every registered student beside
   the teachers': the shipped demo teacher and the real architectures (SigLIP2 so400m/16 at 512 px and
   MEXMA's XLM-R-large text tower), built on the meta device (no weights, no memory).
Usage: python bench/train.py [--ids 300] [--steps 15] [--rounds 3] [--device cpu] [--workers 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import SiglipConfig, SiglipModel, XLMRobertaConfig, XLMRobertaModel

ROOT = Path(__file__).resolve().parents[1]

from person.data.records import load_records
from person.demo.synthetic import write_dataset
from person.demo.teacher import DEMO_TEACHER
from person.models.flops import count_macs
from person.models.students import create_image_student, create_text_student, image_students, text_students
from person.teacher.extract import extract
from person.teacher.hf import load_teacher
from person.train.options import TrainOptions
from person.train.trainer import Trainer

CAPTION_CHARS = 110  # a typical English caption of the demo set, in characters


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def throughput(args: argparse.Namespace, work: Path) -> list[str]:
    json_path = write_dataset(work / "data", args.ids, 4, seed=3, fmt="synthpedes")
    records = load_records(json_path)
    teacher = load_teacher(DEMO_TEACHER, device=args.device)
    store = extract(records, teacher, work / "store.h5", workers=args.workers).store
    opts = TrainOptions(data=str(json_path), embedding_path=str(store), backbone=args.backbone,
                        tbackbone=args.tbackbone, text_width=args.text_width, text_stride=args.text_stride,
                        image_size=args.image_size,
                        p=args.p, k=args.k, num_workers=args.workers, device=args.device, max_iters=10 ** 6,
                        eval_every=0, log_dir=str(work / "logs"))
    trainer = Trainer(opts)
    layout = Trainer(dataclasses.replace(opts, channels_last=True))  # the same students, other memory layout
    batches = iter(trainer.loader())
    for _ in range(3):  # warm-up: workers started, kernels chosen
        warm = next(batches)
        trainer.train_step(warm)
        layout.train_step(warm)

    def steps_per_s(t: Trainer, held: list) -> float:
        start = time.perf_counter()
        for b in held:
            t.train_step(b)
        return len(held) / (time.perf_counter() - start)

    loaded, cached, channels_last = [], [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(next(batches))
        loaded.append(args.steps / (time.perf_counter() - start))
        held = [next(batches) for _ in range(args.steps)]
        cached.append(steps_per_s(trainer, held))
        channels_last.append(steps_per_s(layout, held))
    real, mem, last = (statistics.median(x) for x in (loaded, cached, channels_last))
    batch = args.p * args.k
    return [
        f"{args.backbone} + {args.tbackbone} (width {args.text_width}, stride {args.text_stride}) at {args.image_size}, "
        f"batch {batch} ({args.p} ids x {args.k}), {args.workers} loader workers, device {args.device}; "
        f"{args.ids} ids x 4 images; median of {args.rounds} rounds of {args.steps} steps.",
        "",
        "| feed | steps/s | images/s | vs in memory |",
        "|---|---|---|---|",
        f"| batches already in memory (reference) | {mem:.2f} | {mem * batch:.0f} | 1.00 |",
        f"| real loader (decode, augment, store, captions) | {real:.2f} | {real * batch:.0f} | {real / mem:.2f} |",
        f"| in memory, `--channels_last` | {last:.2f} | {last * batch:.0f} | {last / mem:.2f} |",
    ]


def _meta(build):
    with torch.device("meta"):
        return build()


def sizes() -> list[str]:
    rows = ["| model | input | parameters | MACs |", "|---|---|---|---|"]

    def row(name: str, model: torch.nn.Module, what: str, *inputs: torch.Tensor) -> None:
        params = sum(p.numel() for p in model.parameters())
        rows.append(f"| {name} | {what} | {params / 1e6:.2f}M | {count_macs(model, *inputs) / 1e9:.3f}G |")

    for name in image_students():
        for h, w in ((224, 112), (128, 64)):
            row(name, create_image_student(name, 1152, (h, w)), f"{h}x{w}, D=1152", torch.zeros(1, 3, h, w))
    chars, mask = torch.zeros(1, CAPTION_CHARS, 4, dtype=torch.uint8), torch.ones(1, CAPTION_CHARS, dtype=torch.bool)
    for name in text_students():
        for width in (256, 128):
            row(name, create_text_student(name, 1152, width=width), f"{CAPTION_CHARS} chars, E={width}, D=1152",
                chars, mask)
    if (DEMO_TEACHER / "config.json").exists():
        demo = load_teacher(DEMO_TEACHER, device="cpu")
        size = demo.image_processor.size
        h, w = size.get("height", 224), size.get("width", 224)
        row("demo teacher, vision", demo.model.vision_model, f"{h}x{w}", torch.zeros(1, 3, h, w))
        row("demo teacher, text", demo.model.text_model, f"{demo.text_max_length} tokens",
            torch.zeros(1, demo.text_max_length, dtype=torch.long))
    so400m = _meta(lambda: SiglipModel(SiglipConfig(
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                           image_size=512, patch_size=16),
        text_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                         vocab_size=256000, max_position_embeddings=64))))
    row("SigLIP2 so400m/16-512, vision", so400m.vision_model, "512x512", torch.empty(1, 3, 512, 512, device="meta"))
    row("SigLIP2 so400m/16-512, text", so400m.text_model, "64 tokens",
        torch.zeros(1, 64, dtype=torch.long, device="meta"))
    mexma = _meta(lambda: XLMRobertaModel(XLMRobertaConfig(hidden_size=1024, num_hidden_layers=24,
                                                           num_attention_heads=16, intermediate_size=4096,
                                                           vocab_size=250002, max_position_embeddings=514),
                                          add_pooling_layer=False))
    row("MEXMA text tower (XLM-R large)", mexma, "128 tokens", torch.ones(1, 128, dtype=torch.long, device="meta"))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ids", type=int, default=300, help="identities of the drawn set (x 4 images)")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backbone", default="backbone.mf3.ANet2")
    p.add_argument("--tbackbone", default="tbackbone.char.L3")
    p.add_argument("--text-width", type=int, default=256)
    p.add_argument("--text-stride", type=int, default=2)
    p.add_argument("--image-size", default="224x112")
    p.add_argument("--p", type=int, default=32)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--sizes-only", action="store_true", help="skip the throughput part")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    machine = f"{cpu_name()}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"
    out = [f"### Training ({machine})", ""]
    if not args.sizes_only:
        with tempfile.TemporaryDirectory() as tmp:
            out += throughput(args, Path(tmp)) + [""]
    out += ["Students and teachers (MACs of convolution and Linear layers for one sample, text students at "
            "their default stem stride 2; attention score products not counted):", ""] + sizes()
    print("\n".join(out))


if __name__ == "__main__":
    main()
