"""PairedTextDataModule: reading JSONL/TSV, bad lines, the bundled stdlib task, the cache, buckets and shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gen_lightning.data import PairedTextDataModule
from gen_lightning.data.buckets import IGNORE_INDEX, BucketBatchSampler, PadPairs
from gen_lightning.data.code_summaries import first_sentence, stdlib_code_summaries
from gen_lightning.errors import UserError


def write_jsonl(path, pairs) -> str:
    path.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs))
    return str(path)


def toy_pairs(n: int = 60) -> list[tuple[str, str]]:
    return [(f"def f{i}(x):\n    return x * {i}" + "  # pad" * (i % 7), f"Multiply x by {i}.") for i in range(n)]


@pytest.fixture(scope="module")
def stdlib_task():
    return stdlib_code_summaries(0.1)


def test_stdlib_task_is_split_by_module_with_docstrings_removed(stdlib_task):
    train, val, summary = stdlib_task
    assert len(train) + len(val) > 5000 and summary["modules"] > 300
    assert 0.09 < len(val) / (len(train) + len(val)) < 0.15
    module = lambda pair: pair.origin.rsplit(":", 1)[0]  # noqa: E731
    assert not {module(p) for p in train} & {module(p) for p in val}, "a module on both sides of the split"
    assert {module(p) for p in val} == set(summary["val_modules"])
    # A function we know: source without its docstring, target its first sentence.
    (pair,) = [p for p in train + val if p.origin.startswith("textwrap.py:") and p.source.startswith("def dedent(")]
    assert '"""' not in pair.source and "Remove any common leading whitespace" not in pair.source
    assert "lines = _whitespace_only_re.sub" in pair.source or "margin = None" in pair.source
    assert pair.target == "Remove any common leading whitespace from every line in `text`."
    assert all(p.source.strip() and p.target.strip() for p in train + val)


def test_first_sentence():
    assert first_sentence("Return x.  More text.\n\nArgs: ...") == "Return x."
    assert first_sentence("Spans\n    two lines. And more") == "Spans two lines."
    assert first_sentence("No full stop here") == "No full stop here"
    assert first_sentence("Version 3.11 is used. Rest") == "Version 3.11 is used."


def test_default_module_tokenizes_the_stdlib_task_once(tmp_path, stdlib_task, monkeypatch):
    monkeypatch.setattr("gen_lightning.data.paired.stdlib_code_summaries", lambda *_: stdlib_task)  # extracted once
    dm = PairedTextDataModule(
        tokenizer="byte", max_source_len=128, max_target_len=48, truncate=True, cache_dir=str(tmp_path), batch_size=16
    )
    dm.prepare_data()
    dm.setup("fit")
    train, val, _ = stdlib_task
    assert dm.meta["train_pairs"] == len(train) == len(dm.train_set)
    assert dm.meta["val_pairs"] == len(val) and dm.meta["train_truncated"]["source"] > 0
    source, target = dm.train_set[0]
    assert (
        bytes(source.tolist()).decode() == train[0].source.encode()[:128].decode("utf-8", errors="ignore")
        or len(source) == 128
    )
    assert bytes(target.tolist()).decode() == train[0].target[:48] or len(target) == 48
    files = {p.name: p.stat().st_mtime_ns for p in dm.cache_dir.iterdir()}
    assert {"meta.json", "tokenizer.json", "train.source.bin", "val.offsets.npy"} <= set(files)
    # A second module with the same settings reads the cache: the task is not extracted again.
    monkeypatch.setattr("gen_lightning.data.paired.stdlib_code_summaries", lambda *_: pytest.fail("extracted again"))
    again = PairedTextDataModule(
        tokenizer="byte", max_source_len=128, max_target_len=48, truncate=True, cache_dir=str(tmp_path), batch_size=16
    )
    again.prepare_data()
    assert {p.name: p.stat().st_mtime_ns for p in again.cache_dir.iterdir()} == files


def test_jsonl_and_tsv_give_the_same_pairs_and_bpe_covers_both_sides(tmp_path):
    pairs = toy_pairs()
    jsonl = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    (tmp_path / "pairs.tsv").write_text("".join(f"{s.replace(chr(10), ' ')}\t{t}\n" for s, t in pairs))
    a = PairedTextDataModule(train_file=jsonl, tokenizer="bpe", vocab_size=300, cache_dir=str(tmp_path / "c"))
    b = PairedTextDataModule(train_file=str(tmp_path / "pairs.tsv"), cache_dir=str(tmp_path / "c"))
    for dm in (a, b):
        dm.prepare_data()
        dm.setup("fit")
    assert len(a.train_set) == len(b.train_set) == 54 and len(a.val_set) == 6  # the last 10% validate
    assert a.tokenizer.vocab_size == 300
    for i in (0, 5):
        source, target = a.train_set[i]
        assert a.tokenizer.decode(source.tolist()) == pairs[i][0] and a.tokenizer.decode(target.tolist()) == pairs[i][1]
    src_b, tgt_b = b.val_set[0]
    assert bytes(src_b.tolist()).decode() == pairs[54][0].replace("\n", " ")
    assert bytes(tgt_b.tolist()).decode() == pairs[54][1]
    # Targets' words are tokens of the BPE trained on both sides (not only code).
    assert len(a.tokenizer.encode("Multiply")) < len("Multiply") / 2


@pytest.mark.parametrize(
    "name, content, fragments",
    [
        ("p.jsonl", '{"source": "a", "target": "b"}\n{"source": "x"}\n', ["p.jsonl:2", 'no "target" field']),
        ("p.jsonl", '{"source": "  ", "target": "b"}\n', ["p.jsonl:1", "empty source"]),
        ("p.jsonl", '{"source": "a", "target": "b"}\nnot json\n', ["p.jsonl:2", "not valid JSON"]),
        ("p.jsonl", '["a", "b"]\n', ["p.jsonl:1", "expected an object"]),
        ("p.jsonl", '{"source": 3, "target": "b"}\n', ['"source" is a int', "expected a string"]),
        ("p.tsv", "a\tb\nc\td\te\n", ["p.tsv:2", "3 tab-separated columns, expected 2"]),
        ("p.tsv", "only one column\n", ["p.tsv:1", "1 tab-separated columns"]),
        ("p.txt", "a\tb\n", ["cannot tell JSONL from TSV", "data.file_format"]),
        ("p.jsonl", "\n\n", ["holds no pairs"]),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path, name, content, fragments):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError) as err:
        PairedTextDataModule(train_file=str(tmp_path / name), cache_dir=str(tmp_path / "cache"))
    for fragment in fragments:
        assert fragment in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_too_long_sides_are_an_error_or_truncated(tmp_path):
    pairs = toy_pairs(30) + [("def long():\n" + "    x = 1\n" * 50, "Too long.")] + toy_pairs(10)
    path = write_jsonl(tmp_path / "p.jsonl", pairs)
    dm = PairedTextDataModule(train_file=path, max_source_len=100, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(
        UserError,
        match=r"p.jsonl:31: the source is 512 tokens, longer than data.max_source_len 100; "
        r"raise data.max_source_len or set data.truncate true",
    ):
        dm.prepare_data()
    assert not (tmp_path / "cache").exists(), "nothing written"
    target_limit = PairedTextDataModule(
        train_file=path, max_source_len=512, max_target_len=5, cache_dir=str(tmp_path / "cache")
    )
    with pytest.raises(UserError, match=r"p.jsonl:1: the target is 16 tokens.*max_target_len 5 \(and 36 more train"):
        target_limit.prepare_data()
    cut = PairedTextDataModule(train_file=path, max_source_len=100, truncate=True, cache_dir=str(tmp_path / "cache"))
    cut.prepare_data()
    cut.setup()
    assert len(cut.train_set[30][0]) == 100 and cut.meta["train_truncated"] == {"source": 1, "target": 0}


def test_pad_pairs_builds_decoder_input_and_labels():
    t = torch.tensor
    batch = PadPairs(eot_id=9)([(t([1, 2, 3]), t([4])), (t([5]), t([6, 7]))])
    assert batch.source.tolist() == [[1, 2, 3], [5, 9, 9]]
    assert batch.source_mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.target_in.tolist() == [[9, 4, 9], [9, 6, 7]]  # start token, then the target
    assert batch.target_out.tolist() == [[4, 9, IGNORE_INDEX], [6, 7, 9]]  # the target, then the stop token


def lengths(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(1, 200, n), rng.integers(1, 40, n)], axis=1)


@pytest.mark.parametrize("n, batch, ranks", [(637, 64, 2), (101, 16, 2), (50, 64, 3), (5, 2, 2)])
def test_validation_shards_are_disjoint_complete_and_equally_many(n, batch, ranks):
    lens = lengths(n)
    shards = [list(BucketBatchSampler(lens, batch, ranks, r, train=False, seed=0)) for r in range(ranks)]
    assert len({len(s) for s in shards}) == 1, "every rank runs the same number of batches (ZeRO-3)"
    seen = [i for shard in shards for b in shard for i in b]
    assert sorted(seen) == list(range(n)), "every pair exactly once: no padding duplicates"
    assert all(1 <= len(b) <= batch for shard in shards for b in shard)
    assert len(BucketBatchSampler(lens, batch, ranks, 0, train=False)) == len(shards[0])
    # Same order at every validation (set_epoch changes nothing), and bucketing keeps batches homogeneous.
    sampler = BucketBatchSampler(lens, batch, ranks, 0, train=False, seed=0)
    sampler.set_epoch(5)
    assert list(sampler) == shards[0]


def test_training_batches_are_buckets_equal_per_rank_and_a_function_of_seed_and_epoch():
    lens = lengths(1000)
    samplers = [BucketBatchSampler(lens, 32, 2, r, train=True, seed=7, bucket_batches=10) for r in range(2)]
    epoch0 = [list(s) for s in samplers]
    assert len(epoch0[0]) == len(epoch0[1]) == len(samplers[0]) == (1000 // 32) // 2
    flat = [i for shard in epoch0 for b in shard for i in b]
    assert len(flat) == len(set(flat)) and all(len(b) == 32 for shard in epoch0 for b in shard)
    for s in samplers:
        s.set_epoch(1)
    epoch1 = [list(s) for s in samplers]
    assert epoch1 != epoch0
    again = BucketBatchSampler(lens, 32, 2, 0, train=True, seed=7, bucket_batches=10)
    again.set_epoch(1)
    assert list(again) == epoch1[0], "the order is a pure function of (seed, epoch)"
    # Bucketing: padding within a batch is far below that of random batches.
    waste = lambda batches: np.mean([lens[b, 0].max() - lens[b, 0].mean() for b in batches])  # noqa: E731
    random_batches = [list(range(i, i + 32)) for i in range(0, 992, 32)]
    assert waste(epoch0[0]) < 0.5 * waste(random_batches)


def test_too_few_pairs_for_the_ranks_is_a_user_error():
    with pytest.raises(UserError, match="fewer than data.batch_size x ranks = 32 x 2"):
        BucketBatchSampler(lengths(40), 32, 2, 0, train=True)
    with pytest.raises(UserError, match="fewer than the 2 ranks need"):
        BucketBatchSampler(lengths(1), 32, 2, 0, train=False)


def test_loader_resumes_mid_epoch_from_its_state(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", toy_pairs(200))
    dm = PairedTextDataModule(train_file=path, batch_size=8, cache_dir=str(tmp_path / "c"), seed=3)
    dm.prepare_data()
    dm.setup()
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    rest = [b.source for b in it]
    resumed = dm.train_dataloader()
    resumed.sampler.set_epoch(2)
    resumed.load_state_dict(state)
    after = [b.source for b in resumed]
    assert len(after) == len(rest) == len(loader) - 5
    assert all(torch.equal(a, b) for a, b in zip(rest, after))
