"""Servers the tests start as child processes: a free port, and their output read until they say they are ready
(blocking reads, no polling; a watchdog ends a child that hangs silently, which ends the reading)."""
import socket
import subprocess
import threading
from collections.abc import Iterable
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until_ready(process: subprocess.Popen, markers: Iterable[str], timeout: float,
                     copy: IO[str] | None = None) -> str:
    """What `process` printed up to the line where the last of `markers` has appeared (each line also written to
    `copy`); an AssertionError with all it printed when it ends first or is still silent after `timeout` s."""
    waiting, lines = set(markers), []
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            lines.append(line)
            if copy is not None:
                copy.write(line)
                copy.flush()
            waiting = {w for w in waiting if w not in line}
            if not waiting:
                return "".join(lines)
    finally:
        watchdog.cancel()
    raise AssertionError(f"exited ({process.wait()}) before printing {sorted(waiting)}:\n" + "".join(lines))
