"""Serve the search web page and its HTTP API over a gallery: free text in any language, or a photo, finds the people.

    python search/app.py --gallery gallery/ --text-model EXPORT_DIR [--image-model EXPORT_DIR]
    python search/users.py --gallery gallery/ add ann --role admin    # the first account: from then on, sign in
    person-serve --gallery gallery/ --teacher ID_OR_DIR --host 0.0.0.0 --port 8080 --ssl-certfile cert.pem \
        --ssl-keyfile key.pem                                          # beyond this machine, over TLS

Then open http://127.0.0.1:5005/. The API: GET /api/search?q=...&k=10&far=1e-3, POST /api/search {"queries": [...],
"k": 10, "where": ["camera=3"], "group_by": "track", "far": "1e-3"}, POST /api/search/image (multipart field
"image"), GET /api/search/similar/{id}, GET /api/gallery, GET /api/health (503 when the gallery on disk cannot be
served), POST /api/admin/forget {"uids": [...]} (admins: erases the rows); its description at /openapi.json.
`far` (1e-2, 1e-3 or 1e-4) keeps the hits at or above that operating point's threshold; every hit lists the FARs
it reaches. Every search, image view, sign-in and erasure is a line in the gallery's audit log, written before the
answer (search/audit.py reads it), also with no account (user null); one that cannot be written is a 503.
Results carry row ids, never paths: /images/{id} and /thumbs/{id} serve the image enrolled, re-encoded (409 when its
file changed since). Images enrolled while it runs (search/enroll.py) are found from the next request on. It
listens on 127.0.0.1 (this machine only) unless --host says otherwise; --workers N runs N server processes on one
port. Once the gallery has an account (search/users.py), every request signs in (the page's form) or sends
Authorization: Bearer TOKEN; beyond loopback, or behind a proxy (--forwarded-allow-ips, or an --allowed-host other
than this machine's names), it refuses to start without one unless --insecure-no-auth. The library part is
person.web (person.web.server runs it).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from person.gallery.audit import DEFAULT_MAX_BYTES
from person.gallery.manifest import GalleryError
from person.gallery.search_options import SearcherOptions
from person.options import add_options, from_namespace, number, run_command
from person.web.audited import AuditOptions
from person.web.batching import DEFAULT_SIZE, DEFAULT_WINDOW, BatchOptions
from person.web.server import serve


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
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="beyond loopback with no account, serve anyway: anyone who reaches it can search")
    p.add_argument("--ssl-certfile", type=Path, default=None, help="serve over TLS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", type=Path, default=None, help="the certificate's private key (PEM)")
    p.add_argument("--audit-key-dir", default=None, help="the audit log's key folder (default $PERSON_CONFIG_DIR/audit "
                                                        "or ~/.config/person/audit; search/audit.py --key-dir)")
    p.add_argument("--audit-retention-days", type=number(float, above=0), default=None,
                   help="remove whole audit files older than DAYS when the log rotates (recorded); default: keep")
    p.add_argument("--audit-max-bytes", type=number(int, at_least=1 << 16), default=DEFAULT_MAX_BYTES,
                   help="the size an audit file rotates at")
    p.add_argument("--forwarded-allow-ips", default=None,
                   help="behind a proxy: the proxies' addresses (comma-separated) whose X-Forwarded-For / -Proto "
                        "give the client's address and https; default: no forwarded header is believed. Behind a "
                        "proxy the gallery needs an account, as beyond loopback")
    p.add_argument("--batch-window-ms", type=number(float, at_least=0, at_most=1000), default=DEFAULT_WINDOW * 1000,
                   help="text searches arriving within this many ms of the first of a batch are searched together "
                        "(one text-model call, one scan of the gallery); under load batches form without waiting")
    p.add_argument("--batch-size", type=number(int, at_least=1), default=DEFAULT_SIZE,
                   help="at most this many text searches in one batch; 1: each searched alone (no batching)")
    args = p.parse_args(argv)
    if args.ssl_keyfile and not args.ssl_certfile:
        p.error("--ssl-keyfile goes with --ssl-certfile CERT.pem")
    try:
        from_namespace(SearcherOptions, args).check()
    except GalleryError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    serve(args.gallery, from_namespace(SearcherOptions, args), host=args.host, port=args.port,
          thumb_cache=args.thumb_cache, allowed_hosts=args.allowed_host, workers=args.workers,
          access_log=args.access_log, insecure_no_auth=args.insecure_no_auth, ssl_certfile=args.ssl_certfile,
          ssl_keyfile=args.ssl_keyfile, forwarded_allow_ips=args.forwarded_allow_ips,
          audit=AuditOptions(args.audit_key_dir, args.audit_retention_days, args.audit_max_bytes),
          batching=BatchOptions(args.batch_window_ms / 1000, args.batch_size))


def run() -> None:
    """`person-serve`, and the script at the top of the repository."""
    run_command(main)
