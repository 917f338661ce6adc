"""GPT-2's pre-token split by numpy (data/pretoken_split.py) cuts ASCII texts exactly where the regex does."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from gen_lightning.data.pretoken_split import pre_token_starts
from gen_lightning.data.text import stdlib_files

# GPT-2's pre-tokenizer regex (HF tokenizers' ByteLevel) with its classes spelled out for ASCII: the reference.
GPT2_ASCII = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""", re.ASCII)

EDGE_CASES = [
    "x",
    " ",
    "   ",
    "\n",
    " x",
    "  x",
    "\tx",
    "\t x",
    " \tx",
    "\n\n  x = 1\n",
    "trailing   ",
    "it's they're we've I'm you'll he'd",
    "'s 's ''s x''s .'s 'S 'sx 'll 'lly 're 'r 'rex 've 'v 'd 'dd 'm 'ms 't",
    "x's",
    "x'",
    "'",
    "''",
    "' s",
    "'\ns",
    "a\t's",
    "a 's",
    "1's",
    "_'ll",
    "'l",
    "'l'l",
    "12 345 6x7 x8 .9 9.",
    "a+=b;;; !!! ===",
    "\r\n\r\n\x0b\x0c x\x0c",
]


def _split(texts: list[str]) -> list[str]:
    parts = [t.encode("ascii") for t in texts if t]
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    text_starts = np.cumsum([0, *map(len, parts[:-1])]).astype(np.int64) if parts else np.zeros(0, np.int64)
    starts = pre_token_starts(data, text_starts)
    assert starts.dtype == np.int64 and np.all(np.diff(starts) > 0)
    raw = data.tobytes()
    return [raw[a:b].decode("ascii") for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(raw)])]


def _reference(texts: list[str]) -> list[str]:
    return [piece for text in texts for piece in GPT2_ASCII.findall(text)]


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_each_edge_case_is_cut_as_the_regex_cuts_it(text):
    assert _split([text]) == _reference([text])


def test_a_texts_end_ends_its_pre_tokens():
    """Texts one after the other are cut as each is alone: a space, an apostrophe or whitespace at the end of one
    never joins the next one's first run."""
    texts = ["a ", "b", "x'", "s", "\n\n", "  y", "it'", "ll", "'", "re", " ", "z"]
    assert _split(texts) == _reference(texts)
    assert _split(texts)[:3] == ["a", " ", "b"]


def test_random_texts_are_cut_as_the_regex_cuts_them():
    """Short texts over the characters the rules turn on (whitespace kinds, apostrophes, contraction letters,
    digits, other), many at once."""
    rng = random.Random(0)
    alphabet = " \t\n\r\x0b\x0c'sStmdrevlLx09.,=_\"" + "  ''"
    for _ in range(3000):
        texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 14))) for _ in range(rng.randint(1, 6))]
        assert _split(texts) == _reference(texts), texts


def test_the_default_corpus_is_cut_as_the_regex_cuts_it():
    texts = []
    for path in stdlib_files()[:80]:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.isascii():
            texts.append(text)
    assert sum(map(len, texts)) > 500_000
    assert _split(texts) == _reference(texts)


def test_no_text_gives_no_pre_token():
    assert pre_token_starts(np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)).size == 0
