"""Token-weighted perplexity: exp(total NLL / total tokens) over a whole split.

Not the mean of per-batch perplexities (biased when batches differ in size, e.g. the last batch or
uneven DDP shards). The two sums are torchmetrics states with `dist_reduce_fx="sum"`, so under DDP
`compute()` adds them across ranks before the division: the value equals the single-process one.
torchmetrics' own `Perplexity` averages the same way but keeps float32 sums on the model's device
and needs logits; this one takes the already computed summed NLL, so the LM loss is computed once.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class TokenPerplexity(Metric):
    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, nll_sum: torch.Tensor, tokens: int | torch.Tensor) -> None:
        """nll_sum: summed (not averaged) negative log-likelihood of `tokens` target tokens, in nats."""
        self.nll_sum += nll_sum.detach().to(torch.float64)
        self.tokens += torch.as_tensor(tokens, device=self.tokens.device, dtype=torch.long)

    def mean_nll(self) -> torch.Tensor:
        return self.nll_sum / self.tokens.clamp(min=1)

    def compute(self) -> torch.Tensor:
        return torch.exp(self.mean_nll())
