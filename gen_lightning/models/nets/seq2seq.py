"""A Transformer encoder-decoder (Vaswani et al. 2017) built from the GPT's pre-LayerNorm blocks.

Encoder: token + learned position embeddings, `Block(causal=False)` layers in which every position attends
to every real source token (padding is masked out of the keys), a final LayerNorm. Decoder: the GPT's
causal blocks with a cross-attention sub-layer between self-attention and MLP, each with its own pre-LN and
residual: x + attn(ln_1(x)), x + cross_attn(ln_cross(x), encoder output), x + mlp(ln_2(x)).

The decoder's input embedding is its output head (Press & Wolf 2017). The encoder has its own (T5/BART tie
all three): the head's softmax moves every id that targets rarely use (here most code tokens) the same
way, and the encoder's input vectors should be shaped by the encoder's gradient alone. (Measured on the
code-summary task: no difference in the first 500 steps, tied or not; both ignored the source that long.)
Module names follow the GPT's (`decoder.h.0.attn.c_attn`, `encoder.ln_f`, ...) so a GPT checkpoint warm-starts both
stacks by renaming alone (Rothe et al. 2020, see models/seq2seq.py).

Generation: the encoder runs once per source batch; each decoder layer projects the encoder output to its
cross-attention keys/values once (`cross_memories`); the decoder's self-attention keeps a KVCache, so each
new token costs one position of work. `generate` decodes greedily or samples (temperature / top-k / top-p,
the GPT's `sample_next_token`), `beam_search` keeps `num_beams` hypotheses with a length penalty.
Hand-written because no library offers beam search over this network: HF's `generate` needs a
PreTrainedModel, torchaudio's/fairseq's decoders other model interfaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from gen_lightning.models.nets.transformer import Block, KVCache, sample_next_token


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 257  # the byte tokenizer's 256 bytes + end-of-text
    source_block_size: int = 256  # encoder positions: the longest source
    target_block_size: int = 65  # decoder positions: the start token + the longest target
    n_encoder_layer: int = 4
    n_decoder_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from the encoder output (`memory`, projected once)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head, self.n_embd, self.dropout = n_head, n_embd, dropout
        self.c_q = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_kv = nn.Linear(n_embd, 2 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_proj.residual_projection = True
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, C = t.shape
        return t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # [B, n_head, T, head_dim]

    def memory(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the encoder output [B, S, C]: computed once, reused by every decoding step."""
        k, v = self.c_kv(encoded).split(self.n_embd, dim=2)
        return self._heads(k), self._heads(v)

    def forward(
        self, x: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor], source_mask: torch.Tensor
    ) -> torch.Tensor:
        B, T, C = x.shape
        k, v = memory
        y = F.scaled_dot_product_attention(
            self._heads(self.c_q(x)),
            k,
            v,
            attn_mask=source_mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class DecoderBlock(Block):
    """The GPT block (same names: ln_1, attn, ln_2, mlp) with cross-attention between attention and MLP."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__(n_embd, n_head, dropout, bias, causal=True)
        self.ln_cross = nn.LayerNorm(n_embd, bias=bias)
        self.cross_attn = CrossAttention(n_embd, n_head, dropout, bias)

    def forward(
        self,
        x: torch.Tensor,
        memory: tuple[torch.Tensor, torch.Tensor],
        source_mask: torch.Tensor,
        cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.cross_attn(self.ln_cross(x), memory, source_mask)
        return x + self.mlp(self.ln_2(x))


def _stack(config: Seq2SeqConfig, blocks: list[nn.Module], positions: int) -> nn.ModuleDict:
    return nn.ModuleDict(
        dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(positions, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(blocks),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        )
    )


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = _stack(
            c,
            [Block(c.n_embd, c.n_head, c.dropout, c.bias, causal=False) for _ in range(c.n_encoder_layer)],
            c.source_block_size,
        )
        self.decoder = _stack(
            c,
            [DecoderBlock(c.n_embd, c.n_head, c.dropout, c.bias) for _ in range(c.n_decoder_layer)],
            c.target_block_size,
        )
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        # GPT-2's initialisation per stack: projections into the residual stream get std / sqrt(number of
        # such writes) so the stream's variance does not grow with depth: 2 per encoder block, 3 per decoder block.
        self.encoder.apply(partial(_init_weights, residual_writes=2 * c.n_encoder_layer))
        self.decoder.apply(partial(_init_weights, residual_writes=3 * c.n_decoder_layer))
        _init_weights(self.lm_head, residual_writes=1)
        self.decoder.wte.weight = self.lm_head.weight  # the decoder reads and writes tokens with one matrix

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix is one parameter, counted once

    def encode(self, source: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """Source ids [B, S] and mask [B, S] (True = real token) -> encoder output [B, S, C]."""
        S = source.size(1)
        if S > self.config.source_block_size:
            raise ValueError(f"source of {S} tokens exceeds source_block_size {self.config.source_block_size}")
        enc = self.encoder
        x = enc.drop(enc.wte(source) + enc.wpe(torch.arange(S, device=source.device)))
        for block in enc.h:
            x = block(x, key_padding_mask=source_mask)
        return enc.ln_f(x)

    def cross_memories(self, encoded: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys/values of the encoder output."""
        return [block.cross_attn.memory(encoded) for block in self.decoder.h]

    def decode(
        self,
        idx: torch.Tensor,
        memories: list[tuple[torch.Tensor, torch.Tensor]],
        source_mask: torch.Tensor,
        caches: Optional[list[KVCache]] = None,
    ) -> torch.Tensor:
        """Decoder input ids [B, T] -> next-token logits [B, T, V]. With `caches`, `idx` holds only the new
        tokens and their positions continue after the cached ones (as in GPT.forward)."""
        T = idx.size(1)
        past = caches[0].length if caches else 0
        if past + T > self.config.target_block_size:
            raise ValueError(f"target of {past + T} tokens exceeds target_block_size {self.config.target_block_size}")
        dec = self.decoder
        x = dec.drop(dec.wte(idx) + dec.wpe(torch.arange(past, past + T, device=idx.device)))
        for i, block in enumerate(dec.h):
            x = block(x, memories[i], source_mask, caches[i] if caches else None)
        return self.lm_head(dec.ln_f(x))

    def forward(self, source: torch.Tensor, source_mask: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, T, V] for every position of the decoder input `target_in`."""
        return self.decode(target_in, self.cross_memories(self.encode(source, source_mask)), source_mask)

    def _check_length(self, max_new_tokens: int) -> None:
        # The step that emits token n reads decoder positions 0..n-1: n may reach target_block_size.
        if not 1 <= max_new_tokens <= self.config.target_block_size:
            raise ValueError(
                f"max_new_tokens must be in 1..target_block_size ({self.config.target_block_size}), "
                f"got {max_new_tokens}"
            )

    @torch.no_grad()
    def generate(
        self,
        source: torch.Tensor,
        source_mask: torch.Tensor,
        max_new_tokens: int,
        start_token: int,
        stop_token: int,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        use_cache: bool = True,
        stop_when_done: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Target ids [B, L] (L <= max_new_tokens; no start token) for each source row. temperature 0 =
        greedy; a row that has produced `stop_token` is padded with it. `stop_when_done` ends the loop once
        every row has stopped; False always runs max_new_tokens steps, so that every rank of a ZeRO-3 run
        (where each forward is a collective) runs the same number of forward passes."""
        self._check_length(max_new_tokens)
        memories = self.cross_memories(self.encode(source, source_mask))
        idx = torch.full((source.size(0), 1), start_token, dtype=torch.long, device=source.device)
        caches = [KVCache() for _ in self.decoder.h] if use_cache else None
        done = torch.zeros(source.size(0), dtype=torch.bool, device=source.device)
        for _ in range(max_new_tokens):
            logits = self.decode(idx[:, -1:] if use_cache else idx, memories, source_mask, caches)
            next_token = sample_next_token(logits[:, -1, :].float(), temperature, top_k, top_p, generator)
            next_token = torch.where(done, torch.full_like(next_token, stop_token), next_token)
            done |= next_token == stop_token
            idx = torch.cat([idx, next_token[:, None]], dim=1)
            if stop_when_done and bool(done.all()):
                break
        return idx[:, 1:]

    @torch.no_grad()
    def beam_search(
        self,
        source: torch.Tensor,
        source_mask: torch.Tensor,
        max_new_tokens: int,
        start_token: int,
        stop_token: int,
        num_beams: int = 4,
        length_penalty: float = 1.0,
        use_cache: bool = True,
        stop_when_done: bool = True,
    ) -> torch.Tensor:
        """The best of `num_beams` hypotheses per source row, as target ids [B, L] padded with `stop_token`.

        fairseq's rule: every step expands each live beam by every token and keeps the 2K best candidates;
        those ending in `stop_token` among the first K are finished, the K best others live on; a row is done
        once it has K finished hypotheses (so K = 1 is exactly greedy decoding). Finished hypotheses are ranked
        by log-probability / length ** length_penalty (length counts the stop token; > 0 favours longer
        outputs); rows that reach max_new_tokens also rank their live beams. `stop_when_done` as in `generate`.
        """
        self._check_length(max_new_tokens)
        B, K, device = source.size(0), num_beams, source.device
        if K < 1:
            raise ValueError(f"num_beams must be >= 1, got {K}")
        # Encoder and cross-attention projections once per source row, then one copy per beam.
        memories = [
            (k.repeat_interleave(K, 0), v.repeat_interleave(K, 0))
            for k, v in self.cross_memories(self.encode(source, source_mask))
        ]
        mask = source_mask.repeat_interleave(K, 0)
        tokens = torch.full((B * K, 1), start_token, dtype=torch.long, device=device)
        caches = [KVCache() for _ in self.decoder.h] if use_cache else None
        # All beams start as the same empty hypothesis: only the first may expand at the first step.
        scores = torch.full((B, K), float("-inf"), device=device)
        scores[:, 0] = 0.0
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
        done = [False] * B
        steps = 0
        for step in range(max_new_tokens):
            steps = step + 1
            logits = self.decode(tokens[:, -1:] if use_cache else tokens, memories, mask, caches)[:, -1, :]
            log_probs = F.log_softmax(logits.float(), dim=-1)
            V = log_probs.size(-1)
            candidates = (scores[:, :, None] + log_probs.view(B, K, V)).view(B, K * V)
            top_scores, top_ids = candidates.topk(min(2 * K, K * V), dim=1)  # sorted, best first
            beam, token = top_ids // V, top_ids % V
            is_stop = token == stop_token
            for b in range(B):
                if done[b]:
                    continue
                for j in range(K):  # only stops among the K best candidates finish (fairseq)
                    if is_stop[b, j] and math.isfinite(top_scores[b, j].item()):
                        hypothesis = tokens[b * K + beam[b, j].item(), 1:].tolist() + [stop_token]
                        finished[b].append((top_scores[b, j].item() / steps**length_penalty, hypothesis))
                done[b] = len(finished[b]) >= K
            # Each beam has one stop token among its V candidates, so at least K of the 2K are not stops.
            live_scores = top_scores.masked_fill(is_stop, float("-inf"))
            keep = live_scores.topk(K, dim=1).indices
            scores = live_scores.gather(1, keep)
            rows = (torch.arange(B, device=device)[:, None] * K + beam.gather(1, keep)).view(-1)
            tokens = torch.cat([tokens[rows], token.gather(1, keep).view(-1, 1)], dim=1)
            if caches is not None:
                for cache in caches:
                    cache.select(rows)
            if stop_when_done and all(done):
                break
        best = []
        for b in range(B):
            ranked = list(finished[b])
            if len(ranked) < K:  # out of steps: the live beams compete too
                ranked += [
                    (scores[b, j].item() / steps**length_penalty, tokens[b * K + j, 1:].tolist())
                    for j in range(K)
                    if math.isfinite(scores[b, j].item())
                ]
            best.append(max(ranked, key=lambda item: item[0])[1])
        width = max(len(h) for h in best)
        return torch.tensor([h + [stop_token] * (width - len(h)) for h in best], dtype=torch.long, device=device)


def _init_weights(layer: nn.Module, residual_writes: int) -> None:
    if isinstance(layer, nn.Linear):
        std = 0.02 / math.sqrt(residual_writes) if getattr(layer, "residual_projection", False) else 0.02
        nn.init.normal_(layer.weight, mean=0.0, std=std)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif isinstance(layer, nn.Embedding):
        nn.init.normal_(layer.weight, mean=0.0, std=0.02)


def until_stop(ids: list[int], stop_token: int) -> list[int]:
    """The tokens before the first `stop_token`."""
    return ids[: ids.index(stop_token)] if stop_token in ids else ids
