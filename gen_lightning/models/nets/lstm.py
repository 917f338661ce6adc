"""A multi-layer LSTM language model (Zaremba et al. 2014; tying as in Press & Wolf 2017 / Merity et al. 2018).

tokens -> embedding -> dropout -> n_layer LSTM (dropout between layers) -> dropout -> [projection] -> logits.
The output layer is the token embedding itself (weight tying): when the LSTM is wider than the embedding,
a linear projection brings its output down to the embedding width first (Merity et al.'s AWD-LSTM makes
its last layer that narrow instead; a projection keeps every layer equally wide).

The recurrence is torch's `nn.LSTM` (cuDNN on GPUs). Training: each window of the text layer is one
truncated-BPTT segment that starts from the zero state, because windows are drawn at random offsets and
the state at the end of one says nothing about the next. Generation: the (h, c) state is the cache; it
holds everything the net knows about the prefix, so feeding it forward one token at a time gives the
same logits as re-reading the whole prefix from the zero state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from gen_lightning.models.nets.sampling import generate_tokens

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [n_layer, B, n_hidden]


@dataclass
class LSTMConfig:
    vocab_size: int = 257  # the byte tokenizer's 256 bytes + end-of-text
    n_embd: int = 128  # token embedding width = width the tied output layer reads
    n_hidden: int = 256  # LSTM state width of every layer
    n_layer: int = 2
    dropout: float = 0.0  # on the embeddings, between LSTM layers and on the last layer's output


class LSTMLM(nn.Module):
    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        # nn.LSTM applies `dropout` to the outputs of every layer but the last (there is none with one layer).
        self.rnn = nn.LSTM(
            config.n_embd,
            config.n_hidden,
            num_layers=config.n_layer,
            batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.proj = nn.Linear(config.n_hidden, config.n_embd, bias=False) if config.n_hidden != config.n_embd else None
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix embeds tokens and scores them
        self._init_weights()

    def _init_weights(self) -> None:
        # The embedding keeps torch's N(0, 1) and the LSTM torch's U(+-1/sqrt(H)). The U(-0.1, 0.1) embedding of
        # Zaremba et al. / Merity et al. (trained with SGD) measured worse here with AdamW: on a regular toy corpus
        # a 64/96-wide byte model sat at the unigram loss (2.86 nats after 150 steps, against 0.47 with N(0, 1)),
        # because inputs that small barely move the gates. Biases start at 0 except the forget gate's at 1, so
        # that early on the cell keeps its memory rather than losing it (Jozefowicz et al. 2015); torch orders
        # the gates i, f, g, o.
        H = self.config.n_hidden
        for name, param in self.rnn.named_parameters():
            if name.startswith("bias"):
                nn.init.zeros_(param)
                if name.startswith("bias_ih"):
                    nn.init.ones_(param[H : 2 * H])

    def num_params(self) -> int:
        """Parameter count (the tied embedding/output matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, state: Optional[State] = None) -> tuple[torch.Tensor, State]:
        """Token ids [B, T] -> (next-token logits [B, T, vocab_size], state after the last token).
        `state` None = the zero state (a new segment)."""
        out, state = self.rnn(self.drop(self.wte(idx)), state)
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)
        return self.lm_head(out), state

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
        Sampling options as in `nets.sampling.generate_tokens`. With `use_cache` the recurrent state is
        carried from step to step and each step reads one token; without, each step re-reads the whole
        text from the zero state (same tokens, quadratic cost). No context limit: the state summarises
        any length, though training only showed it windows of data.block_size tokens."""
        state: Optional[State] = None

        def next_logits(seq: torch.Tensor) -> torch.Tensor:
            nonlocal state
            if not use_cache:
                return self.forward(seq)[0][:, -1, :]
            logits, state = self.forward(seq if state is None else seq[:, -1:], state)
            return logits[:, -1, :]

        return generate_tokens(next_logits, idx, max_new_tokens, temperature, top_k, top_p, stop_token, generator)
