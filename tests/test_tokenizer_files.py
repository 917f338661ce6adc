"""Existing tokenizers for the text layer: GPT-2's vocab.json + merges.txt or a HF tokenizer.json give the
ids of transformers' GPT2TokenizerFast on the same files; a GPT-2 imported with init_from is fine-tuned on
its own ids; bad files and a model vocabulary too small for them are one clear line.

The files are made here, offline, in GPT-2's format: a byte-level BPE trained with HF `tokenizers`, saved
as vocab.json + merges.txt, with <|endoftext|> appended as the last id, where GPT-2 has it (50256).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gen_lightning.data import TextDataModule
from gen_lightning.data.text import split_documents
from gen_lightning.data.tokenizers import EOT, load_tokenizer, tokenizer_from_json
from gen_lightning.errors import UserError
from tests.conftest import CONFIGS

transformers = pytest.importorskip("transformers")

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "  leading spaces,\ttabs and\n\n\nblank lines  ",
    "naïve café — 日本語のテキスト 🐍 émoji",
    "two documents<|endoftext|>in one string",
    "",
    "x=1;y  =  2 # comment's 'quotes' \"and\" numbers 3.14159e-10",
]


def corpus_text() -> str:
    return "".join(f"def function_{i}(value, other):\n    return value * {i} + other  # café\n\n" for i in range(300))


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory) -> Path:
    """A folder with vocab.json + merges.txt in GPT-2's format (a small byte-level BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("gpt2-tokenizer")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([corpus_text()], trainer=trainer)
    tok.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab[EOT] = len(vocab)  # GPT-2's end-of-text: the last id, with no merge making it
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return folder


@pytest.fixture(scope="module")
def reference(gpt2_files):
    # From the folder, as GPT-2 is loaded (reads vocab.json + merges.txt; local files only).
    return transformers.GPT2TokenizerFast.from_pretrained(str(gpt2_files))


def test_gpt2_files_give_the_ids_of_transformers_gpt2_tokenizer(gpt2_files, reference):
    for source in (gpt2_files, gpt2_files / "vocab.json"):  # the folder, or the vocab file with merges beside it
        ours = load_tokenizer(source)
        assert ours.vocab_size == len(reference) == 401
        assert ours.eot_id == reference.eos_token_id == 400
        for text in TEXTS:
            ids = ours.encode(text)
            assert ids == reference(text)["input_ids"], text
            assert ours.decode(ids) == text.replace(EOT, "")  # decoding drops the document separator
        assert ours.encode_batch(TEXTS) == [reference(t)["input_ids"] for t in TEXTS]
        assert ours.encode(TEXTS[3]).count(400) == 1  # <|endoftext|> in a text is the one special id
        # The checkpoint carries it as JSON: the rebuilt tokenizer gives the same ids.
        rebuilt = tokenizer_from_json(ours.to_json())
        assert [rebuilt.encode(t) for t in TEXTS] == [reference(t)["input_ids"] for t in TEXTS]


def test_a_tokenizer_json_gives_the_same_ids(gpt2_files, reference, tmp_path):
    reference.save_pretrained(tmp_path / "hf")  # what a Hugging Face model folder holds
    tokenizer_json = tmp_path / "hf" / "tokenizer.json"
    assert tokenizer_json.is_file()
    for source in (tokenizer_json, tmp_path / "hf"):
        ours = load_tokenizer(source)
        assert [ours.encode(t) for t in TEXTS] == [reference(t)["input_ids"] for t in TEXTS]
        assert ours.vocab_size == 401 and ours.eot_id == 400


def test_text_layer_tokenizes_the_corpus_with_the_loaded_tokenizer(gpt2_files, reference, tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text(corpus_text())
    dm = TextDataModule(corpus=str(corpus), tokenizer=str(gpt2_files), block_size=16, cache_dir=str(tmp_path / "cache"))
    assert dm.vocab_size == 401  # known before anything is tokenized: the model check needs it
    dm.prepare_data()
    dm.setup("fit")
    train_docs, val_docs = split_documents([corpus.read_text()], dm.val_fraction)
    for split, docs in (("train", train_docs), ("val", val_docs)):
        expected = [i for d in docs for i in reference(d)["input_ids"] + [reference.eos_token_id]]
        assert np.fromfile(dm.cache_dir / f"{split}.bin", dtype=np.uint16).tolist() == expected
    assert dm.meta["vocab_size"] == 401 and dm.meta["eot_id"] == 400
    # Another file means another cache; the same file (even copied elsewhere) the same one.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (copy / name).write_bytes((gpt2_files / name).read_bytes())
    assert (
        TextDataModule(corpus=str(corpus), tokenizer=str(copy), cache_dir=str(tmp_path / "cache")).cache_dir
        == dm.cache_dir
    )
    assert (
        TextDataModule(corpus=str(corpus), tokenizer="byte", cache_dir=str(tmp_path / "cache")).cache_dir
        != dm.cache_dir
    )


def test_bad_tokenizer_files_are_one_clear_line(gpt2_files, tmp_path):
    with pytest.raises(UserError, match="'nope' is neither byte, bpe nor an existing tokenizer file"):
        load_tokenizer("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds neither tokenizer.json nor GPT-2's vocab.json"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "vocab.json").write_text((gpt2_files / "vocab.json").read_text())
    with pytest.raises(UserError, match="needs GPT-2's merges.txt beside it"):
        load_tokenizer(tmp_path / "lonely" / "vocab.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="is not a JSON tokenizer file"):
        load_tokenizer(tmp_path / "broken.json")
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tmp_path / "no_eot.json"))
    with pytest.raises(UserError, match="has no <\\|endoftext\\|> token"):
        load_tokenizer(tmp_path / "no_eot.json")


def _fit(cli, *args):
    return cli(
        "fit",
        *map(str, args),
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    )


def test_model_vocabulary_follows_the_tokenizer(cli, gpt2_files):
    # model.vocab_size is linked to the data's tokenizer (gen_lightning/config_links.py): the nano config's
    # GPT gets the 401 ids of this tokenizer, where it had 257 (and stopped with one line) before the link.
    import torch

    corpus = cli.cwd / "corpus.py"
    corpus.write_text(corpus_text())
    result = _fit(
        cli,
        "--config",
        CONFIGS / "gpt" / "nano_stdlib.yaml",
        "--data.corpus",
        corpus,
        "--data.tokenizer",
        gpt2_files,
        "--trainer.max_steps",
        2,
        "--trainer.callbacks",
        "[]",
        "--data.val_windows",
        4,
        "--trainer.val_check_interval",
        2,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (last,) = (cli.cwd / "runs").rglob("last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert state["net.transformer.wte.weight"].shape[0] == 401


@pytest.mark.slow  # ~25 s: two CLI runs
def test_gpt2_from_hugging_face_is_fine_tuned_on_its_own_ids(cli, gpt2_files, reference):
    from gen_lightning.models.hf_gpt2 import export_hf_gpt2
    from gen_lightning.models.nets.transformer import GPT, GPTConfig

    # A "GPT-2" in the Hugging Face format with its tokenizer files, as a downloaded one comes.
    hf = cli.cwd / "gpt2"
    export_hf_gpt2(GPT(GPTConfig(block_size=64, vocab_size=401, n_layer=1, n_head=2, n_embd=32)), hf, eot_id=400)
    for name in ("vocab.json", "merges.txt"):
        (hf / name).write_bytes((gpt2_files / name).read_bytes())
    corpus = cli.cwd / "corpus.py"
    corpus.write_text(corpus_text())
    arch = [
        "--model.n_layer",
        1,
        "--model.n_head",
        2,
        "--model.n_embd",
        32,
        "--data.block_size",
        32,
    ]  # model.vocab_size 401 and block_size 32: linked from the data
    result = _fit(
        cli,
        "--config",
        CONFIGS / "gpt" / "nano_finetune.yaml",
        "--data.corpus",
        corpus,
        "--data.tokenizer",
        hf,
        "--model.init_from",
        hf,
        *arch,
        "--data.batch_size",
        8,
        "--data.val_windows",
        8,
        "--trainer.max_steps",
        6,
        "--trainer.val_check_interval",
        6,
        "--trainer.callbacks",
        "[]",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    said = [line for line in output.splitlines() if line.startswith("model.init_from:")]
    assert said == [
        f"model.init_from: loaded a GPT (n_layer 1, n_embd 32, vocab 401, 0.03M parameters; 32 of its 64 "
        f"positions) from the Hugging Face GPT-2 folder {hf.resolve()}"
    ]
    ckpt = torch.load(cli.cwd / "runs" / "checkpoints" / "last.ckpt", weights_only=True)
    tok = tokenizer_from_json(ckpt["tokenizer"])
    assert [tok.encode(t) for t in TEXTS] == [reference(t)["input_ids"] for t in TEXTS]
    sampled = cli(
        "sample", "--ckpt", cli.cwd / "runs" / "checkpoints" / "last.ckpt", "--prompt", "def ", "--max-new-tokens", 5
    )
    assert sampled.returncode == 0 and sampled.stdout.startswith("def "), sampled.stderr[-2000:]
