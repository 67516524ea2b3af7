"""The inputs of the second-site domain-adaptation benchmark: the frozen second site (SECOND_SITE) as a user's
own unlabeled data (whole-image detections, with or without tracks, and a file of descriptions) and a labelled mix
of the demo set and some of the site's identities (their stores: person.demo.prepare).

Only the site's training identities ever feed training; its held-out identities (person.data.records' default
split: 100 of 1000) stay the evaluation set, so every figure is measured on the images bench/site.py measures.
Each step is skipped when its output is there. A file that is there with other contents (made with other
arguments) is refused, not replaced: stores and runs made from it would silently change meaning.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from person import files
from person.data.formats import PATH_KEY, iter_json_list
from person.data.records import EVAL_SPLIT, RecordSet, load_records, split_code
from person.demo.synthetic import SECOND_SITE, write_dataset
from person.demo.synthetic.writer import JSON_NAME, TRUTH_NAME

# The mix's image folder: CUHK-PEDES's (writer.IMAGE_DIR), so load_records finds it without --image_root.
MIX_IMAGES = "imgs"


def second_site(folder: Path) -> Path:
    """The frozen second-site draw under `folder`; its JSON."""
    json_path = folder / JSON_NAME[SECOND_SITE["fmt"]]
    if json_path.is_file():
        print(f"[data] {json_path} is there; skipped")
    else:
        write_dataset(folder, **SECOND_SITE)
        print(f"[data] drew the second site: {SECOND_SITE}")
    return json_path


def site_crops(json_path: Path, out: Path, tracks: bool = False) -> Path:
    """The site's training images as a detections JSON-lines file, each box the whole image: what a user's
    detector would hand over (`--detections out --image-root <the set's image root>`; the format has no field for
    the root). With `tracks`, each identity's images 0-1 and 2-3 form two tracks, as two cameras' tracklets
    would: a track never spans two identities, and an identity has more than one."""
    records = load_records(json_path)
    truth = _truth(json_path, records)
    lines = []
    for i in records.split_indices("train"):
        w, h = truth[i]["size"]
        line: dict[str, Any] = {"image": records.paths[i], "bbox": [0, 0, w, h]}
        if tracks:
            line["track"] = f"{records.orig_ids[i]}-{truth[i]['image'] // 2}"
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
    return _write_once(out, "".join(lines), f"{len(lines)} whole-image boxes of {json_path}'s training images"
                                            f"{' with tracks' if tracks else ''}")


def site_captions(json_path: Path, out: Path) -> Path:
    """The site's training captions (not its prompt captions), one per line, unpaired: a user's descriptions.
    The records' captions are whitespace-normalised (newlines become spaces); a repeated text is written once,
    as person.data.unlabeled.captions_file would skip it, so the file's lines are the store's rows."""
    records = load_records(json_path)
    texts = dict.fromkeys(c for i in records.split_indices("train") for c in records.captions[i])
    return _write_once(out, "".join(f"{t}\n" for t in texts),
                       f"{len(texts)} distinct captions of {json_path}'s training identities")


def labelled_mix(demo_json: Path, site_json: Path, out_dir: Path, site_ids: int | None, val_ids: int = 50,
                 seed: int = 0) -> Path:
    """One CUHK-PEDES set: the demo set's training records, `site_ids` of the site's training identities (None:
    all but the val ones) as "train", `val_ids` others as "val", and the site's held-out identities as "test"
    (its own eval split, image for image). The val identities are drawn first, so they are the same whatever
    `site_ids` is; the site's ids are offset past the demo's. Captions and prompt captions are kept as written.

    Paths are "demo/..." and "site/..." under out_dir/imgs, which holds two relative links to the sets' image
    roots: a self-contained JSON whose default image root works (a moved workdir keeps working)."""
    demo, site = load_records(demo_json), load_records(site_json)
    pool = np.unique(site.orig_ids[site.split_indices("train")])
    n_train = len(pool) - val_ids if site_ids is None else site_ids
    if val_ids < 0 or n_train < 0 or val_ids + n_train > len(pool):
        raise ValueError(f"{site_json} has {len(pool)} training identities: {val_ids} val and {n_train} train "
                         f"identities do not fit")
    order = np.random.default_rng(seed).permutation(pool).tolist()
    split_of = {pid: "val" for pid in order[:val_ids]} | {pid: "train" for pid in order[val_ids:val_ids + n_train]}
    offset = int(demo.orig_ids.max()) + 1 - int(site.orig_ids.min())
    train, test = split_code("train"), split_code("eval")
    entries = [_entry(rec, "demo", 0, "train", demo.format)
               for rec, split in zip(iter_json_list(demo.source), demo.splits) if split == train]
    for rec, pid, split in zip(iter_json_list(site.source), site.orig_ids.tolist(), site.splits):
        name = EVAL_SPLIT if split == test else split_of.get(pid)
        if name is not None:
            entries.append(_entry(rec, "site", offset, name, site.format))
    images = files.make_folder(out_dir / MIX_IMAGES)
    for name, root in (("demo", demo.image_root), ("site", site.image_root)):
        _link(images / name, root)
    return _write_once(out_dir / JSON_NAME["cuhk-pedes"], json.dumps(entries, ensure_ascii=False),
                       f"{len(entries)} images: the demo set's training identities, {n_train} train and {val_ids} "
                       f"val identities of the site's and its held-out ones")


def _truth(json_path: Path, records: RecordSet) -> list[dict[str, Any]]:
    """The truth file's images (person.demo.synthetic: size, identity, index), checked to be in record order."""
    images = json.loads((json_path.parent / TRUTH_NAME).read_text(encoding="utf-8"))["images"]
    if [im["path"] for im in images] != records.paths:
        raise ValueError(f"{json_path.parent / TRUTH_NAME} is not the truth of {json_path}: its images differ")
    return images


def _entry(rec: dict[str, Any], folder: str, offset: int, split: str, fmt: str) -> dict[str, Any]:
    """A CUHK-PEDES record of `rec`, its path under the mix's `folder` link and its id moved by `offset`."""
    entry = {"split": split, "captions": rec["captions"], "file_path": f"{folder}/{rec[PATH_KEY[fmt]]}",
             "id": rec["id"] + offset}
    if "prompt_caption" in rec:  # load_records reads it in any format; training uses it by default
        entry["prompt_caption"] = rec["prompt_caption"]
    return entry


def _link(link: Path, target: Path) -> None:
    """`link` -> `target`, relative; an existing link must already point there."""
    relative = os.path.relpath(target.resolve(), link.parent.resolve())
    if link.is_symlink() and os.readlink(link) == relative:
        return
    link.symlink_to(relative, target_is_directory=True)


def _write_once(path: Path, text: str, made: str) -> Path:
    """`text` into `path` (atomically), unless exactly that is there already; other contents are refused."""
    if path.is_file():
        if path.read_text(encoding="utf-8") != text:
            raise ValueError(f"{path} was made with other arguments: remove it or write elsewhere")
        print(f"[data] {path} is there; skipped")
    else:
        files.write_text(path, text)
        print(f"[data] {made} -> {path}")
    return path
