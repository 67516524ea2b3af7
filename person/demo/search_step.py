"""The demo's last step: the held-out images enrolled twice (the student's exported image model, the teacher),
example queries with the student's text model against both, and each gallery's Rank-1 over every held-out
caption beside evaluation's for the same encoders (reports/search.json)."""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Sequence

import numpy as np

from person import files
from person.data.records import DatasetOptions
from person.eval import report
from person.eval.evaluate import eval_split
from person.gallery import sources
from person.gallery.encoders import ExportEncoder, TeacherEncoder
from person.gallery.enroll import enroll
from person.gallery.manifest import GalleryError, GalleryVersionError, read_manifest
from person.gallery.search import QueryResult, Searcher
from person.teacher.store import open_store
from person.web.accounts import Accounts


def typo(text: str) -> str:
    """The caption with two letters of its longest word swapped: a query with a typo."""
    words = text.split()
    i = max(range(len(words)), key=lambda j: len(words[j]))
    w = words[i]
    words[i] = w[:1] + w[2] + w[1] + w[3:] if len(w) > 3 else w
    return " ".join(words)


def rank1(results: Sequence[QueryResult], pids: Sequence[int]) -> float:
    """The share of queries whose first hit is their own identity: Rank-1 as the gallery answers it."""
    return float(np.mean([r.hits[0].identity == pid for r, pid in zip(results, pids)]))


def step_search(workdir: Path, json_path: Path, store_path: Path, export_dir: Path, teacher_dir: Path,
                exported: dict, students: dict) -> dict:
    """Both galleries enrolled and searched (see the module's note); gallery name -> its figures."""
    source = sources.dataset(DatasetOptions(data=str(json_path)), "eval")
    text = ExportEncoder(export_dir)
    galleries = {"student": (text, "onnx fp32"), "teacher": (TeacherEncoder(str(teacher_dir)), "s.text>t.images")}
    with open_store(store_path) as store:
        split = eval_split(store, "eval")
    english = [i for i, t in enumerate(split.caption_texts) if t.isascii()]
    chinese = next(i for i, t in enumerate(split.caption_texts) if not t.isascii())
    examples = [(split.caption_texts[english[0]], split.caption_pids[english[0]]),
                (split.caption_texts[chinese], split.caption_pids[chinese]),
                (typo(split.caption_texts[english[-1]]), split.caption_pids[english[-1]])]
    out = {}
    for name, (encoder, case) in galleries.items():
        folder = workdir / "galleries" / name
        try:
            read_manifest(folder)
        except GalleryVersionError as e:  # an older checkout's workdir: enrolled anew, as a run of another recipe is
            print(f"[search] {e.args[0].split(';')[0]}; enrolling it anew")
            files.remove(folder)
        except GalleryError:
            pass  # not there yet (or not a gallery: enroll says so)
        summary = enroll(folder, encoder, source, workers=2)
        print(f"[search] {summary.lines()[0]}")
        searcher = Searcher(folder, text)
        for query, pid in examples:
            [result] = searcher.search([query], k=3)
            first = result.hits[0].identity == pid
            print(f"[search] {name} gallery, {1000 * result.seconds:.1f} ms: {query[:70]!r} (identity {pid}) -> "
                  + ", ".join(f"{h.identity} ({h.score:.3f})" for h in result.hits)
                  + ("  first is right" if first else "  first is wrong"))
        results = searcher.search(split.caption_texts, k=1)
        searched = rank1(results, split.caption_pids)
        reference = (exported if name == "student" else students)[case]["rank1"]
        out[name] = {"rank1": searched, "evaluation_rank1": reference, "rows": summary.rows,
                     "ms_per_query": 1000 * float(np.mean([r.seconds for r in results]))}
        print(f"[search] {name} gallery: Rank-1 over {len(results)} held-out captions {100 * searched:.2f}% "
              f"(evaluation_model.py, {case}: {100 * reference:.2f}%)")
    report.write_json(out, workdir / "reports" / "search.json")
    return out


def session_account(gallery: Path, name: str = "demo") -> tuple[str, str, str]:
    """A new admin account on `gallery` for one `demo.py --serve`: (name, password, API token valid a day). The
    previous session's account goes first, and its password, token and signed-in sessions with it."""
    accounts = Accounts(gallery)
    if accounts.user(name) is not None:
        accounts.remove_user(name)
    password = secrets.token_urlsafe(12)
    accounts.add_user(name, password, "admin")
    _, token = accounts.new_token(name, days=1)
    return name, password, token
