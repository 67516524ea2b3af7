"""Running the web app: `serve` builds it over a gallery and runs uvicorn, in this process or in worker processes.

    serve(Path("gallery/"), SearcherOptions(text_model="export/"))            # http://127.0.0.1:5005/
    serve(gallery, options, host="0.0.0.0", port=8080, workers=4)             # beyond this machine, 4 processes

Why FastAPI + uvicorn: requests are validated from type hints, with errors that name the field, and the OpenAPI
description comes for free (what Immich's machine-learning service also runs on); uvicorn is a plain ASGI server
that runs the (synchronous) search handlers in a thread pool, and onnxruntime and FAISS release the GIL, so
concurrent queries overlap. One process holds the gallery memory-mapped; `workers` > 1 runs that many on one port
(uvicorn's process manager) for a machine with cores to spare: each imports this module and calls `worker_app`,
which reads the configuration `serve` left as JSON in CONFIG_VARIABLE.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import faiss
import uvicorn
from fastapi import FastAPI

from person.gallery.search_options import SearcherOptions
from person.options import from_dict
from person.web.app import create_app

STATIC = Path(__file__).parent / "static"   # the page's files: package data beside this module
LOCAL_NAMES = ["127.0.0.1", "localhost", "::1"]
CONFIG_VARIABLE = "PERSON_SERVE_CONFIG"     # how worker processes get what `serve` was given
WORKER_APP = "person.web.server:worker_app"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_app(gallery: Path, options: SearcherOptions, *, host: str = "127.0.0.1", thumb_cache: Path | None = None,
              allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The app `serve` runs: the Searcher `options` open over `gallery` and the page, answering the Host headers
    `allowed_hosts`, or when None this machine's own names (LOCAL_NAMES) if `host` is on this machine, any otherwise.
    With `options.threads` None each query gets one onnxruntime thread: requests already run in parallel."""
    options.check()
    if options.threads is None:
        options = dataclasses.replace(options, threads=1)
    searcher = options.open(gallery)
    # A server bound to this machine answers only its own names: a page elsewhere cannot reach it by DNS rebinding.
    hosts = allowed_hosts or (LOCAL_NAMES if _loopback(host) else None)
    return create_app(searcher, STATIC, thumb_cache, allowed_hosts=hosts)


def serve(gallery: Path, options: SearcherOptions, *, host: str = "127.0.0.1", port: int = 5005,
          thumb_cache: Path | None = None, allowed_hosts: list[str] | None = None, workers: int = 1,
          access_log: bool = True) -> None:
    """Serve the search page and its API over `gallery` until interrupted, from `workers` processes on one port
    (each maps the gallery and loads the models). The app is built here first, so a bad gallery or model fails
    before any worker starts."""
    if workers < 1:
        raise ValueError(f"workers={workers}: serve from 1 process or more")
    _set_up_process()
    app = build_app(gallery, options, host=host, thumb_cache=thumb_cache, allowed_hosts=allowed_hosts)
    common = dict(host=host, port=port, access_log=access_log, log_level="info")
    if workers == 1:
        uvicorn.run(app, **common)
        return
    # Paths travel as text (an option given as a Path too); each worker builds its own app from this.
    os.environ[CONFIG_VARIABLE] = json.dumps({
        "gallery": gallery, "options": dataclasses.asdict(options), "host": host, "thumb_cache": thumb_cache,
        "allowed_hosts": allowed_hosts}, default=str)
    uvicorn.run(WORKER_APP, factory=True, workers=workers, **common)


def worker_app() -> FastAPI:
    """The app in a worker process (uvicorn imports this module there and calls this factory)."""
    _set_up_process()
    config = json.loads(os.environ[CONFIG_VARIABLE])
    thumb_cache = config["thumb_cache"]
    return build_app(Path(config["gallery"]), from_dict(SearcherOptions, config["options"]), host=config["host"],
                     thumb_cache=None if thumb_cache is None else Path(thumb_cache),
                     allowed_hosts=config["allowed_hosts"])


def _set_up_process() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Concurrent requests are the parallelism: FAISS's OpenMP team per single-query scan only contends with them
    # (measured on 2 shared cores: 11.8 ms a 100k-row scan with 2 threads, 0.45 ms with 1).
    faiss.omp_set_num_threads(1)
