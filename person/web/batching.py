"""Gathering concurrent requests into batches: one worker thread runs what arrived together as one call.

With many text searches in flight, each encoding one query and scanning the gallery alone repeats the same work per
request: the text model's call overhead, a check of the gallery on disk, and (with a scan that multiplies a matrix
of queries by the gallery, person.gallery.index) the pass over the gallery's memory. The batcher lets the routes
hand their requests to one worker thread, which takes the first that arrives, then everything that arrives within
`window` seconds of it (or until `size` are waiting), and runs them as one batch (the service's `answer_texts`, over
Searcher.search_batch; then, on a second thread while the next batch is searched, the batch's audit lines in one
commit: person.web.audited). Under load, batches form by themselves: requests arriving while a batch runs are taken
together by the next one, without waiting for the window. Each request gets its own answer or its own error through
a concurrent.futures.Future, which an async route awaits (asyncio.wrap_future) without holding a thread. A request
whose client went away before its batch was taken (its future cancelled) is left out.

    batcher = Batcher(search_all, BatchOptions(window=0.001, size=64), finish=commit_audit_lines)
    answer = await asyncio.wrap_future(batcher.submit(request))
    batcher.close()   # at shutdown: what is queued is answered, then the worker ends

For tests, `hold()` keeps the worker from taking anything while requests pile up, `wait_queued(n)` waits until n
are queued, and `on_batch` sees each batch before it runs: a batch's make-up is then certain, without sleeps.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_WINDOW = 0.001  # s: under 1 ms added to a lone request; under load batches form while the last one runs
DEFAULT_SIZE = 64       # requests per batch: 64 one-query requests are one text-model call (person.runtime)


@dataclass(frozen=True)
class BatchOptions:
    """How text searches are gathered: wait at most `window` seconds after the first request of a batch for more,
    up to `size` requests. `size` 1 turns batching off: each request is searched alone, in the thread pool."""

    window: float = DEFAULT_WINDOW
    size: int = DEFAULT_SIZE

    def __post_init__(self) -> None:
        if not 0 <= self.window <= 1:
            raise ValueError(f"batch window {self.window!r} s: give 0 to 1 s (a few ms at most is sensible)")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"batch size {self.size!r}: give 1 (no batching) or more requests")

    @property
    def enabled(self) -> bool:
        return self.size > 1


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    future: Future[R]
    since: float  # time.monotonic() when it was queued: the window runs from the first of a batch


class Batcher(Generic[T, R]):
    """Runs `run(items)` on one worker thread for the items submitted together; `run` returns one outcome per item,
    in order: its answer, or the exception that item's future raises. An exception from `run` itself fails every
    future of the batch with it (the route answers 500 and logs it).

    `finish(items, outcomes)`, when given, is a second stage on a thread of its own, taking the batches in the order
    they ran: the outcomes it returns are the ones the futures get. The worker goes on to the next batch meanwhile
    (the server's audit commit, an fsync, overlaps the next batch's search)."""

    def __init__(self, run: Callable[[list[T]], list[R | BaseException]], options: BatchOptions = BatchOptions(),
                 on_batch: Callable[[list[T]], None] | None = None, name: str = "batcher",
                 finish: Callable[[list[T], list[R | BaseException]], list[R | BaseException]] | None = None) -> None:
        self.run, self.options, self.on_batch, self.name, self.finish = run, options, on_batch, name, finish
        lock = threading.Lock()
        self._cond = threading.Condition(lock)    # the worker waits on it
        self._queued = threading.Condition(lock)  # wait_queued does: no wake-up of the worker for every item
        self._queue: deque[_Waiting[T, R]] = deque()
        self._held = self._closing = False
        self._worker: threading.Thread | None = None
        self._finisher: threading.Thread | None = None
        self._ran: queue.SimpleQueue[tuple[list[_Waiting[T, R]], list[R | BaseException]] | None] = \
            queue.SimpleQueue()

    def submit(self, item: T) -> Future[R]:
        """A future of `item`'s outcome; RuntimeError once the batcher is closed. The worker starts with the first
        item (an app that is never asked a search starts no thread)."""
        future: Future[R] = Future()
        with self._cond:
            if self._closing:
                raise RuntimeError(f"the {self.name} is closed: the server is shutting down")
            if self._worker is None:
                if self.finish is not None:  # first: a worker must never run without its finisher
                    finisher = threading.Thread(target=self._finish, name=f"{self.name} (finish)", daemon=True)
                    finisher.start()
                    self._finisher = finisher
                worker = threading.Thread(target=self._work, name=self.name, daemon=True)
                worker.start()
                self._worker = worker
            self._queue.append(_Waiting(item, future, time.monotonic()))
            if len(self._queue) in (1, self.options.size):  # wake the worker: a batch to start, or one now full
                self._cond.notify()
            self._queued.notify_all()
        return future

    def close(self) -> None:
        """Answer what is queued, then stop the worker; later submits are refused."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            threads = [t for t in (self._worker, self._finisher) if t is not None]
        if threading.current_thread() is self._worker:
            return  # from a batch's own code: the worker ends when that batch does, then the finisher
        for thread in threads:  # the worker first: it tells the finisher it is done
            if thread is not threading.current_thread():
                thread.join()

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive (it starts with the first request and ends with close)."""
        worker = self._worker
        return worker is not None and worker.is_alive()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Within it the worker takes no new batch (one under way finishes): what is submitted meanwhile waits, and
        is taken together when it ends (at most `size` at a time)."""
        with self._cond:
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def wait_queued(self, count: int, timeout: float | None = None) -> bool:
        """Wait until at least `count` items are queued (not yet taken); whether they are."""
        with self._queued:
            return self._queued.wait_for(lambda: len(self._queue) >= count, timeout)

    def _take(self) -> list[_Waiting[T, R]] | None:
        """The next batch, once its first item has waited the window or it is full; None when closed and empty."""
        size, window = self.options.size, self.options.window
        with self._cond:
            while (self._held or not self._queue) and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].since + window
            while len(self._queue) < size and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [self._queue.popleft() for _ in range(min(size, len(self._queue)))]
        # A future cancelled meanwhile (its client went away) is not searched for.
        return [w for w in batch if w.future.set_running_or_notify_cancel()]

    def _work(self) -> None:
        try:
            while (batch := self._take()) is not None:
                if batch:
                    self._run(batch)
        finally:
            self._ran.put(None)  # the finisher ends after what was handed to it

    def _run(self, batch: list[_Waiting[T, R]]) -> None:
        items = [w.item for w in batch]
        try:
            if self.on_batch is not None:
                self.on_batch(items)
            outcomes = self._checked(self.run(items), items)
        except BaseException as e:  # every waiting request must hear of it, or it waits forever
            self._resolve(batch, [e] * len(batch))
            return  # the worker goes on: one failed batch must not leave later requests waiting for ever
        if self.finish is None:
            self._resolve(batch, outcomes)
        else:
            self._ran.put((batch, outcomes))

    def _finish(self) -> None:
        """Finish what the worker ran: every batch waiting by now in one call (their audit lines in one commit
        when the commits are slower than the searches), then the next."""
        assert self.finish is not None
        done = False
        while not done:
            ready = [self._ran.get()]
            while ready[-1] is not None and not self._ran.empty():
                ready.append(self._ran.get())
            done = ready[-1] is None
            batch = [w for ran in ready if ran is not None for w in ran[0]]
            outcomes = [o for ran in ready if ran is not None for o in ran[1]]
            if not batch:
                continue
            try:
                outcomes = self._checked(self.finish([w.item for w in batch], outcomes), batch)
            except BaseException as e:  # as in _run: each request hears of it, and the finisher goes on
                outcomes = [e] * len(batch)
            self._resolve(batch, outcomes)

    def _checked(self, outcomes: list[R | BaseException], items: list) -> list[R | BaseException]:
        if len(outcomes) != len(items):
            raise RuntimeError(f"{self.name}: {len(outcomes)} outcomes for a batch of {len(items)}")
        return outcomes

    @staticmethod
    def _resolve(batch: list[_Waiting[T, R]], outcomes: list[R | BaseException]) -> None:
        for w, outcome in zip(batch, outcomes):
            if isinstance(outcome, BaseException):
                w.future.set_exception(outcome)
            else:
                w.future.set_result(outcome)
