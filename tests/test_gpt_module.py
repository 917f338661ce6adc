"""GPTModule without a Trainer run: data checks, init_from, tokenizer in checkpoints, the text-sample callback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gen_lightning.callbacks import TextSamples
from gen_lightning.data.tokenizers import ByteTokenizer
from gen_lightning.errors import UserError
from gen_lightning.models import GPTModule
from tests.helpers import TableLogger

SMALL = dict(n_layer=1, n_head=2, n_embd=16)


def attach(module: GPTModule, vocab_size=257, block_size=32, ckpt_path=None) -> GPTModule:
    """Give the module the little of a Trainer that setup() reads."""
    data = SimpleNamespace(vocab_size=vocab_size, block_size=block_size, tokenizer=ByteTokenizer())
    module._trainer = SimpleNamespace(datamodule=data, ckpt_path=ckpt_path)
    return module


def test_setup_names_the_fix_when_data_does_not_fit():
    with pytest.raises(UserError, match="--model.vocab_size 4096"):
        attach(GPTModule(**SMALL, block_size=32), vocab_size=4096).setup("fit")
    with pytest.raises(UserError, match="--model.block_size 64"):
        attach(GPTModule(**SMALL, block_size=32), block_size=64).setup("fit")
    module = attach(GPTModule(**SMALL, block_size=32, vocab_size=320))  # a larger vocab is fine
    module.setup("fit")
    assert module.tokenizer_json == ByteTokenizer().to_json()


def test_bad_head_count_is_a_user_error():
    with pytest.raises(UserError, match="divisible"):
        GPTModule(n_layer=1, n_head=3, n_embd=16)


def save_checkpoint(module: GPTModule, path) -> None:
    """What Lightning writes, reduced to what init_from reads."""
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)


def test_init_from_checkpoint_copies_weights_and_crops_positions(tmp_path):
    torch.manual_seed(0)
    source = attach(GPTModule(**SMALL, block_size=32))
    source.setup("fit")
    save_checkpoint(source, tmp_path / "pre.ckpt")
    tuned = attach(GPTModule(**SMALL, block_size=16, init_from=str(tmp_path / "pre.ckpt")), block_size=16)
    tuned.setup("fit")
    tokens = torch.randint(0, 257, (2, 16))
    assert torch.allclose(tuned(tokens), source(tokens), atol=1e-6)
    assert tuned.net.transformer.wpe.weight.shape == (16, 16)
    # Resuming (--ckpt_path) restores the run's own weights: init_from is not read again.
    resumed = attach(
        GPTModule(**SMALL, block_size=16, init_from=str(tmp_path / "gone.ckpt")), block_size=16, ckpt_path="last"
    )
    resumed.setup("fit")


def test_init_from_refuses_what_cannot_fit(tmp_path):
    source = attach(GPTModule(**SMALL, block_size=16), block_size=16)
    source.setup("fit")
    save_checkpoint(source, tmp_path / "pre.ckpt")
    cases = [
        (dict(n_layer=1, n_head=2, n_embd=16, block_size=32), "--model.block_size 16"),  # longer context
        (dict(n_layer=2, n_head=2, n_embd=16, block_size=16), "does not fit this architecture"),
        (dict(n_layer=1, n_head=4, n_embd=16, block_size=16), "--model.n_head 2"),
    ]
    for arch, message in cases:
        module = attach(GPTModule(**arch, init_from=str(tmp_path / "pre.ckpt")), block_size=16)
        with pytest.raises(UserError, match=message):
            module.setup("fit")
    with pytest.raises(UserError, match="does not exist"):
        attach(GPTModule(**SMALL, block_size=16, init_from=str(tmp_path / "nope.ckpt")), block_size=16).setup("fit")


def test_generate_text_stops_at_end_of_text_and_restores_train_mode():
    torch.manual_seed(0)
    module = attach(GPTModule(**SMALL, block_size=32))
    module.setup("fit")
    # Make end-of-text (256) the certain next token: the continuation must then be empty.
    with torch.no_grad():
        module.net.lm_head.weight.zero_()
        module.net.lm_head.weight[256] = 1.0
        module.net.transformer.ln_f.weight.fill_(10.0)
        module.net.transformer.ln_f.bias.fill_(10.0)
    module.train()
    assert module.generate_text("abc", 10, num_samples=2, temperature=0) == ["", ""]
    assert module.training
    assert len(module.generate_text("abc", 10, temperature=0, stop_at_eot=False)[0]) == 0  # only id 256: no bytes


def test_text_samples_go_to_loggers_with_log_text_and_to_the_run_folder(tmp_path):
    torch.manual_seed(0)
    module = attach(GPTModule(**SMALL, block_size=32))
    module.setup("fit")
    table = TableLogger()
    plain = SimpleNamespace(save_dir=str(tmp_path), name="proj", version="run1")  # no log_text: skipped
    epoch_loop = SimpleNamespace(_batches_that_stepped=0)
    trainer = SimpleNamespace(
        global_step=0,
        is_global_zero=True,
        loggers=[plain, table],
        default_root_dir=str(tmp_path),
        fit_loop=SimpleNamespace(epoch_loop=epoch_loop),
    )
    callback = TextSamples(prompt="def ", every_n_steps=5, max_new_tokens=8)
    for step in range(1, 11):
        trainer.global_step = step
        epoch_loop._batches_that_stepped = step - 1  # Lightning's logging step of the batch that made this step
        callback.on_train_batch_end(trainer, module, None, None, 0)
        callback.on_train_batch_end(trainer, module, None, None, 1)  # accumulation: same step twice
    # On the loggers' x-axis the samples sit where the losses of those batches are logged (callbacks/logging_step.py).
    assert [c[3] for c in table.calls] == [4, 9]
    key, columns, rows, _ = table.calls[-1]
    assert key == "samples/text" and columns == ["step", "prompt", "text"] and [r[0] for r in rows] == [5, 10]
    assert rows[0][2] == rows[1][2]  # same seed, same weights: the same text
    text_md = (tmp_path / "proj" / "run1" / "samples" / "text.md").read_text()
    assert text_md.count("## step") == 2 and "def " + rows[0][2] in text_md
    callback.on_train_end(trainer, module)  # step 10 already sampled: nothing new
    assert len(table.calls) == 2
