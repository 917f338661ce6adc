"""GPT-2 weights in the Hugging Face format, both directions, checked against `transformers` itself.

No download: the HF model is built from a tiny GPT2Config with random weights.
"""

from __future__ import annotations

import os

import json

import pytest
import torch

from gen_lightning.errors import UserError
from gen_lightning.models.hf_gpt2 import export_hf_gpt2, gpt_from_hf, load_hf_gpt2
from gen_lightning.models.nets.transformer import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

TOKENS = torch.tensor([[5, 17, 3, 99, 42, 0, 7, 7, 64, 1, 88, 23], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])


def random_hf_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # HF zero-initialises biases and LayerNorms: randomise all so the test sees them
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_import_hf_gpt2_gives_the_same_logits(tmp_path):
    hf = random_hf_gpt2()
    hf.save_pretrained(tmp_path)
    ours = gpt_from_hf(tmp_path).eval()
    assert (ours.config.n_layer, ours.config.n_head, ours.config.n_embd) == (2, 4, 32)
    assert ours.config.block_size == 16 and ours.config.vocab_size == 100
    with torch.no_grad():
        expected = hf(TOKENS).logits
        got = ours(TOKENS)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_import_accepts_files_without_the_transformer_prefix(tmp_path):
    # GPT2Model (no LM head) and the original OpenAI uploads store "h.0.attn..." instead of "transformer.h.0...".
    from safetensors.torch import load_file, save_file

    hf = random_hf_gpt2()
    hf.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    save_file({k.removeprefix("transformer."): v for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with torch.no_grad():
        assert torch.allclose(gpt_from_hf(tmp_path).eval()(TOKENS), hf(TOKENS).logits, atol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, bias):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(block_size=16, vocab_size=100, n_layer=2, n_head=4, n_embd=32, bias=bias)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    export_hf_gpt2(ours, tmp_path, eot_id=99)
    # Every exported file has the user's umask (safetensors alone would make the weights 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(0o666 & ~umask)}
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = ours(TOKENS)
        got = hf(TOKENS).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert hf.config.eos_token_id == 99
    # ...and the exported folder imports back to the identical network.
    config, state = load_hf_gpt2(tmp_path)
    assert config.vocab_size == 100 and config.block_size == 16
    if bias:
        assert all(torch.equal(state[k], v) for k, v in ours.state_dict().items())


def test_import_refuses_another_architecture(tmp_path):
    hf = random_hf_gpt2()
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["activation_function"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="activation_function"):
        gpt_from_hf(tmp_path)
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        gpt_from_hf(tmp_path / "missing")
