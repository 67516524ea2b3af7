"""Text as characters: each character is its UTF-8 bytes padded to 4, so any language needs no tokenizer.

A caption becomes `uint8 [L, 4]` (one row per character: b0, b1, b2, b3, zero-padded) plus a boolean
mask (True = a real character). The student's character vector is the sum of four byte-position
embeddings of that row (ARCHITECTURE.md, "Text as characters").

Any Python str encodes, so a query from an API never fails here:
- a lone surrogate (U+D800..U+DFFF, which UTF-8 proper cannot hold) becomes its 3-byte generalised UTF-8
  (Python's "surrogatepass"), and `decode_chars` gives it back;
- NUL (U+0000) is the all-zero row, the same bytes as padding: only the mask tells a NUL from padding, so
  `decode_chars` without a mask reads every all-zero row as a NUL.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

BYTES_PER_CHAR = 4  # UTF-8 encodes every Unicode code point in at most 4 bytes
BYTE_VALUES = 256
DEFAULT_MAX_SEQ_LENGTH = 128
# A caption is a few hundred characters; the text student's position table and attention grow with the length,
# so a length far beyond any caption is a typo that would exhaust memory, not a choice.
MAX_SEQ_LENGTH = 2048


def encode_chars(text: str, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> np.ndarray:
    """`text` -> uint8 [n, 4], n = min(len(text), max_seq_length); longer text is truncated."""
    _check_length("max_seq_length", max_seq_length, minimum=1)
    return _utf8_rows(_code_points(_check_text(text)[:max_seq_length]))


def encode_batch(texts: Sequence[str], max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
                 pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A batch -> (uint8 [B, L, 4], bool mask [B, L]).

    L is `pad_to` when given (fixed shapes for export/compiled graphs), else the longest text in the
    batch after truncation to `max_seq_length`. Empty text has an all-False mask row.
    """
    if isinstance(texts, str):
        raise TypeError("encode_batch takes a list of captions, got a single str")
    _check_length("max_seq_length", max_seq_length, minimum=1)
    if pad_to is not None:
        _check_length("pad_to", pad_to, minimum=0)
    kept = [_check_text(t)[:max_seq_length] for t in texts]  # one pass: `texts` may be any iterable
    lengths = np.array([len(t) for t in kept], dtype=np.int64)
    longest = int(lengths.max(initial=0))
    length = pad_to if pad_to is not None else longest
    if pad_to is not None and pad_to < longest:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest text ({longest} characters after truncation "
                         f"to max_seq_length={max_seq_length})")
    mask = np.arange(length) < lengths[:, None]
    chars = np.zeros((len(kept), length, BYTES_PER_CHAR), dtype=np.uint8)
    # the whole batch's characters in one pass: per-text numpy calls cost more than the conversion at query scale
    chars[mask] = _utf8_rows(_code_points("".join(kept)))
    return chars, mask


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"a caption must be a str, got {type(text).__name__}: {text!r:.80}")
    return text


def _code_points(text: str) -> np.ndarray:
    """uint32 [len(text)]; a lone surrogate as its own code point (Python's "surrogatepass")."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint32)


def _utf8_rows(cp: np.ndarray) -> np.ndarray:
    """Code points -> uint8 [n, 4]: each one's UTF-8 bytes, zero-padded. Vectorised: a Python loop per character is
    the slow path at batch scale."""
    n = 1 + (cp >= 0x80).astype(np.uint32) + (cp >= 0x800) + (cp >= 0x10000)  # bytes per character
    cont = lambda shift: 0x80 | ((cp >> shift) & 0x3F)  # a continuation byte
    out = np.zeros((len(cp), BYTES_PER_CHAR), dtype=np.uint32)
    out[:, 0] = np.select([n == 1, n == 2, n == 3], [cp, 0xC0 | (cp >> 6), 0xE0 | (cp >> 12)], 0xF0 | (cp >> 18))
    out[:, 1] = np.where(n == 2, cont(0), np.where(n == 3, cont(6), np.where(n == 4, cont(12), 0)))
    out[:, 2] = np.where(n == 3, cont(0), np.where(n == 4, cont(6), 0))
    out[:, 3] = np.where(n == 4, cont(0), 0)
    return out.astype(np.uint8)


def _check_length(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r:.80}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def decode_chars(chars: np.ndarray, mask: np.ndarray | None = None) -> str:
    """Inverse of `encode_chars` (for one row of a batch pass its mask row)."""
    if mask is not None:
        chars = chars[np.asarray(mask, dtype=bool)]
    return "".join(bytes(int(b) for b in row if b).decode("utf-8", errors="surrogatepass")
                   if row[0] else "\x00" for row in chars)


def lookup_chars(table: np.ndarray, chars: np.ndarray) -> np.ndarray:
    """uint8 [..., 4] character bytes -> float32 [..., E] character vectors: the sum of the four rows
    `table[position * 256 + byte]` of the byte table [4 * 256, E] (the text student's embedding, exported as
    input_embeddings.npy). What the exported text graph's caller does; the trainer does it in torch."""
    if table.ndim != 2 or table.shape[0] != BYTES_PER_CHAR * BYTE_VALUES:
        raise ValueError(f"the byte table must be [{BYTES_PER_CHAR * BYTE_VALUES}, E], got {table.shape}")
    if chars.shape[-1:] != (BYTES_PER_CHAR,):
        raise ValueError(f"chars must be [..., {BYTES_PER_CHAR}] bytes (encode_batch), got {chars.shape}")
    rows = chars.astype(np.int64) + np.arange(BYTES_PER_CHAR) * BYTE_VALUES
    return table[rows].sum(axis=-2, dtype=np.float32)


def length_batches(texts: Sequence[str], max_seq_length: int, batch_size: int) -> Iterator[np.ndarray]:
    """Indices into `texts` in batches of texts of about one length (as read: at most max_seq_length
    characters), so a short text is not padded to a long one; the caller puts results back by index."""
    order = np.argsort([min(len(t), max_seq_length) for t in texts], kind="stable")
    for i in range(0, len(texts), batch_size):
        yield order[i:i + batch_size]
