"""Run under torchrun by tests/test_trainer.py: three training steps on each rank, then a report of whether
the ranks hold identical parameters and one shared memory, and which unlabeled rows each rank drew.

    torchrun --nproc_per_node=2 tests/train/ddp_steps.py REPORT.json <main.py options>
"""
import faulthandler
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from person.cli import train as main_cmd
from person.distributed import cleanup
from person.train.options import TrainOptions
from person.train.trainer import Trainer


def gathered(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return out


def main() -> None:
    faulthandler.enable()  # a native abort prints where each thread was
    report, argv = Path(sys.argv[1]), sys.argv[2:]
    trainer = Trainer(TrainOptions(**vars(main_cmd.build_parser().parse_args(argv))))
    batches = iter(trainer.loader())
    steps = []
    for _ in range(3):
        batch = next(batches)
        assert trainer.train_step(batch) is not None
        head = list(trainer.head.parameters()) if trainer.head is not None else []  # the identity classifier's
        params = torch.cat([p.detach().flatten() for p in [*trainer.students.parameters(), *head]])
        pids = torch.from_numpy(trainer.records.pids[batch["rows"].numpy()])
        all_params, all_pids = gathered(params), gathered(pids)
        picked = torch.tensor(sorted(batch["u_rows"].tolist() + [row for row, _ in batch["u_skipped"]]),
                              dtype=torch.long)
        steps.append({"same_parameters": all(torch.equal(all_params[0], p) for p in all_params),
                      "batches_differ": not set(all_pids[0].tolist()) & set(all_pids[1].tolist()),
                      "rank_pids": [p.tolist() for p in all_pids],
                      "unlabeled_rows": [p.tolist() for p in gathered(picked)],
                      "memory_labels": trainer.memory.image.get()[1].tolist() if trainer.memory else [],
                      "memory_filled": trainer.memory.image.filled if trainer.memory else 0})
    if dist.get_rank() == 0:
        report.write_text(json.dumps(steps))
    del trainer, batches  # DDP's reducer goes while the process group is alive (person.distributed.cleanup)
    cleanup()


if __name__ == "__main__":
    main()
