"""Every family counts the FLOPs of its training step (measured on the meta device), and the throughput
callback turns them into FLOPs/s (and MFU where the device's peak is known)."""

from __future__ import annotations

import math

import pytest
import torch

from gen_lightning.capabilities import ReportsFlops
from gen_lightning.models import GANModule, GPTModule, VAEModule

IMAGES = (torch.zeros(16, 1, 28, 28), torch.zeros(16, dtype=torch.long))


@pytest.mark.parametrize(("size", "block", "vocab", "batch"), [("nano", 64, 257, 8), ("gpt2", 1024, 50304, 2)])
def test_gpt_measured_flops_match_the_analytic_count(size, block, vocab, batch):
    model = GPTModule(size=size, block_size=block, vocab_size=vocab)
    idx = torch.zeros(batch, block, dtype=torch.long)
    measured, analytic = model.flops_per_batch((idx, idx)), model.net.analytic_flops(batch, block)
    assert measured == pytest.approx(analytic, rel=0.01), (measured, analytic)


def test_mlp_vae_flops_are_the_matmuls_forward_and_backward():
    model = VAEModule(net="mlp", hidden_dim=400, latent_dim=20)
    weights = 784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784
    # forward 2 FLOPs per weight and image, backward the same for weight gradients and, except in the first layer
    # (its input, the image, needs no gradient), the same again for input gradients.
    expected = 16 * (2 * weights + 2 * weights + 2 * (weights - 784 * 400))
    assert model.flops_per_batch(IMAGES) == expected


def test_gan_flops_grow_by_one_discriminator_step_per_critic_step():
    one, two, three = (GANModule(net="dcgan", n_critic=n).flops_per_batch(IMAGES) for n in (1, 2, 3))
    d_step = two - one
    assert d_step > 0 and three - two == d_step
    assert one > d_step, "the generator step (G and D forward, backward through both) costs more than a D step"


def test_lstm_flops_are_the_gates_matmuls_forward_and_backward():
    from gen_lightning.models.lstm import LSTMModule

    model = LSTMModule(n_layer=2, n_embd=64, n_hidden=64, vocab_size=257)
    idx = torch.zeros(4, 16, dtype=torch.long)
    # per token and layer, 4 gates x (input + hidden) x hidden multiply-adds; the tied head 64 x 257.
    forward = 2 * (2 * 4 * (64 + 64) * 64 + 64 * 257) * 4 * 16
    assert model.flops_per_batch((idx, idx)) == pytest.approx(3 * forward, rel=0.02)


def _lstm():
    from gen_lightning.models.lstm import LSTMModule

    return LSTMModule(n_embd=32, n_hidden=32)


@pytest.mark.parametrize(
    "model",
    [VAEModule(), VAEModule(num_classes=10), GANModule(net="mlp"), GPTModule(block_size=32), _lstm()],
    ids=["vae", "cvae", "gan", "gpt", "lstm"],
)
def test_every_family_reports_flops(model):
    assert isinstance(model, ReportsFlops)
    tokens = not isinstance(model, (VAEModule, GANModule))
    batch = IMAGES if not tokens else (torch.zeros(4, 32, dtype=torch.long),) * 2
    flops = model.flops_per_batch(batch)
    assert flops > 1e6 and math.isfinite(flops)
    # Counting happens on the meta device: the real weights are untouched and no memory is taken.
    assert all(p.device.type == "cpu" for p in model.parameters())
