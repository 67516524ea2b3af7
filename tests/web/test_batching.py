"""Text searches gathered into batches (person.web.batching, Searcher.search_batch): a batch answers each request
exactly as it is answered alone (the same ids, scores at float16 precision, notes, thresholds, and each bad
request its own 4xx while the others are answered), with one text-model call and one scan per set of conditions;
every request still writes its own audit line; a batch answers from one generation, the one on disk when it starts;
the window and size options, what `person-serve` passes, and a shutdown that answers what is queued. The batcher's
hooks (hold, wait_queued, on_batch) make a batch's make-up certain: no sleeps, no timing."""
import errno
import os
import shutil
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from person.cli import serve as serve_cmd
from person.gallery.audit import AuditLog
from person.gallery.encoders import ExportEncoder
from person.gallery.search import Searcher, TextRequest
from person.web import server
from person.web.app import create_app
from person.web.audited import Asked, Trail, answer_all
from person.web.batching import DEFAULT_SIZE, DEFAULT_WINDOW, Batcher, BatchOptions
from person.web.service import Refused
from tests.gallery.test_far_search import calibrate
from tests.web.test_app import append_rows, make_gallery
from tests.web.test_audit_routes import lines

QUERY = "a man in a red coat"
SCORES = 1e-3  # float16 precision: a batched query vector may differ from its unbatched one in the last bits
# A batch with mixed k, a filter shared by two requests, group_by, a FAR, several queries in one POST, and four
# bad requests (an unknown field, a FAR refused when measured, k out of range, a control character).
REQUESTS = [
    ("GET", {"q": QUERY, "k": 5}),
    ("GET", {"q": "a woman in a blue shirt", "k": 12}),
    ("POST", {"queries": ["穿红色外套的女孩", "🧥 a coat"], "k": 3}),
    ("GET", {"q": QUERY, "k": 4, "where": "camera=1"}),
    ("GET", {"q": "a person with a bag", "k": 6, "where": "camera=1"}),
    ("GET", {"q": QUERY, "k": 2, "group_by": "track"}),
    ("GET", {"q": QUERY, "k": 44, "far": "1e-2"}),
    ("GET", {"q": QUERY, "where": "colour=red"}),
    ("GET", {"q": QUERY, "far": "1e-3"}),
    ("GET", {"q": QUERY, "k": 0}),
    ("GET", {"q": "a\x01b"}),
]
BAD = 4


@pytest.fixture(scope="module")
def site(trained_setup, plain_export, tmp_path_factory):
    """(gallery, calibration file): the tiny enrolled gallery, a text threshold at FAR 1e-2 that the fifth hit of
    QUERY reaches, 1e-3 refused when measured."""
    root = tmp_path_factory.mktemp("batching")
    gallery, _ = make_gallery(trained_setup, plain_export, root)
    [everything] = Searcher(gallery, ExportEncoder(plain_export)).search([QUERY], k=44)
    path = calibrate(root / "c.json", plain_export, gallery, {
        ("text_to_image", "student", "fp32"): {"1e-2": everything.hits[4].score, "1e-3": "only 2,000 impostor pairs"}})
    return gallery, path


def app_over(site, plain_export, folder: Path, batching: BatchOptions = BatchOptions(), audit: bool = False):
    """(app, searcher): the web app over the site's gallery, with its calibration and, when asked, its audit log."""
    gallery, calibration = site
    searcher = Searcher(gallery, ExportEncoder(plain_export), calibration=calibration)
    log = AuditLog(gallery, folder / "keys") if audit else None
    return create_app(searcher, server.STATIC, folder / "thumbs", audit=log, batching=batching), searcher


def send(client: TestClient, method: str, values: dict):
    if method == "POST":
        return client.post("/api/search", json=values)
    return client.get("/api/search", params=values)


def together(client: TestClient, batcher: Batcher, requests: list[tuple[str, dict]]) -> list:
    """The responses to `requests` sent at once: the batcher is held until every one is queued, so that they make
    one batch."""
    with ThreadPoolExecutor(len(requests)) as pool:
        with batcher.hold():
            sent = [pool.submit(send, client, method, values) for method, values in requests]
            assert batcher.wait_queued(len(requests), timeout=120), "the requests never reached the batcher"
        return [f.result() for f in sent]


def same_answer(batched, alone) -> None:
    """The same status and body, but for each query's `seconds`, and scores equal at float16 precision."""
    assert batched.status_code == alone.status_code, (batched.text, alone.text)
    a, b = batched.json(), alone.json()
    if batched.status_code != 200:
        assert a == b
        return
    assert (a["generation"], a["count"]) == (b["generation"], b["count"])
    for x, y in zip(a["results"], b["results"], strict=True):
        for key in ("query", "note", "far", "threshold", "operating_points", "calibration"):
            assert x[key] == y[key], key
        assert [h["id"] for h in x["hits"]] == [h["id"] for h in y["hits"]]
        np.testing.assert_allclose([h["score"] for h in x["hits"]], [h["score"] for h in y["hits"]], atol=SCORES)
        assert [{**h, "score": None} for h in x["hits"]] == [{**h, "score": None} for h in y["hits"]]


def test_a_batch_answers_each_request_as_it_is_answered_alone_each_bad_one_failing_alone(site, plain_export,
                                                                                          tmp_path, monkeypatch):
    site = Path(shutil.copytree(site[0], tmp_path / "g")), site[1]  # its own audit log
    app, searcher = app_over(site, plain_export, tmp_path / "batched", audit=True)
    alone, _ = app_over(site, plain_export, tmp_path / "alone", BatchOptions(size=1))
    encoded, scanned, batches = [], [], []
    embed, scan = searcher.text_encoder.embed_texts, searcher.backend.search
    monkeypatch.setattr(searcher.text_encoder, "embed_texts", lambda texts: encoded.append(list(texts)) or embed(texts))
    monkeypatch.setattr(searcher.backend, "search", lambda q, k, conditions: scanned.append(
        (len(q), k, [c.text() for c in conditions])) or scan(q, k, conditions))
    with TestClient(app) as client, TestClient(alone) as reference:
        app.state.batcher.on_batch = batches.append
        assert alone.state.batcher is None  # size 1: each request searched alone
        answers = together(client, app.state.batcher, REQUESTS)
        for (method, values), batched in zip(REQUESTS, answers):
            same_answer(batched, send(reference, method, values))
    assert [len(b) for b in batches] == [len(REQUESTS)]
    assert [r.status_code for r in answers] == [200] * (len(REQUESTS) - BAD) + [400] * BAD
    errors = [r.json()["error"] for r in answers[-BAD:]]
    assert "colour" in errors[0] and "1e-3" in errors[1] and "ask for 1 to" in errors[2] and "U+0001" in errors[3]
    # One text-model call for the 8 queries of the good requests; one scan of the 5 queries without conditions at
    # the largest k (44) and one of the 2 with camera=1 at k 6; the grouped query's own scan (4 k rows per round).
    assert len(encoded) == 1 and len(encoded[0]) == 8
    assert sorted(scanned) == sorted([(5, 44, []), (2, 6, ["camera=1"]), (1, 8, [])])
    # Each request its own audit line, with its own status; the far request's threshold, the filtered one's where.
    logged = lines(site[0], tmp_path / "batched" / "keys")
    assert sorted(e["status"] for e in logged) == sorted(r.status_code for r in answers)
    by_k = {e["k"]: e for e in logged if e["status"] == 200}
    assert by_k[44]["far"] == "1e-2" and by_k[44]["threshold"] == answers[6].json()["results"][0]["threshold"]
    assert by_k[4]["where"] == ["camera=1"] and by_k[4]["ids"] == [h["id"] for h in answers[3].json()["results"][0]["hits"]]


def test_a_batch_s_audit_lines_are_one_commit_and_a_log_that_cannot_take_them_refuses_every_request(
        site, plain_export, tmp_path):
    gallery = Path(shutil.copytree(site[0], tmp_path / "g"))
    writes, full = [], threading.Event()

    def writer(fd, data):
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(data.count(b"\n"))
        return os.write(fd, data)

    searcher = Searcher(gallery, ExportEncoder(plain_export), calibration=site[1])
    app = create_app(searcher, server.STATIC, tmp_path / "thumbs", audit=AuditLog(gallery, tmp_path / "keys",
                                                                                  writer=writer))
    asked = REQUESTS + [("GET", {"q": QUERY, "far": "often"})]  # refused before its query is made
    with TestClient(app) as client:
        answers = together(client, app.state.batcher, asked)
        assert writes == [len(asked)]  # every line of the batch, the refusals' too, in one write
        full.set()
        refused = together(client, app.state.batcher, REQUESTS[:3])
    assert answers[-1].status_code == 400 and "far='often': give one of" in answers[-1].json()["error"]
    logged = lines(gallery, tmp_path / "keys")
    assert sorted(e["status"] for e in logged) == sorted(r.status_code for r in answers)
    [often] = [e for e in logged if e["far"] == "often"]
    assert often["status"] == 400 and often["ids"] == [] and often["query"] == QUERY
    # A batch whose lines cannot be written is answered with nothing but the refusal: every request a 503.
    assert [r.status_code for r in refused] == [503] * 3
    assert all("audit log" in r.json()["error"] and "No space left on device" in r.json()["error"]
               and "results" not in r.json() for r in refused)
    assert len(lines(gallery, tmp_path / "keys")) == len(asked)


def test_a_request_whose_query_fails_fails_alone_and_its_line_says_500(site, tmp_path):
    gallery = Path(shutil.copytree(site[0], tmp_path / "g"))
    trail = Trail(AuditLog(gallery, tmp_path / "keys"), lambda message: message)

    def refuse():
        raise Refused(400, "far='often'")

    def broken():
        raise ValueError("not a query")

    asked = [Asked({"action": "search", "query": "fine", "user": None, "client": None}, lambda: "fine"),
             Asked({"action": "search", "query": "refused", "user": None, "client": None}, refuse),
             Asked({"action": "search", "query": "broken", "user": None, "client": None}, broken)]
    ran = []
    body = {"generation": 1, "results": [{"hits": [{"id": 7}], "far": None, "threshold": None}]}
    outcomes = trail.commit(asked, answer_all(asked, lambda queries: ran.append(queries) or [body for _ in queries]))
    assert ran == [["fine"]] and outcomes[0] is body
    assert isinstance(outcomes[1], Refused) and isinstance(outcomes[2], ValueError)
    assert [(e["query"], e["status"], e["ids"]) for e in lines(gallery, tmp_path / "keys")] == [
        ("fine", 200, [7]), ("refused", 400, []), ("broken", 500, [])]


def test_search_batch_gives_what_search_gives_request_by_request(site, plain_export):
    searcher = Searcher(site[0], ExportEncoder(plain_export), calibration=site[1])
    requests = [TextRequest([QUERY], 7), TextRequest([QUERY, "a child"], 30, ["camera>=2"]), TextRequest([], 3),
                TextRequest([QUERY], 3, (), "camera", "1e-2"), TextRequest(["  "], 3), TextRequest([QUERY], 5, ["x=1"])]
    for request, got in zip(requests, searcher.search_batch(requests), strict=True):
        try:
            want = searcher.search(request.texts, request.k, request.where, request.group_by, request.far)
        except Exception as e:  # the same error, for this request alone
            assert type(got) is type(e) and str(got) == str(e)
            continue
        assert [[h.uid for h in r.hits] for r in got] == [[h.uid for h in r.hits] for r in want]
        assert all(np.allclose([h.score for h in a.hits], [h.score for h in b.hits], atol=SCORES)
                   for a, b in zip(got, want))
        assert [(r.note, r.far, r.threshold) for r in got] == [(r.note, r.far, r.threshold) for r in want]


def test_a_batch_answers_from_the_generation_on_disk_when_it_starts(site, plain_export, tmp_path):
    gallery = Path(shutil.copytree(site[0], tmp_path / "g"))
    app, searcher = app_over((gallery, site[1]), plain_export, tmp_path)
    with TestClient(app) as client:
        before = client.get("/api/search", params={"q": QUERY}).json()["generation"]
        batcher = app.state.batcher
        with ThreadPoolExecutor(3) as pool:
            with batcher.hold():
                sent = [pool.submit(send, client, "GET", {"q": QUERY, "k": 50}) for _ in range(3)]
                assert batcher.wait_queued(3, timeout=120)
                [uid] = append_rows(gallery, ["frame.jpg"], searcher.gallery.features()[:1])  # committed meanwhile
            bodies = [f.result().json() for f in sent]
    assert {b["generation"] for b in bodies} == {before + 1} and all(b["count"] == 45 for b in bodies)
    assert all(uid in [h["id"] for h in b["results"][0]["hits"]] for b in bodies)


# ---------------------------------------------------------------- the batcher itself

def echo(items: list) -> list:
    return [ValueError(f"bad {i}") if isinstance(i, int) and i < 0 else i for i in items]


def test_the_size_caps_a_batch_and_a_full_batch_does_not_wait_for_the_window():
    batches = []
    batcher = Batcher(echo, BatchOptions(window=0, size=3), on_batch=batches.append)
    with batcher.hold():
        futures = [batcher.submit(i) for i in range(7)]
    assert [f.result(timeout=60) for f in futures] == list(range(7))
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    # A window far longer than any test: the first request waits for more, and the second fills the batch.
    waiting = Batcher(echo, BatchOptions(window=1, size=2), on_batch=batches.append)
    first = waiting.submit("a")
    second = waiting.submit("b")
    assert (first.result(timeout=60), second.result(timeout=60)) == ("a", "b") and batches[-1] == ["a", "b"]
    batcher.close()
    waiting.close()


def test_each_request_gets_its_own_outcome_and_a_failing_batch_fails_only_its_own():
    calls = []

    def run(items):
        calls.append(items)
        if "boom" in items:
            raise RuntimeError("a bug")
        return echo(items)
    batcher = Batcher(run, BatchOptions(window=0))
    with batcher.hold():
        ok, bad, cancelled = batcher.submit(1), batcher.submit(-2), batcher.submit(3)
        assert cancelled.cancel()  # its client went away: it is not searched for
    assert ok.result(timeout=60) == 1 and calls == [[1, -2]]
    with pytest.raises(ValueError, match="bad -2"):
        bad.result(timeout=60)
    with pytest.raises(CancelledError):
        cancelled.result(timeout=60)
    with batcher.hold():
        failing = [batcher.submit("boom"), batcher.submit("x")]
    for f in failing:
        with pytest.raises(RuntimeError, match="a bug"):
            f.result(timeout=60)
    assert batcher.submit("after").result(timeout=60) == "after"  # the worker goes on
    batcher.close()


def test_the_finish_stage_overlaps_the_next_batch_and_its_outcomes_are_what_the_requests_get():
    a_in_finish, b_ran, finished = threading.Event(), threading.Event(), []

    def run(items):
        if items == ["b"]:  # runs only while the finish stage holds "a"
            assert a_in_finish.wait(timeout=60)
            b_ran.set()
        return echo(items)

    def finish(items, outcomes):
        if items == ["a"]:  # held until the worker has run the next batch: it does not wait for this stage
            a_in_finish.set()
            assert b_ran.wait(timeout=60), "the worker waited for the finish stage"
        if "c" in items:
            raise OSError("the audit disk is full")
        finished.append(items)
        return [f"{o} finished" for o in outcomes]

    batcher = Batcher(run, BatchOptions(window=0, size=1), name="finish-stage test", finish=finish)
    a, b = batcher.submit("a"), batcher.submit("b")
    assert (a.result(timeout=60), b.result(timeout=60)) == ("a finished", "b finished")
    assert finished == [["a"], ["b"]]  # in the order the batches ran
    with pytest.raises(OSError, match="audit disk"):  # fails its own requests; the finisher goes on
        batcher.submit("c").result(timeout=60)
    queued = [batcher.submit(x) for x in "de"]
    batcher.close()  # what is queued runs and is finished before both threads end
    assert [f.result(timeout=0) for f in queued] == ["d finished", "e finished"]
    assert not batcher.running and not any(t.name.startswith(batcher.name) for t in threading.enumerate())


def test_batches_that_ran_while_the_finish_stage_was_busy_are_finished_in_one_call():
    got_x, calls = threading.Event(), []
    batcher: Batcher

    def run(items):
        if items == ["y"]:
            assert got_x.wait(timeout=60)
        return echo(items)

    def finish(items, outcomes):
        calls.append(items)
        if items == ["x"]:  # busy until the worker has run y and z and ended
            got_x.set()
            batcher._worker.join(timeout=60)
        return outcomes

    batcher = Batcher(run, BatchOptions(window=0, size=1), name="drain test", finish=finish)
    futures = [batcher.submit(x) for x in "xyz"]
    batcher.close()
    assert [f.result(timeout=0) for f in futures] == ["x", "y", "z"]
    assert calls == [["x"], ["y", "z"]]  # y and z waited together: one commit for both


def test_a_batch_that_raises_anything_fails_its_requests_and_the_batcher_goes_on():
    def run(items):
        if items == ["stop"]:
            raise KeyboardInterrupt  # not an Exception: before, it ended the worker and later requests waited
        return echo(items)

    for finish in (None, lambda items, outcomes: outcomes):
        batcher = Batcher(run, BatchOptions(window=0, size=1), finish=finish)
        with pytest.raises(KeyboardInterrupt):
            batcher.submit("stop").result(timeout=60)
        assert batcher.submit("next").result(timeout=60) == "next"
        batcher.close()


def test_close_answers_what_is_queued_then_refuses_and_ends_the_worker():
    batcher = Batcher(echo, BatchOptions(window=1, size=64), name="closing batcher")
    assert not batcher.running  # no thread before the first request
    queued = [batcher.submit(i) for i in range(3)]  # the worker waits for the window: close does not
    batcher.close()
    assert [f.result(timeout=60) for f in queued] == [0, 1, 2]
    assert not batcher.running and "closing batcher" not in [t.name for t in threading.enumerate()]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(4)


def test_the_app_s_shutdown_closes_its_batcher(site, plain_export, tmp_path):
    app, _ = app_over(site, plain_export, tmp_path)
    with TestClient(app) as client:
        assert client.get("/api/search", params={"q": QUERY}).status_code == 200
        assert app.state.batcher.running
    assert not app.state.batcher.running
    with pytest.raises(RuntimeError, match="shutting down"):
        app.state.batcher.submit(TextRequest([QUERY]))


def test_batch_options_and_the_serve_flags(monkeypatch, tmp_path):
    assert BatchOptions() == BatchOptions(DEFAULT_WINDOW, DEFAULT_SIZE) and BatchOptions().enabled
    assert not BatchOptions(size=1).enabled and BatchOptions(window=0).enabled
    for bad in ({"window": -0.001}, {"window": 2}, {"size": 0}, {"size": 2.5}):
        with pytest.raises(ValueError):
            BatchOptions(**bad)
    given = {}
    monkeypatch.setattr(serve_cmd, "serve", lambda *args, **kwargs: given.update(kwargs))
    common = ["--gallery", str(tmp_path), "--text-model", str(tmp_path)]
    serve_cmd.main(common)
    assert given["batching"] == BatchOptions()
    serve_cmd.main([*common, "--batch-window-ms", "2", "--batch-size", "16"])
    assert given["batching"] == BatchOptions(0.002, 16)
    serve_cmd.main([*common, "--batch-size", "1"])
    assert not given["batching"].enabled
    with pytest.raises(SystemExit):
        serve_cmd.parse_args([*common, "--batch-size", "0"])
