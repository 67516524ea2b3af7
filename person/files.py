"""Atomic writers of files and folders (a temp beside the target, fsync, rename), and OutputError, their failure.

Every file the project writes goes through one atomic writer: a temp file in the same folder, fsync, rename.
A reader then sees the old file or the new one, never a half-written one: a failed `--json` write leaves the
previous report as it was (not at 0 bytes), a killed plot leaves no truncated PNG. The temp file is named
`.<name>.<pid>-<thread>.tmp` (two threads writing one file do not collide); one left by a killed process is removed
the next time that file is written, or by `clean_stale_temps` when a command starts in a folder. A writer counts
as gone when its pid runs nothing, runs a zombie (killed but not yet reaped: the very harness that killed it and
runs the command again may hold it unreaped), or runs a process that started after the temp last changed (the
pid was reused: in a container every run may get the same pid, its own).

A folder (an export, a gallery segment, a feature store; or a file a library builds at a path) is replaced
whole the same way by `atomic_dir`: built under the temp name, fsynced, renamed into place, the one it replaces
renamed aside first (`.<name>.<pid>-<thread>.old`) and removed after. A process killed between those two
renames leaves the previous one aside: `clean_stale_temps` puts it back.

A write that fails for a reason of the disk (full, read-only, a folder that is a file) raises `OutputError`,
one line naming the file and the reason.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from person.errors import PersonError

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})(?:-(?P<thread>[0-9]+))?\.(?P<kind>tmp|old)$")


class OutputError(PersonError, OSError):
    """A file or folder could not be written: the message names it, the reason and what to do."""


# What to do about an OSError of the disk or the path, by errno: the second half of a command's one-line error.
_PERMISSIONS = "check its permissions or choose another location"
OS_FIXES = {
    errno.ENOENT: "",
    errno.ENOSPC: "free space on that disk or write somewhere else",
    errno.EDQUOT: "free space within your quota or write somewhere else",
    errno.EFBIG: "the file system cannot hold a file that large: write somewhere else",
    errno.ENAMETOOLONG: "a name holds at most 255 bytes and a path 4096 here: choose a shorter one",
    errno.EROFS: "the disk is read-only: write somewhere else",
    errno.EACCES: _PERMISSIONS,
    errno.EPERM: _PERMISSIONS,
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder: give a file",
    errno.EEXIST: "something is already there: choose another path",
    errno.ELOOP: "too many symbolic links (a loop?): check the links along the path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.ENFILE: "too many open files on this machine",
    errno.EIO: "the disk reported an input/output error: check it",
}


def output_error(path: str | Path, e: OSError, what: str = "write") -> OutputError:
    """The one-line error for an OSError met while writing `path`."""
    fix = OS_FIXES.get(e.errno) or "check the path and the disk"
    error = OutputError(f"cannot {what} {path}: {e.strerror or e}; {fix}")
    error.errno = e.errno  # kept for callers; not in the message, which is for people
    return error


def make_folder(path: str | Path) -> Path:
    """mkdir -p, with an OutputError that names the folder when it cannot be made."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e, "create the folder") from None
    if not path.is_dir():
        raise output_error(path, OSError(errno.ENOTDIR, "a file stands there"), "create the folder")
    return path


def process_alive(pid: int) -> bool:
    """Whether a process of that id runs (a temp file of a dead one is stale). 0 and negative ids name process
    groups, not a writer: never alive; nor is a zombie, which answers kill(pid, 0) but will never write again."""
    return writer_alive(pid, math.inf)


def writer_alive(pid: int, changed: float) -> bool:
    """Whether the writer of a temp that last changed at `changed` (its ctime) may still be writing it: `pid` runs a
    process (not a zombie) that had started by then. One that started later got the pid after the writer was gone
    (pid reuse); that is this very process when a rerun in a container gets the killed run's pid."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond the platform's pid_t, no such process
        return False
    except PermissionError:  # someone else's process
        pass
    stat = _proc_stat(pid)
    return stat is None or (stat[0] not in "ZX" and stat[1] <= changed + _CLOCK_SLACK)


# Clock ticks and file timestamps are coarse (<= 10 ms); a second of slack keeps a live writer live.
_CLOCK_SLACK = 1.0


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """(state letter, start as a wall-clock timestamp) of a process, from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()  # the name may hold ") "
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        return fields[0], booted + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # AttributeError: no CLOCK_BOOTTIME off Linux
        return None


def clean_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Tidy what killed writes left in `folder` (only those of `name` when given); returns what was removed.

    Their temp files and folders are removed. A replaced folder that `atomic_dir` had moved aside is put back
    when its writer was killed before the new one went in (nothing stands at its name), else removed."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        m = _TEMP.match(p.name)
        if not m or (name is not None and m["name"] != name) or _live(p, int(m["pid"]), m["thread"]):
            continue
        target = folder / m["name"]
        if m["kind"] == "old" and not (target.exists() or target.is_symlink()):
            os.replace(p, target)
            log.warning("%s: put back the previous version, which an interrupted replacement had moved aside", target)
            continue
        remove(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed


def _live(temp: Path, pid: int, thread: str | None) -> bool:
    if pid == os.getpid() and thread is not None and int(thread) in {t.ident for t in threading.enumerate()}:
        return True  # a thread of this process writing it now, whatever the clocks say
    try:
        changed = temp.lstat().st_ctime  # a rename sets it too: the moment a replaced folder was moved aside
    except FileNotFoundError:  # its writer finished meanwhile
        return True
    return writer_alive(pid, changed)


def fsync(path: str | Path) -> None:
    """fsync a file or a folder (a folder: its entries, so a rename or a new file in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync a file, or every file and folder under a folder (a tree just built, before it is renamed)."""
    root = Path(root)
    if root.is_dir():
        for folder, _, names in os.walk(root):
            for name in names:
                fsync(Path(folder) / name)
            fsync(folder)
    else:
        fsync(root)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (the folder's entry), where the platform allows it."""
    with contextlib.suppress(OSError):
        fsync(folder)


def remove(path: str | Path, ignore_errors: bool = False) -> None:
    """Delete a file or a folder tree; nothing when it is not there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
        return
    try:
        path.unlink(missing_ok=True)
    except OSError:
        if not ignore_errors:
            raise


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None,
                permissions: int | None = None) -> Iterator[IO[Any]]:
    """Write `path` through a temp file beside it: renamed into place only when the block ends without error.

    `permissions` (e.g. 0o600 for a file of secrets): the temp file is created new (O_EXCL) with that mode, so no
    other user can open it at any moment, not even before a byte is written; None: open()'s default (0666 less the
    umask)."""
    path = Path(path)
    make_folder(path.parent)
    clean_stale_temps(path.parent, path.name)
    tmp = temp_name(path)
    try:
        if permissions is None:
            f = open(tmp, mode, encoding=encoding)
        else:
            _discard(tmp)  # this thread's own, left by an earlier attempt whose cleanup failed: O_EXCL makes it new
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), permissions)
            try:
                f = os.fdopen(fd, mode, encoding=encoding)
            except BaseException:
                os.close(fd)
                raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise output_error(path, e) from None
    except BaseException:
        _discard(tmp)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_dir(path: str | Path, make: bool = True) -> Iterator[Path]:
    """Build what replaces `path` in the temp folder yielded (beside it, named as `temp_name` says); when the
    block ends without error it is fsynced and takes the place of `path`, else it is removed and `path` stays.

    Stale temps of `path` are tidied first (`clean_stale_temps`: a previous version a killed replacement moved
    aside is put back). `make=False` yields the temp path with nothing there, for a library that creates it
    itself (HDF5 builds a file). Errors raised in the block pass through as they are; the renames' own become
    an OutputError naming `path`."""
    path = Path(path)
    make_folder(path.parent)
    clean_stale_temps(path.parent, path.name)
    tmp = temp_name(path)
    remove(tmp, ignore_errors=True)  # this thread's own, left by an earlier attempt whose cleanup failed
    try:
        if make:
            make_folder(tmp)
        yield tmp
        try:
            fsync_tree(tmp)
            _swap(tmp, path)
        except OSError as e:
            raise output_error(path, e) from None
    except BaseException:
        remove(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path`, the one there moved aside first and removed after (a folder cannot be renamed over
    a folder that holds files)."""
    aside = tmp.with_suffix(".old")
    try:
        if path.exists() or path.is_symlink():
            os.replace(path, aside)
        os.replace(tmp, path)
    except OSError:
        if aside.exists() and not path.exists():
            os.replace(aside, path)  # the previous one stays as it was
        raise
    _fsync_folder(path.parent)
    remove(aside, ignore_errors=True)


def resolve_under(root: str | Path, relative: str) -> str | None:
    """The real path of `relative` joined to `root` when it lies under root's real path (symlinks followed), else
    None. Resolve first, then compare whole path components: a string check before resolving was CVE-2023-29159."""
    try:
        real_root = os.path.realpath(root)
        target = os.path.realpath(os.path.join(real_root, relative))
        inside = os.path.commonpath([real_root, target]) == real_root
    except (TypeError, ValueError, OSError):  # a NUL in the path, a non-text path from a damaged rows file
        return None
    return target if inside else None


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # on a read-only disk there is nothing to remove
        tmp.unlink(missing_ok=True)


def temp_name(path: Path) -> Path:
    """Where `path` is written before its rename: beside it, named for this process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | Path, value: Any) -> Path:
    """Indented, strict JSON (no NaN / inf: any reader takes it), atomically."""
    return write_text(path, json.dumps(value, indent=2, allow_nan=False) + "\n")
