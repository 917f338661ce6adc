"""TextDataModule: the memmap holds exactly the train split's tokens; the cache is reused."""

from __future__ import annotations

import numpy as np
import pytest

from gen_lightning.data import TextDataModule
from gen_lightning.data.text import resolve_corpus, split_documents, stdlib_files
from gen_lightning.errors import UserError


@pytest.fixture(scope="module")
def stdlib_dm(tmp_path_factory):
    dm = TextDataModule(tokenizer="byte", block_size=64, cache_dir=str(tmp_path_factory.mktemp("cache")))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_default_corpus_is_the_stdlib(stdlib_dm):
    names = {p.name for p in stdlib_dm.files}
    assert {"os.py", "functools.py", "argparse.py"} <= names
    assert sum(p.stat().st_size for p in stdlib_dm.files) > 5_000_000
    assert not any("site-packages" in p.parts for p in stdlib_dm.files)


def test_memmap_holds_exactly_the_train_split(stdlib_dm):
    docs = [p.read_text(encoding="utf-8", errors="replace") for p in stdlib_files()]
    train_docs, val_docs = split_documents(docs, stdlib_dm.val_fraction)
    expected = sum(len(d.encode("utf-8")) + 1 for d in train_docs)  # bytes + one EOT per document
    tokens = np.memmap(stdlib_dm.cache_dir / "train.bin", dtype=np.uint16, mode="r")
    assert len(tokens) == expected == stdlib_dm.meta["train_tokens"]
    assert stdlib_dm.meta["val_tokens"] == sum(len(d.encode("utf-8")) + 1 for d in val_docs)
    train_text = "".join(train_docs)
    # Random training windows decode to text that really is in the train split.
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(stdlib_dm.train_set), 5):
        x, y = stdlib_dm.train_set[int(i)]
        assert x.shape == y.shape == (64,)
        assert (x[1:] == y[:-1]).all(), "targets are the inputs shifted by one"
        ids = x.tolist()
        if 256 in ids:  # a document boundary: keep the longer side
            cut = ids.index(256)
            ids = max(ids[:cut], ids[cut + 1 :], key=len)
        text = bytes(ids).decode("utf-8", errors="ignore")
        assert text[2:-2] in train_text


def test_validation_windows_are_consecutive(stdlib_dm):
    a, _ = stdlib_dm.val_set[0]
    b, _ = stdlib_dm.val_set[1]
    tokens = np.memmap(stdlib_dm.cache_dir / "val.bin", dtype=np.uint16, mode="r")
    assert a.tolist() == tokens[:64].tolist() and b.tolist() == tokens[64:128].tolist()


def test_second_run_reuses_the_cache(stdlib_dm, monkeypatch):
    before = (stdlib_dm.cache_dir / "train.bin").stat().st_mtime_ns
    again = TextDataModule(tokenizer="byte", block_size=64, cache_dir=str(stdlib_dm.cache_root))

    def _fail(*args, **kwargs):
        raise AssertionError("the corpus was tokenized again")

    monkeypatch.setattr(TextDataModule, "_write_tokens", staticmethod(_fail))
    again.prepare_data()
    again.setup("fit")
    assert again.cache_dir == stdlib_dm.cache_dir
    assert (stdlib_dm.cache_dir / "train.bin").stat().st_mtime_ns == before


def test_bpe_is_trained_on_train_split_and_round_trips(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n\n" * 400 + "class Zebra:\n    stripes = 42\n" * 50)
    dm = TextDataModule(
        corpus=str(corpus),
        tokenizer="bpe",
        vocab_size=300,
        block_size=16,
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.1,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.cache_dir / "tokenizer.json").is_file()
    assert dm.meta["vocab_size"] <= 300
    tok = dm.tokenizer
    sample = "def add(a, b):\n    return a + b\n"
    assert tok.decode(tok.encode(sample)) == sample
    assert len(tok.encode(sample)) < len(sample.encode()) / 2, "BPE merges common code into few tokens"


def test_bad_corpora_fail_clearly(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty"):
        TextDataModule(corpus=str(tmp_path / "empty.txt"))
    with pytest.raises(UserError, match="does not exist"):
        TextDataModule(corpus=str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="matches no files"):
        resolve_corpus(str(tmp_path / "*.nothing"))
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("x = 1\n" * 20)
    dm = TextDataModule(corpus=str(tiny), block_size=64, cache_dir=str(tmp_path / "c"))
    dm.prepare_data()
    with pytest.raises(UserError, match="fewer than block_size"):
        dm.setup("fit")
