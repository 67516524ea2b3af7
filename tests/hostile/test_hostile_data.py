"""Hostile data, as property tests: whatever a dataset file holds, `load_records` gives a sound RecordSet or a
RecordError naming the file, never another exception; whatever str a caption or a query is, the text encoder
gives its UTF-8 rows (or a TypeError/ValueError for a bad argument) and decoding gives the text back; whatever
bytes an image file holds, the decoders give RGB pixels or an ImageReadError."""
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

try:
    import resource
except ImportError:  # not on Windows
    resource = None

import ijson
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from person.data import formats as formats_module
from person.data.formats import FORMAT_FILES, MAX_NESTING, _NestingGuard, image_path_key
from person.data.images import ImageReadError, load_image, load_pixels
from person.data.records import SPLITS, RecordError, load_records
from person.data.text import decode_chars, encode_batch, encode_chars

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BACKENDS = ["yajl2_c", "python"]  # ijson's C parser, and the pure-Python one it falls back to without it

# --- strategies -----------------------------------------------------------------------------------------------

specials = ["\x00", "😀", "\U0010ffff", "中", "\u3000", " ", "\n", "[", "]", "{", "}", '"', "\\"]
chars = st.one_of(st.characters(exclude_categories=()), st.sampled_from(specials + ["\ud800", "\udc80", "\udfff"]))
texts = st.text(chars, max_size=8)
clean_texts = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(specials)), max_size=8)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), texts)
junk = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3),
                    max_leaves=5)
paths = st.one_of(st.sampled_from(["a.jpg", "a/1.jpg", "./a/1.jpg", "a//1.jpg", "a\\1.jpg", "a/./1.jpg", "../x.jpg",
                                   "a/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "\\\\server\\x", "", " ", ".", "a/..",
                                   "x" * 5000, "a\x00.jpg"]),
                  st.text(st.sampled_from("ab/.\\: "), min_size=1, max_size=8), texts, junk)
caption_lists = st.one_of(st.lists(st.one_of(texts, st.sampled_from(["a man", "  two  words ", ""]), junk),
                                   max_size=3), junk)
any_record = st.builds(lambda core, extra: {**extra, **core}, st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.integers(0, 3), st.integers(-2 ** 70, 2 ** 70), junk), "file_path": paths, "img_path": paths,
    "captions": caption_lists, "prompt_caption": caption_lists,
    "split": st.one_of(st.sampled_from(SPLITS + ("eval", "Train")), junk), "processed_tokens": junk}),
    st.dictionaries(texts, junk, max_size=2))
GOOD_PATHS = ["a.jpg", "a/1.jpg", "./a/2.jpg", "b//2.jpg", "c.png", "中文/ä.jpg", "d e/f.jpg"]
good_captions = st.lists(st.one_of(st.sampled_from(["a man", " two  words ", "中文"]), clean_texts.map(lambda t: f"{t} x")),
                         min_size=1, max_size=2)


@st.composite
def good_dataset(draw) -> list:
    """Records that load (unless all have one identity): one format throughout, distinct image files, real captions."""
    key, with_split = draw(st.sampled_from([("file_path", False), ("file_path", True), ("img_path", True)]))
    names = draw(st.lists(st.sampled_from(GOOD_PATHS), min_size=2, max_size=5, unique_by=image_path_key))
    recs = []
    for i, name in enumerate(names):
        rec = {"id": draw(st.integers(0, 3)), key: name, "captions": draw(good_captions)}
        if with_split:
            rec["split"] = draw(st.sampled_from(SPLITS))
        if draw(st.booleans()):
            rec["prompt_caption"] = draw(good_captions)
        recs.append(rec)
    return recs


@st.composite
def one_bad_field(draw) -> list:
    recs = draw(good_dataset())
    row = draw(st.integers(0, len(recs) - 1))
    key = draw(st.sampled_from(["id", "file_path", "img_path", "captions", "prompt_caption", "split"]))
    recs[row] = {**recs[row], key: draw(st.one_of(paths, junk))}
    return recs


@st.composite
def respelled_duplicate(draw) -> list:
    """One record's image named again by another record, spelt differently."""
    recs = draw(good_dataset())
    key = "img_path" if "img_path" in recs[0] else "file_path"
    src, dst = draw(st.permutations(range(len(recs))))[:2]
    spelling = draw(st.sampled_from(["./{}", "x/../{}", "{}", ".//{}"]))
    recs[dst] = {**recs[dst], key: spelling.format(recs[src][key])}
    return recs


# As many files that load or nearly do as junk, so the success path is tested as often as the refusals.
datasets = st.one_of(good_dataset(), one_bad_field(), respelled_duplicate(), st.lists(any_record, max_size=4), junk)
file_names = st.sampled_from([n for names in FORMAT_FILES.values() for n in names] + ["data.json"])


def write_json(folder: Path, name: str, value, ensure_ascii: bool) -> Path:
    text = json.dumps(value, ensure_ascii=ensure_ascii)  # NaN / Infinity / lone surrogates as json writes them
    path = folder / name
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate unescaped: bytes that are not UTF-8
    return path


def load_soundly_or_refuse(path: Path) -> None:
    """The property, under each ijson backend: a sound RecordSet, or a RecordError that names the file."""
    for backend in BACKENDS:
        with mock.patch.object(formats_module, "ijson", mock.Mock(items=ijson.get_backend(backend).items,
                                                                  JSONError=ijson.JSONError)):
            try:
                rs = load_records(path)
            except RecordError as e:
                assert str(path) in str(e)
                continue
        check_sound(rs)


def check_sound(rs) -> None:
    """Rows line up, identities are 0..K-1, captions are normalised and non-empty, paths name distinct files."""
    n = len(rs)
    assert n >= 1 and len(rs.captions) == len(rs.prompt_captions) == len(rs.pids) == len(rs.orig_ids) == n
    assert rs.splits.shape == (n,) and set(rs.splits.tolist()) <= {0, 1, 2}
    assert sorted(set(rs.pids.tolist())) == list(range(rs.num_ids)) and rs.num_ids >= 1
    assert all(caps and all(c and c == " ".join(c.split()) for c in caps) for caps in rs.captions)
    assert len({image_path_key(p) for p in rs.paths}) == n  # no two rows name one file
    assert len(rs.fingerprint()) == 64


# --- (a) record readers ---------------------------------------------------------------------------------------

@settings(FAST, max_examples=150)
@given(value=datasets, name=file_names, ensure_ascii=st.booleans())
def test_any_json_value_gives_records_or_a_record_error(value, name, ensure_ascii):
    with tempfile.TemporaryDirectory() as folder:
        load_soundly_or_refuse(write_json(Path(folder), name, value, ensure_ascii))


@settings(FAST, max_examples=80)
@given(data=st.one_of(st.binary(max_size=64), st.binary(max_size=64).map(lambda b: b"[" + b)))
def test_any_bytes_give_records_or_a_record_error(data):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "data.json").write_bytes(data)
        load_soundly_or_refuse(Path(folder) / "data.json")


VALID = json.dumps([{"id": i % 3, "file_path": f"p/{i}.jpg", "captions": [f"person {i}", "中文 ok"],
                     "prompt_caption": ["x"]} for i in range(6)]).encode()


@settings(FAST, max_examples=80)
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 3), st.binary(max_size=3)),
                      min_size=1, max_size=4))
def test_a_damaged_dataset_gives_records_or_a_record_error(edits):
    data = bytearray(VALID)
    for at, cut, insert in edits:  # replace `cut` bytes at `at` by `insert`
        data[at:at + cut] = insert
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "synthpedes-dataset.json").write_bytes(bytes(data))
        load_soundly_or_refuse(Path(folder) / "synthpedes-dataset.json")


clean_paths = st.lists(st.text(st.sampled_from("abc中 é"), min_size=1, max_size=4).map(lambda s: s.strip() or "x"),
                       min_size=1, max_size=3).map("/".join)
valid_captions = st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=10).map(lambda s: s + " ok"),
                          min_size=1, max_size=3)


@settings(FAST)
@given(ids=st.lists(st.integers(-2 ** 63 + 1, 2 ** 63 - 1), min_size=2, max_size=6),
       rows=st.lists(st.tuples(clean_paths, valid_captions), min_size=6, max_size=6, unique_by=lambda r: r[0]))
def test_valid_records_load_as_written(ids, rows):
    if len(set(ids)) < 2:  # two identities at least, so some can be held out
        ids[1] = ids[0] + 1 if ids[0] < 0 else ids[0] - 1
    rows = [(pid, path, caps) for pid, (path, caps) in zip(ids, rows)]
    recs = [{"id": pid, "file_path": path, "captions": caps} for pid, path, caps in rows]
    with tempfile.TemporaryDirectory() as folder:
        rs = load_records(write_json(Path(folder), "synthpedes-dataset.json", recs, ensure_ascii=True))
    assert rs.paths == [r[1] for r in rows] and rs.orig_ids.tolist() == [r[0] for r in rows]
    assert rs.captions == [tuple(" ".join(c.split()) for c in r[2]) for r in rows]
    assert rs.prompt_captions == [()] * len(rows)


def nest(value, depth: int, use_dict: bool):
    for _ in range(depth):
        value = {"k[{\"": value} if use_dict else [value, "]]}\\"]
    return value


def json_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(json_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(json_depth, value.values()), default=0)
    return 0


tricky_text = st.text(st.sampled_from('[]{}"\\ab\n中'), max_size=6)
tricky = st.recursive(st.one_of(st.integers(), tricky_text),
                      lambda kids: st.lists(kids, max_size=3) | st.dictionaries(tricky_text, kids, max_size=3),
                      max_leaves=12)


@settings(FAST, max_examples=150)
@given(value=tricky, extra=st.integers(0, MAX_NESTING + 4), use_dict=st.booleans(), read_size=st.integers(1, 9),
       ensure_ascii=st.booleans())
def test_the_nesting_guard_counts_only_brackets_outside_strings(value, extra, use_dict, read_size, ensure_ascii):
    value = nest(value, extra, use_dict)
    data = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    guard = _NestingGuard(io.BytesIO(data), Path("d.json"))
    if json_depth(value) > MAX_NESTING:
        with pytest.raises(RecordError, match=f"d.json: JSON nested deeper than {MAX_NESTING} levels"):
            while guard.read(read_size):
                pass
    else:
        while guard.read(read_size):  # tiny reads: strings, escapes and backslash runs cut at every place
            pass
        assert guard.depth == 0 and not guard.in_string


def test_nesting_a_dataset_may_have_loads(tmp_path):
    record = {"id": 1, "file_path": "a.jpg", "captions": ["x"], "extra": nest(0, MAX_NESTING - 2, False)}
    path = tmp_path / "synthpedes-dataset.json"
    path.write_text(json.dumps([record, {**record, "id": 2, "file_path": "b.jpg"}]))
    assert len(load_records(path)) == 2


@pytest.mark.skipif(resource is None, reason="needs resource.setrlimit to keep a regression from taking the machine")
def test_deep_nesting_is_refused_before_the_parser_spends_memory_on_it(tmp_path):
    # ijson keeps a prefix string per open level: these 100,000 levels (200 KB) would take ~20 GB. In a child
    # process held to 4 GiB of address space, so that a regression fails here instead of exhausting the machine.
    path = tmp_path / "synthpedes-dataset.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    code = ("import sys\nfrom person.data.records import RecordError, load_records\n"
            "try:\n    load_records(sys.argv[1])\nexcept RecordError as e:\n    print(e)\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, env=env,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.fullmatch(rf"{re.escape(str(path))}: JSON nested deeper than {MAX_NESTING} levels \(within its first "
                        rf"\d+ bytes\); a dataset is a list of flat records\n", done.stdout), done.stdout


def test_lone_surrogates_from_the_pure_python_parser_still_fingerprint(tmp_path):
    # ijson's C parser refuses or replaces them; its pure-Python fallback hands them over as they are.
    path = tmp_path / "synthpedes-dataset.json"
    path.write_bytes(VALID.replace(b"person 0", b"person \\ud800").replace(b"p/1.jpg", b"p/\\udc80.jpg"))
    with mock.patch.object(formats_module, "ijson", mock.Mock(items=ijson.get_backend("python").items,
                                                              JSONError=ijson.JSONError)):
        rs = load_records(path)
    assert rs.captions[0] == ("person \ud800", "中文 ok") and rs.paths[1] == "p/\udc80.jpg"
    assert len(rs.fingerprint()) == 64


@pytest.mark.parametrize("data, message", [
    (b"\xef\xbb\xbf" + VALID, None),  # a UTF-8 byte-order mark (Windows editors) is skipped
    (VALID.decode().encode("utf-16"), "UTF-16 or UTF-32 encoded; save it as UTF-8"),
    (VALID.decode().encode("utf-16-le"), "UTF-16 or UTF-32 encoded; save it as UTF-8"),
    (VALID.replace(b"person 0", b"person \\udc80"), r"a string escape is not a Unicode character"),
    (VALID.replace(b"person 0", b"person \xff"), "not valid JSON"),
    (b"", "the top level must be a JSON list"),
])
def test_encodings_and_escapes(tmp_path, data, message):
    path = tmp_path / "synthpedes-dataset.json"
    path.write_bytes(data)
    if message is None:
        assert len(load_records(path)) == 6
    else:
        with pytest.raises(RecordError, match=message):
            load_records(path)


def test_a_first_path_too_long_for_the_file_system_is_not_a_crash(tmp_path):
    recs = [{"id": i, "file_path": f"{'x' * 5000}{i}.jpg", "captions": ["c"]} for i in range(2)]
    rs = load_records(write_json(tmp_path, "synthpedes-dataset.json", recs, True))
    assert rs.image_root == tmp_path  # the probe for imgs/ found nothing (ENAMETOOLONG), not an OSError


# --- (b) the text encoder ---------------------------------------------------------------------------------------

any_text = st.one_of(st.text(chars, max_size=40), st.text(chars, min_size=1, max_size=6).map(lambda s: s * 2000))


def utf8_rows(text: str) -> list[list[int]]:
    """Each character's UTF-8 bytes (a lone surrogate's generalised 3-byte form), padded to 4."""
    return [list(c.encode("utf-8", "surrogatepass").ljust(4, b"\0")) for c in text]


@settings(FAST, max_examples=200)
@given(text=any_text, max_seq_length=st.integers(1, 300))
def test_any_str_encodes_to_its_utf8_rows_and_back(text, max_seq_length):
    encoded = encode_chars(text, max_seq_length)
    n = min(len(text), max_seq_length)
    assert encoded.dtype == np.uint8 and encoded.shape == (n, 4)
    assert encoded.tolist() == utf8_rows(text[:n])
    assert decode_chars(encoded) == text[:max_seq_length]


@settings(FAST, max_examples=100)
@given(batch=st.lists(any_text, max_size=4), max_seq_length=st.integers(1, 64),
       pad_to=st.one_of(st.none(), st.integers(0, 80)))
def test_any_batch_encodes_with_a_prefix_mask(batch, max_seq_length, pad_to):
    lengths = [min(len(t), max_seq_length) for t in batch]
    if pad_to is not None and pad_to < max(lengths, default=0):
        with pytest.raises(ValueError, match=f"pad_to={pad_to} is shorter"):
            encode_batch(batch, max_seq_length, pad_to)
        return
    encoded, mask = encode_batch(batch, max_seq_length, pad_to)
    width = max(lengths, default=0) if pad_to is None else pad_to
    assert encoded.dtype == np.uint8 and encoded.shape == (len(batch), width, 4)
    assert mask.dtype == bool and mask.shape == (len(batch), width)
    for row, (text, n) in enumerate(zip(batch, lengths)):
        assert mask[row].tolist() == [True] * n + [False] * (width - n)
        assert np.array_equal(encoded[row, :n], encode_chars(text, max_seq_length)) and not encoded[row, n:].any()
        assert decode_chars(encoded[row], mask[row]) == text[:max_seq_length]


@settings(FAST, max_examples=100)
@given(caption=st.one_of(st.none(), st.integers(), st.binary(max_size=4), st.lists(texts, max_size=2), texts),
       max_seq_length=st.one_of(st.integers(-3, 5), st.floats(allow_nan=True), st.booleans(), texts, st.none()))
def test_bad_arguments_are_a_type_or_value_error(caption, max_seq_length):
    try:
        encode_batch([caption], max_seq_length)
    except TypeError as e:
        assert "a caption must be a str" in str(e) or "max_seq_length must be an int" in str(e)
        assert not isinstance(caption, str) or not isinstance(max_seq_length, int) or isinstance(max_seq_length, bool)
    except ValueError as e:
        assert str(e) == f"max_seq_length must be >= 1, got {max_seq_length}"
    else:
        assert isinstance(caption, str) and type(max_seq_length) is int and max_seq_length >= 1


# --- (c) image files ------------------------------------------------------------------------------------------

def image_bytes(fmt: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


IMAGES = {fmt: image_bytes(fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on corrupt EXIF and the like
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@settings(FAST, max_examples=80)
@given(fmt=st.sampled_from(sorted(IMAGES)), edits=st.lists(
    st.tuples(st.integers(0, 2000), st.integers(0, 8), st.binary(max_size=4)), min_size=1, max_size=4))
def test_any_bytes_in_an_image_file_give_rgb_pixels_or_an_image_read_error(fmt, edits):
    data = bytearray(IMAGES[fmt])
    for at, cut, insert in edits:
        at %= len(data)
        data[at:at + cut] = insert
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.img"
        path.write_bytes(bytes(data))
        for load in (load_image, load_pixels):
            for hint in (None, (8, 4)):
                try:
                    pixels = np.asarray(load(path, hint))
                except ImageReadError as e:
                    assert str(e).startswith(str(path))
                else:
                    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
