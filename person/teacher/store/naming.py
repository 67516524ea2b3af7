"""Store names: where `--embedding_path` puts a store, and where a reader finds it.

`--embedding_path` is a store (.h5 / .zarr) or a folder where the store is named after its dataset and
teacher (`resolve_store_path` for the writer, `locate_store` for a reader)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from person.data.records import RecordSet
from person.data.unlabeled import UnlabeledSource
from person.teacher.store.schema import FORMATS, SUFFIXES, TeacherLike


def _teacher_slug(name: str) -> str:
    name = name.rstrip("/\\")
    local = Path(name).expanduser().is_dir() or name.startswith((".", "/", "~", "\\"))
    slug = Path(name).name if local else name.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", slug)


def resolve_store_path(embedding_path: str | Path, records: RecordSet | UnlabeledSource, teacher: TeacherLike | str,
                       format: str | None = None, pad_to_square: bool = False) -> Path:
    """Turn `--embedding_path` into the store's path.

    A path ending in `.h5` or `.zarr` is the store itself. Anything else is a folder (the default
    `embeddings/`), and the store in it is `<dataset>__<teacher>[-pad].<format>`: <dataset> is the
    records' format and the first 10 hex digits of `RecordSet.fingerprint()` (content and split),
    <teacher> the model's name (a hub id with '/' as '--', a local directory by its own name), `-pad`
    when crops are padded to square. E.g. `embeddings/synthpedes-3fa2b1c09d__google--siglip2-base-
    patch16-224.h5`. An unlabeled source (person.data.unlabeled) is named the same way by its kind and the
    fingerprint of its kind and path: `image_dir-0c4e9a7b21__<teacher>.h5`. `teacher` is a Teacher, its
    identity() dict, or a name (then `pad_to_square` says the crop handling). `format` (h5 / zarr) applies to
    folders; for a file it must agree or be None.
    """
    path = Path(embedding_path)
    if path.suffix in SUFFIXES:
        if format is not None and format != SUFFIXES[path.suffix]:
            raise ValueError(f"--embedding_path {path} is a .{SUFFIXES[path.suffix]} store but --format is "
                             f"{format}; give a path ending in .{format}, or a folder")
        return path
    format = format or "h5"
    if format not in FORMATS:
        raise ValueError(f"store format {format!r}: use one of {', '.join(FORMATS)}")
    if isinstance(teacher, str):
        name, pad = teacher, pad_to_square
    else:
        identity = teacher if isinstance(teacher, Mapping) else teacher.identity()
        name, pad = identity["teacher"], bool(identity["preprocessing"].get("pad_to_square"))
    return path / f"{_dataset_slug(records)}__{_teacher_slug(name)}{'-pad' if pad else ''}.{format}"


def _dataset_slug(records: RecordSet | UnlabeledSource) -> str:
    return f"{records.format}-{records.fingerprint()[:10]}"


def locate_store(embedding_path: str | Path, records: RecordSet | None = None,
                 teacher: TeacherLike | None = None) -> Path:
    """The store `--embedding_path` names, for reading (no teacher needed).

    A .h5/.zarr path is the store. In a folder, the store made from `records` under the name
    `resolve_store_path` gives (with `teacher`: exactly that name, in either format; without: the one
    store of this dataset in the folder, whichever teacher made it).
    """
    path = Path(embedding_path)
    if path.suffix in SUFFIXES:
        return path
    if records is None:
        raise ValueError(f"--embedding_path {path} is a folder: name the store in it (.h5 or .zarr)")
    if teacher is not None:
        wanted = [resolve_store_path(path, records, teacher, fmt).name for fmt in FORMATS]
    else:
        wanted = [f"{_dataset_slug(records)}__*{suffix}" for suffix in SUFFIXES]
    found = sorted({p for pattern in wanted for p in path.glob(pattern)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no feature store of this dataset in {path} (looked for {' or '.join(wanted)}); "
                                f"make it with tools/extract_label.py --embedding_path {path}")
    raise ValueError(f"{path} holds {len(found)} stores of this dataset ({', '.join(p.name for p in found)}); "
                     f"pass the one to use as --embedding_path")

