"""person.teacher.store: layout, reading in RAM and from the file, both formats alike, refusals, kill-safe writes."""
import hashlib
import json

import h5py
import numpy as np
import pytest

from person.data.records import load_records
from person.teacher import store as S

IDENTITY = {"teacher": "org/fake-teacher", "kind": "siglip", "config_hash": "c0ffee", "dim": 8, "dtype": "float32",
            "preprocessing": {"pad_to_square": False, "size": {"height": 32, "width": 32}}}
CHUNK = 3  # does not divide the 20 images: the last chunk is short


def unit_vectors(n, dim, seed):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


class Content:
    """Embeddings as a teacher would give them, with image row 5 unreadable."""

    def __init__(self, records):
        self.layout = S.caption_layout(records)
        self.images = unit_vectors(len(records), IDENTITY["dim"], 1)
        self.images[5] = 0
        self.captions = unit_vectors(len(self.layout.texts), IDENTITY["dim"], 2)
        self.status = np.full(len(records), S.OK, dtype=np.uint8)
        self.status[5] = S.UNREADABLE
        self.reasons = {5: "corrupt image (broken data stream) — 行人"}


def write_store(path, records, content, units=None, identity=IDENTITY):
    writer = S.StoreWriter.open(path, records, identity, chunk_rows=CHUNK, batch_size=2)
    for unit in writer.pending() if units is None else units(writer):
        rows = slice(unit.start, unit.stop)
        if unit.kind == "image":
            reasons = {r: t for r, t in content.reasons.items() if unit.start <= r < unit.stop}
            writer.write(unit, content.images[rows], content.status[rows], reasons)
        else:
            writer.write(unit, content.captions[rows])
    return writer


def all_arrays(path):
    """Every array of a store, by name, as numpy (the bytes a store is compared by)."""
    if S.store_format(path) == "h5":
        with h5py.File(path, "r") as f:
            return {k: f[k].asstr()[...] if f[k].dtype.kind == "O" else f[k][...] for k in f}
    import zarr
    group = zarr.open_group(path, mode="r")
    return {k: a[:] for k, a in group.arrays()}


def test_caption_rows_follow_the_records(small_records):
    layout = S.caption_layout(small_records)
    i = 3
    rows = slice(layout.offsets[i], layout.offsets[i + 1])
    assert layout.texts[rows] == [*small_records.captions[i], *small_records.prompt_captions[i]]
    assert layout.field[rows].tolist() == ([0] * len(small_records.captions[i]) +
                                           [1] * len(small_records.prompt_captions[i]))
    assert (layout.image[rows] == i).all()
    assert layout.offsets[-1] == len(layout.texts) == len(layout.image)
    assert small_records.prompt_captions[i], "the drawn set has prompt captions, so both fields are exercised"


@pytest.mark.parametrize("fmt", S.FORMATS)
@pytest.mark.parametrize("in_memory", [True, False])
def test_rows_read_back_in_any_order_with_repeats(tmp_path, small_records, fmt, in_memory):
    content = Content(small_records)
    path = tmp_path / f"s.{fmt}"
    write_store(path, small_records, content)
    with S.open_store(path, small_records, IDENTITY, in_memory=in_memory) as store:
        assert store.in_memory is in_memory and store.complete
        assert (store.num_images, store.num_captions, store.dim) == (len(small_records), len(content.layout.texts), 8)
        rows = np.array([7, 0, 7, 19, 4, 12, 18])
        assert np.array_equal(store.images(rows), content.images[rows].astype(np.float32))
        assert store.images(rows, np.float16).dtype == np.float16
        assert np.array_equal(store.images(rows, np.float16), content.images[rows])
        caps = np.array([len(content.layout.texts) - 1, 0, 3, 3])
        assert np.array_equal(store.captions(caps), content.captions[caps].astype(np.float32))
        assert store.images([]).shape == (0, 8)
        assert store.caption_texts(caps) == [content.layout.texts[c] for c in caps]
        assert store.image_paths == small_records.paths
        assert np.array_equal(store.image_pid, small_records.pids)
        assert np.array_equal(store.image_split, small_records.splits)
        assert np.array_equal(store.caption_image, content.layout.image)
        assert np.array_equal(store.caption_offsets, content.layout.offsets)
        assert np.array_equal(store.caption_field, content.layout.field)
        assert store.image_status.tolist() == content.status.tolist()
        assert store.skipped() == [(5, small_records.paths[5], content.reasons[5])]
        train = store.split_rows("train")
        assert 5 not in train and set(train) | {5} >= set(small_records.split_indices("train"))
        assert np.array_equal(store.split_rows("eval"), small_records.split_indices("eval")[
            store.image_ok[small_records.split_indices("eval")]])
        assert store.teacher_identity == IDENTITY and store.dataset_info["fingerprint"] == small_records.fingerprint()
        with pytest.raises(ValueError, match=r"image row 5 \(.*\) is unreadable"):
            store.images([1, 5])
        with pytest.raises(IndexError, match="outside 0..19"):
            store.images([20])


def test_h5_and_zarr_hold_equal_arrays(tmp_path, small_records):
    content = Content(small_records)
    write_store(tmp_path / "s.h5", small_records, content)
    write_store(tmp_path / "s.zarr", small_records, content)
    h5, zr = all_arrays(tmp_path / "s.h5"), all_arrays(tmp_path / "s.zarr")
    assert sorted(h5) == sorted(zr)
    for name in h5:
        assert h5[name].dtype == zr[name].dtype or h5[name].dtype.kind == "O", name
        assert np.array_equal(h5[name].astype(zr[name].dtype), zr[name]), name


def test_a_store_from_another_dataset_teacher_or_preprocessing_is_refused(tmp_path, small_records, small_set):
    path = tmp_path / "s.h5"
    write_store(path, small_records, Content(small_records))
    other_split = load_records(small_set, eval_ids=2)
    with pytest.raises(S.StoreMismatchError) as e:
        S.open_store(path, records=other_split)
    message = str(e.value)
    assert "another dataset" in message and "split_rule: 'ids-3-seed-0' (store) vs 'ids-2-seed-0' (now)" in message
    assert "fingerprint" in message and "another --embedding_path" in message and "re-extract" in message

    other_model = {**IDENTITY, "config_hash": "beef"}
    with pytest.raises(S.StoreMismatchError, match=r"another teacher(.|\n)*config_hash: 'c0ffee' \(store\) vs 'beef'"):
        S.open_store(path, teacher=other_model)
    padded = {**IDENTITY, "preprocessing": {**IDENTITY["preprocessing"], "pad_to_square": True}}
    with pytest.raises(S.StoreMismatchError, match=r"preprocessing.pad_to_square: False \(store\) vs True \(now\)"):
        S.open_store(path, small_records, padded)
    # The teacher's name and dtype may differ for reading (a moved directory, bf16 on GPU vs fp32 on CPU) ...
    S.open_store(path, small_records, {**IDENTITY, "teacher": "/elsewhere/fake-teacher", "dtype": "bfloat16"}).close()
    # ... but not for continuing an extraction, whose bytes they would change.
    with pytest.raises(S.StoreMismatchError, match=r"dtype: 'float32' \(store\) vs 'bfloat16' \(now\)"):
        S.StoreWriter.open(path, small_records, {**IDENTITY, "dtype": "bfloat16"}, chunk_rows=CHUNK, batch_size=2)
    with pytest.raises(S.StoreMismatchError, match=r"batch_size: 2 \(store\) vs 8 \(now\)"):
        S.StoreWriter.open(path, small_records, IDENTITY, chunk_rows=CHUNK, batch_size=8)


def test_an_unfinished_store_is_refused_and_its_pending_rows_unreadable(tmp_path, small_records):
    path = tmp_path / "s.zarr"
    content = Content(small_records)
    writer = write_store(path, small_records, content, units=lambda w: w.pending()[:2])  # image chunks 0 and 1 only
    assert len(writer.pending()) == len(writer.units) - 2
    with pytest.raises(S.StoreIncompleteError, match=r"2 of \d+ chunks written.*run tools/extract_label.py"):
        S.open_store(path)
    with S.open_store(path, allow_incomplete=True) as store:
        assert not store.complete
        done = 2 * CHUNK
        assert store.image_status[:done].tolist() == content.status[:done].tolist()
        assert (store.image_status[done:] == S.PENDING).all()
        assert not set(store.split_rows("train")) & set(range(done, 20))
        with pytest.raises(ValueError, match=f"image row {done} .* not extracted yet"):
            store.images([0, done])
        with pytest.raises(ValueError, match="caption row 0 is not extracted yet"):
            store.captions([0])


def test_a_unit_killed_before_its_done_flag_reads_as_pending(tmp_path, small_records):
    path = tmp_path / "s.h5"
    write_store(path, small_records, Content(small_records))
    with h5py.File(path, "r+") as f:  # what a kill between the rows and the flag leaves
        f["image_done"][1] = 0
    with S.open_store(path, allow_incomplete=True) as store:
        assert (store.image_status[CHUNK:2 * CHUNK] == S.PENDING).all() and store.image_status[0] == S.OK
        assert S.StoreWriter.open(path, small_records, IDENTITY, chunk_rows=CHUNK, batch_size=2).pending() == [
            S.Unit("image", 1, CHUNK, 2 * CHUNK)]


def test_h5_extraction_writes_never_touch_metadata(tmp_path, small_records):
    """Why a SIGKILL cannot corrupt the HDF5 file: after creation only raw data bytes change."""
    path = tmp_path / "s.h5"
    S.StoreWriter.open(path, small_records, IDENTITY, chunk_rows=CHUNK, batch_size=2)

    def outside_data(p):
        with h5py.File(p, "r") as f:
            regions = sorted((f[k].id.get_offset(), f[k].id.get_storage_size())
                             for k in ("image_emb", "caption_emb", "image_status", "image_error", "image_done",
                                       "caption_done"))
        data, h, pos = p.read_bytes(), hashlib.sha256(), 0
        for offset, size in regions:
            h.update(data[pos:offset])
            pos = offset + size
        return h.update(data[pos:]) or (h.hexdigest(), len(data))

    before = outside_data(path)
    write_store(path, small_records, Content(small_records))
    assert outside_data(path) == before


def test_store_path_from_embedding_path(tmp_path, small_records):
    stem = f"{small_records.format}-{small_records.fingerprint()[:10]}"
    assert S.resolve_store_path(tmp_path, small_records, IDENTITY) == tmp_path / f"{stem}__org--fake-teacher.h5"
    local = tmp_path / "my teacher"
    local.mkdir()
    assert S.resolve_store_path("embeddings", small_records, str(local), "zarr", pad_to_square=True).name == \
        f"{stem}__my_teacher-pad.zarr"
    padded = {**IDENTITY, "preprocessing": {"pad_to_square": True}}
    assert S.resolve_store_path(tmp_path, small_records, padded).name == f"{stem}__org--fake-teacher-pad.h5"
    assert S.resolve_store_path(tmp_path / "x.zarr", small_records, IDENTITY) == tmp_path / "x.zarr"
    with pytest.raises(ValueError, match="is a .zarr store but --format is h5"):
        S.resolve_store_path(tmp_path / "x.zarr", small_records, IDENTITY, "h5")


def test_a_folder_embedding_path_finds_the_store_of_the_dataset(tmp_path, small_records, small_set):
    content = Content(small_records)
    with pytest.raises(FileNotFoundError, match="no feature store of this dataset in .*make it with"):
        S.open_store(tmp_path, small_records)
    made = write_store(S.resolve_store_path(tmp_path, small_records, IDENTITY), small_records, content).path
    write_store(S.resolve_store_path(tmp_path, load_records(small_set, eval_ids=2), IDENTITY, "zarr"),
                load_records(small_set, eval_ids=2), content)  # another split of the data: another dataset
    with S.open_store(tmp_path, small_records) as store:
        assert store.path == made
    other = {**IDENTITY, "teacher": "org/other-teacher"}
    write_store(S.resolve_store_path(tmp_path, small_records, other, "zarr"), small_records, content, identity=other)
    with pytest.raises(ValueError, match="holds 2 stores of this dataset .*pass the one to use"):
        S.open_store(tmp_path, small_records)
    assert S.locate_store(tmp_path, small_records, other).name.endswith("__org--other-teacher.zarr")
    with pytest.raises(ValueError, match="is a folder: name the store"):
        S.open_store(tmp_path)


def test_what_is_not_a_store_is_a_clear_error(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(S.StoreFormatError, match="junk.h5: not a readable feature store"):
        S.open_store(tmp_path / "junk.h5")
    with pytest.raises(FileNotFoundError, match="make it with tools/extract_label.py"):
        S.open_store(tmp_path / "none.zarr")
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs["format_version"] = json.dumps(0)
    with pytest.raises(S.StoreFormatError, match="format version 0, this code reads version 1"):
        S.open_store(tmp_path / "old.h5")

