"""The corpus encoder by distinct pre-token (data/bpe_pieces.py) gives exactly HF tokenizers' ids, or is not used."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer, normalizers, pre_tokenizers

from gen_lightning.data.bpe_pieces import PieceEncoder, _safe_bytes
from gen_lightning.data.text import stdlib_files
from gen_lightning.data.tokenizers import BPETokenizer

# Where a split by Python's `re` could part from Oniguruma's, or a cut from the whole text's split.
EDGE_CASES = [
    "",
    "x",
    "   ",
    "\n",
    "\n\n\n",
    "trailing spaces   ",
    "trailing newlines\n\n",
    'import os\n\n"""doc"""\n',
    "a\n\n    b\n\tc\r\nd\x0ce\x0bf",
    "it's they're we've I'm you'll he'd 'S 's",
    "x  =  1  +  22  // 333 ;;; !!!",
    "  leading\n  indent\n\n\n  more",
    "tab\tand\t\tmore\t\n\t\tx",
    "numbers 12345 1.5e-3 0x1F ٣٤ 漢字123",
    "é ß 漢字 🙂 naïve café\nnext line\n  é\n",
    "unit separators \x1c\x1d\x1e\x1f inside\nand after",
    "no-break\u00a0space and \u2028 line separator\u2029 here\n",
    "ends with é\n",
    "é\n\nx",
    "<|endoftext|> written out, and again<|endoftext|>",
    "mixed\r\n\r\nline ends\r\n",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """~1.5 MB of the default corpus (stdlib sources: some hold non-ASCII, form feeds, CRLF)."""
    out, size = [], 0
    for path in stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        size += len(text)
        if size > 1_500_000:
            break
    return out


@pytest.fixture(scope="module")
def bpe(corpus) -> BPETokenizer:
    return BPETokenizer.train(iter(corpus[:40] + EDGE_CASES), 2048)


def _hf_stream(tok: BPETokenizer, texts: list[str]) -> list[int]:
    return [i for t in texts for i in [*tok._tok.encode(t).ids, tok.eot_id]]


def test_the_trained_tokenizer_is_one_it_applies_to(bpe):
    assert bpe._pieces is not None


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_each_edge_case_gets_hf_ids(bpe, text):
    assert bpe.encode_stream([text], "int64").tolist() == _hf_stream(bpe, [text])


def test_the_corpus_gets_hf_ids_and_the_cache_carries_over_calls(bpe, corpus):
    expected = _hf_stream(bpe, corpus)
    encoder = PieceEncoder(bpe._tok)
    half = len(corpus) // 2
    first = encoder.encode_stream(corpus[:half], bpe.eot_id, "uint16")
    cached = len(encoder._cache)
    second = encoder.encode_stream(corpus[half:], bpe.eot_id, "uint16")
    assert len(encoder._cache) > cached > 1000  # the second call reused and grew the first's cache
    assert np.concatenate([first, second]).tolist() == expected
    assert first.dtype == np.uint16


def test_one_encoder_serves_streams_of_several_dtypes(bpe, corpus):
    """Its cache holds each piece's ids as bytes of one dtype: a call with another dtype must not read them."""
    texts = corpus[:3]
    expected = _hf_stream(bpe, texts)
    encoder = PieceEncoder(bpe._tok)
    for dtype in ("uint16", "int64", "uint16", "uint32"):
        out = encoder.encode_stream(texts, bpe.eot_id, dtype)
        assert out.dtype == np.dtype(dtype) and out.tolist() == expected
        assert out.flags.writeable  # an array of its own, not a view of an immutable buffer


def test_a_vocabulary_without_some_bytes_drops_them_as_hf_does():
    """A BPE trained without ByteLevel's full alphabet (no `unk_token`) has no id for bytes it never saw, and HF drops
    them; a pre-token made only of such bytes has no ids at all, alone in a call or among others."""
    from tokenizers import models, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["hello world, hello low"] * 20, trainers.BpeTrainer(vocab_size=60))
    assert PieceEncoder.applies_to(tok)
    encoder = PieceEncoder(tok)
    for texts in (["qqq"], ["hello qqq world\x0b\tzz", "low qq"], ["hello"]):
        assert encoder.encode_stream(texts, None, "int64").tolist() == [i for t in texts for i in tok.encode(t).ids]
    assert encoder.encode_stream(["qqq"], None, "int64").tolist() == []


def test_added_tokens_beyond_the_end_of_text_one_are_hfs(bpe):
    tok = HFTokenizer.from_str(bpe._tok.to_str())
    tok.add_special_tokens(["<pad>"])
    tok.add_tokens(["<unused>"])
    texts = ["x = 1 <pad> y", "plain text, no token", "a<unused>b\n<pad><pad>", "<pad>"]
    other = BPETokenizer(tok)
    assert other._pieces is not None
    assert other.encode_stream(texts, "int64").tolist() == _hf_stream(other, texts)


def test_the_cache_starts_over_at_its_limit(bpe, corpus, monkeypatch):
    from gen_lightning.data import bpe_pieces

    monkeypatch.setattr(bpe_pieces, "_CACHE_LIMIT", 50)
    encoder = PieceEncoder(bpe._tok)
    for texts in (corpus[:10], corpus[10:20], corpus[:10]):
        assert encoder.encode_stream(texts, bpe.eot_id, "uint16").tolist() == _hf_stream(bpe, texts)
        assert len(encoder._cache) > 50  # each call fills it past the limit, the next one clears it first


def test_the_safe_characters_are_printable_ascii_and_the_five_whitespace_controls():
    """The characters on which `re` and Oniguruma split GPT-2's regex alike (module docstring): any other one, even
    in the middle of a text, sends the text to the cut-and-HF path."""
    safe = {chr(c) for c in (9, 10, 11, 12, 13, *range(0x20, 0x7F))}
    for c in [*map(chr, range(0x3000)), "\U0001f600", "\ufeff"]:
        assert (_safe_bytes(f"ab{c}cd") is not None) == (c in safe), repr(c)
    assert _safe_bytes("") == b"" and _safe_bytes("x = 1\n\tif y:\r\n") == b"x = 1\n\tif y:\r\n"


@pytest.mark.parametrize(
    "change",
    ["normalizer", "prefix_space", "no_regex", "whitespace_split"],
)
def test_a_tokenizer_it_would_not_reproduce_goes_to_hf(bpe, change):
    tok = HFTokenizer.from_str(bpe._tok.to_str())
    if change == "normalizer":
        tok.normalizer = normalizers.Lowercase()
    elif change == "prefix_space":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    elif change == "no_regex":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert not PieceEncoder.applies_to(tok)
    other = BPETokenizer(tok)
    assert other._pieces is None
    texts = ["Hello World, it's  here\n\n  x", "é ß"]
    assert other.encode_stream(texts, "int64").tolist() == _hf_stream(other, texts)


def test_pre_tokens_sharing_a_hash_are_caught_and_the_call_goes_to_hf(bpe, corpus, monkeypatch):
    """A hash shared by two pre-tokens must not give one of them the other's ids: with a hash that is only the length,
    in one call and across calls (a cached row's hash met again by another pre-token), the ids are still HF's."""
    from gen_lightning.data import bpe_pieces

    texts = [*corpus[:3], *EDGE_CASES]
    encoder = PieceEncoder(bpe._tok)
    fallbacks = []
    real_by_hf = encoder._by_hf
    monkeypatch.setattr(encoder, "_by_hf", lambda *a: fallbacks.append(1) or real_by_hf(*a))
    assert encoder.encode_stream(texts, bpe.eot_id, "int64").tolist() == _hf_stream(bpe, texts)
    assert not fallbacks  # the real hash: no collision
    monkeypatch.setattr(bpe_pieces, "piece_hash", lambda data, starts, lengths: lengths.astype(np.uint64))
    assert encoder.encode_stream(texts, bpe.eot_id, "int64").tolist() == _hf_stream(bpe, texts)
    assert len(fallbacks) == 1
    fresh = PieceEncoder(bpe._tok)
    fresh._by_hf = encoder._by_hf
    for call in (["ab cd"], ["ab"], ["cd"], ["ef gh\n"]):
        assert fresh.encode_stream(call, None, "int64").tolist() == bpe._tok.encode(call[0]).ids, call
    # "ab cd": new rows for "ab" and " cd" (lengths 2 and 3); "ab" finds its row; "cd" and "ef" meet the row of "ab".
    assert len(fallbacks) == 3


def test_texts_are_encoded_in_groups_and_a_huge_text_by_its_lines(bpe, corpus, monkeypatch):
    """Bounded numpy work: a call over more than `_GROUP_BYTES` of text is gathered in groups, and a text longer
    than that is cut at line feeds first (`_CUT`); the ids are HF's either way."""
    from gen_lightning.data import bpe_pieces

    monkeypatch.setattr(bpe_pieces, "_GROUP_BYTES", 5_000)
    encoder = PieceEncoder(bpe._tok)
    sizes = []
    real_gather = encoder._gather
    monkeypatch.setattr(encoder, "_gather", lambda safe, *a: sizes.append(sum(map(len, safe))) or real_gather(safe, *a))
    texts = [*corpus[:4], "x = 1\n" * 3000, "short", "no line feed " * 1000]
    assert encoder.encode_stream(texts, bpe.eot_id, "uint16").tolist() == _hf_stream(bpe, texts)
    assert len(sizes) >= 5 and max(sizes) < 5_000 + max(len(line) for t in texts for line in t.split("\n")) + 1
