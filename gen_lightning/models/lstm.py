"""LSTMModule: a multi-layer LSTM language model on the text layer, trained on next-token prediction.

The net is `nets.lstm.LSTMLM` (tied embeddings, dropout). Each training window of `TextDataModule` is one
truncated-BPTT segment: the recurrent state starts at zero in every window (windows come from random
offsets, so no state carries over) and gradients flow back through all `data.block_size` steps.

Everything else is shared with GPTModule through `LanguageModel` (models/language_model.py):
  train/loss        mean next-token cross-entropy of the step's batch (nats/token)
  val/loss          total NLL / total tokens over the whole validation set (all ranks together)
  val/perplexity    exp(val/loss), token-weighted
the checkpoint metric (val/loss, min), the tokenizer carried in the checkpoint, AdamW with warm-up and
cosine decay, and `generate_text` with temperature / top-k / top-p / end-of-text stop, where the
recurrent state plays the part of GPT's KV cache. Clipping (`trainer.gradient_clip_val`, which LSTMs
need more than transformers), accumulation, precision and the strategy are Trainer settings.
"""

from __future__ import annotations

from typing import Optional

import torch

from gen_lightning.errors import check_learning_rates
from gen_lightning.models.language_model import LanguageModel
from gen_lightning.models.nets.lstm import LSTMLM, LSTMConfig


class LSTMModule(LanguageModel):
    def __init__(
        self,
        vocab_size: int = 257,
        n_embd: int = 128,
        n_hidden: int = 256,
        n_layer: int = 2,
        dropout: float = 0.0,
        lr: float = 3e-3,
        min_lr: Optional[float] = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 20,
        decay_steps: Optional[int] = None,
    ) -> None:
        """
        Args:
            vocab_size: token ids the model knows; linked from the data's tokenizer by the CLI.
            n_embd: token embedding width; the output layer is the same matrix (tied).
            n_hidden: LSTM state width; when it differs from n_embd a linear projection maps it to n_embd.
            n_layer: stacked LSTM layers.
            dropout: dropout on the embeddings, between LSTM layers and on the last layer's output.
            lr: peak AdamW learning rate, reached after the warm-up.
            min_lr: floor of the cosine decay; default lr / 10.
            weight_decay: AdamW decay, applied to matrices only (not biases).
            betas: AdamW's (beta1, beta2).
            warmup_steps: optimizer steps of linear LR warm-up.
            decay_steps: optimizer step where the cosine reaches min_lr; default the run's total steps.
        """
        super().__init__()
        check_learning_rates(lr=lr, min_lr=min_lr)
        self.save_hyperparameters()
        self.net = LSTMLM(
            LSTMConfig(vocab_size=vocab_size, n_embd=n_embd, n_hidden=n_hidden, n_layer=n_layer, dropout=dropout)
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> next-token logits [B, T, vocab_size], from the zero state (one BPTT segment)."""
        return self.net(idx)[0]
