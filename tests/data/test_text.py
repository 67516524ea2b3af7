"""Character encoding: UTF-8 bytes padded to 4, masks, truncation, round trips in any script."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from person.data.text import decode_chars, encode_batch, encode_chars, length_batches


def reference(text):
    return [list(ch.encode("utf-8")) + [0] * (4 - len(ch.encode("utf-8"))) for ch in text]


@pytest.mark.parametrize("text", ["A man in a red coat.", "一位穿红色外套的男子", "emoji 👩‍🦰🎒 ok", "Ünïcödé ß",
                                  "mixed 中文 and English", "\U0010FFFF", ""])
def test_bytes_match_utf8_and_round_trip(text):
    chars = encode_chars(text)
    assert chars.dtype == np.uint8 and chars.shape == (len(text), 4)
    assert chars.tolist() == reference(text)
    assert decode_chars(chars) == text


def test_known_values():
    assert encode_chars("a中😀").tolist() == [[0x61, 0, 0, 0], [0xE4, 0xB8, 0xAD, 0], [0xF0, 0x9F, 0x98, 0x80]]


def test_truncation_and_batch_mask():
    chars, mask = encode_batch(["abcdef", "中文", ""], max_seq_length=4)
    assert chars.shape == (3, 4, 4) and mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert decode_chars(chars[0], mask[0]) == "abcd"
    assert decode_chars(chars[1], mask[1]) == "中文"
    assert decode_chars(chars[2], mask[2]) == ""


def test_pad_to_fixed_length():
    chars, mask = encode_batch(["ab"], max_seq_length=8, pad_to=8)
    assert chars.shape == (1, 8, 4) and mask.sum() == 2
    with pytest.raises(ValueError, match="pad_to=2 is shorter"):
        encode_batch(["abcd"], max_seq_length=8, pad_to=2)


def test_long_query_is_truncated_not_an_error():
    chars, mask = encode_batch(["x" * 10_000], max_seq_length=128)
    assert chars.shape == (1, 128, 4) and mask.all()


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["list"]])
def test_non_strings_rejected(bad):
    with pytest.raises(TypeError, match="a caption must be a str"):
        encode_batch([bad])


def test_any_iterable_of_texts_is_a_batch():
    chars, mask = encode_batch(t for t in ["ab", "c"])  # read once: a generator is not checked empty
    assert chars.shape == (2, 2, 4) and mask.tolist() == [[True, True], [True, False]]


def test_single_string_is_not_a_batch():
    with pytest.raises(TypeError, match="list of captions"):
        encode_batch("abc")


def test_a_lone_surrogate_is_its_generalised_utf8_and_comes_back():
    text = "a\ud800b\udfff"
    chars = encode_chars(text)
    assert chars.tolist() == [[0x61, 0, 0, 0], [0xED, 0xA0, 0x80, 0], [0x62, 0, 0, 0], [0xED, 0xBF, 0xBF, 0]]
    assert decode_chars(chars) == text
    pair = "\ud83d\ude00"  # two code points in a Python str: two characters, not one emoji
    assert encode_chars(pair).shape == (2, 4) and decode_chars(encode_chars(pair)) == pair


def test_nul_is_the_all_zero_row_told_from_padding_only_by_the_mask():
    chars, mask = encode_batch(["a\x00", "abc"])
    assert chars[0].tolist() == [[0x61, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]] and mask[0].tolist() == [1, 1, 0]
    assert decode_chars(chars[0], mask[0]) == "a\x00"
    assert decode_chars(chars[0]) == "a\x00\x00"  # without the mask, padding reads as NUL


@pytest.mark.parametrize("kwargs, error, message", [
    ({"max_seq_length": 0}, ValueError, "max_seq_length must be >= 1, got 0"),
    ({"max_seq_length": 1.5}, TypeError, "max_seq_length must be an int, got float"),
    ({"max_seq_length": True}, TypeError, "max_seq_length must be an int, got bool"),
    ({"max_seq_length": "8"}, TypeError, "max_seq_length must be an int, got str"),
    ({"pad_to": -1}, ValueError, "pad_to must be >= 0, got -1"),
    ({"pad_to": 4.0}, TypeError, "pad_to must be an int, got float"),
])
def test_lengths_must_be_ints(kwargs, error, message):
    with pytest.raises(error, match=message):
        encode_batch(["abc"], **kwargs)
    if "max_seq_length" in kwargs:
        with pytest.raises(error, match=message):
            encode_chars("abc", **kwargs)
    assert encode_chars("abc", np.int64(2)).shape == (2, 4)


def test_length_batches_group_texts_by_length_as_read_and_cover_each_once():
    texts = ["abcdef", "a", "abcdefghij", "ab", "abc", "x" * 50]
    batches = [list(b) for b in length_batches(texts, max_seq_length=8, batch_size=2)]
    # Lengths as read: 6, 1, 8, 2, 3, 8 (the 10- and 50-character texts both read as 8; ties keep their order).
    assert batches == [[1, 3], [4, 0], [2, 5]]
    assert list(length_batches([], 8, 2)) == []


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(st.one_of(st.characters(), st.sampled_from(["\ud83d", "\ude00", "\x00", "中", "😀"]))),
                      max_size=6),
       max_seq_length=st.integers(1, 12), pad=st.booleans())
def test_a_batch_holds_each_text_as_encoded_alone(texts, max_seq_length, pad):
    """The batch is encoded in one pass over all its characters: each row must still be its own text's bytes (a
    lone high surrogate at the end of one text and a low one opening the next stay two characters)."""
    longest = max((min(len(t), max_seq_length) for t in texts), default=0)
    chars, mask = encode_batch(texts, max_seq_length, pad_to=max_seq_length if pad else None)
    assert chars.shape == (len(texts), max_seq_length if pad else longest, 4)
    for row, row_mask, text in zip(chars, mask, texts):
        kept = text[:max_seq_length]
        assert row_mask.tolist() == [True] * len(kept) + [False] * (len(row_mask) - len(kept))
        assert row[row_mask].tolist() == encode_chars(kept).tolist()
        assert not row[~row_mask].any()
        assert decode_chars(row, row_mask) == kept
