"""A decoder-only Transformer (GPT-2 architecture), in the manner of nanoGPT's model.py.

Pre-LayerNorm blocks, causal `F.scaled_dot_product_attention` (flash/memory-efficient kernels where the
device has them), tanh-approximated GELU (GPT-2's `gelu_new`, so Hugging Face GPT-2 weights give the same
logits), learned position embeddings, input/output embedding tying and GPT-2's initialisation, including
the 1/sqrt(2 * n_layer) scaling of the projections that write into the residual stream.

The building blocks (`SelfAttention`, `MLP`, `Block`) take plain sizes rather than a GPTConfig so that
other sequence models reuse them: the encoder-decoder of nets/seq2seq.py builds its encoder from
`Block(causal=False)` with a key padding mask, and its decoder blocks from `Block` plus cross-attention. Module names follow GPT-2's
(`transformer.h.0.attn.c_attn`, ...) so that importing/exporting Hugging Face weights is a renaming-free
mapping (see models/hf_gpt2.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from gen_lightning.models.nets.sampling import generate_tokens, sample_next_token  # noqa: F401 - re-exported

# Named sizes: nano fits a CPU; the four others are OpenAI's GPT-2 family (124M, 350M, 774M, 1558M
# parameters with the 50257-token vocabulary and 1024 positions).
GPT_SIZES: dict[str, dict[str, int]] = {
    "nano": dict(n_layer=4, n_head=4, n_embd=128),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
}


@dataclass
class GPTConfig:
    block_size: int = 128  # longest context (number of learned positions)
    vocab_size: int = 257  # the byte tokenizer's 256 bytes + end-of-text
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers; GPT-2 has them, without is a bit faster

    @classmethod
    def named(cls, size: str, **overrides) -> "GPTConfig":
        if size not in GPT_SIZES:
            raise ValueError(f"unknown GPT size {size!r}; choose one of {sorted(GPT_SIZES)}")
        return cls(**{**GPT_SIZES[size], **overrides})


class KVCache:
    """Keys and values of the tokens one attention layer has already seen, so a new token costs O(T)."""

    def __init__(self) -> None:
        self.k: Optional[torch.Tensor] = None  # [B, n_head, T_past, head_dim]
        self.v: Optional[torch.Tensor] = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def select(self, rows: torch.Tensor) -> None:
        """Keep the cached rows `rows` (in that order, repeats allowed): beam search reorders its beams."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, rows), self.v.index_select(0, rows)


class SelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head, self.n_embd, self.dropout, self.causal = n_head, n_embd, dropout, causal
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # query, key, value for all heads at once
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_proj.residual_projection = True  # tells the initialiser to scale it down
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, cache: Optional[KVCache] = None, key_padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x [B, T, C]; `key_padding_mask` [B, T_keys] is True where a key is a real token (False = padding,
        never attended to): what an encoder over padded sources needs."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
        # is_causal masks the top-left triangle, which is only right when queries and keys start together.
        # With cached keys in front, one new query may see everything; a chunk of new queries needs the
        # triangle shifted right by `past`.
        mask, is_causal = None, self.causal and past == 0
        if self.causal and past > 0 and T > 1:
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        if key_padding_mask is not None:
            if is_causal:  # SDPA takes either is_causal or a mask: spell the triangle out to combine both
                mask, is_causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), False
            keep = key_padding_mask[:, None, None, :]  # [B, 1, 1, T_keys]: the same keys for every head and query
            mask = keep if mask is None else mask & keep
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's gelu_new: needed for identical HF logits
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm: x + attn(ln(x)), then x + mlp(ln(x)); the residual stream itself is never normalised."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = SelfAttention(n_embd, n_head, dropout, bias, causal)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(
        self, x: torch.Tensor, cache: Optional[KVCache] = None, key_padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, key_padding_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(
                    Block(config.n_embd, config.n_head, config.dropout, config.bias) for _ in range(config.n_layer)
                ),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): one matrix embeds tokens and scores them; saves V * C parameters.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)

    def _init_weights(self, layer: nn.Module) -> None:
        # GPT-2: N(0, 0.02) everywhere; projections into the residual stream get std / sqrt(2 * n_layer)
        # so that the stream's variance does not grow with depth (two such writes per block).
        if isinstance(layer, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(layer, "residual_projection", False) else 0.02
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Embedding):
            nn.init.normal_(layer.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without position embeddings (token embeddings are the tied head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def analytic_flops(self, batch_size: int, seq_len: int) -> int:
        """Training FLOPs (forward + backward) of a batch, in closed form (nanoGPT's estimate_mfu, from the PaLM
        paper's appendix B): 6 per weight per token for the matmuls (2 forward, 4 backward; the tied embedding
        counted once, as the head's matmul), plus attention's 12 * n_layer * T * n_embd per token."""
        c = self.config
        matmul_weights = self.num_params(non_embedding=True)  # wte = lm_head: one matmul; wpe is a lookup
        per_token = 6 * matmul_weights + 12 * c.n_layer * seq_len * c.n_embd
        return per_token * seq_len * batch_size

    def forward(self, idx: torch.Tensor, caches: Optional[list[KVCache]] = None) -> torch.Tensor:
        """Token ids [B, T] -> next-token logits [B, T, vocab_size]. With `caches` (one per layer), `idx`
        holds only the new tokens and their positions continue after the cached ones."""
        B, T = idx.shape
        past = caches[0].length if caches else 0
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, caches[i] if caches else None)
        return self.lm_head(self.transformer.ln_f(x))

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        stop_token: Optional[int] = None,
        use_cache: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Continue the prompts `idx` [B, T] by up to `max_new_tokens`; returns prompt + continuation.

        temperature 0 = greedy. top_k keeps the k likeliest tokens, top_p the smallest set whose
        probability reaches p (nucleus sampling). A row that has produced `stop_token` is padded with it;
        generation ends when every row has. With `use_cache`, each step feeds only the newest token;
        once the text outgrows block_size the window slides and each step re-reads the last block_size
        tokens, exactly as without the cache (so both give the same tokens).
        """
        # .forward, not __call__: sampling shapes change every step, a torch.compile'd __call__ would
        # recompile for them; eager is right for generation.
        block = self.config.block_size
        caches: Optional[list[KVCache]] = None

        def next_logits(seq: torch.Tensor) -> torch.Tensor:
            nonlocal caches
            if use_cache and caches is not None and caches[0].length < block:
                return self.forward(seq[:, -1:], caches)[:, -1, :]
            caches = [KVCache() for _ in self.transformer.h] if use_cache else None
            return self.forward(seq[:, -block:], caches)[:, -1, :]

        return generate_tokens(next_logits, idx, max_new_tokens, temperature, top_k, top_p, stop_token, generator)
