"""Record the thresholds at FAR 1e-2 / 1e-3 / 1e-4 measured on your own labelled data, since a threshold measured
on another domain (the card's: the training set's held-out identities) may not hold at your cameras.

    python tools/calibrate.py --embedding_path SITE_STORE --model EXPORT_DIR --out GALLERY/calibration.json
    person-calibrate --embedding_path SITE_STORE --out teacher.json      # the teacher's own pair only

SITE_STORE is the teacher's feature store of your labelled site (tools/extract_label.py; --data and --image_root
when the dataset moved). Its `--split` (default eval) gives the genuine and impostor pairs. With --model, each
variant the export holds is measured through onnxruntime (text-to-image for each pair its students take part in,
image-to-image); the teacher's own pair always. A FAR whose threshold rests on fewer than 10 / FAR impostor pairs is
recorded as refused, with the count. The export's card is never rewritten (galleries pin its sha256): the file is
separate. Searches use it with --calibration FILE, or for every search of a gallery when saved as
GALLERY/calibration.json; it applies to the export it names (card sha256) and the teacher.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from person.data.records import DatasetOptions
from person.eval.operating_points import format_document, write_calibration
from person.export.evaluation import calibrate
from person.options import add_options, from_namespace, run_command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedding_path", "--embedding-path", type=Path, required=True,
                   help="the teacher's feature store of your labelled data (.h5 / .zarr)")
    p.add_argument("--model", type=Path, default=None, help="an export directory whose students to calibrate")
    p.add_argument("--split", default="eval", help="the split whose pairs are measured (default eval)")
    p.add_argument("--out", type=Path, required=True, help="the calibration file to write (JSON)")
    add_options(p, DatasetOptions)  # --data / --image_root when the dataset moved, image caps
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    document, export = calibrate(args.embedding_path, from_namespace(DatasetOptions, args), args.model, args.split)
    print(format_document(document))
    print(f"\nwrote {write_calibration(args.out, document, export)}")
    return document


def run() -> None:
    """`person-calibrate`, and the script at the top of the repository."""
    run_command(main)
