"""The built-in demo, end to end on a CPU: synthetic pedestrians -> the shipped demo teacher's feature
store -> the teacher's report -> distilled students -> the students' report -> their ONNX export (fp32 and
int8) and its report -> the held-out images enrolled (student and teacher galleries) and searched by text.

    python demo.py [--workdir demo]
    python demo.py --adapt [--workdir demo]   # then: the students adapted to the built-in second site (README)

Each step writes under the workdir and is skipped when its output is already there (a killed training
run is resumed), so a second run only repeats what is missing. Reports: WORKDIR/reports/teacher.json,
student.json, export_fp32.json / export_int8.json (the metrics keys of evaluation_labels.py /
evaluation_model.py) and search.json; the export in WORKDIR/export/, the galleries in WORKDIR/galleries/.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from person.demo.adapt import run_adapt
from person.demo.pipeline import run_demo
from person.demo.recipe import DEMO_IDS
from person.demo.search_step import session_account
from person.demo.teacher import DEMO_TEACHER
from person.gallery.search_options import SearcherOptions
from person.options import run_command
from person.web.server import serve


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("demo"), help="where every step writes (default: demo/)")
    p.add_argument("--ids", type=int, default=DEMO_IDS, help="identities drawn (x 4 images)")
    p.add_argument("--teacher", type=Path, default=DEMO_TEACHER, help="teacher directory (default: the shipped one)")
    p.add_argument("--max-iters", type=int, default=None, help="training iterations (default: the demo recipe's; "
                                                               "with --adapt, the adaptation's)")
    p.add_argument("--adapt", action="store_true", help="adapt the demo's students to the built-in second site from "
                                                        "its unlabeled crops and captions (not part of the demo)")
    p.add_argument("--serve", action="store_true", help="then serve the search page on the student gallery "
                                                        "(search/app.py; stop it with Ctrl-C)")
    p.add_argument("--port", type=int, default=5005, help="with --serve: the port on 127.0.0.1")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.adapt:
        if args.serve:
            p.error("--serve goes with the demo, not --adapt")
        return run_adapt(args.workdir, args.ids, args.teacher, args.max_iters)
    result = run_demo(args.workdir, args.ids, args.teacher, args.max_iters)
    if args.serve:
        gallery = args.workdir / "galleries" / "student"
        name, password, token = session_account(gallery)
        print(f"\n[serve] the search page: http://127.0.0.1:{args.port}/  (the held-out images, enrolled by the "
              f"student; queries through its text model; Ctrl-C stops it)\n[serve] sign in as {name}, password "
              f"{password} (made for this session); the API takes Authorization: Bearer {token}", flush=True)
        export_dir = str(result["export_dir"])
        serve(gallery, SearcherOptions(text_model=export_dir, image_model=export_dir),
              port=args.port)
    return result


def run() -> None:
    """`person-demo`, and the script at the top of the repository."""
    run_command(main)
