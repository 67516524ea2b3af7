"""Atomic writers of files and folders (a temp beside the target, fsync, rename), and OutputError, their failure.

Every file the project writes goes through one atomic writer: a temp file in the same folder, fsync, rename.
A reader then sees the old file or the new one, never a half-written one: a failed `--json` write leaves the
previous report as it was (not at 0 bytes), a killed plot leaves no truncated PNG. The temp file is named
`.<name>.<pid>-<thread>.tmp` (two threads writing one file do not collide); one left by a killed process (its pid
no longer running) is removed the next time that file is written, or by `clean_stale_temps` when a command
starts in a folder.

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
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from person.errors import PersonError

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})(?:-[0-9]+)?\.(?P<kind>tmp|old)$")


class OutputError(PersonError, OSError):
    """A file or folder could not be written: the message names it, the reason and what to do."""


def _advice(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space on that disk or write somewhere else"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "it is not writable: choose a writable location"
    if e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return "a file stands where a folder is needed (or the reverse): choose another path"
    return "check the path and the disk"


def output_error(path: str | Path, e: OSError, what: str = "write") -> OutputError:
    """The one-line error for an OSError met while writing `path`."""
    error = OutputError(f"cannot {what} {path}: {e.strerror or e}; {_advice(e)}")
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
    groups, not a writer: never alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond the platform's pid_t, no such process
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Tidy what killed writes left in `folder` (only those of `name` when given); returns what was removed.

    Their temp files and folders are removed. A replaced folder that `atomic_dir` had moved aside is put back
    when its writer was killed before the new one went in (nothing stands at its name), else removed."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        m = _TEMP.match(p.name)
        if not m or (name is not None and m["name"] != name) or process_alive(int(m["pid"])):
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
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Write `path` through a temp file beside it: renamed into place only when the block ends without error."""
    path = Path(path)
    make_folder(path.parent)
    clean_stale_temps(path.parent, path.name)
    tmp = temp_name(path)
    try:
        with open(tmp, mode, encoding=encoding) as f:
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
