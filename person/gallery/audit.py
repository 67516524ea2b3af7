"""Who searched for whom: the gallery's audit log, one HMAC-chained JSON line a request, fsynced before the
request is answered (the format and `verify` are in audit_chain).

    log = AuditLog(gallery)   # key in $PERSON_CONFIG_DIR/audit/ or ~/.config/person/audit/, made on first use
    log.record({"action": "search", "user": "ana", "client": "10.0.0.7", "query": "a man in a red coat",
                "where": {"camera": "3"}, "group_by": None, "k": 10, "ids": [3, 17], "threshold": None,
                "status": 200})

The fields the web app sends (the writer takes any JSON-safe dict with an `action`):
- `action`: "search", "search-image", "similar", "image", "thumb", "erase", "login" or "audit-prune";
- `user` (the signed-in name) and `client` (the client's address);
- `query` (the query text) or `image_sha256` (the sha256 of an uploaded query image);
- `where` (the filters), `group_by`, `k`;
- `ids` (the row uids returned) and `threshold` (the score threshold applied, or null);
- `status` (the HTTP status answered).
The writer adds `time` (UTC, ISO 8601, from the clock given), `seq`, `prev` and `hmac`.

Writing is safe across threads and processes (several uvicorn workers): under an fcntl lock on `audit/audit.lock`
the writer reads the log's last line again (another process may have appended), appends, fsyncs, replaces the
tail file beside the key, and lets go. Threads that record while a commit is under way are committed together
by the next one, in one write and one fsync. A line that cannot be written durably raises `AuditError` and is
undone (the log stays verifiable): the caller refuses the request. A log that ends before its tail file, or
whose last line does not verify, is not written to at all.

Files rotate at about `max_bytes`; `prune(days)` (or `retention_days`, applied when the log rotates) removes
whole files whose every line is older, after appending an `audit-prune` line that names them, their line
counts and the last removed line's seq and hmac, from which the kept chain goes on.
"""
from __future__ import annotations

import contextlib
import fcntl
import getpass
import itertools
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from person import files
from person.gallery.audit_chain import (CHAIN_FIELDS, GENESIS, PRUNE, AuditError, Paths, VerifyReport, last_line,
                                        lines_of, load_key, os_error, parse_line, read_tail, replaced_log_problem,
                                        seal, tail_owner_problem, verify)

__all__ = ["AuditError", "AuditLog", "Entry", "VerifyReport", "command_audit", "describe", "entries", "login_name",
           "parse_since", "verify"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 << 20
LOCK = "audit.lock"
ACTIONS = ("search", "search-image", "similar", "image", "thumb", "erase", "login", PRUNE)


def login_name() -> str | None:
    """Who runs a command on this machine (None where the account has no name, as in some containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def command_audit(gallery: str | Path, key_dir: str | Path | None = None) -> Callable[[dict[str, Any]], None]:
    """What a command run here records with (search/forget.py, enrol's --max-age): the gallery's log, each event
    marked with the login name and client "cli"."""
    log, user = AuditLog(gallery, key_dir), login_name()
    return lambda event: log.record({"user": user, "client": "cli", **event})


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class _Pending:
    events: list[dict[str, Any]]
    done: bool = False
    error: BaseException | None = None


class AuditLog:
    """The audit log of one gallery, for appending. `writer` (os.write by default) is the hook a test fails."""

    def __init__(self, gallery: str | Path, key_dir: str | Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 retention_days: float | None = None, clock: Callable[[], datetime] = utc_now,
                 writer: Callable[[int, bytes], int] = os.write) -> None:
        self.paths = Paths.of(gallery, key_dir)
        self.max_bytes, self.retention_days = max_bytes, retention_days
        self._clock, self._writer = clock, writer
        tail = read_tail(self.paths)
        wrong = tail_owner_problem(self.paths, tail) or (replaced_log_problem(self.paths) if tail is None else None)
        if wrong:  # refused before any key is made: a fresh chain must not hide the log it replaced
            raise AuditError(f"{self.paths.log_dir}: {wrong}; nothing is written to it: run search/audit.py "
                             f"--gallery {self.paths.log_dir.parent} verify")
        # A new key only for a log that has no line yet: any other key could not continue the chain.
        self._key = load_key(self.paths, create=not self.paths.log_files() and tail is None)
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._leading = False

    def record(self, event: dict[str, Any]) -> None:
        """Append `event` (see the module docstring) durably; AuditError when it cannot be."""
        self.record_many([event])

    def record_many(self, events: list[dict[str, Any]]) -> None:
        """Append `events` durably, in order and in one commit (with any other thread's waiting meanwhile): one
        write and one fsync for the server's batch of searches. AuditError when they cannot be: then none is
        written, unless only the tail file failed after the lines were (the error says so; as for `record`)."""
        if not events:
            return
        for event in events:
            check_event(event)
        mine = _Pending(list(events))
        with self._cond:
            self._pending.append(mine)
            while self._leading and not mine.done:
                self._cond.wait()
            if not mine.done:  # no commit under way: this thread commits everything waiting, its own included
                self._leading, batch, self._pending = True, self._pending, []
        if not mine.done:
            error: BaseException | None = None
            try:
                self._commit([e for p in batch for e in p.events])
            except BaseException as e:
                error = e
                raise
            finally:
                with self._cond:
                    for p in batch:
                        p.done, p.error = True, error
                    self._leading = False
                    self._cond.notify_all()
        elif mine.error is not None:
            raise AuditError(str(mine.error)) from mine.error

    def prune(self, older_than_days: float, user: str | None = None, client: str | None = None) -> list[str]:
        """Remove the whole files whose every line is older than `older_than_days` (never the file being written),
        recorded first as an `audit-prune` line; returns the names removed."""
        with self._locked():
            return self._prune(older_than_days, user, client)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        folder = self.paths.log_dir
        try:
            folder.mkdir(mode=0o700, exist_ok=True)  # the lines hold queries: for the server's user only
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise os_error(folder / LOCK, e, "open") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # lets go of the lock

    def _commit(self, events: list[dict[str, Any]]) -> None:
        with self._locked():
            rotated = self._append(events)
            if rotated and self.retention_days is not None:
                try:
                    self._prune(self.retention_days, None, "retention")
                except AuditError as e:  # the request is audited; the old files wait for the next rotation
                    log.warning("audit retention: %s", e)

    def _head(self) -> tuple[Path | None, int, str]:
        """(the file to append to, the last seq, the last hmac), read under the lock."""
        logs = self.paths.log_files()
        line, fragments = None, []
        for path in reversed(logs):
            try:
                complete, fragment = last_line(path)
            except OSError as e:
                raise os_error(path, e, "read") from None
            if fragment:
                fragments.append((path, len(fragment)))
            if complete:
                line, wrong = parse_line(complete, self._key)
                if wrong:
                    raise AuditError(f"{path}: its last line is {wrong} (or the key {self.paths.key} is not this "
                                     f"log's); nothing more is written to it: run search/audit.py --gallery "
                                     f"{self.paths.log_dir.parent} verify")
                break
        seq, digest = (line["seq"], line["hmac"]) if line else (0, GENESIS)
        tail = read_tail(self.paths)
        wrong = tail_owner_problem(self.paths, tail)
        if wrong:
            raise AuditError(f"{self.paths.log_dir}: {wrong}; nothing more is written to it")
        if tail is not None and not logs and tail["seq"] > 0:
            raise AuditError(f"{self.paths.log_dir}: the log is gone: the tail {self.paths.tail} records seq "
                             f"{tail['seq']} but no log file is left; nothing more is written to it: run "
                             f"search/audit.py --gallery {self.paths.log_dir.parent} verify")
        if tail is not None and (tail["seq"] > seq or (tail["seq"] == seq and tail["hmac"] != digest)):
            raise AuditError(f"{self.paths.log_dir}: the log ends at seq {seq} but {self.paths.tail} records seq "
                             f"{tail['seq']}: its end was cut or rewritten; nothing more is written to it: run "
                             f"search/audit.py --gallery {self.paths.log_dir.parent} verify")
        for path, length in fragments:  # what a failed write could not undo: its request was refused
            try:
                os.truncate(path, path.stat().st_size - length)
            except OSError as e:
                raise os_error(path, e, "repair") from None
        return (logs[-1] if logs else None), seq, digest

    def _append(self, events: list[dict[str, Any]]) -> bool:
        """Seal and append `events` in one write and one fsync, then the tail; whether the log rotated."""
        path, seq, prev = self._head()
        blob = bytearray()
        for event in events:
            seq += 1
            line, prev = seal(self._key, {**event, "time": stamp(self._clock()), "seq": seq, "prev": prev})
            blob += line
        size = path.stat().st_size if path is not None else 0
        rotated = path is None or (size > 0 and size + len(blob) > self.max_bytes)
        if rotated:
            path, size = self.paths.after(path), 0
        self._write(path, size, bytes(blob))
        try:
            files.write_json(self.paths.tail, {"seq": seq, "hmac": prev, "file": path.name,
                                                "log": self.paths.log_path()})
        except OSError as e:
            raise AuditError(f"the audit line is written but not its tail file: {e}; requests are refused until "
                             f"{self.paths.tail} can be written") from None
        return rotated

    def _write(self, path: Path, size: int, blob: bytes) -> None:
        """Append and fsync, or put the file back at `size` and raise AuditError."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise os_error(path, e, "open the audit log") from None
        try:
            written = 0
            while written < len(blob):
                written += self._writer(fd, blob[written:])
            os.fsync(fd)
            if size == 0:
                files.fsync(path.parent)  # the new file's entry
        except OSError as e:
            with contextlib.suppress(OSError):  # else the next writer drops the fragment (_head)
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise os_error(path, e, "write the audit log") from None
        finally:
            os.close(fd)

    def _prune(self, days: float, user: str | None, client: str | None) -> list[str]:
        """Under the lock: check the part to remove and its link to the kept part, record, then remove."""
        cutoff = self._clock() - timedelta(days=days)
        logs = self.paths.log_files()
        old: list[tuple[Path, int]] = []
        last: tuple[int, str] | None = None   # the last removed line's (seq, hmac)
        for path in logs[:-1]:  # never the file being written
            newest, lines, file_last = None, 0, last
            for number, raw in lines_of(path):
                line = self._follows(path, number, raw, file_last)
                newest, lines, file_last = line.get("time"), lines + 1, (line["seq"], line["hmac"])
            if newest is not None and _time(newest) >= cutoff:
                break
            old.append((path, lines))
            last = file_last
        if last is None:
            return []
        kept = [(p, *first) for p in logs[len(old):] for first in itertools.islice(lines_of(p), 1)]
        if kept:  # the chain verify walks on from the prune line must go on into what is kept
            self._follows(*kept[0], last)
        self._append([{"action": PRUNE, "user": user, "client": client, "older_than_days": days,
                       "files": [{"file": p.name, "lines": n} for p, n in old], "last_seq": last[0],
                       "last_hmac": last[1]}])
        try:
            for path, _ in old:
                path.unlink()
            files.fsync(self.paths.log_dir)
        except OSError as e:
            raise os_error(self.paths.log_dir, e, "remove old files from") from None
        return [p.name for p, _ in old]

    def _follows(self, path: Path, number: int, raw: bytes, last: tuple[int, str] | None) -> dict[str, Any]:
        """The line, when it verifies and follows `last`; else AuditError: nothing is pruned from a broken chain."""
        line, wrong = parse_line(raw, self._key)
        if line is not None and not wrong and last is not None and (line["seq"], line["prev"]) != (last[0] + 1,
                                                                                                  last[1]):
            wrong = "not the line after the one before it"
        if line is None or wrong:
            raise AuditError(f"cannot prune: {path.name} line {number} is {wrong}; keep the files and run "
                             f"search/audit.py --gallery {self.paths.log_dir.parent} verify")
        return line


def _time(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise AuditError(f"an audit line's time {text!r} is not ISO 8601; run verify") from None


def check_event(event: Any) -> None:
    """Refuse an event that is not a JSON-safe dict with an `action`, or that sets the log's own fields."""
    if not isinstance(event, dict) or not isinstance(event.get("action"), str) or not event["action"]:
        raise ValueError("an audit event is a dict with an 'action' string")
    taken = sorted(set(event) & set(CHAIN_FIELDS))
    if taken:
        raise ValueError(f"audit event fields {taken} are the log's own; drop them")
    _check_json(event, "event")


def _check_json(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"audit {where} is {value}: JSON has no NaN or infinity")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"audit {where} has the key {k!r}: JSON keys are strings")
            _check_json(item, f"{where}[{k!r}]")
    else:
        raise TypeError(f"audit {where} is a {type(value).__name__}, not JSON: give str, int, float, bool, None, "
                        f"a list or a dict (int() a numpy integer, .tolist() an array)")


@dataclass
class Entry:
    """One line as `entries` reads it: where, the line (None when unreadable), and what is wrong with it."""

    file: str
    line: int
    event: dict[str, Any] | None
    problem: str | None


def entries(gallery: str | Path, key_dir: str | Path | None = None, *, user: str | None = None,
            since: datetime | None = None, action: str | None = None) -> Iterator[Entry]:
    """The log's lines in order, those of `user`, at or after `since` and of `action`; each line's HMAC is checked
    when the key is found (an unreadable line is always given, for the reader to see)."""
    paths = Paths.of(gallery, key_dir)
    try:
        key: bytes | None = load_key(paths, create=False)
    except AuditError:
        key = None
    for path in paths.log_files():
        for number, raw in lines_of(path):
            line, wrong = parse_line(raw, key)
            if line is not None and not (
                    (user is None or line.get("user") == user) and (action is None or line.get("action") == action)
                    and (since is None or _time(line.get("time")) >= since)):
                continue
            yield Entry(path.name, number, line, wrong)


_SHOWN_FIRST = ("query", "image_sha256", "where", "group_by", "k", "ids", "threshold", "status")


_PLAIN = re.compile(r"[A-Za-z0-9._@:+/-]+")  # shown as it is: a name, an address, a time, an action


def _shown(value: Any) -> str:
    """`value` as JSON with every character a terminal could act on escaped (control, format and line-separator
    characters, C1 included): a field can neither start a line of its own nor drive the terminal."""
    text = json.dumps(value, ensure_ascii=False)
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def _word(value: Any) -> str:
    """A head field: `-` when absent, as it is when plainly a token, else quoted and escaped as JSON."""
    if value is None or value == "":
        return "-"
    return value if isinstance(value, str) and _PLAIN.fullmatch(value) else _shown(value)


def describe(event: dict[str, Any]) -> str:
    """One readable line: time, seq, user, client, action, then the other fields as key=JSON (escaped: a line's
    content, such as a name someone typed, cannot fake another line or reach the terminal as control codes)."""
    rest = [k for k in _SHOWN_FIRST if k in event] + sorted(
        k for k in event if k not in _SHOWN_FIRST and k not in {*CHAIN_FIELDS, "user", "client", "action"})
    head = f"{_word(event.get('time'))}  #{_word(event.get('seq'))}  {_word(event.get('user'))}  " \
           f"{_word(event.get('client'))}  {_word(event.get('action'))}"
    return "  ".join([head, *(f"{k if _PLAIN.fullmatch(k) else _shown(k)}={_shown(event[k])}" for k in rest)])


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`2026-05-01`, `2026-05-01T10:00` (UTC unless it says otherwise) or an age: `30m`, `12h`, `7d`."""
    m = _RELATIVE.match(text.strip())
    if m:
        return (now or utc_now()) - timedelta(**{_UNITS[m[2]]: float(m[1])})
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give an ISO date or time (2026-05-01, 2026-05-01T10:00) or an age "
                         f"(30m, 12h, 7d)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
