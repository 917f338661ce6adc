"""LSTM language model: the net (tying, projection, state), generation with and without the state as a
cache, the shared LanguageModel checks, and a short run through the real CLI that learns, logs val/loss
and val/perplexity, writes text samples, and samples from its checkpoint alone."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from gen_lightning.capabilities import GeneratesText, NamesCheckpointMetric
from gen_lightning.data.tokenizers import ByteTokenizer
from gen_lightning.errors import UserError
from gen_lightning.models import LSTMModule
from gen_lightning.models.nets.lstm import LSTMLM, LSTMConfig
from tests.conftest import CONFIGS
from tests.helpers import QUIET


def test_embeddings_are_tied_with_a_projection_only_when_widths_differ():
    narrow = LSTMLM(LSTMConfig(vocab_size=50, n_embd=16, n_hidden=32, n_layer=2))
    assert narrow.lm_head.weight is narrow.wte.weight
    assert narrow.proj is not None and tuple(narrow.proj.weight.shape) == (16, 32)
    same = LSTMLM(LSTMConfig(vocab_size=50, n_embd=24, n_hidden=24, n_layer=1))
    assert same.proj is None and same.lm_head.weight is same.wte.weight
    # Counted once: embedding 50*24, one layer 4*24*(24+24) weights + 2*4*24 biases.
    assert same.num_params() == 50 * 24 + 4 * 24 * 48 + 8 * 24
    # The forget-gate bias starts at 1, the other gates' at 0 (torch's gate order: i, f, g, o).
    assert same.rnn.bias_ih_l0[24:48].eq(1).all() and same.rnn.bias_ih_l0[:24].eq(0).all()
    logits, (h, c) = narrow(torch.randint(0, 50, (3, 7)))
    assert logits.shape == (3, 7, 50) and h.shape == c.shape == (2, 3, 32)


def test_the_state_carries_the_prefix():
    torch.manual_seed(0)
    net = LSTMLM(LSTMConfig(vocab_size=40, n_embd=8, n_hidden=12, n_layer=2)).eval()
    idx = torch.randint(0, 40, (2, 10))
    whole, _ = net(idx)
    _, state = net(idx[:, :6])
    rest, _ = net(idx[:, 6:], state)
    torch.testing.assert_close(rest, whole[:, 6:], rtol=1e-5, atol=1e-6)
    # From the zero state the same suffix scores differently: the state is what carried the prefix.
    assert not torch.allclose(net(idx[:, 6:])[0], whole[:, 6:], atol=1e-3)


@pytest.mark.parametrize("widths", [(16, 16), (12, 20)])
@pytest.mark.parametrize(
    "options",
    [dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.9, top_k=5), dict(temperature=1.2, top_p=0.8)],
)
def test_generation_with_and_without_the_state_cache_gives_identical_tokens(widths, options):
    torch.manual_seed(1)
    net = LSTMLM(LSTMConfig(vocab_size=30, n_embd=widths[0], n_hidden=widths[1], n_layer=2, dropout=0.1)).eval()
    prompt = torch.randint(0, 30, (3, 5))
    runs = [
        net.generate(prompt, 60, use_cache=cache, generator=torch.Generator().manual_seed(7), **options)
        for cache in (True, False)
    ]
    assert runs[0].shape == (3, 65)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, :5], prompt)


def test_a_row_that_stopped_is_padded_with_the_stop_token():
    torch.manual_seed(0)
    net = LSTMLM(LSTMConfig(vocab_size=10, n_embd=8, n_hidden=8, n_layer=1)).eval()
    with torch.no_grad():
        net.wte.weight.zero_()
        net.wte.weight[3] = 5.0  # the embedding is the output layer: only 3 can score above 0
        net.rnn.bias_ih_l0.fill_(5.0)  # gates open: h > 0 in every unit, so token 3 wins every step
    out = net.generate(torch.zeros(2, 1, dtype=torch.long), 8, temperature=0.0, stop_token=3)
    assert out.tolist() == [[0, 3], [0, 3]]  # both rows stopped at once: the loop ends early


def attach(module, vocab_size=257, block_size=32):
    """Give the module the little of a Trainer that setup() reads."""
    data = SimpleNamespace(vocab_size=vocab_size, block_size=block_size, tokenizer=ByteTokenizer())
    module._trainer = SimpleNamespace(datamodule=data, ckpt_path=None)
    return module


def test_setup_checks_the_vocabulary_but_needs_no_context_limit():
    with pytest.raises(UserError, match="model.vocab_size is 257; set --model.vocab_size 4096"):
        attach(LSTMModule(n_embd=8, n_hidden=8), vocab_size=4096).setup("fit")
    module = attach(LSTMModule(n_embd=8, n_hidden=8), block_size=100_000)  # any window length: a recurrence
    module.setup("fit")
    assert module.tokenizer_json == ByteTokenizer().to_json()
    assert isinstance(module, GeneratesText) and isinstance(module, NamesCheckpointMetric)
    assert module.checkpoint_metric == ("val/loss", "min")


def test_checkpoint_carries_the_tokenizer_and_refuses_another():
    module = attach(LSTMModule(n_embd=8, n_hidden=8))
    module.setup("fit")
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["tokenizer"] == '{"kind": "byte"}'
    fresh = LSTMModule(n_embd=8, n_hidden=8)
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.tokenizer_json == checkpoint["tokenizer"]
    other = LSTMModule(n_embd=8, n_hidden=8)
    other.tokenizer_json = '{"kind": "bpe", "tokenizer": "{}"}'
    with pytest.raises(UserError, match="another tokenizer"):
        other.on_load_checkpoint(checkpoint)


@pytest.mark.slow  # ~25 s: a 60-step run and two sampling runs
def test_lstm_learns_logs_samples_and_samples_from_its_checkpoint(cli):
    corpus = cli.cwd / "corpus.py"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(3000)))
    steps = 60
    fit = cli(
        "fit",
        "--config",
        CONFIGS / "lstm" / "stdlib.yaml",
        "--data.corpus",
        corpus,
        "--data.cache_dir",
        "cache",
        "--model.n_embd",
        64,
        "--model.n_hidden",
        96,
        "--data.batch_size",
        16,
        "--data.val_windows",
        32,
        "--trainer.max_steps",
        steps,
        "--trainer.val_check_interval",
        30,
        *QUIET,
    )
    assert fit.returncode == 0, (fit.stdout + fit.stderr)[-3000:]
    summary = json.loads((cli.cwd / "runs" / "summary.json").read_text())
    val_loss = summary["metrics"]["val/loss"]
    assert val_loss < math.log(257) - 3.0, val_loss  # a regular corpus: far below uniform in 60 steps
    assert summary["metrics"]["val/perplexity"] == pytest.approx(math.exp(val_loss), rel=1e-5)
    assert summary["best_model_score"] == pytest.approx(val_loss)  # best by val/loss, the lowest
    samples = (cli.cwd / "runs" / "samples" / "text.md").read_text()
    assert f"## step {steps}" in samples and "def " in samples  # the TextSamples callback of the config
    last = cli.cwd / "runs" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["tokenizer"] == '{"kind": "byte"}'
    elsewhere = cli.cwd / "elsewhere"  # no data, no config: the checkpoint alone
    elsewhere.mkdir()
    outputs = []
    for cache in ([], ["--no-cache"]):
        result = cli(
            "sample",
            "--ckpt",
            last,
            "--prompt",
            "def f1",
            "--max-new-tokens",
            40,
            "--num-samples",
            2,
            "--top-k",
            10,
            "--seed",
            3,
            "--no-stop",
            *cache,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]  # the state as cache gives the tokens re-reading the prefix gives
    texts = outputs[0].rstrip("\n").split("\n" + "-" * 40 + "\n")
    assert len(texts) == 2 and all(t.startswith("def f1") and len(t.encode()) >= 46 for t in texts)
    assert "return x" in outputs[0]  # it learnt the corpus's one line of body
