"""`compile: true` (torch.compile, inductor on CPU) trains like eager, and its checkpoints load into eager models.

Every family with the option (the LSTM has none: TorchDynamo skips nn.LSTM, `torch._dynamo.config.allow_rnn` is
off by default, so a compiled LSTMLM ran eager, measured: 0 graphs), tiny nets, 20 optimizer steps from the same seed: the per-step losses (automatic optimization) and
the final parameters of the compiled run equal the eager run's to 1e-4; the compiled run's checkpoint has the
eager parameter names (no `_orig_mod.`) and loads into an eager model with strict key matching.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from tests.matrix.spec import MATRIX_DATA

STEPS = 20


def _family(name: str, compile: bool, cache: str):
    from gen_lightning.data import ImageDataModule, PairedTextDataModule, TextDataModule
    from gen_lightning.models import GANModule, GPTModule, Seq2SeqModule, VAEModule

    digits = dict(dataset="digits", image_size=8, batch_size=32)
    text = dict(
        corpus="stdlib:json/*.py",
        tokenizer="byte",
        block_size=16,
        batch_size=4,
        train_samples=80,
        val_windows=2,
        cache_dir=cache,
    )
    if name == "vae":
        return VAEModule(net="mlp", image_size=8, hidden_dim=32, latent_dim=4, compile=compile), ImageDataModule(
            **digits
        )
    if name == "gan":
        return GANModule(net="mlp", image_size=8, width=4, latent_dim=4, compile=compile), ImageDataModule(**digits)
    if name == "gpt":
        return GPTModule(
            n_layer=1, n_head=2, n_embd=16, block_size=16, warmup_steps=2, compile=compile
        ), TextDataModule(**text)
    if name == "seq2seq":
        return Seq2SeqModule(
            n_encoder_layer=1,
            n_decoder_layer=1,
            n_head=2,
            n_embd=16,
            source_block_size=128,
            target_block_size=25,
            dropout=0.0,
            warmup_steps=2,
            val_generate_batches=0,
            compile=compile,
        ), PairedTextDataModule(
            train_file=str(MATRIX_DATA / "pairs.jsonl"),
            tokenizer="byte",
            max_source_len=128,
            max_target_len=24,
            truncate=True,
            batch_size=8,
            cache_dir=cache,
        )
    raise ValueError(name)


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if isinstance(outputs, dict) and "loss" in outputs:  # automatic optimization; the GAN: its weights
            self.losses.append(float(outputs["loss"]))


def _train(name: str, compile: bool, tmp_path):
    L.seed_everything(0)
    module, data = _family(name, compile, str(tmp_path / "cache"))
    losses = _Losses()
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[losses],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    return module, trainer, losses.losses


@pytest.mark.slow  # inductor builds C++ kernels: 45-75 s per family on 2 loaded cores, seq2seq ~170 s (recompiles)
@pytest.mark.parametrize("name", ["vae", "gan", "gpt", "seq2seq"])
def test_compiled_training_equals_eager_and_checkpoints_load_eager(name, tmp_path):
    from torch._inductor import config as inductor_config

    torch._dynamo.reset()
    eager, _, eager_losses = _train(name, False, tmp_path)
    with inductor_config.patch(compile_threads=1):  # no pool of compile workers on 2 shared cores
        compiled, trainer, compiled_losses = _train(name, True, tmp_path)

    nets = [m for m in compiled.modules() if m._compiled_call_impl is not None]
    assert nets, "compile: true compiled no net"
    assert len(compiled_losses) == len(eager_losses)
    assert compiled_losses == pytest.approx(eager_losses, abs=1e-4, rel=1e-4)
    eager_state, compiled_state = eager.state_dict(), compiled.state_dict()
    assert list(compiled_state) == list(eager_state)
    for key, value in eager_state.items():
        torch.testing.assert_close(compiled_state[key], value, atol=1e-4, rtol=1e-4, msg=key)

    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert not [k for k in saved if "_orig_mod" in k]
    plain = type(compiled).load_from_checkpoint(path, map_location="cpu", compile=False)
    assert not [m for m in plain.modules() if m._compiled_call_impl is not None]
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, compiled_state[key], msg=key)


@pytest.mark.parametrize("penalty", [{"loss": "wgan-gp", "d_norm": "none"}, {"r1_gamma": 1.0}])
def test_gan_refuses_compile_with_a_double_backward_penalty(penalty):
    from gen_lightning.errors import UserError
    from gen_lightning.models import GANModule

    with pytest.raises(UserError, match="model.compile: torch.compile does not support the double backward"):
        GANModule(net="mlp", image_size=8, width=4, latent_dim=4, compile=True, **penalty)
