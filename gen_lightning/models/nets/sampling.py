"""Autoregressive sampling, shared by every language-model net (GPT, LSTM).

`sample_next_token` turns next-token logits into ids (greedy, temperature, top-k, nucleus/top-p);
`generate_tokens` is the loop around it: it appends one token per step and pads a row that has produced
the stop token with it. How the logits of the next token are computed (a KV cache, a recurrent state,
or the whole prefix again) is the net's business: it hands the loop a `next_logits(idx)` function.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One token id per row from logits [B, V]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the likelier ones alone already reach top_p (the likeliest always stays).
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def generate_tokens(
    next_logits: Callable[[torch.Tensor], torch.Tensor],
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    stop_token: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Continue the prompts `idx` [B, T] by up to `max_new_tokens`; returns prompt + continuation.

    `next_logits(idx)` gives the logits [B, V] of the token that follows `idx` (all of it so far).
    temperature 0 = greedy. top_k keeps the k likeliest tokens, top_p the smallest set whose probability
    reaches p (nucleus sampling). A row that has produced `stop_token` is padded with it; generation
    ends when every row has.
    """
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        next_token = sample_next_token(next_logits(idx).float(), temperature, top_k, top_p, generator)
        if stop_token is not None:
            next_token = torch.where(done, torch.full_like(next_token, stop_token), next_token)
            done |= next_token == stop_token
        idx = torch.cat([idx, next_token[:, None]], dim=1)
        if stop_token is not None and bool(done.all()):
            break
    return idx
