"""Byte-level BPE encoding by distinct pre-token: the ids of HF `tokenizers`, several times faster on source code.

Why: HF's encode spends ~90% of its time in the ByteLevel pre-tokenizer (GPT-2's regex, run by Oniguruma: 1-1.8 MB
per CPU-second on these machines), and code repeats its words: the default corpus' 8.8 MB of ASCII train documents
are 2.2 M pre-tokens, 43 K of them distinct. So the text is cut into pre-tokens by the same regex in Python's `re`
(~22 MB/s), each distinct pre-token is encoded once, by the HF tokenizer itself (its BPE model, its ByteLevel byte
map: the ids are HF's), and the stream is one join of the pieces' cached id bytes. No library does this split-and-cache
for an HF tokenizer (tiktoken is as fast but merges by the rank of the merged bytes, not of the pair, and can give
other ids than the trained tokenizer for some words), hence this module.

Exactness: the split is GPT-2's only where `re` and Oniguruma agree on the regex's classes. On printable ASCII, tab,
LF, VT, FF and CR they do: `\\p{L}` is [A-Za-z], `\\p{N}` [0-9], `\\s` [\\t\\n\\v\\f\\r ] (beyond ASCII their Unicode
tables may differ, and Python's `\\s` also takes \\x1c-\\x1f). Text with any other character is cut at points that
are pre-token boundaries for any engine (on either side of most line feeds, `_CUT`), and each piece holding such a
character goes to HF whole: in the default corpus, 0.1 MB of lines.
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

# GPT-2's pre-tokenizer regex (HF tokenizers' ByteLevel) with its classes spelled out for ASCII.
_PRE_TOKEN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""", re.ASCII)
# Where the two engines split alike: tab, LF, VT, FF, CR and printable ASCII (module docstring).
_SAFE_BYTES = bytes([9, 10, 11, 12, 13, *range(0x20, 0x7F)])
# Pre-token boundaries for any engine, on either side of a line feed: (1) after a printable non-space ASCII character,
# which ends its pre-token (no alternative takes non-space and whitespace together); (2) before a line feed followed
# by such a character: that LF is a pre-token of its own (`\s+(?!\S)` stops before it, no ` ?` alternative takes it),
# so the whitespace before it ends where the text would end. The split from either point on does not depend on what
# came before (the regex looks ahead, never behind).
_CUT = re.compile(r"(?<=[!-~])(?=\n)|(?=\n[!-~])")

# Distinct pieces kept between calls; then the cache starts over. Most are pre-tokens (a few bytes each), but the parts
# that go to HF whole (texts holding an added token, lines with other characters) are keys too: ~0.1 MB in the default
# corpus, at most the size of the text encoded since the last start.
_CACHE_LIMIT = 2_000_000


def _spec(hf_tokenizer) -> dict:
    return json.loads(hf_tokenizer.to_str())


class PieceEncoder:
    """Encodes texts like `hf_tokenizer.encode_batch`, one distinct pre-token at a time (module docstring)."""

    def __init__(self, hf_tokenizer, spec: Optional[dict] = None) -> None:
        self._hf = hf_tokenizer
        spec = _spec(hf_tokenizer) if spec is None else spec
        self._added = [t["content"] for t in spec.get("added_tokens", [])]
        self._ids: dict = {}  # pre-token (or ("hf", text) / ("id", id) marker) -> its ids, as bytes of `_dtype`
        self._dtype: Optional[np.dtype] = None
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
        pieces: list = []  # pre-tokens, and for the other parts ("hf", text) markers, in order
        for text in texts:
            if any(token in text for token in self._added):
                pieces.append(("hf", text))  # HF matches added tokens before it splits
            elif _is_safe(text):
                pieces.extend(_PRE_TOKEN.findall(text))
            else:
                for part in _CUT.split(text):
                    if _is_safe(part):
                        pieces.extend(_PRE_TOKEN.findall(part))
                    else:
                        pieces.append(("hf", part))
            if separator is not None:
                pieces.append(("id", separator))
        return self._gather(pieces, dtype)

    def _gather(self, pieces: list, dtype: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        if len(self._ids) > _CACHE_LIMIT or dtype != self._dtype:
            self._ids.clear()
            self._dtype = dtype
        # The pieces not seen before, found in C (a set, then a difference with the cache's keys): the order in which
        # they are encoded does not change any piece's ids.
        new = set(pieces).difference(self._ids)
        words = [p for p in new if isinstance(p, str)]
        if words:
            # One call for all of them, each pre-token a "word" of a pre-tokenized input: HF encodes each word on its
            # own and says which word each id came from (43 K Encoding objects, one per word, took ~2x longer).
            # Where the word changes is found by numpy: a Python loop over the ids took 10% of a worker's time.
            encoded = self._encode_words(words)
            owner, flat, size = np.asarray(encoded.word_ids), _as_bytes(encoded.ids, dtype), dtype.itemsize
            # A word can have no ids at all: a BPE without `unk_token` drops the bytes its vocabulary lacks, as HF's
            # own encode of the whole text does.
            self._ids.update(dict.fromkeys(words, b""))
            if owner.size:
                starts = [0, *(np.flatnonzero(owner[1:] != owner[:-1]) + 1).tolist()]
                for word, start, end in zip(owner[starts].tolist(), starts, [*starts[1:], len(owner)]):
                    self._ids[words[word]] = flat[start * size : end * size]
        for p in new:
            if isinstance(p, tuple):
                kind, value = p
                self._ids[p] = _as_bytes([value] if kind == "id" else self._hf.encode(value).ids, dtype)
        # Each piece's ids are kept as the bytes they take in the stream, so the stream is one C-level join of them
        # (a flat iterator over Python ints into numpy took 1.3x as long).
        return np.frombuffer(bytearray().join(map(self._ids.__getitem__, pieces)), dtype=dtype)

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


def _is_safe(text: str) -> bool:
    """Whether `text` has only characters on which `re` and Oniguruma split alike (`_SAFE_BYTES`). Checked on its
    ASCII bytes in C (`bytes.translate` deleting the safe ones): 10x faster than a regex search for the others."""
    return text.isascii() and not text.encode("ascii").translate(None, _SAFE_BYTES)
