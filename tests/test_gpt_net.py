"""The GPT network alone: sizes, initialisation, causality, KV cache, sampling filters, LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from gen_lightning.models.gpt import GPTModule, warmup_cosine
from gen_lightning.models.nets.transformer import GPT, GPTConfig, KVCache, sample_next_token


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(block_size=32, vocab_size=50, n_layer=2, n_head=2, n_embd=32), **overrides})).eval()


@pytest.mark.parametrize(
    "size, millions",
    [("gpt2", 124.4), ("gpt2-medium", 354.8), ("gpt2-large", 774.0), ("gpt2-xl", 1557.6)],
)
def test_named_sizes_have_gpt2_parameter_counts(size, millions):
    # On the meta device: shapes without memory, so even gpt2-xl costs nothing.
    with torch.device("meta"):
        model = GPT(GPTConfig.named(size, vocab_size=50257, block_size=1024))
    assert model.num_params(non_embedding=False) / 1e6 == pytest.approx(millions, abs=0.1)


def test_nano_is_small_and_overrides_apply():
    with torch.device("meta"):
        nano = GPT(GPTConfig.named("nano"))
        wide = GPT(GPTConfig.named("nano", n_embd=64, n_layer=2))
    assert (nano.config.n_layer, nano.config.n_head, nano.config.n_embd) == (4, 4, 128)
    assert 0.7e6 < nano.num_params() < 1.0e6
    assert (wide.config.n_layer, wide.config.n_embd) == (2, 64)


def test_gpt2_initialisation_and_weight_tying():
    model = GPT(GPTConfig(n_layer=8, n_embd=256, n_head=4, vocab_size=1000, block_size=256))
    assert model.lm_head.weight is model.transformer.wte.weight
    block = model.transformer.h[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * 8)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert block.attn.c_attn.bias.abs().max().item() == 0.0


def test_no_bias_variant_has_no_bias_parameters():
    model = tiny(bias=False)
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]


def test_attention_is_causal():
    model = tiny()
    x = torch.randint(0, 50, (1, 12))
    changed = x.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 50
    a, b = model(x), model(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)  # the future never leaks into the past
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-3)


def test_cache_prefill_in_chunks_equals_one_forward():
    model = tiny()
    x = torch.randint(0, 50, (3, 20))
    caches = [KVCache() for _ in model.transformer.h]
    chunks = [model(x[:, :7], caches), model(x[:, 7:8], caches), model(x[:, 8:], caches)]
    assert torch.allclose(torch.cat(chunks, dim=1), model(x), atol=1e-5)


@pytest.mark.parametrize("new_tokens", [20, 45])  # 45: the text outgrows block_size 32, the window slides
def test_greedy_generation_with_and_without_cache_is_identical(new_tokens):
    model = tiny()
    prompt = torch.randint(0, 50, (2, 5))
    cached = model.generate(prompt, new_tokens, temperature=0.0, use_cache=True)
    uncached = model.generate(prompt, new_tokens, temperature=0.0, use_cache=False)
    assert cached.shape == (2, 5 + new_tokens)
    assert torch.equal(cached, uncached)


def test_seeded_sampling_is_reproducible_and_stop_token_ends_rows():
    model = tiny()
    prompt = torch.zeros(4, 1, dtype=torch.long)
    a = model.generate(prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    stop = int(a[0, 3])  # a token row 0 is known to produce
    out = model.generate(prompt, 30, temperature=1.0, stop_token=stop, generator=torch.Generator().manual_seed(1))
    row = out[0, 1:].tolist()
    first = row.index(stop)
    assert all(t == stop for t in row[first:])  # padded with the stop token after it


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next_token(logits, 1.0, top_k=2, generator=g).tolist()) == {0, 1}
    probs = logits[0].softmax(-1)  # 0.64, 0.24, 0.09, ...: the first two reach 0.8
    assert probs[:1].sum() < 0.8 <= probs[:2].sum()
    assert set(sample_next_token(logits, 1.0, top_p=0.8, generator=g).tolist()) == {0, 1}
    assert set(sample_next_token(logits, 1.0, top_p=0.5, generator=g).tolist()) == {0}
    assert sample_next_token(logits[:1], 0.0).item() == 0  # temperature 0 = greedy


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 110, 0.1) == pytest.approx(1 / 11)
    assert warmup_cosine(9, 10, 110, 0.1) == pytest.approx(10 / 11)
    assert warmup_cosine(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.55)  # half way down the cosine
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 110, 0.1) == pytest.approx(0.1)


def test_weight_decay_only_on_matrices():
    module = GPTModule(n_layer=1, n_head=2, n_embd=16, block_size=8, decay_steps=100)
    optimizer = module.configure_optimizers()["optimizer"]
    decayed, free = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and free["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in free["params"])
    n_unique = len({id(p) for p in module.net.parameters()})
    assert len(decayed["params"]) + len(free["params"]) == n_unique  # tied embedding counted once
