"""Loading a SYNTH-PEDES-sized JSON: seconds and peak memory of `load_records` against plain `json.load`.

Writes a synthetic N-record synthpedes-dataset.json (default 1M records, 3 captions + a prompt caption
each, like the real file), then loads it in fresh subprocesses so each peak RSS is its own:
  - reference: `json.load` (holds the raw text while parsing, then every record as a dict)
  - ours: `person.data.records.load_records` (ijson stream into column-wise records)
Usage: python bench/records.py [--records 1000000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


CHILD = {
    "json.load": "import json; recs = json.load(open(PATH, encoding='utf-8')); n = len(recs)",
    "load_records": "from person.data.records import load_records; n = len(load_records(PATH))",
}


def write_json(path: Path, n: int) -> None:
    colours = ["red", "blue", "black", "white", "grey", "green"]
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for i in range(n):
            c1, c2 = colours[i % 6], colours[(i // 6) % 6]
            rec = {"id": i // 15, "file_path": f"Part{i // 1_000_000 + 1}/{i // 15}/{i % 15}.jpg",
                   "attributes": [f"man,{c1} hair,short hair,{c2} shirt,short sleeve,black trousers,unknown"],
                   "captions": [f"A man with short {c1} hair wearing a {c2} short-sleeved shirt and black trousers.",
                                f"The person has {c1} hair, a {c2} shirt and dark trousers; he carries nothing.",
                                f"He wears a {c2} shirt with short sleeves and black trousers."],
                   "prompt_caption": [f"The man has short {c1} hair, wears a {c2} short-sleeved shirt and black "
                                      f"trousers."]}
            f.write(("," if i else "") + json.dumps(rec))
        f.write("]")


def measure(name: str, path: Path) -> tuple[float, float]:
    code = (f"import resource, time; PATH = {str(path)!r}; "
            f"t = time.perf_counter(); {CHILD[name]}; dt = time.perf_counter() - t; "
            f"print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, n)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the JSON here and keep it (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "synthpedes-dataset.json"
        t = time.perf_counter()
        write_json(path, args.records)
        size_mb = os.path.getsize(path) / 2**20
        print(f"wrote {args.records:,} records ({size_mb:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        ref_s, ref_mb = measure("json.load", path)
        our_s, our_mb = measure("load_records", path)
    print(f"\n| {args.records:,} records, {size_mb:.0f} MiB JSON | seconds | peak RSS MiB |")
    print("|---|---|---|")
    print(f"| `json.load` (reference) | {ref_s:.1f} | {ref_mb:.0f} |")
    print(f"| `load_records` (ours: stream + validate + normalise + split) | {our_s:.1f} | {our_mb:.0f} |")
    print(f"| ratio ours / reference | {our_s / ref_s:.2f}x | {our_mb / ref_mb:.2f}x |")


if __name__ == "__main__":
    main()
