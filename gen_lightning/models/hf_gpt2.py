"""GPT-2 weights in the Hugging Face format (`config.json` + `model.safetensors` of GPT2LMHeadModel), both ways.

Local files only: nothing here touches the network, and `transformers` is not needed (only `safetensors`).
Our module names are GPT-2's, so the mapping is: strip/add the `transformer.` prefix, and transpose the four
projection weights, because HF's GPT-2 keeps them in `Conv1D` layers that store [in, out] where nn.Linear
stores [out, in]. The output head is tied to the token embedding on both sides, so it is never stored.
A model without biases exports with zero biases, which computes exactly the same function.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

from gen_lightning.errors import UserError
from gen_lightning.models.nets.transformer import GPT, GPTConfig

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Non-parameter buffers some GPT-2 files carry (the causal mask); we build the mask on the fly.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
TOKENIZER_FILE = "gen_lightning_tokenizer.json"  # our own tokenizer spec, so sampling works after import


def is_hf_gpt2_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def _config_from_hf(hf: dict, source: Path) -> GPTConfig:
    if hf.get("model_type") != "gpt2":
        raise UserError(
            f"{source}/config.json has model_type {hf.get('model_type')!r}; only GPT-2 models can be imported"
        )
    unsupported = {
        "activation_function": (hf.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (hf.get("n_inner"), (None, 4 * hf["n_embd"])),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), (True,)),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", 1e-5), (1e-5,)),
        "add_cross_attention": (hf.get("add_cross_attention", False), (False,)),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise UserError(
                f"{source}/config.json: {key}={value!r} is not the GPT-2 architecture this model implements"
            )
    return GPTConfig(
        block_size=hf["n_positions"],
        vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=0.0,
        bias=True,
    )


def _read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    st = directory / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        return load_file(str(st))
    pt = directory / "pytorch_model.bin"
    if pt.is_file():
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise UserError(f"{directory} holds neither model.safetensors nor pytorch_model.bin; export a GPT-2 model there")


def load_hf_gpt2(directory: str | Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """The architecture and a state_dict for our `GPT`, read from a GPT2LMHeadModel (or GPT2Model) folder."""
    directory = Path(directory)
    if not is_hf_gpt2_dir(directory):
        raise UserError(f"'{directory}' is not a Hugging Face model folder (no config.json in it)")
    config = _config_from_hf(json.loads((directory / "config.json").read_text()), directory)
    state = {}
    for key, tensor in _read_hf_weights(directory).items():
        if key.endswith(_BUFFER_SUFFIXES) or key == "lm_head.weight":
            continue  # the causal mask is a buffer; the head is the tied token embedding
        name = key if key.startswith("transformer.") else f"transformer.{key}"  # GPT2Model files lack the prefix
        state[name] = tensor.t().contiguous() if name.endswith(CONV1D_SUFFIXES) else tensor
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return config, state


def gpt_from_hf(directory: str | Path) -> GPT:
    config, state = load_hf_gpt2(directory)
    model = GPT(config)
    model.load_state_dict(state, strict=True)
    return model


def export_hf_gpt2(
    model: GPT, out_dir: str | Path, eot_id: Optional[int] = None, tokenizer_json: Optional[str] = None
) -> Path:
    """Write `model` as a GPT2LMHeadModel folder that `transformers` loads with `from_pretrained(out_dir)`."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = model.config
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: transformers re-ties it to transformer.wte.weight
        tensor = tensor.detach().to("cpu", torch.float32)
        state[name] = tensor.t().contiguous() if name.endswith(CONV1D_SUFFIXES) else tensor.contiguous()
    if not c.bias:  # GPT-2 always has biases: zeros are the exact equivalent of none
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) and name != "lm_head":
                width = module.weight.shape[0]
                state.setdefault(f"{name}.bias", torch.zeros(width))
    weights = out / "model.safetensors"
    save_file(state, str(weights), metadata={"format": "pt"})
    # safetensors creates its file 0600; every other file of a run gets the user's umask (usually 0644).
    umask = os.umask(0)
    os.umask(umask)
    weights.chmod(0o666 & ~umask)
    eot = c.vocab_size - 1 if eot_id is None else eot_id
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "use_cache": True,
    }
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    if tokenizer_json is not None:
        (out / TOKENIZER_FILE).write_text(tokenizer_json)
        spec = json.loads(tokenizer_json)
        if spec.get("kind") == "bpe":  # an HF tokenizers file: PreTrainedTokenizerFast(tokenizer_file=...) reads it
            (out / "tokenizer.json").write_text(spec["tokenizer"])
    return out


def read_exported_tokenizer(directory: str | Path) -> Optional[str]:
    path = Path(directory) / TOKENIZER_FILE
    return path.read_text() if path.is_file() else None
