"""Load test of the search web app: 2,000 requests from 16 concurrent clients against a 100k-row gallery.

The gallery is synthetic: 100,000 unit vectors clustered around 2,000 identity centres, at the text model's
dimension and in its space, written with person.gallery.store in 10 segments; the rows' images are a few real
small JPEGs. search/app.py serves it in its own process, as a user runs it (uvicorn, exact search). The clients are
threads of this process, each on one keep-alive connection (http.client), mixing free-text queries in English and
Chinese (GET /api/search, 60%), searches with a row's own crop (GET /api/search/similar/{id}, 20%) and photo uploads
(POST /api/search/image, 20%), k=10. After a warm-up of 64 requests, it prints p50/p99 latency as the client sees
it (send to last byte), requests/s and the count of 5xx, as markdown. The clients share the machine's cores with
the server, so on a small machine the figures include their cost.

Goal (issue "The search web page and HTTP API"): p50 under 15 ms, p99 under 50 ms, no error.
The text and image models are an export directory's (default demo/export, from `python demo.py`).

    python bench/serve.py [--export demo/export] [--rows 100000] [--requests 2000] [--clients 16]
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

from person.gallery import store
from person.gallery.segments import Rows
from person.runtime import ExportedModels
from person.vectors import unit_rows

QUERIES = ["a woman in a red coat", "a man in a black jacket and blue jeans", "穿红色外套的女孩", "背着黑色书包的男人",
           "a child with a yellow umbrella", "a person in a white shirt carrying a bag", "戴帽子的老人", "🧥 red coat"]
MIX = (("text", 0.6), ("similar", 0.2), ("upload", 0.2))
WARMUP = 64


def synthetic_gallery(folder: Path, export: Path, rows: int, identities: int = 2000, segments: int = 10) -> Path:
    """`rows` unit vectors around `identities` centres in the export's space; images: 8 small JPEGs."""
    models = ExportedModels(export)
    dim, rng = models.feature_dim, np.random.default_rng(0)
    images = folder / "images"
    images.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)).save(images / f"{i}.jpg", quality=90)
    gallery = folder / "gallery"
    store.create(gallery, {"kind": "synthetic", "name": "bench/serve.py"}, models.space, dim, images)
    centres = unit_rows(rng.normal(size=(identities, dim)), np.float64)
    for part in np.array_split(np.arange(rows), segments):
        ids = rng.integers(0, identities, len(part))
        x = centres[ids] + 0.3 / np.sqrt(dim) * rng.normal(size=(len(part), dim))
        n = len(part)
        store.append(gallery, unit_rows(x, np.float16), Rows(
            np.zeros(n, np.int64), [f"{i % 8}.jpg" for i in part], np.full((n, 4), np.nan, np.float32), ids,
            np.zeros(n, np.int64), np.zeros(n, np.int64), [{"camera": int(i % 5)} for i in part]))
    return gallery


def start_server(gallery: Path, export: Path, folder: Path, workers: int = 1) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "search" / "app.py"), "--gallery", str(gallery),
                             "--text-model", str(export), "--image-model", str(export), "--port", str(port),
                             "--thumb-cache", str(folder / "thumbs"), "--no-access-log", "--workers", str(workers)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"search/app.py exited with {proc.returncode}:\n{(folder / 'server.log').read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    sys.exit("search/app.py did not answer within 300 s")


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "bench-" + "x" * 16
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n10\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"crop.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Client(threading.Thread):
    """One keep-alive connection sending requests while the shared counter has some left."""

    def __init__(self, port: int, counter, limit: int, rows: int, photo: bytes, seed: int) -> None:
        super().__init__(daemon=True)
        self.port, self.counter, self.limit, self.rows, self.rng = port, counter, limit, rows, random.Random(seed)
        self.upload, self.upload_type = multipart(photo)
        self.samples: list[tuple[str, float, int]] = []

    def request(self, conn: http.client.HTTPConnection) -> tuple[str, int]:
        kind = self.rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        if kind == "text":
            q = urllib.parse.quote(self.rng.choice(QUERIES))
            conn.request("GET", f"/api/search?q={q}&k=10")
        elif kind == "similar":
            conn.request("GET", f"/api/search/similar/{self.rng.randrange(self.rows)}?k=10")
        else:
            conn.request("POST", "/api/search/image", body=self.upload, headers={"Content-Type": self.upload_type})
        response = conn.getresponse()
        body = response.read()
        if response.status == 200:
            json.loads(body)
        return kind, response.status

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while next(self.counter) < self.limit:
            start = time.perf_counter()
            try:
                kind, status = self.request(conn)
            except (OSError, http.client.HTTPException):
                kind, status = "error", 599
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.samples.append((kind, time.perf_counter() - start, status))
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the --workers processes), from /proc."""
    def own(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and _parent(d) == pid]
    return own(pid) + sum(own(c) for c in children)


def _parent(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def load(port: int, requests: int, clients: int, rows: int, photo: bytes, seed: int) -> tuple[list, float]:
    counter = itertools.count()
    threads = [Client(port, counter, requests, rows, photo, seed + i) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for t in threads for s in t.samples], time.perf_counter() - start


def ms(values: list[float], q: float) -> str:
    return f"{1000 * float(np.quantile(values, q)):.1f}" if values else "-"


def report(samples: list, seconds: float, server_cpu: float, args: argparse.Namespace, dim: int) -> str:
    times = [t for _, t, _ in samples]
    statuses = Counter(s for _, _, s in samples)
    errors5 = sum(n for s, n in statuses.items() if s >= 500)
    other = sum(n for s, n in statuses.items() if s != 200 and s < 500)
    processes = f"{args.workers} process{'es' if args.workers > 1 else ''}"
    lines = [f"search/app.py ({processes}), {args.rows:,} rows of dimension {dim} (exact search), "
             f"{args.clients} concurrent clients, {len(samples):,} requests after {WARMUP} warm-up; "
             f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end, "
             f"Python {platform.python_version()}",
             "", "| requests | p50 ms | p90 ms | p99 ms | max ms | requests/s | 5xx | other non-200 "
                 "| server CPU ms/request |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| all {len(samples):,} | {ms(times, .5)} | {ms(times, .9)} | {ms(times, .99)} | {ms(times, 1)} | "
             f"{len(samples) / seconds:.0f} | {errors5} | {other} | {1000 * server_cpu / len(samples):.2f} |"]
    for kind, _ in MIX:
        part = [t for k, t, _ in samples if k == kind]
        lines.append(f"| {kind} {len(part):,} | {ms(part, .5)} | {ms(part, .9)} | {ms(part, .99)} | {ms(part, 1)} | "
                     f"| {sum(1 for k, _, s in samples if k == kind and s >= 500)} | | |")
    p50, p99 = statistics.median(times), float(np.quantile(times, .99))
    verdict = "met" if p50 < 0.015 and p99 < 0.050 and not errors5 else "not met"
    lines += ["", f"goal p50 < 15 ms, p99 < 50 ms, no 5xx: {verdict}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", type=Path, default=ROOT / "demo" / "export", help="an export directory")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--workers", type=int, default=1, help="search/app.py --workers")
    args = p.parse_args(argv)
    if not (args.export / "model.json").is_file():
        p.error(f"--export {args.export}: no export there; run python demo.py first, or give an export directory")
    export = args.export
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        gallery = synthetic_gallery(folder, export, args.rows)
        print(f"wrote a {args.rows:,}-row gallery in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        proc, port = start_server(gallery, export, folder, args.workers)
        try:
            photo = (folder / "images" / "0.jpg").read_bytes()
            load(port, WARMUP, args.clients, args.rows, photo, 1000)
            before = cpu_seconds(proc.pid)
            samples, seconds = load(port, args.requests, args.clients, args.rows, photo, 0)
            server_cpu = cpu_seconds(proc.pid) - before
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        server_log = (folder / "server.log").read_text()
        print(report(samples, seconds, server_cpu, args, ExportedModels(export).feature_dim))
        if "Traceback" in server_log or " ERROR " in server_log:
            print("\nthe server logged errors:\n" + server_log[-3000:])


if __name__ == "__main__":
    main()
