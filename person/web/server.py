"""Running the web app: `serve` builds it over a gallery and runs uvicorn, in this process or in worker processes.

    serve(Path("gallery/"), SearcherOptions(text_model="export/"))            # http://127.0.0.1:5005/
    serve(gallery, options, host="0.0.0.0", port=8080, workers=4)             # beyond this machine, 4 processes
    serve(gallery, options, host="0.0.0.0", ssl_certfile="cert.pem", ssl_keyfile="key.pem")   # over TLS

Why FastAPI + uvicorn: requests are validated from type hints, with errors that name the field, and the OpenAPI
description comes for free (what Immich's machine-learning service also runs on); uvicorn is a plain ASGI server
that runs the (synchronous) handlers in a thread pool, and onnxruntime, FAISS and torch release the GIL, so
concurrent queries overlap. Text searches are gathered instead: those in flight together are one batch on one worker
thread (person.web.batching, `batching`: one text-model call, one scan of the gallery), awaited by their routes. One
process holds the gallery memory-mapped; `workers` > 1 runs that many on one port (uvicorn's process manager) for a
machine with cores to spare: each imports this module and calls `worker_app`, which reads the configuration `serve`
left as JSON in CONFIG_VARIABLE. Sessions are signed cookies (person.web.auth), so the workers share them with
nothing between them.

A server that others can reach over a gallery with no account is refused (anyone on the network could search it)
unless `insecure_no_auth` says so: one bound beyond loopback, and one bound to loopback behind a proxy too (given
`forwarded_allow_ips`, or an `allowed_hosts` name other than this machine's own), which whoever reaches the proxy
reaches (`local_only`). uvicorn terminates TLS (`ssl_certfile`, `ssl_keyfile`); behind a TLS proxy,
`forwarded_allow_ips` names the proxies whose X-Forwarded-For / -Proto uvicorn believes: the client's address (the
sign-in rate limit, the audit log) and https (Secure cookies) then come from them. Without it no forwarded header
is believed, not even from loopback (uvicorn's own default trusts 127.0.0.1).

Every process opens the gallery's audit log at startup (`audit`, person.web.audited): each search, view, sign-in
and erasure is recorded before it is answered, on a server open with no accounts too (user null); a log that
cannot be opened (its key missing while it has lines) stops the server before it listens, with the message.
"""
from __future__ import annotations

import dataclasses
import gc
import ipaddress
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import faiss
import torch
import uvicorn
from fastapi import FastAPI

from person.errors import PersonError
from person.gallery.search_options import SearcherOptions
from person.options import from_dict
from person.web.accounts import Accounts
from person.web.app import create_app
from person.web.audited import AuditOptions
from person.web.auth import AuthOptions
from person.web.batching import BatchOptions

log = logging.getLogger(__name__)
# uvicorn's supervisor kills a worker that does not answer its ping within this many seconds (its default, 5, is
# shorter than a worker importing torch and loading the models on a loaded machine takes to let a thread run: the
# test suite saw a worker killed and restarted under load, and a request to it dropped).
WORKER_HEALTHCHECK_S = 60

STATIC = Path(__file__).parent / "static"   # the page's files: package data beside this module
LOCAL_NAMES = ["127.0.0.1", "localhost", "::1"]
CONFIG_VARIABLE = "PERSON_SERVE_CONFIG"     # how worker processes get what `serve` was given
WORKER_APP = "person.web.server:worker_app"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _local_name(name: str) -> bool:
    name = name.strip().lower()
    return name in LOCAL_NAMES or _loopback(name.removeprefix("[").removesuffix("]"))


def beyond_this_machine(host: str, allowed_hosts: Sequence[str] | None = None,
                        forwarded_allow_ips: str | None = None) -> str | None:
    """Why a server with these settings answers others than this machine's users, or None when it does not: bound
    beyond loopback, or bound to loopback behind a proxy (one whose forwarded headers are believed, or a Host name
    other than this machine's own to answer: a proxy passes on requests from the network)."""
    if not _loopback(host):
        return f"--host {host} listens beyond this machine"
    if forwarded_allow_ips is not None:
        return (f"--forwarded-allow-ips {forwarded_allow_ips} says it is behind a proxy, which passes on requests "
                f"from the network (--host {host} only listens on this machine)")
    others = [h for h in allowed_hosts or () if not _local_name(h)]
    if others:
        return (f"--allowed-host {others[0]} is a name beyond this machine: it is behind a proxy, which passes on "
                f"requests from the network (--host {host} only listens on this machine)")
    return None


def local_only(host: str, allowed_hosts: Sequence[str] | None = None, forwarded_allow_ips: str | None = None) -> bool:
    """Whether only this machine's users reach a server with these settings (beyond_this_machine says why not)."""
    return beyond_this_machine(host, allowed_hosts, forwarded_allow_ips) is None


def refuse_open_network(gallery: Path, host: str, insecure_no_auth: bool, *,
                        allowed_hosts: Sequence[str] | None = None, forwarded_allow_ips: str | None = None) -> None:
    """PersonError when the server reaches beyond this machine (bound beyond loopback, or behind a proxy:
    beyond_this_machine), the gallery has no account and nobody said --insecure-no-auth: the message says why, and
    how to add one."""
    why = beyond_this_machine(host, allowed_hosts, forwarded_allow_ips)
    if why is None or insecure_no_auth or Accounts(gallery).has_accounts():
        return
    raise PersonError(f"{gallery} has no account, and {why}: anyone on the network could search it. Add an account "
                      f"first: search/users.py --gallery {gallery} add NAME --role admin (it asks for the password), "
                      f"then sign in on the page; or serve it open anyway with --insecure-no-auth")


def build_app(gallery: Path, options: SearcherOptions, *, host: str = "127.0.0.1", thumb_cache: Path | None = None,
              allowed_hosts: Sequence[str] | None = None, insecure_no_auth: bool = False,
              audit: AuditOptions = AuditOptions(), forwarded_allow_ips: str | None = None,
              batching: BatchOptions = BatchOptions()) -> FastAPI:
    """The app `serve` runs: the Searcher `options` open over `gallery` and the page, answering the Host headers
    `allowed_hosts`, or when None this machine's own names (LOCAL_NAMES) if `host` is on this machine, any otherwise.
    A gallery with no account is open only to this machine (loopback, and no proxy before it: `forwarded_allow_ips`
    or an `allowed_hosts` name of another machine says there is one), or with `insecure_no_auth` (refuse_open_network).
    Requests are recorded in the gallery's audit log as `audit` opens it (AuditError when it cannot be); concurrent
    text searches are gathered into batches as `batching` says."""
    refuse_open_network(gallery, host, insecure_no_auth, allowed_hosts=allowed_hosts,
                        forwarded_allow_ips=forwarded_allow_ips)
    options.check()
    log_of_requests = audit.open(gallery)  # before the models load: a log that cannot be used stops it at once
    searcher = options.open(gallery)
    # A server bound to this machine answers only its own names: a page elsewhere cannot reach it by DNS rebinding.
    hosts = allowed_hosts or (LOCAL_NAMES if _loopback(host) else None)
    auth = AuthOptions(open_without_accounts=local_only(host, allowed_hosts, forwarded_allow_ips) or insecure_no_auth,
                       insecure=insecure_no_auth)
    return create_app(searcher, STATIC, thumb_cache, allowed_hosts=hosts, auth=auth, audit=log_of_requests,
                      milvus=options.milvus, milvus_collection=options.milvus_collection, batching=batching)


def serve(gallery: Path, options: SearcherOptions, *, host: str = "127.0.0.1", port: int = 5005,
          thumb_cache: Path | None = None, allowed_hosts: list[str] | None = None, workers: int = 1,
          access_log: bool = True, insecure_no_auth: bool = False, ssl_certfile: Path | None = None,
          ssl_keyfile: Path | None = None, forwarded_allow_ips: str | None = None,
          audit: AuditOptions = AuditOptions(), batching: BatchOptions = BatchOptions()) -> None:
    """Serve the search page and its API over `gallery` until interrupted, from `workers` processes on one port
    (each maps the gallery and loads the models). The app is built here first, so a bad gallery or model fails
    before any worker starts; with workers that app is then let go of (its gallery closed): this process only
    supervises them, and a generation it held would keep erased bytes on disk (store.purge waits for its readers)."""
    if workers < 1:
        raise ValueError(f"workers={workers}: serve from 1 process or more")
    _set_up_process()
    app = build_app(gallery, options, host=host, thumb_cache=thumb_cache, allowed_hosts=allowed_hosts,
                    insecure_no_auth=insecure_no_auth, audit=audit, forwarded_allow_ips=forwarded_allow_ips,
                    batching=batching)
    if insecure_no_auth and not Accounts(gallery).has_accounts():
        log.warning("--insecure-no-auth: anyone who reaches %s:%d can search %s", host, port, gallery)
    common = dict(host=host, port=port, access_log=access_log, log_level="info",
                  ssl_certfile=None if ssl_certfile is None else str(ssl_certfile),
                  ssl_keyfile=None if ssl_keyfile is None else str(ssl_keyfile),
                  proxy_headers=forwarded_allow_ips is not None, forwarded_allow_ips=forwarded_allow_ips)
    if workers == 1:
        uvicorn.run(app, **common)
        return
    # Paths travel as text (an option given as a Path too); each worker builds its own app from this.
    os.environ[CONFIG_VARIABLE] = json.dumps({
        "gallery": gallery, "options": dataclasses.asdict(options), "host": host, "thumb_cache": thumb_cache,
        "allowed_hosts": allowed_hosts, "insecure_no_auth": insecure_no_auth, "audit": dataclasses.asdict(audit),
        "forwarded_allow_ips": forwarded_allow_ips, "batching": dataclasses.asdict(batching)}, default=str)
    _let_go(app)
    del app
    gc.collect()  # the models and the mapped features too, not only the lease
    uvicorn.run(WORKER_APP, factory=True, workers=workers, timeout_worker_healthcheck=WORKER_HEALTHCHECK_S, **common)


def worker_app() -> FastAPI:
    """The app in a worker process (uvicorn imports this module there and calls this factory)."""
    _set_up_process()
    config = json.loads(os.environ[CONFIG_VARIABLE])
    thumb_cache = config["thumb_cache"]
    return build_app(Path(config["gallery"]), from_dict(SearcherOptions, config["options"]), host=config["host"],
                     thumb_cache=None if thumb_cache is None else Path(thumb_cache),
                     allowed_hosts=config["allowed_hosts"], insecure_no_auth=config["insecure_no_auth"],
                     audit=from_dict(AuditOptions, config["audit"]),
                     forwarded_allow_ips=config.get("forwarded_allow_ips"),
                     batching=from_dict(BatchOptions, config["batching"]))


def _let_go(app: FastAPI) -> None:
    """Close what the app holds open over its gallery: the lease of the generation it serves (store.Gallery.close),
    so a purge after an erasure is not kept waiting for a process that answers nothing."""
    service = getattr(app.state, "service", None)
    searcher = getattr(service, "searcher", None)
    gallery = getattr(searcher, "gallery", None)
    if gallery is not None:
        gallery.close()


def _set_up_process() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Concurrent requests are the parallelism: FAISS's OpenMP team per single-query scan only contends with them
    # (measured on 2 shared cores: 11.8 ms a 100k-row scan with 2 threads, 0.45 ms with 1). So does torch's for
    # the exact scan's int8 product (person.gallery.exact_scan): its second thread spins beside the event loop and
    # the audit writer, ~0.5 ms of CPU a text search on 2 cores, for no faster answer.
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
