"""The audit log: a written chain verifies; an edited, removed, reordered or cut-off line and a foreign key are each
named by verify; rotation keeps the chain; two processes append one chain; a failed write is refused and undone;
pruning is recorded and verifies; the key lives outside the gallery with private modes; show filters. An id enrol
did not give is refused; a log replaced under a new id, a deleted log and a copy writing with the same key are each
caught; describe escapes what a line holds."""
import dataclasses
import errno
import json
import multiprocessing
import os
import re
import shutil
import stat
import threading
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from person.cli import audit as audit_cmd
from person.gallery import store
from person.gallery.audit import AuditError, AuditLog, describe, entries, parse_since, verify
from person.gallery.manifest import read_manifest, write_manifest

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def gallery(tmp_path):
    folder = tmp_path / "g"
    store.create(folder, {"kind": "teacher", "name": "t"}, {"kind": "t"}, 4, tmp_path)
    return folder


@pytest.fixture
def keys(tmp_path):
    return tmp_path / "keys"


def search(i, user="ana", **more):
    return {"action": "search", "user": user, "client": "10.0.0.7", "query": f"a person in coat {i}", "where": None,
            "group_by": None, "k": 10, "ids": [i, i + 1], "threshold": None, "status": 200, **more}


def written(gallery, keys, n=5, **options):
    log = AuditLog(gallery, keys, **options)
    for i in range(n):
        log.record(search(i))
    return log


def log_file(gallery, number=1):
    return gallery / "audit" / f"audit-{number:06d}.jsonl"


def lines(path):
    return path.read_bytes().splitlines(keepends=True)


def problem(gallery, keys):
    report = verify(gallery, keys)
    assert not report.ok
    return report.problems[0]


def test_a_written_chain_verifies_and_the_command_says_so(gallery, keys, capsys):
    written(gallery, keys)
    report = verify(gallery, keys)
    assert report.ok and (report.lines, report.files, report.first_seq, report.last_seq) == (5, 1, 1, 5)
    first = json.loads(lines(log_file(gallery))[0])
    assert first["query"] == "a person in coat 0" and first["seq"] == 1 and first["prev"] == "0" * 64
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    audit_cmd.main(["--gallery", str(gallery), "verify", "--key-dir", str(keys)])
    assert capsys.readouterr().out.startswith("audit log intact: 5 lines in 1 files (seq 1..5)")


def test_editing_one_field_of_one_line_is_caught_naming_that_line(gallery, keys, monkeypatch):
    written(gallery, keys)
    rows = lines(log_file(gallery))
    line = json.loads(rows[2])
    line["query"] = "someone else"
    rows[2] = (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode()
    log_file(gallery).write_bytes(b"".join(rows))
    found = problem(gallery, keys)
    assert (found.file, found.line) == ("audit-000001.jsonl", 3) and found.what.startswith("edited")
    assert len(verify(gallery, keys).problems) == 1  # the lines after it still link to it
    with pytest.raises(AuditError, match=r"audit-000001.jsonl line 3: edited"):
        audit_cmd.main(["--gallery", str(gallery), "--key-dir", str(keys), "verify"])
    monkeypatch.setattr("sys.argv", ["search/audit.py", "--gallery", str(gallery), "--key-dir", str(keys), "verify"])
    with pytest.raises(SystemExit) as ended:
        audit_cmd.run()
    assert "line 3: edited" in str(ended.value.code)  # a message: exit status 1


def test_a_removed_line_is_caught(gallery, keys):
    written(gallery, keys)
    rows = lines(log_file(gallery))
    log_file(gallery).write_bytes(b"".join(rows[:2] + rows[3:]))
    found = problem(gallery, keys)
    assert found.line == 3 and "1 line(s) removed before it (seq 3..3" in found.what


def test_two_swapped_lines_are_caught(gallery, keys):
    written(gallery, keys)
    rows = lines(log_file(gallery))
    rows[1], rows[2] = rows[2], rows[1]
    log_file(gallery).write_bytes(b"".join(rows))
    found = problem(gallery, keys)
    assert found.line == 2 and "reordered" in found.what


def test_a_cut_off_tail_is_caught_and_the_writer_refuses_to_go_on(gallery, keys):
    written(gallery, keys)
    rows = lines(log_file(gallery))
    log_file(gallery).write_bytes(b"".join(rows[:3]))  # the last two lines gone
    found = problem(gallery, keys)
    assert found.line == 3 and "cut-off tail" in found.what and "seq 5" in found.what
    with pytest.raises(AuditError, match="ends at seq 3 but .* records seq 5"):
        AuditLog(gallery, keys).record(search(9))
    log_file(gallery).write_bytes(b"".join(rows[:4]) + rows[4][:30])  # the last line cut in the middle
    found = problem(gallery, keys)
    assert found.line == 5 and found.what == "cut off mid-line"


def test_a_foreign_key_is_caught_by_verify_and_refused_by_the_writer(gallery, keys, tmp_path):
    written(gallery, keys)
    other = tmp_path / "other"
    other.mkdir()
    gid = read_manifest(gallery).id
    (other / f"{gid}.key").write_text(os.urandom(32).hex())
    os.chmod(other / f"{gid}.key", 0o600)
    (other / f"{gid}.tail.json").write_bytes((keys / f"{gid}.tail.json").read_bytes())
    found = problem(gallery, other)
    assert found.line == 1 and "no line verifies with the key" in found.what
    with pytest.raises(AuditError, match="key .* is not this log's"):
        AuditLog(gallery, other).record(search(9))
    with pytest.raises(AuditError, match="audit key of this gallery is missing"):
        AuditLog(gallery, tmp_path / "empty")  # a log with lines never starts a new key


def test_rotation_by_size_keeps_the_chain_across_files(gallery, keys):
    written(gallery, keys, n=12, max_bytes=1000)
    logs = sorted((gallery / "audit").glob("audit-*.jsonl"))
    assert len(logs) >= 3 and all(p.stat().st_size <= 1000 for p in logs)
    report = verify(gallery, keys)
    assert report.ok and (report.lines, report.files) == (12, len(logs))
    last, first = json.loads(lines(logs[0])[-1]), json.loads(lines(logs[1])[0])
    assert (first["seq"], first["prev"]) == (last["seq"] + 1, last["hmac"])
    logs[1].unlink()  # a whole file gone from the middle
    assert "removed before it" in problem(gallery, keys).what


def append_from_a_process(gallery, keys, name, barrier, per_thread):
    """One worker: waits for the other, then appends from two threads at once."""
    log = AuditLog(gallery, keys)
    barrier.wait()
    threads = [threading.Thread(target=lambda t=t: [log.record(search(i, user=f"{name}-{t}"))
                                                    for i in range(per_thread)]) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_two_processes_appending_at_once_give_one_chain_with_every_line(gallery, keys):
    AuditLog(gallery, keys)  # the key, made once before the workers start
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=append_from_a_process, args=(gallery, keys, name, barrier, 25))
               for name in ("p0", "p1")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    report = verify(gallery, keys)
    assert report.ok and report.lines == 100
    seen = [(e.event["user"], e.event["ids"][0]) for e in entries(gallery, keys)]
    assert sorted(seen) == sorted((f"p{p}-{t}", i) for p in range(2) for t in range(2) for i in range(25))


def test_a_failed_write_raises_and_leaves_the_log_verifiable(gallery, keys):
    log = written(gallery, keys, n=3)

    def half_then_full(fd, data):
        os.write(fd, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    failing = AuditLog(gallery, keys, writer=half_then_full)
    with pytest.raises(AuditError, match=r"cannot write the audit log .*audit-000001.jsonl: No space left on "
                                         r"device; free space"):
        failing.record(search(3))
    assert verify(gallery, keys).ok and verify(gallery, keys).lines == 3
    log.record(search(4))
    assert verify(gallery, keys).ok and verify(gallery, keys).lines == 4
    with open(log_file(gallery), "ab") as f:  # a fragment a failed write could not take back
        f.write(b'{"action":"sea')
    log.record(search(5))
    assert verify(gallery, keys).ok and verify(gallery, keys).lines == 5


def test_record_many_commits_its_lines_in_order_in_one_write_or_none_of_them(gallery, keys):
    writes = []

    def counted(fd, data):
        writes.append(data.count(b"\n"))
        return os.write(fd, data)

    log = AuditLog(gallery, keys, writer=counted)
    log.record(search(0))
    log.record_many([search(i) for i in range(1, 17)])
    log.record_many([])  # nothing to write: no empty commit
    assert writes == [1, 16]
    assert [e.event["query"] for e in entries(gallery, keys)] == [search(i)["query"] for i in range(17)]
    assert verify(gallery, keys).ok and verify(gallery, keys).lines == 17
    # One bad event refuses the whole batch before anything is written; a failed write undoes the whole batch.
    with pytest.raises(TypeError, match=r"event\['ids'\]\[0\] is a int64"):
        log.record_many([search(17), search(18, ids=[np.int64(3)])])

    def full(fd, data):
        os.write(fd, data[:len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(AuditError, match="No space left on device"):
        AuditLog(gallery, keys, writer=full).record_many([search(17), search(18)])
    assert writes == [1, 16] and verify(gallery, keys).ok and verify(gallery, keys).lines == 17


def test_a_line_written_before_a_crash_could_update_the_tail_still_verifies(gallery, keys):
    log = written(gallery, keys, n=3)
    tail = next(keys.glob("*.tail.json"))
    stale = tail.read_bytes()
    log.record(search(3))
    tail.write_bytes(stale)  # killed between the line's fsync and the tail's rename
    assert verify(gallery, keys).ok
    log.record(search(4))
    assert verify(gallery, keys).ok and json.loads(tail.read_text())["seq"] == 5


def test_pruning_is_recorded_and_the_kept_chain_verifies(gallery, keys):
    clock = Clock()
    log = AuditLog(gallery, keys, max_bytes=1000, clock=clock)
    for i in range(12):
        clock.now = T0 + timedelta(days=i)
        log.record(search(i))
    before = sorted((gallery / "audit").glob("audit-*.jsonl"))
    clock.now = T0 + timedelta(days=20)
    removed = log.prune(10, user="admin")
    assert removed and removed == [p.name for p in before[:len(removed)]]
    assert all(not (gallery / "audit" / name).exists() for name in removed)
    report = verify(gallery, keys)
    assert report.ok and report.first_seq > 1
    prune = [e.event for e in entries(gallery, keys, action="audit-prune")]
    assert len(prune) == 1 and prune[0]["user"] == "admin" and prune[0]["last_seq"] == report.first_seq - 1
    assert [f["file"] for f in prune[0]["files"]] == removed and sum(f["lines"] for f in prune[0]["files"]) == \
        report.first_seq - 1
    kept = sorted((gallery / "audit").glob("audit-*.jsonl"))
    kept[0].unlink()  # removed without a prune line: the log starts mid-air
    assert "no audit-prune line records the lines before it" in problem(gallery, keys).what


def test_retention_prunes_when_the_log_rotates(gallery, keys):
    clock = Clock()
    log = AuditLog(gallery, keys, max_bytes=1000, retention_days=3, clock=clock)
    for i in range(12):
        clock.now = T0 + timedelta(days=i)
        log.record(search(i))
    pruned = [e.event for e in entries(gallery, keys, action="audit-prune")]
    assert pruned and all(e["client"] == "retention" for e in pruned)
    assert verify(gallery, keys).ok
    times = [datetime.fromisoformat(e.event["time"]) for e in entries(gallery, keys)]
    assert min(times) >= clock.now - timedelta(days=3 + 4)  # at most a file's span beyond the retention


def test_the_key_lives_outside_the_gallery_with_private_modes(gallery, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSON_CONFIG_DIR", str(tmp_path / "config"))
    written(gallery, None, n=1)
    key_dir = tmp_path / "config" / "audit"
    key = key_dir / f"{read_manifest(gallery).id}.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(log_file(gallery).stat().st_mode) == 0o600
    assert stat.S_IMODE((gallery / "audit").stat().st_mode) == 0o700
    assert verify(gallery).ok and not list(gallery.rglob("*.key"))
    os.chmod(key, 0o644)
    with pytest.raises(AuditError, match="can be read by others .* chmod 600"):
        AuditLog(gallery)


def test_events_that_are_not_json_are_refused_before_anything_is_written(gallery, keys):
    log = AuditLog(gallery, keys)
    with pytest.raises(TypeError, match=r"event\['ids'\]\[0\] is a int64.*int\(\) a numpy integer"):
        log.record(search(0, ids=[np.int64(3)]))
    with pytest.raises(ValueError, match="NaN"):
        log.record(search(0, threshold=float("nan")))
    with pytest.raises(ValueError, match=r"\['seq'\] are the log's own"):
        log.record(search(0, seq=7))
    with pytest.raises(ValueError, match="'action' string"):
        log.record({"user": "ana"})
    assert not log_file(gallery).exists()


def test_show_filters_by_user_since_and_action(gallery, keys, capsys):
    clock = Clock()
    log = AuditLog(gallery, keys, clock=clock)
    for i, user in enumerate(["ana", "bo", "ana", "bo"]):
        clock.now = T0 + timedelta(hours=i)
        log.record(search(i, user=user))
    log.record({"action": "thumb", "user": "ana", "client": "10.0.0.7", "ids": [3], "status": 200})
    assert [e.event["seq"] for e in entries(gallery, keys, user="ana")] == [1, 3, 5]
    assert [e.event["seq"] for e in entries(gallery, keys, since=T0 + timedelta(hours=2))] == [3, 4, 5]
    audit_cmd.main(["--gallery", str(gallery), "--key-dir", str(keys), "show", "--user", "bo", "--since",
                    "2026-05-01T13:30"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "#4  bo  10.0.0.7  search" in out[0] and 'query="a person in coat 3"' in out[0]
    audit_cmd.main(["--gallery", str(gallery), "--key-dir", str(keys), "show", "--action", "thumb", "--json"])
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["action"], e["ids"]) for e in shown] == [("thumb", [3])]
    assert parse_since("2d", now=T0) == T0 - timedelta(days=2)
    assert parse_since("2026-05-01") == datetime(2026, 5, 1, tzinfo=timezone.utc)


def with_id(gallery, new_id):
    """The gallery's manifest with its id changed, as someone who can edit the gallery (not the key folder) can."""
    write_manifest(gallery, dataclasses.replace(read_manifest(gallery), id=new_id))


def test_an_id_that_is_not_one_enrol_gives_is_refused_and_names_no_file_outside_the_key_folder(gallery, keys,
                                                                                               tmp_path):
    assert re.fullmatch(r"[0-9a-f]{32}", read_manifest(gallery).id)  # what enrol gives
    for bad in ("../evil", "../../../../tmp/x/evil", "A" * 32, "0" * 31, "0" * 32 + "\n"):
        with_id(gallery, bad)
        with pytest.raises(AuditError, match="is not a gallery id .*32 lowercase hex digits"):
            AuditLog(gallery, keys)
        with pytest.raises(AuditError, match="is not a gallery id"):
            verify(gallery, keys)
    assert not list(tmp_path.rglob("*.key")) and not list(tmp_path.rglob("*.tail.json"))


def test_a_log_replaced_under_a_new_id_is_caught_by_verify_and_no_new_key_is_made(gallery, keys):
    written(gallery, keys, n=3)
    old, new = read_manifest(gallery).id, uuid.uuid4().hex
    shutil.rmtree(gallery / "audit")
    with_id(gallery, new)
    report = verify(gallery, keys)
    assert not report.ok and f"the gallery's id changed from {old} to {new}: its audit log was replaced" in \
        report.summary()
    with pytest.raises(AuditError, match=f"the gallery's id changed from {old} to {new}"):
        AuditLog(gallery, keys)
    assert not (keys / f"{new}.key").exists() and not (keys / f"{new}.tail.json").exists()
    assert not verify(gallery, keys).ok  # still, after the refused start: no fresh chain verifies as intact


def test_a_deleted_log_is_caught_while_the_tail_records_lines(gallery, keys):
    written(gallery, keys, n=5)
    shutil.rmtree(gallery / "audit")
    report = verify(gallery, keys)
    assert not report.ok and "the log is gone: the tail records seq 5" in report.summary()
    with pytest.raises(AuditError, match="the log is gone: the tail .* records seq 5"):
        AuditLog(gallery, keys).record(search(9))


def test_a_copied_gallery_writing_with_the_same_key_is_named_as_a_copy(gallery, keys, tmp_path):
    first = AuditLog(gallery, keys)
    copy = tmp_path / "g2"
    shutil.copytree(gallery, copy)
    second = AuditLog(copy, keys)  # both opened before any line: the tail names no folder yet
    first.record(search(0))
    message = "another copy of this gallery \\(same id\\) writes with this key.*give the copy its own id or key folder"
    with pytest.raises(AuditError, match=message):
        second.record(search(1))
    with pytest.raises(AuditError, match=message):
        AuditLog(copy, keys)  # a server started on the copy stops at once
    report = verify(copy, keys)
    assert not report.ok and re.search(message, report.summary()) and "cut or rewritten" not in report.summary()
    assert verify(gallery, keys).ok and verify(gallery, keys).lines == 1
    assert json.loads(next(keys.glob("*.tail.json")).read_text())["log"] == str((gallery / "audit").resolve())


def test_describe_escapes_what_a_line_holds_so_it_cannot_fake_a_line_or_drive_the_terminal():
    event = {"time": "2026-05-01T12:00:00.000000Z", "seq": 7, "action": "login", "status": 401,
             "user": "ann\n2026-05-01T12:00:01.000000Z  #8  root  cli  erase\x1b[2J",
             "client": "10.0.0.7\x1b]0;title\x07", "note\r": "a\u2028b\x9bc\u202e"}
    shown = describe(event)
    assert shown.startswith("2026-05-01T12:00:00.000000Z  #7  \"ann\\n2026-05-01T12:00:01.000000Z")
    assert not any(c in shown for c in "\n\r\x1b\x07\x9b\u2028\u202e")
    assert "\\u001b[2J" in shown and '"10.0.0.7\\u001b]0;title\\u0007"' in shown and "\\u2028" in shown
    plain = describe({**event, "user": "ann", "client": None})
    assert plain.startswith("2026-05-01T12:00:00.000000Z  #7  ann  -  login")
    assert 'query="穿红色外套的女孩"' in describe({**event, "query": "穿红色外套的女孩"})  # readable text stays so
