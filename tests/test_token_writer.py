"""The parallel token writer writes exactly the bytes the serial encoder wrote (ids + EOT per document)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from gen_lightning.data import token_writer
from gen_lightning.data.text import stdlib_files
from gen_lightning.data.tokenizers import BPETokenizer, ByteTokenizer


@pytest.fixture(scope="module")
def docs() -> list[str]:
    out, size = [], 0
    for path in stdlib_files()[:200]:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text:
            out.append(text)
            size += len(text)
        if size > 300_000:
            break
    out.append("non-ASCII: é ß 漢字 🙂 <|endoftext|> inside a document")
    return out


def _serial_reference(tok, docs, dtype) -> bytes:
    """What TextDataModule wrote before the parallel writer: one encode per document, then EOT."""
    return b"".join(np.asarray(tok.encode(d) + [tok.eot_id], dtype=dtype).tobytes() for d in docs)


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_parallel_bpe_file_is_byte_identical_to_serial(docs, dtype, monkeypatch):
    tok = BPETokenizer.train(iter(docs), 512)
    monkeypatch.setattr(token_writer, "CHUNK_BYTES", 20_000)  # many chunks: their order is what is tested
    pools, rows_at_fork = [], []
    real_fork_pool = token_writer._fork_pool

    def fork_pool(*args):
        rows_at_fork.append(len(tok._pieces._cache))
        pools.append(real_fork_pool(*args))
        return pools[-1]

    monkeypatch.setattr(token_writer, "_fork_pool", fork_pool)
    out = io.BytesIO()
    count = token_writer.write_tokens(tok, docs, out, dtype, "train", workers=2, parallel_min_bytes=0)
    assert len(pools) == 1  # the forked pool encoded it, not the in-process path
    # The first chunk was encoded before the fork: the workers start from its pre-tokens (one row each).
    assert rows_at_fork[0] > 100
    assert token_writer._worker_tok is None  # the parent forgets what it handed to the workers
    expected = _serial_reference(tok, docs, dtype)
    assert out.getvalue() == expected
    assert count == len(expected) // np.dtype(dtype).itemsize
    assert len(list(token_writer._chunks([len(d.encode()) for d in docs]))) >= 4


def test_one_chunk_needs_no_pool(docs, monkeypatch):
    tok = BPETokenizer.train(iter(docs[:5]), 300)
    monkeypatch.setattr(token_writer, "_fork_pool", lambda *a: pytest.fail("one chunk is encoded in-process"))
    for texts in (docs[:1], []):
        out = io.BytesIO()
        token_writer.write_tokens(tok, texts, out, "uint16", "train", workers=2, parallel_min_bytes=0)
        assert out.getvalue() == _serial_reference(tok, texts, "uint16")


def test_byte_file_is_byte_identical_to_serial(docs, monkeypatch):
    monkeypatch.setattr(token_writer, "_fork_pool", lambda *a: pytest.fail("byte ids need no pool"))
    out = io.BytesIO()
    count = token_writer.write_tokens(ByteTokenizer(), docs, out, "uint16", "train")
    assert out.getvalue() == _serial_reference(ByteTokenizer(), docs, "uint16")
    assert count == sum(len(d.encode()) + 1 for d in docs)
