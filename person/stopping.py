"""A stop request: a user's Ctrl-C (SIGINT) or a scheduler's SIGTERM asks a command to stop, it does not kill it.

`person.options.run_command` listens (`listening`) for the command's duration. Library loops that can stop
cleanly (the trainer after a step, extraction and enrolment after a chunk) run inside `safe_points`: there the
first signal only records the request (`requested()`), which the loop reads at its safe points and answers by
raising `Stopped` with what it kept. A second signal, or the first one outside `safe_points` (evaluation, export),
raises `Stopped` at once, wherever the command is; a block under `noting(...)` adds what such a stop leaves.
Once the command ends by a stop, any further signal ends the process at once (`os._exit`), shutdown included.

Forked workers (DataLoader workers, enrolment's decoding pool) inherit the handler and leave the decision to the
process that listens: they carry on through SIGINT (a terminal sends it to the whole process group) and exit
quietly on SIGTERM, the signal their pools and loaders end them with.

Outside `run_command` nothing is installed: `requested()` is always None and Python's own KeyboardInterrupt stays.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The command stops on request: at a safe point, or `at_once` (wherever it was). `what` says what it kept (a
    stop at once gets it from `noting`, if at all), `again` the arguments that continue it (None: the same ones).
    A KeyboardInterrupt, so that `except Exception` cleanups let it through and a library caller outside a command
    sees the interrupt it knows."""

    def __init__(self, signum: int, what: str = "", again: Sequence[str] | None = None, *,
                 at_once: bool = False) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.what, self.again = signum, what, again
        self.at_once = at_once  # not at a safe point: under torchrun, this rank alone

    @property
    def status(self) -> int:
        """The exit status a shell reports for this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


@dataclass
class _Listening:
    prog: str
    owner: int                      # the pid that listens; a forked worker has another
    requested: int | None = None    # the signal of the first request
    safe_depth: int = 0             # safe_points blocks entered
    where: str = ""                 # the innermost block's "after this step"
    ending: int | None = None       # the signal the command is ending by (a stop)


_state: _Listening | None = None


def requested() -> int | None:
    """The signal of a pending stop request, or None."""
    return _state.requested if _state is not None else None


def _handle(signum: int, frame: FrameType | None) -> None:
    state = _state  # set: the handler is installed only while listening (a fork keeps its copy of both)
    if os.getpid() != state.owner:
        if signum == signal.SIGTERM:
            os._exit(0)
        return
    if state.ending:  # the exit status stays the stop's: torchrun's SIGTERM to a rank ending by SIGINT says 130
        os._exit(128 + state.ending)
    if state.requested is None and state.safe_depth:
        state.requested = signum
        os.write(2, f"{state.prog}: {signal.Signals(signum).name}: stopping {state.where}; a second one stops at "
                    f"once\n".encode())
        return
    raise Stopped(signum, at_once=True)


@contextlib.contextmanager
def listening(prog: str) -> Iterator[None]:
    """SIGINT and SIGTERM are stop requests while the block runs. `prog` names the command in the line that
    acknowledges a request."""
    global _state
    if _state is not None or threading.current_thread() is not threading.main_thread():
        yield  # listening already, or unable to (signals reach the main thread only)
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _state = _Listening(prog, os.getpid())
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        if _state.ending is None:  # an ending command keeps the handler: a signal during its shutdown exits at once
            for s, handler in previous.items():
                signal.signal(s, handler)
            _state = None


def ending(signum: int) -> None:
    """The command ends by a stop of `signum`: from now on a signal ends the process at once, without a traceback,
    with that stop's exit status."""
    if _state is not None:
        _state.ending = signum


@contextlib.contextmanager
def safe_points(where: str) -> Iterator[None]:
    """The block reads `requested()` at its safe points (`where`: "after this step"), so a first signal only
    records the request. One still pending when the block ends stops the command there."""
    state = _state
    if state is None:
        yield
        return
    outer = state.where
    state.safe_depth, state.where = state.safe_depth + 1, where
    try:
        yield
    finally:
        state.safe_depth, state.where = state.safe_depth - 1, outer
    if state.requested is not None and not state.safe_depth:
        raise Stopped(state.requested, at_once=True)


@contextlib.contextmanager
def noting(what: str) -> Iterator[None]:
    """A stop at once inside the block is reported with `what`: what it leaves ("OUTDIR is as it was")."""
    try:
        yield
    except Stopped as stop:
        stop.what = stop.what or what
        raise
