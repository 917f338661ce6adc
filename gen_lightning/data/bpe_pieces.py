"""Byte-level BPE encoding by distinct pre-token: the ids of HF `tokenizers`, several times faster on source code.

Why: HF's encode spends ~90% of its time in the ByteLevel pre-tokenizer (GPT-2's regex, run by Oniguruma: 1-1.8 MB
per CPU-second on these machines), and code repeats its words: the default corpus' 8.8 MB of ASCII train documents
are 2.2 M pre-tokens, 43 K of them distinct. So the text is cut into pre-tokens by numpy (data/pretoken_split.py:
GPT-2's regex on ASCII, ~100 MB/s, no Python object per pre-token), the pre-tokens are grouped by a hash of their
bytes, each distinct one not met before is encoded once, by the HF tokenizer itself (its BPE model, its ByteLevel byte
map: the ids are HF's), and the stream is one numpy gather of the cached ids (data/piece_cache.py). No library does
this split-and-cache for an HF tokenizer (tiktoken is as fast but merges by the rank of the merged bytes, not of the
pair, and can give other ids than the trained tokenizer for some words), hence this module.

Exactness: the split is GPT-2's where the regex's classes are the ASCII ones pretoken_split uses, as Oniguruma's (HF's
engine) are on printable ASCII, tab, LF, VT, FF and CR: `\\p{L}` is [A-Za-z], `\\p{N}` [0-9], `\\s` [\\t\\n\\v\\f\\r ]
(beyond ASCII the Unicode tables of engines may differ, and Python's `\\s` also takes \\x1c-\\x1f). Text with any
other character is cut at points that are pre-token boundaries for any engine (on either side of most line feeds,
`_CUT`), and each piece holding such a character goes to HF whole: in the default corpus, 0.1 MB of lines.
It applies to tokenizers whose ids for a text are their ids for its pre-tokens, one after the other: no normalizer,
the ByteLevel pre-tokenizer with GPT-2's regex and no prefix space, a BPE model without dropout, no post-processor,
padding or truncation; a text holding an added token (`<|endoftext|>` written out) goes to HF whole, which matches
it first. Any other tokenizer is encoded by HF as before (`PieceEncoder.applies_to`). tests/test_bpe_pieces.py
compares the ids with HF's on the default corpus and on edge cases.
"""

from __future__ import annotations

import json
import re
from typing import Optional, Sequence

import numpy as np

from gen_lightning.data.piece_cache import PieceCache, piece_hash
from gen_lightning.data.pretoken_split import pre_token_starts

# Where the two engines split alike: tab, LF, VT, FF, CR and printable ASCII (module docstring).
_SAFE_BYTES = bytes([9, 10, 11, 12, 13, *range(0x20, 0x7F)])
# Pre-token boundaries for any engine, on either side of a line feed: (1) after a printable non-space ASCII character,
# which ends its pre-token (no alternative takes non-space and whitespace together); (2) before a line feed followed
# by such a character: that LF is a pre-token of its own (`\s+(?!\S)` stops before it, no ` ?` alternative takes it),
# so the whitespace before it ends where the text would end. The split from either point on does not depend on what
# came before (the regex looks ahead, never behind).
_CUT = re.compile(r"(?<=[!-~])(?=\n)|(?=\n[!-~])")

# Distinct pieces kept between calls (rows of the cache); then it starts over. Most are pre-tokens (a few bytes each),
# but the parts that go to HF whole (texts holding an added token, lines with other characters) are rows too: ~0.1 MB
# in the default corpus, at most the size of the text encoded since the last start.
_CACHE_LIMIT = 2_000_000
# Texts are split and gathered in groups of about this many bytes (a line longer than it is still one part).
_GROUP_BYTES = 1 << 22


def _spec(hf_tokenizer) -> dict:
    return json.loads(hf_tokenizer.to_str())


class PieceEncoder:
    """Encodes texts like `hf_tokenizer.encode_batch`, one distinct pre-token at a time (module docstring)."""

    def __init__(self, hf_tokenizer, spec: Optional[dict] = None) -> None:
        self._hf = hf_tokenizer
        spec = _spec(hf_tokenizer) if spec is None else spec
        self._added = [t["content"] for t in spec.get("added_tokens", [])]
        self._cache: Optional[PieceCache] = None  # the distinct pre-tokens met so far and their ids, for one dtype
        self._marked: dict[tuple, int] = {}  # ("hf", text) or ("id", id) mark -> its row in the cache
        self._bare = None  # the same tokenizer without its pre-tokenizer, built on first use (`_encode_words`)
        self._symbols: dict[int, str] = {}  # ASCII code -> ByteLevel's BPE symbol for it, with `_bare`

    @classmethod
    def for_tokenizer(cls, hf_tokenizer) -> Optional["PieceEncoder"]:
        """An encoder for this tokenizer, or None where it would not reproduce its ids (`applies_to`); the
        tokenizer's JSON (GPT-2's: ~2 MB of vocabulary and merges) is serialised and parsed once for both."""
        spec = _spec(hf_tokenizer)
        return cls(hf_tokenizer, spec) if cls._applies(spec) else None

    @classmethod
    def applies_to(cls, hf_tokenizer) -> bool:
        """Whether this tokenizer's ids for a text are its ids for the text's GPT-2 pre-tokens, concatenated."""
        return cls._applies(_spec(hf_tokenizer))

    @staticmethod
    def _applies(spec: dict) -> bool:
        pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        return (
            spec.get("normalizer") is None
            and spec.get("post_processor") is None
            and spec.get("padding") is None
            and spec.get("truncation") is None
            and pre.get("type") == "ByteLevel"
            and pre.get("add_prefix_space") is False
            and pre.get("use_regex", True) is True
            and model.get("type") == "BPE"
            and model.get("dropout") is None
        )

    def encode_stream(self, texts: Sequence[str], separator: Optional[int], dtype: str) -> np.ndarray:
        """The ids of `texts` one after the other, each followed by `separator` (None: nothing), as one array."""
        dtype = np.dtype(dtype)
        out: list[np.ndarray] = []
        safe: list[bytes] = []  # the parts split by pretoken_split, as ASCII bytes
        marks: list[tuple] = []  # the other parts, in order: ("hf", text) goes to HF whole, ("id", id) is one id
        marks_at: list[int] = []  # how many safe parts come before each mark
        size = 0
        for text in texts:
            if any(token in text for token in self._added):
                parts = [("hf", text)]  # HF matches added tokens before it splits
            else:
                data = _safe_bytes(text) if len(text) <= _GROUP_BYTES else None  # a huge text is cut first
                parts = [data] if data is not None else [_safe_or_mark(part) for part in _CUT.split(text)]
            if separator is not None:
                parts.append(("id", separator))
            for part in parts:
                if isinstance(part, bytes):
                    if part:  # an empty text has no pre-tokens
                        safe.append(part)
                        size += len(part)
                else:
                    marks.append(part)
                    marks_at.append(len(safe))
                if size >= _GROUP_BYTES:  # numpy's arrays take ~50 bytes of memory per byte of text: a few MB a group
                    out.append(self._gather(safe, marks, marks_at, dtype))
                    safe, marks, marks_at, size = [], [], [], 0
        out.append(self._gather(safe, marks, marks_at, dtype))
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _gather(self, safe: list[bytes], marks: list[tuple], marks_at: list[int], dtype: np.dtype) -> np.ndarray:
        if self._cache is None or len(self._cache) > _CACHE_LIMIT or dtype != self._cache.dtype:
            self._cache, self._marked = PieceCache(dtype), {}
        cache = self._cache
        joined = b"".join(safe)
        data = np.frombuffer(joined, dtype=np.uint8)
        sizes = np.fromiter(map(len, safe), dtype=np.int64, count=len(safe))
        text_starts = np.zeros(len(safe), dtype=np.int64)
        np.cumsum(sizes[:-1], out=text_starts[1:])
        starts = pre_token_starts(data, text_starts)
        lengths = np.diff(starts, append=data.size)
        # Pre-tokens told apart by a hash of their bytes and grouped by numpy, no Python object per pre-token; each
        # distinct one not in the cache yet is encoded by HF. A hash shared by two pre-tokens would give one the
        # other's ids: every pre-token is compared with its row's bytes, and on a mismatch the group goes to HF whole
        # (exact, slow; tests/test_bpe_pieces.py forces it). Never seen on real text, but it can be crafted: the hash is
        # linear mod 2**64, and a Thue-Morse word of 2048+ letters shares it with its complement. Such a document then
        # costs HF's speed for every group holding the other word, until the cache starts over; its ids stay exact.
        keys, inverse, some = _distinct(piece_hash(data, starts, lengths))
        rows = cache.find(keys)
        new = np.flatnonzero(rows < 0)
        if new.size:
            span = zip(starts[some[new]].tolist(), lengths[some[new]].tolist())
            words = [joined[start : start + size] for start, size in span]
            rows[new] = cache.add(keys[new], words, self._ids_of(words, dtype))
        rows = rows[inverse]
        if not cache.matches(rows, data, lengths):
            return self._by_hf(safe, marks, marks_at, dtype)
        # The marks, each a row of its own, inserted after the pre-tokens before them.
        new_marks = [mark for mark in dict.fromkeys(marks) if mark not in self._marked]
        if new_marks:
            ids = [self._mark_ids(mark, dtype) for mark in new_marks]
            self._marked.update(zip(new_marks, cache.add(None, [b""] * len(ids), ids).tolist()))
        mark_rows = [self._marked[mark] for mark in marks]
        first_piece = np.append(np.searchsorted(starts, text_starts), starts.size)
        rows = np.insert(rows, first_piece[marks_at], np.asarray(mark_rows, dtype=np.int64))
        return cache.ids(rows)

    def _ids_of(self, words: list[bytes], dtype: np.dtype) -> list[bytes]:
        """Each pre-token's ids, as bytes of `dtype`, by one call to HF for all of them."""
        # Each pre-token a "word" of a pre-tokenized input: HF encodes each word on its own and says which word each
        # id came from (43 K Encoding objects, one per word, took ~2x longer). Where the word changes is found by
        # numpy: a Python loop over the ids took 10% of a worker's time.
        encoded = self._encode_words([w.decode("ascii") for w in words])
        owner, flat, size = np.asarray(encoded.word_ids), _as_bytes(encoded.ids, dtype), dtype.itemsize
        # A word can have no ids at all: a BPE without `unk_token` drops the bytes its vocabulary lacks, as HF's own
        # encode of the whole text does.
        out = [b""] * len(words)
        if owner.size:
            starts = [0, *(np.flatnonzero(owner[1:] != owner[:-1]) + 1).tolist()]
            for word, start, end in zip(owner[starts].tolist(), starts, [*starts[1:], len(owner)]):
                out[word] = flat[start * size : end * size]
        return out

    def _mark_ids(self, mark: tuple, dtype: np.dtype) -> bytes:
        kind, value = mark
        return _as_bytes([value] if kind == "id" else self._hf.encode(value).ids, dtype)

    def _by_hf(self, safe: list[bytes], marks: list[tuple], marks_at: list[int], dtype: np.dtype) -> np.ndarray:
        """The same stream with every part encoded by HF: where two pre-tokens of a group had one hash."""
        hf = [np.asarray(self._hf.encode(text.decode("ascii")).ids, dtype=dtype) for text in safe]
        parts, done = [], 0  # the safe parts' ids and the marks' in their order: marks_at[j] safe parts before mark j
        for at, mark in zip(marks_at, marks):
            parts += hf[done:at]
            parts.append(np.frombuffer(self._mark_ids(mark, dtype), dtype=dtype))
            done = at
        parts += hf[done:]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    def _encode_words(self, words: list[str]):
        """HF's Encoding of pre-tokens given as the words of a pre-tokenized input. Each word already is one pre-token,
        so what HF's ByteLevel pre-tokenizer would still do to it is map its bytes to BPE symbols; done here by
        `str.translate` with ByteLevel's own map, and the words go to a copy of the tokenizer without a pre-tokenizer
        (or added tokens, which no pre-token holds): the same ids, ~30% less time than HF running GPT-2's regex
        again on every word."""
        if self._bare is None:
            from tokenizers import Tokenizer, pre_tokenizers

            bare = {**_spec(self._hf), "pre_tokenizer": None, "added_tokens": []}
            self._bare = Tokenizer.from_str(json.dumps(bare))
            byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
            self._symbols = {b: byte_level.pre_tokenize_str(chr(b))[0][0] for b in range(128)}
        return self._bare.encode(
            [word.translate(self._symbols) for word in words], is_pretokenized=True, add_special_tokens=False
        )


def _as_bytes(ids: Sequence[int], dtype: np.dtype) -> bytes:
    return np.asarray(ids, dtype=dtype).tobytes()


def _safe_bytes(text: str) -> Optional[bytes]:
    """The ASCII bytes of `text` if it has only characters on which pretoken_split and Oniguruma split alike
    (`_SAFE_BYTES`), else None. Checked in C (`bytes.translate` deleting the safe ones): 10x faster than a regex
    search for the others."""
    if not text.isascii():
        return None
    data = text.encode("ascii")
    return None if data.translate(None, _SAFE_BYTES) else data


def _safe_or_mark(part: str):
    data = _safe_bytes(part)
    return ("hf", part) if data is None else data


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique's (values, return_inverse, return_index), by one argsort: np.unique sorts twice. The sort is numpy's
    stable one, 2.6x faster than its default quicksort on these hashes (4.6 vs 12.2 ms for a chunk's 125 K)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.empty(values.size, dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(values.size, dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], inverse, order[starts]
