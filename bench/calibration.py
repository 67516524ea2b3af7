"""Do the card's thresholds hold elsewhere? The FAR each threshold actually gives on sets other than the one it was
measured on, against its nominal rate.

The demo students (`--checkpoint`, a run of the demo recipe) are exported with their int8 variant: the card's
operating points are measured on the demo set's held-out identities, as every export measures them; the teacher's
come from its report on the same split. Then every pair, direction and variant is scored on two other sets, all of
their images and captions (none of which the students trained on): another draw of the demo set (seed 1) and the
frozen second site (bench/site.py's layout, so `--workdir` may be its). A row says whether the measured FAR is within
2x of nominal, or by how much it misses. Each set and store is made once in WORKDIR and reused.

Usage: python bench/calibration.py --checkpoint CKPT [--workdir calibration]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from person.data.records import DatasetOptions, load_records
from person.demo.prepare import teacher_store
from person.demo.recipe import DEMO_IDS, DEMO_IMAGES_PER_ID
from person.demo.site_data import second_site
from person.demo.synthetic import write_dataset
from person.demo.synthetic.writer import JSON_NAME
from person.demo.teacher import DEMO_TEACHER
from person.eval import operating_points as op
from person.eval.evaluate import SOURCES
from person.export.evaluation import export_embeddings, variants_of
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
from person.runtime import read_card
from person.teacher.store import open_with_records

OTHER_SEED = 1
SPLITS = ("train", "val", "test")  # every image of a set: the students saw none of the other sets'


def other_seed(folder: Path) -> Path:
    """Another draw of the demo set (seed 1) under `folder`; its JSON."""
    json_path = folder / JSON_NAME["synthpedes"]
    if not json_path.is_file():
        write_dataset(folder, DEMO_IDS, DEMO_IMAGES_PER_ID, OTHER_SEED, "synthpedes")
    return json_path


def set_embeddings(export: Path, variants: list[str], store_path: Path) -> dict:
    """{variant: (cases, {(model, "image" / "text"): embeddings}, image pids, caption pids)} of every split."""
    out = {}
    store, records = open_with_records(store_path, in_memory=False)
    with store:
        splits = [s for s in SPLITS if len(store.split_rows(s))]
        for variant in variants:
            parts = [export_embeddings(export, variant, store, records, DatasetOptions().image_limits(), s)
                     for s in splits]
            emb = {key: np.concatenate([p[2][key] for p in parts]) for key in parts[0][2]}
            out[variant] = (parts[0][0], emb, np.concatenate([p[1].pids for p in parts]),
                            np.concatenate([p[1].caption_pids for p in parts]))
    return out


def rows(document: dict, sets: dict[str, dict]) -> list[list[str]]:
    """One table row per direction, pair, variant and FAR that holds a threshold."""
    table = []
    for direction in op.DIRECTIONS:
        for pair, variants in document[direction].items():
            for variant, entry in variants.items():
                held = {f: p["threshold"] for f, p in entry["at_far"].items() if "refused" not in p}
                cells = {f: [direction, pair, variant, f, "refused: {:,} impostor pairs".format(entry["impostor"])
                             if f not in held else "{} ({:,} / {:,})".format(
                                 "accepts nothing" if held[f] is None else f"{held[f]:.4f}", p["false_accepts"],
                                 entry["impostor"])] for f, p in entry["at_far"].items()}
                for name, by_variant in sets.items():
                    _, emb, pid, cpid = by_variant[variant if variant in by_variant else "fp32"]
                    images, texts = SOURCES[pair] if direction == "text_to_image" else (pair, pair)
                    img = emb[images, "image"]
                    query, qpid = (emb[texts, "text"], cpid) if direction == "text_to_image" else (img, pid)
                    counts, n = op.false_accepts(img, pid, query, qpid, list(held.values()),
                                                 same_set=direction == "image_to_image")
                    for (far, _), fa in zip(held.items(), counts):
                        ratio = (fa / n) / float(far)
                        verdict = "within 2x" if 0.5 <= ratio <= 2 else f"misses: {ratio:.2f}x nominal"
                        cells[far].append(f"{fa / n:.2e} ({fa:,} / {n:,}), {verdict}")
                    for far in entry["at_far"]:
                        if far not in held:
                            cells[far].append("-")
                table += list(cells.values())
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="the demo students (a run of the demo recipe)")
    p.add_argument("--workdir", type=Path, default=Path("calibration"), help="the export, the sets and their stores")
    args = p.parse_args()
    export = args.workdir / "export"
    if not export.is_dir():
        export_checkpoint(args.checkpoint, export, ExportOptions(int8=True))
    card = read_card(export)
    document = card["operating_points"]
    demo_store = Path(card["checkpoint"]["embedding_path"])
    teacher = op.teacher_document(demo_store, document["split"])
    for direction in op.DIRECTIONS:
        document[direction].update(teacher[direction])
    sets = {}
    for name, json_path in ((f"demo set, seed {OTHER_SEED}", other_seed(args.workdir / "seed1")),
                            ("second site", second_site(args.workdir / "second"))):
        store = teacher_store(json_path.parent / "embeddings", json_path, DEMO_TEACHER)
        sets[name] = set_embeddings(export, variants_of(card), store)
        print(f"[calibration] {name}: {len(load_records(json_path))} images -> {store}")
    print(f"\nThresholds from the demo set's held-out split ({document['store']['path']}); the FAR each gives on "
          f"every image and caption of the other sets (false accepts / impostor pairs):\n")
    print("| direction | pair | variant | FAR | threshold (false accepts / impostors at home) | " +
          " | ".join(sets) + " |")
    print("|---" * (5 + len(sets)) + "|")
    for row in rows(document, sets):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
