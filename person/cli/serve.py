"""The search web page and its HTTP API over a gallery: free text in any language, or a photo, finds the people.

    python search/app.py --gallery gallery/ --text-model EXPORT_DIR [--image-model EXPORT_DIR]
    python search/app.py --gallery gallery/ --teacher ID_OR_DIR --host 0.0.0.0 --port 8080   # beyond this machine

Then open http://127.0.0.1:5005/. The API: GET /api/search?q=...&k=10, POST /api/search {"queries": [...], "k": 10,
"where": ["camera=3"], "group_by": "track"}, POST /api/search/image (multipart field "image"),
GET /api/search/similar/{id}, GET /api/gallery, GET /api/health; its description at /openapi.json. Results carry
row ids: /images/{id} and /thumbs/{id} serve the pictures. Images enrolled while it runs (search/enroll.py) are
found from the next request on. It listens on 127.0.0.1 (this machine only) unless --host says otherwise.

Why FastAPI + uvicorn: requests are validated from type hints, with errors that name the field, and the OpenAPI
description comes for free (what Immich's machine-learning service also runs on); uvicorn is a plain ASGI server
that runs the (synchronous) search handlers in a thread pool, and onnxruntime and FAISS release the GIL, so
concurrent queries overlap. One process holds the gallery memory-mapped; --workers N runs N of them on one port
(uvicorn's process manager) for a machine with cores to spare. The library part is person.web.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from pathlib import Path

import faiss
import uvicorn
from fastapi import FastAPI

from person.gallery.manifest import GalleryError
from person.gallery.search_options import SearcherOptions
from person.options import add_options, from_namespace, number, run_command
from person.web.app import create_app

STATIC = Path(__file__).resolve().parents[1] / "web" / "static"
LOCAL_NAMES = ["127.0.0.1", "localhost", "::1"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=Path, required=True, help="a gallery folder (search/enroll.py)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=number(int, at_least=1, at_most=65535), default=5005)
    add_options(p, SearcherOptions)
    p.add_argument("--thumb-cache", type=Path, default=None, help="thumbnail folder (default ~/.cache/person/thumbs)")
    p.add_argument("--allowed-host", action="append", default=None,
                   help="a Host header to answer (repeatable); default: 127.0.0.1 and localhost when listening on "
                        "this machine only, any otherwise")
    p.add_argument("--workers", type=number(int, at_least=1), default=1,
                   help="server processes (each maps the gallery and loads the models; for machines with spare cores)")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True, help="log every request")
    args = p.parse_args(argv)
    try:
        from_namespace(SearcherOptions, args).check()
    except GalleryError as e:
        p.error(str(e))
    if args.threads is None:
        args.threads = 1  # requests already run in parallel: one onnxruntime thread each
    return args


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_app(args: argparse.Namespace) -> FastAPI:
    """The app the arguments describe (what main serves; tests call it directly)."""
    searcher = from_namespace(SearcherOptions, args).open(args.gallery)
    # A server bound to this machine answers only its own names: a page elsewhere cannot reach it by DNS rebinding.
    hosts = args.allowed_host or (LOCAL_NAMES if _loopback(args.host) else None)
    return create_app(searcher, STATIC, args.thumb_cache, allowed_hosts=hosts)


ARGV_VARIABLE = "PERSON_SEARCH_APP_ARGV"  # how --workers processes get the command line


def worker_app() -> FastAPI:
    """The app in a --workers process (uvicorn imports this module there and calls this)."""
    _set_up_process()
    return build_app(parse_args(json.loads(os.environ[ARGV_VARIABLE])))


def _set_up_process() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Concurrent requests are the parallelism: FAISS's OpenMP team per single-query scan only contends with them
    # (measured on 2 shared cores: 11.8 ms a 100k-row scan with 2 threads, 0.45 ms with 1).
    faiss.omp_set_num_threads(1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _set_up_process()
    common = dict(host=args.host, port=args.port, access_log=args.access_log, log_level="info")
    if args.workers == 1:
        uvicorn.run(build_app(args), **common)
        return
    build_app(args)  # fail here, with the error, before any worker starts
    os.environ[ARGV_VARIABLE] = json.dumps(sys.argv[1:] if argv is None else argv)
    uvicorn.run("person.cli.serve:worker_app", factory=True, workers=args.workers, **common)



def run() -> None:
    """`person-serve`, and the script at the top of the repository."""
    run_command(main)
