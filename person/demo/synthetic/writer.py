"""Write a synthetic demo set in one of the four real dataset layouts (README.md, "Datasets it reads"), plus `demo_truth.json`.

Every image draws from its own RNGs seeded by (seed, identity, image), so the output (JSON text and JPEG
bytes) depends only on the arguments, never on the number of workers. Images are drawn, encoded and
written in worker processes; the records come back in order and the main process writes the JSON.
"""
from __future__ import annotations

import io
import json
import os
import re
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from .attributes import ATTRIBUTE_KEYS, sample_identities, vocabulary
from .captions import (DEFAULT_CHINESE_SHARE, attribute_string, is_chinese, keyed_image_captions,
                       prompt_caption, tokenize)
from .render import render_person
from .sites import SITES

FORMATS = ("synthpedes", "cuhk-pedes", "icfg-pedes", "rstpreid")
JSON_NAME = {"synthpedes": "synthpedes-dataset.json", "cuhk-pedes": "reid_raw.json",
             "icfg-pedes": "ICFG-PEDES.json", "rstpreid": "data_captions.json"}
IMAGE_DIR = {"synthpedes": ".", "cuhk-pedes": "imgs", "icfg-pedes": "imgs", "rstpreid": "imgs"}
# Identity split fractions (train, val, test); SYNTH-PEDES has no split field.
SPLIT_SHARES = {"cuhk-pedes": (0.8, 0.1, 0.1), "icfg-pedes": (0.75, 0.0, 0.25), "rstpreid": (0.8, 0.1, 0.1)}
CAPTIONS_PER_IMAGE = {"synthpedes": 2, "cuhk-pedes": 2, "icfg-pedes": 1, "rstpreid": 2}
TRUTH_NAME = "demo_truth.json"
TRUTH_VERSION = 2  # 2: images carry `caption_keys`
ROUGH_SHARE = 0.06  # captions given a stray leading/trailing/double space, as real annotations have

# RNG stream tags: separate streams keep images unchanged when only caption options change.
_IDS, _SPLIT, _IMAGE, _CAPTION = 0, 1, 2, 3


def _check(fmt: str, n_ids: int, images_per_id: int, seed: int, chinese: float, site: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}: use one of {', '.join(SITES)}")
    shares = SPLIT_SHARES.get(fmt, (1.0,))
    need = sum(1 for s in shares if s > 0)
    if n_ids < need:
        raise ValueError(f"--ids {n_ids}: {fmt} needs at least {need} identities (one per split)")
    if images_per_id < 1:
        raise ValueError(f"--images-per-id {images_per_id}: must be at least 1")
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be >= 0")
    if not 0.0 <= chinese <= 1.0:
        raise ValueError(f"--chinese {chinese}: must be a share between 0 and 1")


def assign_splits(n_ids: int, fmt: str, seed: int) -> list[str | None]:
    """Split of each identity (None for SYNTH-PEDES): whole identities, shares by SPLIT_SHARES, each
    non-empty split holding at least one identity, chosen by a permutation seeded with `seed`."""
    if fmt not in SPLIT_SHARES:
        return [None] * n_ids
    shares = SPLIT_SHARES[fmt]
    counts = [max(1, round(s * n_ids)) if s > 0 else 0 for s in shares[1:]]
    counts = [n_ids - sum(counts)] + counts
    if counts[0] < 1:
        raise ValueError(f"{n_ids} identities are too few to split {fmt} into train/val/test")
    names = [name for name, c in zip(("train", "val", "test"), counts) for _ in range(c)]
    order = np.random.default_rng([seed, _SPLIT]).permutation(n_ids)
    out: list[str | None] = [None] * n_ids
    for name, pid in zip(names, order):
        out[int(pid)] = name
    return out


def _odd(name: str, pid: int, n: int) -> str:
    """--odd-paths: a third of the files get a space in their name, another third non-ASCII characters."""
    stem, ext = os.path.splitext(name)
    kind = (pid + n) % 3
    return f"{stem} copy{ext}" if kind == 1 else f"{stem}_行人é{ext}" if kind == 2 else name


def image_path(fmt: str, pid: int, n: int, split: str | None, seed: int, odd: bool) -> str:
    """The image's path as the dataset JSON writes it (relative to IMAGE_DIR[fmt])."""
    cam = 1 + (pid * 7 + n * 3 + seed) % 15
    if fmt == "synthpedes":
        folder, name = f"Part{1 + pid // 10000}/{pid}", f"{n + 1}.jpg"
    elif fmt == "cuhk-pedes":
        folder, name = "demo", f"{pid + 1:05d}{n + 1:03d}.jpg"
    elif fmt == "icfg-pedes":
        folder, name = f"{split}/{pid + 1:04d}", f"{pid + 1:04d}_{cam:03d}_{n + 1:02d}_demo_{n:04d}_0.jpg"
    else:
        folder, name = "", f"{pid:04d}_c{cam}_{n + 1:04d}.jpg"
    if odd:
        name = _odd(name, pid, n)
    return f"{folder}/{name}" if folder else name


def _roughen(text: str, rng: np.random.Generator) -> str:
    """Occasionally the whitespace noise of real annotations (readers normalise it)."""
    if rng.random() >= ROUGH_SHARE:
        return text
    r = rng.random()
    if r < 0.35:
        return " " + text
    if r < 0.7:
        return text + " "
    spaces = [m.start() for m in re.finditer(" ", text)]
    if not spaces:
        return text + " "
    i = spaces[int(rng.random() * len(spaces))]
    return text[:i] + "  " + text[i + 1:]


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """About 128 x 256, varied a little like real detector crops."""
    w = int(rng.integers(116, 141))
    return w, int(round(w * rng.uniform(1.9, 2.2)))


# Set in each worker (and in the main process for workers=1): the read-only job description.
_JOB: dict = {}


def _init(job: dict) -> None:
    _JOB.clear()
    _JOB.update(job)


def _make_image(task: tuple[int, int, str]) -> dict:
    pid, n, rel = task
    seed, ids, site = _JOB["seed"], _JOB["identities"], SITES[_JOB["site"]]
    attrs = ids[pid]
    img_rng = np.random.default_rng([seed, pid, n, _IMAGE])
    img, visible = render_person(attrs, img_rng, _image_size(img_rng), site.style)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=site.jpeg_quality(img_rng))
    path = Path(_JOB["image_root"]) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())

    cap_rng = np.random.default_rng([seed, pid, n, _CAPTION])
    keyed = keyed_image_captions(attrs, visible, cap_rng, _JOB["captions_per_image"], _JOB["chinese"],
                                 site.sentences)
    clean = [text for text, _ in keyed]
    return {"visible": visible, "clean": clean, "caption_keys": [keys for _, keys in keyed],
            "captions": [_roughen(c, cap_rng) for c in clean], "size": list(img.size)}


def _run(tasks: list, job: dict, workers: int) -> list[dict]:
    if workers <= 1 or len(tasks) < 32:
        _init(job)
        return [_make_image(t) for t in tasks]
    # fork where there is one: workers start at once and inherit the imported modules
    ctx = get_context("fork") if "fork" in get_all_start_methods() else get_context()
    with ctx.Pool(workers, initializer=_init, initargs=(job,)) as pool:
        return pool.map(_make_image, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8))))


def _record(fmt: str, pid: int, rel: str, split: str | None, r: dict, attrs: dict) -> dict:
    caps = r["captions"]
    if fmt == "synthpedes":
        return {"id": pid, "file_path": rel, "captions": caps,
                "prompt_caption": [prompt_caption(attrs, r["visible"])],
                "attributes": [attribute_string(attrs, r["visible"])]}
    if fmt == "rstpreid":
        return {"id": pid, "img_path": rel, "captions": caps, "split": split}
    return {"split": split, "captions": caps, "file_path": rel,
            "processed_tokens": [tokenize(c) for c in r["clean"]], "id": pid + 1}


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def write_dataset(out_dir: str | Path, n_ids: int, images_per_id: int, seed: int, fmt: str = "synthpedes",
                  chinese: float = DEFAULT_CHINESE_SHARE, workers: int | None = None,
                  odd_paths: bool = False, site: str = "demo") -> Path:
    """Draw `n_ids` x `images_per_id` pedestrians into `out_dir` in format `fmt`, as the cameras and annotators
    of `site` (person.demo.synthetic.sites) see them; return the JSON's path.

    Also writes `out_dir/demo_truth.json` (schema in the package docstring). The same arguments give
    byte-identical files whatever `workers` is; the same seed draws the same identities at every site.
    """
    _check(fmt, n_ids, images_per_id, seed, chinese, site)
    out = Path(out_dir)
    image_root = out / IMAGE_DIR[fmt]
    image_root.mkdir(parents=True, exist_ok=True)
    identities = sample_identities(n_ids, np.random.default_rng([seed, _IDS]))
    splits = assign_splits(n_ids, fmt, seed)
    tasks = [(pid, n, image_path(fmt, pid, n, splits[pid], seed, odd_paths))
             for pid in range(n_ids) for n in range(images_per_id)]
    job = {"seed": seed, "identities": identities, "image_root": str(image_root), "chinese": chinese,
           "captions_per_image": CAPTIONS_PER_IMAGE[fmt], "site": site}
    results = _run(tasks, job, default_workers() if workers is None else workers)

    records, truth_images = [], []
    for (pid, n, rel), r in zip(tasks, results):
        attrs = identities[pid]
        rec = _record(fmt, pid, rel, splits[pid], r, attrs)
        records.append(rec)
        truth_images.append({"path": rel, "id": rec["id"], "identity": pid, "image": n,
                             "split": splits[pid], "size": r["size"],
                             "attributes": {k: attrs[k] for k in ATTRIBUTE_KEYS}, "visible": r["visible"],
                             "captions": r["clean"],
                             "caption_keys": r["caption_keys"]})
    json_path = out / JSON_NAME[fmt]
    json_path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    truth = {"version": TRUTH_VERSION, "format": fmt, "json": JSON_NAME[fmt], "image_root": IMAGE_DIR[fmt],
             "seed": seed, "ids": n_ids, "images_per_id": images_per_id, "chinese": chinese,
             "attribute_keys": list(ATTRIBUTE_KEYS),
             "vocabulary": {k: list(v) for k, v in vocabulary().items()},
             "identities": identities, "images": truth_images}
    if site != "demo":  # absent means the demo site: the demo's truth files stay as they were
        truth["site"] = site
    (out / TRUTH_NAME).write_text(json.dumps(truth, ensure_ascii=False), encoding="utf-8")
    return json_path


def dataset_summary(json_path: str | Path) -> dict:
    """Counts of a written set for the command's report: images, ids, captions, Chinese share."""
    records = json.loads(Path(json_path).read_text(encoding="utf-8"))
    captions = [c for r in records for c in r["captions"]]
    return {"images": len(records), "ids": len({r["id"] for r in records}), "captions": len(captions),
            "chinese_share": sum(is_chinese(c) for c in captions) / max(1, len(captions))}
