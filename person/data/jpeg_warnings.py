"""libjpeg's "Corrupt JPEG data" warnings, which OpenCV only prints: caught, so a damaged JPEG is unreadable.

A JPEG cut short fails to decode. One whose entropy-coded data is damaged in the middle ("premature end of data
segment", "bad Huffman code") decodes: libjpeg fills in what is missing and
warns. OpenCV's decoder leaves the warning to libjpeg's default handler, which writes it to stderr (fd 2) and
carries on; Pillow's drops it. So `watched` runs a decode with fd 2 pointed at a private file, and a corrupt-data
line found there makes the image unreadable (person.data.images), like a truncated one. Anything else written to
fd 2 meanwhile (another thread's log line) is passed on to the real stderr afterwards.

One decode at a time per process holds fd 2 (a lock): loader workers are processes, each with its own.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")

# libjpeg's warnings about the image data itself (jerror.h: JWRN_HIT_MARKER, JWRN_EXTRANEOUS_DATA,
# JWRN_HUFF_BAD_CODE, JWRN_MUST_RESYNC say "Corrupt JPEG data: ..."; JWRN_JPEG_EOF is a file cut short).
CORRUPT = ("Corrupt JPEG data", "Premature end of JPEG file")
# Stray bytes before a marker (JWRN_EXTRANEOUS_DATA) are common in real cameras' files whose pixels are whole:
# swallowed like the others, but the image stays readable.
HARMLESS = ("extraneous bytes before marker",)

_lock = threading.Lock()
_capture: IO[bytes] | None = None


def _forget_capture() -> None:
    """A forked child gets a fresh lock and file: the parent's may be held, and a shared file offset would mix
    the two processes' messages."""
    global _lock, _capture
    _lock, _capture = threading.Lock(), None


os.register_at_fork(after_in_child=_forget_capture)


def watched(decode: Callable[[], T]) -> tuple[T, str | None]:
    """(decode(), libjpeg's first corrupt-data warning during it or None)."""
    global _capture
    with _lock:
        if _capture is None:
            _capture = tempfile.TemporaryFile()
        fd = _capture.fileno()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: fd 2 is closed again after
            saved = None
        written = b""
        try:
            os.dup2(fd, 2)
            try:
                result = decode()
            finally:
                if saved is None:
                    os.close(2)
                else:
                    os.dup2(saved, 2)
                written = _drain(fd)  # also when decode raised: the next decode starts from an empty file
        finally:
            if saved is not None:
                os.close(saved)
                _pass_on(written)
    corrupt = [line.strip() for line in written.decode("utf-8", "replace").splitlines()
               if _libjpeg(line) and not any(marker in line for marker in HARMLESS)]
    return result, corrupt[0] if corrupt else None


def _libjpeg(line: str) -> bool:
    """A libjpeg data warning (kept from the real stderr, whether or not it makes the image unreadable)."""
    return any(marker in line for marker in CORRUPT)


def _pass_on(written: bytes) -> None:
    """What else was written to fd 2 meanwhile, to the real stderr."""
    lines = written.splitlines(keepends=True)
    others = b"".join(line for line in lines if not _libjpeg(line.decode("utf-8", "replace")))
    if others:
        os.write(2, others)


def _drain(fd: int) -> bytes:
    """What was written to the capture file since the last drain; the file is emptied for the next decode."""
    size = os.lseek(fd, 0, os.SEEK_CUR)
    if size == 0:  # nearly every decode: nothing was written
        return b""
    data = os.pread(fd, size, 0)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return data
