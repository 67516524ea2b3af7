"""The built-in demo, end to end on a CPU: synthetic pedestrians -> (more steps as they land).

    python demo.py [--workdir demo]

Each step writes under the workdir and is skipped when its output is already there, so a second run
only repeats what is missing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from person.records import load_records  # noqa: E402
from person.synthetic.writer import JSON_NAME, write_dataset  # noqa: E402

DEMO_IDS, DEMO_IMAGES_PER_ID, DEMO_SEED = 1000, 4, 0


def step_data(workdir: Path) -> Path:
    """The demo set: 1000 identities x 4 images in SYNTH-PEDES format, 20% Chinese captions."""
    json_path = workdir / "data" / JSON_NAME["synthpedes"]
    if json_path.is_file():
        print(f"[data] {json_path} is there; skipped")
    else:
        start = time.perf_counter()
        write_dataset(workdir / "data", DEMO_IDS, DEMO_IMAGES_PER_ID, DEMO_SEED, "synthpedes")
        print(f"[data] drew {DEMO_IDS} x {DEMO_IMAGES_PER_ID} pedestrians in {time.perf_counter() - start:.1f} s")
    records = load_records(json_path)
    counts = records.split_counts()
    print(f"[data] {json_path}: {len(records)} images of {records.num_ids} identities; " +
          "; ".join(f"{split}: {c['ids']} ids, {c['images']} images, {c['captions']} captions"
                    for split, c in counts.items()))
    return json_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("demo"), help="where every step writes (default: demo/)")
    args = p.parse_args(argv)
    step_data(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
