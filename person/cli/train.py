"""Train the students against a teacher's feature store, on one process or under torchrun.

    python main.py --data DATASET.json --embedding_path STORE --backbone backbone.mf3.ANet2 \\
        --tbackbone tbackbone.char.L3 [--max_iters N] [--log_dir logs]
    torchrun --nproc_per_node=N main.py ...           # NCCL on GPUs, gloo on CPU
    person-train --resume logs/expModel-.../RUN       # continue a run where it stopped

Ctrl-C (or SIGTERM) finishes the step, writes a checkpoint and prints the --resume command; a second one stops at
once.

Checkpoints go to LOG_DIR/expModel-<backbone>-<H>x<W>-<dim>/<run>/<iter>.pt (and best.pt); evaluate one
with `python evaluation_model.py CKPT`.
"""
from __future__ import annotations

import argparse
import logging
import sys

from person.distributed import cleanup
from person.options import add_options, from_namespace, given_options, run_command
from person.train.options import TrainOptions
from person.train.trainer import TrainingStopped, TrainResult, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, TrainOptions)
    return p


def main(argv: list[str] | None = None) -> TrainResult:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    opts = from_namespace(TrainOptions, parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        result = train(opts, given_options(parser, argv))
    except TrainingStopped as stop:
        stop.again = ["--resume", str(stop.run_dir)]  # what continues the run (not the same arguments again)
        raise
    finally:
        cleanup()
    if result.final is not None:
        best = result.best or {}
        print(f"run {result.run_dir}: {result.iteration} iterations, last checkpoint {result.last_checkpoint}; "
              f"best EER {100 * best.get('eer', float('nan')):.4f}% at iteration {best.get('iteration')}")
    return result


def run() -> None:
    """`person-train`, and the script at the top of the repository."""
    run_command(main)
