"""The audit log's format and its check: the HMAC chain, the key kept outside the gallery, and `verify`.

The log is `G/audit/audit-NNNNNN.jsonl`, one JSON object a line in canonical form (sorted keys, no spaces,
ASCII), numbered by `seq` from 1 across files. Each line carries `prev`, the previous line's `hmac` (`GENESIS` for
the first), and `hmac` = HMAC-SHA256(key, prev + the canonical line without `hmac`). The key is 32 random bytes
in `KEY_DIR/<gallery id>.key` (mode 0600, folder 0700), outside the gallery, so whoever can edit the gallery
cannot write a line that verifies. `KEY_DIR/<gallery id>.tail.json` holds the last committed line's seq and
hmac (a log that ends before it was cut) and the log folder's resolved path: a tail under another id for this
folder means the manifest's id was changed to start a fresh chain; this id's tail for another folder means a
copy of the gallery writes with the same key. The id must be the 32 hex digits enrol gives it. A log may start
after seq 1 only where an authentic `audit-prune` line names the lines removed before it (their last seq and
hmac).
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from person import files
from person.errors import PersonError
from person.gallery.manifest import read_manifest

AUDIT_DIR = "audit"
CONFIG_ENV = "PERSON_CONFIG_DIR"   # the server's config folder; the keys go in its audit/ folder
GENESIS = "0" * 64                 # `prev` of the first line ever written
PRUNE = "audit-prune"
CHAIN_FIELDS = ("seq", "prev", "hmac", "time")  # set by the writer, never by a caller
_NAME = re.compile(r"^audit-(\d{6,})\.jsonl$")
GALLERY_ID = re.compile(r"[0-9a-f]{32}")      # what person.gallery.store gives a new gallery: uuid.uuid4().hex
TAIL_SUFFIX = ".tail.json"


class AuditError(PersonError):
    """The audit log cannot be written or read as asked; the message names the file and the fix. A request that
    meets it is refused, not served."""


def default_key_dir() -> Path:
    """`$PERSON_CONFIG_DIR/audit`, else `~/.config/person/audit`."""
    return Path(os.environ.get(CONFIG_ENV) or Path.home() / ".config" / "person").expanduser() / AUDIT_DIR


@dataclass(frozen=True)
class Paths:
    """Where one gallery's log, key and tail are."""

    log_dir: Path
    key: Path
    tail: Path

    @classmethod
    def of(cls, gallery: str | Path, key_dir: str | Path | None = None) -> Paths:
        gallery_id = read_manifest(gallery).id
        if not gallery_id:
            raise AuditError(f"{gallery}: its manifest has no id to name the audit key by; enrol it again into a "
                             f"new --gallery")
        if not isinstance(gallery_id, str) or not GALLERY_ID.fullmatch(gallery_id):
            # The id names files in the key folder: only the form the store gives it (uuid4().hex) is taken, so an
            # edited manifest cannot name a file outside that folder.
            raise AuditError(f"{gallery}: its manifest's id {gallery_id!r} is not a gallery id (32 lowercase hex "
                             f"digits, as enrol makes it): the manifest was edited; restore it from your backup")
        keys = Path(key_dir) if key_dir is not None else default_key_dir()
        return cls(Path(gallery) / AUDIT_DIR, keys / f"{gallery_id}.key", keys / f"{gallery_id}.tail.json")

    @property
    def gallery_id(self) -> str:
        return self.key.name[:-len(".key")]

    def log_path(self) -> str:
        """The log folder's resolved path, as the tail file records it: which copy of the gallery writes with
        this key."""
        return str(self.log_dir.resolve())

    def log_files(self) -> list[Path]:
        """The log's files, oldest first."""
        if not self.log_dir.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.log_dir.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def after(self, path: Path | None) -> Path:
        """The file that follows `path` when the log rotates (the first file for None)."""
        number = int(_NAME.match(path.name)[1]) if path is not None else 0
        return self.log_dir / f"audit-{number + 1:06d}.jsonl"


def load_key(paths: Paths, create: bool) -> bytes:
    """The gallery's key; made (0600, its folder 0700) when `create` and there is none. A key others can read is
    refused, as ssh refuses a private key."""
    if create and not paths.key.exists():
        _create_key(paths.key)
    try:
        stat = paths.key.stat()
        text = paths.key.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise AuditError(f"{paths.key}: the audit key of this gallery is missing, yet its log {paths.log_dir} has "
                         f"lines; restore the key from your backup or pass --key-dir (or set {CONFIG_ENV}) where "
                         f"it is: a new key cannot continue the old chain") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AuditError(f"{paths.key}: cannot read the audit key ({e}); check its permissions") from None
    if stat.st_mode & 0o077:
        raise AuditError(f"{paths.key}: the audit key can be read by others (mode {stat.st_mode & 0o777:o}); "
                         f"chmod 600 {paths.key}")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise AuditError(f"{paths.key}: not an audit key (64 hex digits); restore it from your backup")
    return key


def _create_key(path: Path) -> None:
    """Write a new key: linked into place from a private temp, so a rival worker making one at the same moment
    either wins (and both use its key) or loses whole."""
    created = not path.parent.exists()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if created:
            os.chmod(path.parent, 0o700)  # mkdir's mode is masked by the umask
        tmp = files.temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_bytes(32).hex() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the key
        finally:
            os.unlink(tmp)
        files.fsync(path.parent)
    except OSError as e:
        raise AuditError(f"cannot create the audit key {path}: {e.strerror or e}; "
                         f"{files.OS_FIXES.get(e.errno) or 'check the folder'} (or pass --key-dir)") from None


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def mac(key: bytes, body: dict[str, Any]) -> str:
    """HMAC-SHA256 over the previous line's hmac and this line without its own."""
    return hmac.new(key, body["prev"].encode("ascii") + canonical(body), hashlib.sha256).hexdigest()


def seal(key: bytes, body: dict[str, Any]) -> tuple[bytes, str]:
    """The line to append for `body` (which holds seq and prev), and its hmac."""
    digest = mac(key, body)
    return canonical({**body, "hmac": digest}) + b"\n", digest


def read_tail(paths: Paths) -> dict[str, Any] | None:
    """The tail file ({"seq", "hmac", "file"}), or None when there is none yet."""
    try:
        tail = json.loads(paths.tail.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AuditError(f"{paths.tail}: cannot read the audit tail file ({e}); restore it from your backup") from None
    if not (isinstance(tail, dict) and type(tail.get("seq")) is int and isinstance(tail.get("hmac"), str)):
        raise AuditError(f"{paths.tail}: not an audit tail file; restore it from your backup")
    return tail


def tail_owner_problem(paths: Paths, tail: dict[str, Any] | None) -> str | None:
    """What is wrong when the tail file of this gallery's id records another log folder (a copied gallery: both
    copies write with one key and one tail), else None. A tail from before the folder was recorded passes."""
    if tail is None or not isinstance(tail.get("log"), str) or tail["log"] == paths.log_path():
        return None
    return (f"another copy of this gallery (same id) writes with this key: the tail file {paths.tail} records the "
            f"log {tail['log']}, not {paths.log_path()}; give the copy its own id or key folder")


def replaced_log_problem(paths: Paths) -> str | None:
    """What is wrong when another tail file in the key folder records this gallery's log folder under another id
    (the manifest's id was changed, so a fresh key and chain would hide the old log), else None."""
    mine = paths.log_path()
    try:
        others = sorted(p for p in paths.key.parent.glob(f"*{TAIL_SUFFIX}") if p != paths.tail)
    except OSError:
        return None
    for other in others:
        try:
            recorded = json.loads(other.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(recorded, dict) and recorded.get("log") == mine:
            old_id = other.name[:-len(TAIL_SUFFIX)]
            return (f"the gallery's id changed from {old_id} to {paths.gallery_id}: its audit log was replaced "
                    f"({other} records seq {recorded.get('seq')} written to {mine} under the old id); restore the "
                    f"manifest and log from your backup. If a new gallery was made in this folder on purpose, move "
                    f"{other} and {other.with_name(old_id + '.key')} out of the key folder, with the old log's "
                    f"backup")
    return None


def parse_line(raw: bytes, key: bytes | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(the line's object, None) or (whatever parsed, what is wrong with it); with `key`, its HMAC is checked."""
    if not raw.endswith(b"\n"):
        return None, "cut off mid-line"
    try:
        line = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None, "not a JSON line"
    if not (isinstance(line, dict) and type(line.get("seq")) is int and isinstance(line.get("prev"), str)
            and isinstance(line.get("hmac"), str)):
        return None, "not an audit line (seq, prev or hmac missing)"
    if key is not None:
        body = {k: v for k, v in line.items() if k != "hmac"}
        try:
            ok = hmac.compare_digest(mac(key, body), line["hmac"]) and canonical(line) + b"\n" == raw
        except (ValueError, UnicodeEncodeError):  # NaN or a non-ASCII prev: not something the writer wrote
            ok = False
        if not ok:
            return line, "edited: its HMAC does not match its content"
    return line, None


def lines_of(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw bytes with their newline) of a log file."""
    try:
        with open(path, "rb") as f:
            yield from enumerate(f, 1)
    except OSError as e:
        raise AuditError(f"cannot read the audit log {path}: {e.strerror or e}; check its permissions") from None


@dataclass
class Problem:
    file: str
    line: int
    what: str
    missing: tuple[int, int] | None = None   # seqs [a, b) absent here: removed, unless they turn up later


@dataclass
class VerifyReport:
    """What `verify` found: the first problem (by position) names the file and line."""

    key: Path
    log_dir: Path
    files: int = 0
    lines: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok and not self.lines:
            return f"audit log {self.log_dir}: empty, no line written yet"
        if self.ok:
            return f"audit log intact: {self.lines} lines in {self.files} files (seq {self.first_seq}.." \
                   f"{self.last_seq}), tail matches, key {self.key}"
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        where = f" line {first.line}" if first.line else ""
        return f"audit log {self.log_dir / first.file}{where}: {first.what}{more}"


def verify(gallery: str | Path, key_dir: str | Path | None = None) -> VerifyReport:
    """Check every line of the gallery's audit log in order: its JSON, its HMAC, seq continuity, prev linkage,
    the start (seq 1 or after a recorded prune) and the tail file against the last line."""
    paths = Paths.of(gallery, key_dir)
    logs = paths.log_files()
    report = VerifyReport(paths.key, paths.log_dir, files=len(logs))
    tail = read_tail(paths)
    owner = tail_owner_problem(paths, tail) or (replaced_log_problem(paths) if tail is None else None)
    if owner:
        report.problems.append(Problem("", 0, owner))
        return report
    if not logs and tail is None:
        return report
    key = load_key(paths, create=False)
    anchors: set[tuple[int, str]] = set()   # (last seq, last hmac) of the parts recorded as pruned
    at_tail: str | None = None              # the hmac of the line of the tail file's seq
    start: tuple[Problem, int, str] | None = None
    last: tuple[int, str] | None = None     # (seq, hmac) the next line must follow; None: no base yet
    forged = 0                              # lines whose HMAC fails: all of them means another key
    where = Problem(logs[-1].name if logs else paths.log_dir.name, 0, "")
    for path in logs:
        for number, raw in lines_of(path):
            where = Problem(path.name, number, "")
            report.lines += 1
            line, wrong = parse_line(raw, key)
            if line is None or wrong:
                report.problems.append(Problem(path.name, number, wrong or ""))
                if line is not None:  # an edited line: follow its claimed fields, so one edit is one problem
                    forged += 1
                    last = (line["seq"], line["hmac"])
                continue
            seq, digest = line["seq"], line["hmac"]
            for p in report.problems:  # a gap closed by a line further on was a reordering, not a removal
                if p.missing and p.missing[0] <= seq < p.missing[1]:
                    p.what = f"seq {p.missing[0]} is not here but further on: lines reordered"
            if tail is not None and seq == tail["seq"]:
                at_tail = digest
            if line.get("action") == PRUNE and type(line.get("last_seq")) is int:
                anchors.add((line["last_seq"], str(line.get("last_hmac"))))
            if last is None:
                start = start or (Problem(path.name, number, ""), seq, line["prev"])
            elif seq > last[0] + 1:
                report.problems.append(Problem(path.name, number, f"{seq - last[0] - 1} line(s) removed before "
                                                                  f"it (seq {last[0] + 1}..{seq - 1} are missing)",
                                               (last[0] + 1, seq)))
            elif seq <= last[0]:
                report.problems.append(Problem(path.name, number, f"seq {seq} comes after seq {last[0]}: lines "
                                                                  f"reordered or repeated"))
                continue
            elif line["prev"] != last[1]:
                report.problems.append(Problem(path.name, number, "does not follow the line before it (its prev is "
                                                                  "another line's hmac: spliced from another log)"))
            last = (seq, digest)
            report.first_seq = seq if report.first_seq is None else report.first_seq
            report.last_seq = seq
    if report.lines > 1 and forged == report.lines:
        report.problems = [Problem(logs[0].name, 1, f"no line verifies with the key {paths.key}: the log was written "
                                                    f"with another key (pass --key-dir where this gallery's key is) "
                                                    f"or every line was rewritten")]
        return report
    if start and not (start[1] == 1 and start[2] == GENESIS) and (start[1] - 1, start[2]) not in anchors:
        report.problems.insert(0, Problem(start[0].file, start[0].line,
                                          f"the log starts at seq {start[1]} and no audit-prune line records the "
                                          f"lines before it: earlier files were removed"))
    _check_tail(report, tail, at_tail, where, paths)
    return report


def _check_tail(report: VerifyReport, tail: dict[str, Any] | None, at_tail: str | None, where: Problem,
                paths: Paths) -> None:
    """The tail file's line must be in the log: a log that ends before it was cut."""
    if tail is None:
        report.problems.append(Problem(where.file, where.line, f"the tail file {paths.tail} is missing: cannot tell "
                                                               f"whether lines were cut off the end"))
    elif report.files == 0:
        report.problems.append(Problem("", 0, f"the log is gone: the tail records seq {tail['seq']} but "
                                              f"{paths.log_dir} holds no log file: it was deleted"))
    elif report.last_seq is None or tail["seq"] > report.last_seq:
        ends = "is empty" if report.last_seq is None else f"ends at seq {report.last_seq}"
        report.problems.append(Problem(where.file, where.line, f"cut-off tail: the log {ends} but the tail file "
                                                               f"records seq {tail['seq']}: lines were removed from "
                                                               f"the end"))
    elif at_tail != tail["hmac"]:
        report.problems.append(Problem(where.file, where.line, f"the tail file records seq {tail['seq']} with another "
                                                               f"hmac: the end of the log was rewritten"))


def last_line(path: Path) -> tuple[bytes, bytes]:
    """(the file's last complete line with its newline or b"", the fragment after it: a write that was cut)."""
    with open(path, "rb") as f:
        end, data = f.seek(0, os.SEEK_END), b""
        while end > 0 and data.count(b"\n") < 2:
            start = max(0, end - 4096)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    head, newline, fragment = data.rpartition(b"\n")
    return (head[head.rfind(b"\n") + 1:] + newline if newline else b""), fragment


def os_error(path: Path, e: OSError, what: str) -> AuditError:
    """An AuditError for an OSError met while writing the log: names the file, the reason and the fix."""
    fix = files.OS_FIXES.get(e.errno or errno.EIO) or "check the path and the disk"
    return AuditError(f"cannot {what} {path}: {e.strerror or e}; {fix}; requests are refused until the audit log can "
                      f"be written")
