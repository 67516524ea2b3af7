"""person.teacher.store against damage: a full or read-only disk while writing (on a real tmpfs), and stores
damaged afterwards (short arrays, deleted chunk files, zeroed rows, missing attributes or arrays, broken
offsets), each refused when opened with a message that names it, and repaired by rerunning the writer."""
import errno
import hashlib
import json
import logging
import os
import re
import shutil

import h5py
import numpy as np
import pytest
import zarr

from tests.teacher import tiny_teachers
from person.data.records import load_records
from person.demo.synthetic import write_dataset
from person.errors import PersonError
from person.teacher import store as S
from person.teacher.store.backends import _Rows
from tests.teacher.test_store import all_arrays
from person.cli import extract as extract_label

CHUNK = 3  # 7 image chunks (the last short) and 20 caption chunks of the 20-image, 60-caption set
DIM = 512  # 3 KiB of float16 per chunk: a tmpfs runs out within a few chunks, not within one page


def identity(dim=DIM):
    return {"teacher": "org/fake-teacher", "kind": "siglip", "config_hash": "c0ffee", "dim": dim, "dtype": "float32",
            "preprocessing": {}}


class Content:
    """Unit embeddings for every row, image row 5 unreadable (zero, with a reason)."""

    def __init__(self, records, dim=DIM):
        rng = np.random.default_rng(0)
        self.dim, n_caps = dim, len(S.caption_layout(records).texts)
        self.images, self.captions = (_unit(rng.standard_normal((n, dim))) for n in (len(records), n_caps))
        self.images[5] = 0
        self.status = np.full(len(records), S.OK, dtype=np.uint8)
        self.status[5] = S.UNREADABLE

    def write(self, writer, unit):
        rows = slice(unit.start, unit.stop)
        if unit.kind == "image":
            reasons = {5: "corrupt image"} if unit.start <= 5 < unit.stop else {}
            writer.write(unit, self.images[rows], self.status[rows], reasons)
        else:
            writer.write(unit, self.captions[rows])


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def open_writer(path, records, dim=DIM, chunk_rows=CHUNK):
    return S.StoreWriter.open(path, records, identity(dim), chunk_rows=chunk_rows, batch_size=2)


def write_all(path, records, content, chunk_rows=CHUNK):
    writer = open_writer(path, records, content.dim, chunk_rows)
    for unit in writer.pending():
        content.write(writer, unit)
    return writer


def assert_same_arrays(path, clean):
    expected, got = all_arrays(clean), all_arrays(path)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype and np.array_equal(got[name], expected[name]), name


@pytest.fixture(scope="module")
def clean(tmp_path_factory, small_records):
    """Stores written without interruption on an ordinary disk: what every repaired or resumed store must equal."""
    out = tmp_path_factory.mktemp("clean")
    return {(fmt, dim): write_all(out / f"clean{dim}.{fmt}", small_records, Content(small_records, dim)).path
            for fmt in S.FORMATS for dim in (8, DIM)}


# ---------------------------------------------------------------- a real small filesystem

def fill_leaving(folder, pages):
    """A filler file that leaves `pages` pages free on the filesystem of `folder`."""
    stats = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(bytes(stats.f_bavail * stats.f_frsize - pages * stats.f_frsize))
    assert os.statvfs(folder).f_bavail == pages
    return filler


def write_until_error(writer, content):
    """Write the pending units in order; (units written, the unit that failed, its error)."""
    written = []
    for unit in writer.pending():
        try:
            content.write(writer, unit)
        except S.StoreWriteError as e:
            return written, unit, e
        written.append(unit)
    pytest.fail("every unit was written: the filesystem did not run out")


def sizes(message):
    """(bytes needed, bytes free) as a StoreWriteError's message gives them ("need about 60.0 KiB and 0 bytes
    is free"), to within its rounding."""
    scale = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    found = re.search(r"need about ([\d.]+) (\w+) and ([\d.]+) (\w+) is free", message)
    return tuple(round(float(found[i]) * scale[found[i + 1]]) for i in (1, 3))


@pytest.mark.parametrize("fmt", S.FORMATS)
def test_a_full_disk_stops_the_run_keeps_finished_chunks_and_the_rerun_completes(tmp_path, tmpfs, small_records, clean,
                                                                                  fmt):
    mount, _ = tmpfs
    folder = mount(1024)
    path = folder / f"s.{fmt}"
    content = Content(small_records)
    writer = open_writer(path, small_records)  # the store is created ...
    filler = fill_leaving(folder, 6)  # ... then the disk fills up: room for a few chunks' rows only
    written, failed, error = write_until_error(writer, content)
    assert written, "some chunks fit before the disk was full"

    message = str(error)
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and "\n" not in message
    rows = f"{failed.kind} rows {failed.start}..{failed.stop - 1}"
    assert message.startswith(f"{path}: writing chunk {failed.index} ({rows}) failed: No space left on device")
    unfinished = len(writer.units) - len(written)
    assert f"the {unfinished} unfinished chunks need about " in message and f"is free on {folder};" in message
    need, free = sizes(message)
    rows_left = sum(u.stop - u.start for u in writer.units[len(written):])
    assert need >= rows_left * DIM * 2 and free <= 6 * os.statvfs(folder).f_frsize
    assert f"free space there, then run the same command again: it continues where it stopped ({len(written)} of " \
           f"{len(writer.units)} chunks are finished and kept)" in message
    assert writer.pending()[0] == failed  # not marked done
    with S.open_store(path, allow_incomplete=True, in_memory=False) as store:  # what was finished reads back intact
        for unit in written:
            rows = np.arange(unit.start, unit.stop)
            if unit.kind == "image":
                assert np.array_equal(store.image_status[rows], content.status[rows])
                ok = rows[content.status[rows] == S.OK]
                assert np.array_equal(store.images(ok, np.float16), content.images[ok])
            else:
                assert np.array_equal(store.captions(rows, np.float16), content.captions[rows])

    filler.unlink()  # room again: the same writing continues
    resumed = open_writer(path, small_records)
    assert resumed.pending() == writer.units[len(written):]
    for unit in resumed.pending():
        content.write(resumed, unit)
    assert_same_arrays(path, clean[fmt, DIM])


@pytest.mark.parametrize("fmt", S.FORMATS)
def test_creating_a_store_on_a_full_or_read_only_disk_is_one_clear_error(tmpfs, small_records, clean, fmt):
    mount, remount = tmpfs
    small = mount(16)  # a few pages: not even the store's text and indexes fit
    path = small / f"s.{fmt}"
    with pytest.raises(S.StoreWriteError) as e:
        open_writer(path, small_records)
    message = str(e.value)
    assert e.value.errno == errno.ENOSPC and "\n" not in message
    assert message.startswith(f"{path}: creating the store failed: No space left on device (ENOSPC); the store "
                              f"needs about ")
    assert f"is free on {small}; free space there, then run the same command again" in message
    assert sorted(os.listdir(small)) == [], "the partial build is removed, its space given back"
    remount(small, "size=1024k")
    write_all(path, small_records, Content(small_records))
    assert_same_arrays(path, clean[fmt, DIM])

    readonly = mount(1024, readonly=True)
    with pytest.raises(S.StoreWriteError, match=rf"{readonly}/s.{fmt}: creating the store failed: Read-only file "
                                                rf"system \(EROFS\); .* make that filesystem writable") as e:
        open_writer(readonly / f"s.{fmt}", small_records)
    assert e.value.errno == errno.EROFS


@pytest.mark.parametrize("fmt", S.FORMATS)
def test_a_disk_turned_read_only_mid_run_stops_it_and_the_rerun_completes(tmpfs, small_records, clean, fmt):
    mount, remount = tmpfs
    folder = mount(1024)
    path = folder / f"s.{fmt}"
    content = Content(small_records)
    writer = open_writer(path, small_records)
    first = writer.pending()[:2]
    for unit in first:
        content.write(writer, unit)
    remount(folder, "ro")
    with pytest.raises(S.StoreWriteError) as e:
        content.write(writer, writer.pending()[0])
    assert e.value.errno == errno.EROFS
    assert f"{path}: writing chunk 2 (image rows 6..8) failed: Read-only file system (EROFS); the 25 unfinished " \
           f"chunks need about " in str(e.value)
    assert "make that filesystem writable (or move the store to one that is), then run the same command again: " \
           "it continues where it stopped (2 of 27 chunks are finished and kept)" in str(e.value)
    remount(folder, "rw")
    resumed = open_writer(path, small_records)
    for unit in resumed.pending():
        content.write(resumed, unit)
    assert_same_arrays(path, clean[fmt, DIM])


def test_extract_label_on_a_full_disk_says_so_and_the_same_command_finishes(tmp_path, tmpfs):
    """The real command with a tiny teacher (8 images, 24 captions: 11 chunks), zarr, whose every chunk needs
    new pages: the disk fills after the first chunks."""
    mount, _ = tmpfs
    dataset = write_dataset(tmp_path / "data", 4, 2, seed=0, workers=1)
    teacher = tiny_teachers.build_tiny_siglip(tmp_path / "teacher")
    argv = ["--data", str(dataset), "--teacher", str(teacher), "--chunk_rows", str(CHUNK), "--batch-size", "2",
            "--workers", "0", "--no-progress", "--embedding_path"]
    reference = extract_label.main([*argv, str(tmp_path / "ref.zarr")]).store
    folder = mount(1024)
    path = folder / "s.zarr"
    records, made_by = load_records(dataset), zarr.open_group(reference, mode="r").attrs["teacher"]
    S.StoreWriter.open(path, records, made_by, chunk_rows=CHUNK, batch_size=2)  # created as the command would
    filler = fill_leaving(folder, 5)
    with pytest.raises(S.StoreWriteError, match=rf"^{path}: writing chunk \d+ \((image|caption) rows \d+\.\.\d+\) "
                                                r"failed: No space left on device \(ENOSPC\); .* then run the same "
                                                r"command again: it continues where it stopped \([1-9]\d* of 11 "
                                                r"chunks are finished and kept\)$"):
        extract_label.main([*argv, str(path)])
    filler.unlink()
    left = len(S.StoreWriter.open(path, records, made_by, chunk_rows=CHUNK, batch_size=2).pending())
    assert 0 < left < 11
    assert extract_label.main([*argv, str(path)]).units_written == left
    assert_same_arrays(path, reference)


# ---------------------------------------------------------------- damaged stores, refused on open

def damage_h5(path, edit):
    with h5py.File(path, "r+") as f:
        edit(f)


def damage_zarr(path, edit):
    edit(zarr.open_group(path, mode="r+"))


def shorten(name, rows):
    def edit(f):
        if isinstance(f, h5py.File):
            kept, dtype = f[name][:rows], f[name].dtype
            del f[name]
            f.create_dataset(name, data=kept, dtype=dtype)
        else:
            f[name].resize((rows,) + f[name].shape[1:])
    return edit


def set_rows(name, rows, value):
    def edit(f):
        f[name][rows] = value
    return edit


def drop_attr(key, inner=None):
    def edit(f):
        if isinstance(f, h5py.File):
            if inner is None:
                del f.attrs[key]
            else:
                value = json.loads(f.attrs[key])
                del value[inner]
                f.attrs[key] = json.dumps(value)
        else:
            attrs = dict(f.attrs)
            attrs.pop(key) if inner is None else attrs[key].pop(inner)
            f.attrs.put(attrs)
    return edit


def drop_array(name):
    def edit(f):
        if isinstance(f, h5py.File):
            del f[name]
        else:
            shutil.rmtree(f.store.root / name)
    return edit


def offsets(change):
    def edit(f):
        values = f["caption_offsets"][...]
        change(values)
        f["caption_offsets"][...] = values
    return edit


def add(i, amount):
    def change(values):
        values[i] += amount
    return change


REEXTRACT = "delete it and run tools/extract_label.py again to re-extract it"
REFUSED_LAYOUTS = {
    "short image_emb": (shorten("image_emb", 15), r"array image_emb has shape \(15, 8\), expected \(20, 8\) "
                        r"\(counts.images = 20, teacher.dim = 8\); the store is truncated or damaged"),
    "short caption_text": (shorten("caption_text", 59), r"array caption_text has shape \(59,\), expected \(60,\) "
                           r"\(counts.captions = 60\)"),
    "short caption_done": (shorten("caption_done", 19), r"array caption_done has shape \(19,\), expected \(20,\) "
                           r"\(counts.captions = 60 in chunks of 3\)"),
    "no format_version": (drop_attr("format_version"), "attribute format_version is missing: not a feature store"),
    "no teacher": (drop_attr("teacher"), "attribute teacher is missing"),
    "no dataset": (drop_attr("dataset"), "attribute dataset is missing"),
    "no counts": (drop_attr("counts"), "attribute counts is missing"),
    "no extraction": (drop_attr("extraction"), "attribute extraction is missing"),
    "no counts.images": (drop_attr("counts", "images"), "attribute counts.images is missing"),
    "no caption_emb": (drop_array("caption_emb"), "array caption_emb is missing"),
    "no image_path": (drop_array("image_path"), "array image_path is missing"),
    "offsets not from 0": (offsets(add(0, 1)), r"caption_offsets are inconsistent: caption_offsets\[0\] is 1, "
                           "expected 0"),
    "offsets decreasing": (offsets(add(4, -5)), r"caption_offsets are inconsistent: they decrease after image 3 "
                           r"\(9, then 7\)"),
    "offsets short of the captions": (offsets(add(-1, -1)), r"caption_offsets are inconsistent: "
                                      r"caption_offsets\[-1\] is 59, expected 60 \(the caption count\)"),
    "offsets disagree with caption_image": (set_rows("caption_image", 4, 0), r"caption_offsets are inconsistent: "
                                            r"caption_image\[4\] is 0 but the offsets put caption 4 under image 1"),
}


@pytest.mark.parametrize("fmt", S.FORMATS)
@pytest.mark.parametrize("case", REFUSED_LAYOUTS)
def test_a_store_whose_layout_disagrees_with_its_counts_is_refused(tmp_path, small_records, clean, fmt, case):
    path = tmp_path / f"s.{fmt}"
    shutil.copytree(clean[fmt, 8], path) if fmt == "zarr" else shutil.copy(clean[fmt, 8], path)
    edit, message = REFUSED_LAYOUTS[case]
    (damage_h5 if fmt == "h5" else damage_zarr)(path, edit)
    for in_memory in (True, False):
        with pytest.raises(S.StoreFormatError, match=f"^{path}: {message}") as e:
            S.open_store(path, in_memory=in_memory)
        assert str(e.value).endswith(REEXTRACT) and "\n" not in str(e.value)
    with pytest.raises(S.StoreFormatError, match=message):  # nothing is written into a store like that
        open_writer(path, small_records, dim=8)


def zero_rows(name, rows):
    return set_rows(name, rows, 0)


def delete_chunk(name, key):
    def edit(group):
        (group.store.root / name / key).unlink()
    return edit


def zero_file(name, key):
    """The chunk file's bytes zeroed in place (zarr itself would delete a chunk written as all zeros)."""
    def edit(group):
        file = group.store.root / name / key
        file.write_bytes(bytes(file.stat().st_size))
    return edit


REDO = "run tools/extract_label.py with the same arguments again: it redoes the damaged chunks and keeps the rest"
DAMAGED = {  # (format, edit, the message's start, the unit the writer redoes)
    "h5 zeroed caption rows": ("h5", zero_rows("caption_emb", slice(39, 42)), "caption_emb chunk 13 (caption rows "
                               "39..41) is marked done but row 39 has L2 norm 0, not 1", S.Unit("caption", 13, 39, 42)),
    "h5 zeroed image status": ("h5", zero_rows("image_status", slice(6, 9)), "image_status chunk 2 (image rows "
                               "6..8) is marked done but row 6 has status 0 (0 = pending)", S.Unit("image", 2, 6, 9)),
    "zarr deleted embedding chunk": ("zarr", delete_chunk("image_emb", "c/2/0"), "image_emb chunk 2 (image rows "
                                     "6..8) is marked done but its chunk file image_emb/c/2/0 is missing",
                                     S.Unit("image", 2, 6, 9)),
    "zarr deleted status chunk": ("zarr", delete_chunk("image_status", "c/6"), "image_status chunk 6 (image rows "
                                  "18..19) is marked done but its chunk file image_status/c/6 is missing",
                                  S.Unit("image", 6, 18, 20)),
    "zarr zeroed chunk file": ("zarr", zero_file("caption_emb", "c/19/0"), "caption_emb chunk 19 "
                                      "(caption rows 57..59) is marked done but row 57 has L2 norm 0, not 1",
                                      S.Unit("caption", 19, 57, 60)),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_done_chunks_that_lost_their_rows_are_refused_and_the_rerun_redoes_exactly_them(tmp_path, small_records, clean,
                                                                                        caplog, case):
    fmt, edit, found, unit = DAMAGED[case]
    path = tmp_path / f"s.{fmt}"
    shutil.copytree(clean[fmt, 8], path) if fmt == "zarr" else shutil.copy(clean[fmt, 8], path)
    (damage_h5 if fmt == "h5" else damage_zarr)(path, edit)
    before = outside_data(path) if fmt == "h5" else None
    for in_memory in (True, False):
        with pytest.raises(S.StoreDamagedError) as e:
            S.open_store(path, in_memory=in_memory)
        assert str(e.value) == f"{path}: {found}; the store is damaged: {REDO}"

    with caplog.at_level(logging.WARNING, logger="person.teacher.store.writer"):
        writer = open_writer(path, small_records, dim=8)
    assert writer.pending() == [unit]
    assert f"{path}: {found}; marked pending, so this run extracts it again" in caplog.text
    S.open_store(path, allow_incomplete=True).close()  # now merely unfinished
    Content(small_records, 8).write(writer, unit)
    assert_same_arrays(path, clean[fmt, 8])
    if fmt == "h5":
        assert outside_data(path) == before  # clearing and rewriting touched data bytes only


def outside_data(path):
    """sha256 of every byte of an HDF5 store outside its writable datasets (tests/teacher/test_store.py's check)."""
    with h5py.File(path, "r") as f:
        regions = sorted((f[k].id.get_offset(), f[k].id.get_storage_size()) for k in
                         ("image_emb", "caption_emb", "image_status", "image_error", "image_done", "caption_done"))
    data, h, pos = path.read_bytes(), hashlib.sha256(), 0
    for offset, size in regions:
        h.update(data[pos:offset])
        pos = offset + size
    h.update(data[pos:])
    return h.hexdigest(), len(data)


def test_many_damaged_chunks_are_counted_in_the_message(tmp_path, small_records, clean):
    path = tmp_path / "s.zarr"
    shutil.copytree(clean["zarr", 8], path)
    for k in (1, 4, 9):
        (path / "caption_emb" / "c" / str(k) / "0").unlink()
    with pytest.raises(S.StoreDamagedError, match=r"caption_emb chunk 1 \(caption rows 3..5\) is marked done but its "
                                                  r"chunk file caption_emb/c/1/0 is missing \(and 2 more damaged "
                                                  r"chunks\); the store is damaged"):
        S.open_store(path)
    assert [u.index for u in open_writer(path, small_records, dim=8).pending()] == [1, 4, 9]


@pytest.mark.parametrize("fmt", S.FORMATS)
def test_a_zero_row_the_open_check_misses_is_refused_when_read_and_repaired_by_the_rerun(tmp_path, small_records, fmt):
    """Opening checks first, middle and last row of a chunk; row 1 of a 5-row chunk is none of them. Reading it
    refuses it, and reopening the writer (which checks every row) redoes its chunk."""
    content = Content(small_records, 8)
    clean = write_all(tmp_path / f"clean.{fmt}", small_records, content, chunk_rows=5).path
    path = tmp_path / f"s.{fmt}"
    write_all(path, small_records, content, chunk_rows=5)
    (damage_h5 if fmt == "h5" else damage_zarr)(path, zero_rows("caption_emb", 6))
    for in_memory in (True, False):
        with S.open_store(path, in_memory=in_memory) as store:
            assert store.captions([5, 7]).shape == (2, 8)
            for dtype in (np.float32, np.float16):
                with pytest.raises(S.StoreDamagedError) as e:
                    store.captions([5, 6, 7], dtype)
                assert str(e.value) == (f"{path}: caption_emb row 6 (chunk 1 (caption rows 5..9)) has L2 norm 0, not "
                                        f"1: the store is damaged; {REDO}")
    writer = open_writer(path, small_records, dim=8, chunk_rows=5)
    assert writer.pending() == [S.Unit("caption", 1, 5, 10)]
    content.write(writer, writer.pending()[0])
    assert_same_arrays(path, clean)


def test_the_writer_refuses_rows_that_are_not_unit_vectors(tmp_path, small_records):
    content = Content(small_records, 8)
    writer = open_writer(tmp_path / "s.h5", small_records, dim=8)
    unit = writer.pending()[0]
    emb = content.images[unit.start:unit.stop].copy()
    emb[1] = np.nan
    with pytest.raises(ValueError, match=r"image row 1 given for chunk 0 \(image rows 0..2\) has L2 norm nan, not 1: "
                                         r"a store holds L2-normalised embeddings"):
        writer.write(unit, emb, content.status[unit.start:unit.stop])
    assert writer.pending()[0] == unit
    emb[1] = 0  # an unreadable image's zero row is what is expected
    status = content.status[unit.start:unit.stop].copy()
    status[1] = S.UNREADABLE
    writer.write(unit, emb, status, {1: "unreadable"})
    assert writer.pending()[0] != unit


def test_rows_past_an_array_never_wrap_around():
    whole = np.arange(12, dtype=np.float16).reshape(4, 3)
    rows = _Rows(lambda k: whole, 4, 3, 4)
    assert np.array_equal(rows.take(np.array([3, 0])), whole[[3, 0]])
    with pytest.raises(IndexError, match=r"row 4 is outside 0..3"):
        rows.take(np.array([0, 4]))
    with pytest.raises(IndexError, match=r"row -1 is outside 0..3"):
        rows.take(np.array([-1]))


def test_store_errors_are_person_errors_that_keep_their_builtin_base():
    """Commands end a PersonError with its one-line message (person.options.run_command); callers that catch the
    builtin type keep working."""
    for error, base in ((S.StoreFormatError, ValueError), (S.StoreMismatchError, ValueError),
                        (S.StoreIncompleteError, ValueError), (S.StoreDamagedError, ValueError),
                        (S.StoreWriteError, OSError)):
        assert issubclass(error, PersonError) and issubclass(error, base), error
