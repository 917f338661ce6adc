"""LanguageModel: what every next-token model on the text layer shares (GPTModule, LSTMModule).

A subclass builds `self.net` (an nn.Module with `config.vocab_size` and `generate(...)`), implements
`forward(idx) -> logits [B, T, V]`, and calls `save_hyperparameters()` with at least the optimiser's
arguments: lr, min_lr, weight_decay, betas, warmup_steps, decay_steps. It gets:

- the data checks in `setup`: the data's tokenizer fits the model's vocabulary (and its windows the
  model's context, when it has a limit), one line naming the fix otherwise;
- the tokenizer, taken from the DataModule and carried in the checkpoint (`checkpoint["tokenizer"]`), so
  sampling needs no data folder, and a resume on data tokenized another way is refused;
- the loss and the metrics:
    train/loss        mean next-token cross-entropy of the step's batch (nats/token)
    val/loss          total NLL / total tokens over the whole validation set (all ranks together)
    val/perplexity    exp(val/loss), token-weighted (metrics.TokenPerplexity), not a mean of batch values
- AdamW (decay on matrices only) with linear warm-up then cosine decay, stepped per optimizer step;
- `generate` / `generate_text` with temperature, top-k, top-p and the end-of-text stop.
"""

from __future__ import annotations

import inspect
import math
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F

from gen_lightning.capabilities import CutsBlocks, HasTokenizer, HasVocabulary
from gen_lightning.data.tokenizers import Tokenizer, tokenizer_from_json
from gen_lightning.errors import UserError
from gen_lightning.hook_dispatch import PlainHookName
from gen_lightning.metrics import TokenPerplexity
from gen_lightning.models.flops import count, meta_like, meta_twin


def warmup_cosine(step: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> float:
    """LR multiplier at optimizer step `step`: linear warm-up to 1, cosine down to `min_ratio` at
    `decay_steps`, then flat (nanoGPT's schedule)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_ratio)


class LanguageModel(PlainHookName, L.LightningModule):
    checkpoint_metric = ("val/loss", "min")
    progress_bar_values = {"loss": "train/loss"}
    net: torch.nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.val_perplexity = TokenPerplexity()
        self.tokenizer_json: Optional[str] = None  # from the DataModule at setup, or from the checkpoint

    @property
    def context_limit(self) -> Optional[tuple[int, str]]:
        """(longest context in tokens, the option that sets it), or None when the model has no limit."""
        return None

    @property
    def tokenizer(self) -> Tokenizer:
        if self.tokenizer_json is None:
            raise UserError("this model has no tokenizer yet: train it on a TextDataModule first")
        return tokenizer_from_json(self.tokenizer_json)

    # -- setup: the data must fit the model ---------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        vocab_size = self.net.config.vocab_size
        data_vocab = datamodule.vocab_size if isinstance(datamodule, HasVocabulary) else None
        if data_vocab is not None and data_vocab > vocab_size:
            raise UserError(
                f"the data's tokenizer has {data_vocab} ids but model.vocab_size is {vocab_size}; "
                f"set --model.vocab_size {data_vocab} (or more)"
            )
        data_block = datamodule.block_size if isinstance(datamodule, CutsBlocks) else None
        if self.context_limit is not None and data_block is not None and data_block > self.context_limit[0]:
            limit, option = self.context_limit
            raise UserError(
                f"data.block_size {data_block} is longer than {option} {limit}; "
                f"set --{option} {data_block} or --data.block_size {limit}"
            )
        if isinstance(datamodule, HasTokenizer) and datamodule.tokenizer is not None:
            self.tokenizer_json = datamodule.tokenizer.to_json()

    # -- training -----------------------------------------------------------------------------------
    def flops_per_batch(self, batch) -> int:
        """FLOPs of one training step on `batch` (forward + backward of the LM loss), counted on the meta device
        (models/flops.py); for the GPT, `GPT.analytic_flops` is nanoGPT's closed form of the same number."""
        twin, (x, y) = meta_twin(self), (meta_like(batch[0]), meta_like(batch[1]))
        return count(twin, lambda: twin(x), lambda logits: F.cross_entropy(logits.flatten(0, 1), y.flatten()))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        nll_sum = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        self.val_perplexity.update(nll_sum, y.numel())

    def on_validation_epoch_end(self) -> None:
        # compute() sums NLL and token counts over all ranks first: one token-weighted value everywhere.
        perplexity = self.val_perplexity.compute()
        self.val_perplexity.reset()
        self.log("val/loss", perplexity.log().float(), prog_bar=True, sync_dist=True)
        self.log("val/perplexity", perplexity.float(), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]  # the tied embedding appears once
        groups = [
            # Decay only matrices (linear/LSTM weights, embeddings); biases and LayerNorm gains stay free.
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), **self._fused_kwargs(params))
        decay_steps = hp.decay_steps or self.trainer.estimated_stepping_batches
        if not math.isfinite(decay_steps):
            raise UserError(
                "the LR schedule needs an end: set trainer.max_steps, trainer.max_epochs or model.decay_steps"
            )
        min_ratio = (hp.min_lr if hp.min_lr is not None else hp.lr / 10) / hp.lr
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, hp.warmup_steps, int(decay_steps), min_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @staticmethod
    def _fused_kwargs(params: list[torch.nn.Parameter]) -> dict:
        # The fused AdamW kernel does the whole update in one launch: worth it on CUDA, where it exists.
        # On CPU it exists too but measured no faster here for the nano model, so keep the default there.
        fused_ok = "fused" in inspect.signature(torch.optim.AdamW).parameters
        on_cuda = bool(params) and all(p.device.type == "cuda" for p in params)
        return {"fused": True} if fused_ok and on_cuda else {}

    # -- checkpoints carry the tokenizer ------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokenizer"] = self.tokenizer_json

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("tokenizer")
        # Resuming/evaluating on data tokenized another way would feed the model ids it never learnt.
        if saved is not None and self.tokenizer_json is not None and saved != self.tokenizer_json:
            raise UserError(
                "the checkpoint was trained with another tokenizer than this data's (data.tokenizer / "
                "data.vocab_size); use the checkpoint's tokenizer settings, or start without --ckpt_path"
            )
        self.tokenizer_json = saved

    # -- generation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """Token ids in, prompt + continuation out; see the net's `generate` for the sampling options."""
        was_training = self.training
        self.eval()
        try:
            return self.net.generate(idx.to(self.device), max_new_tokens, **kwargs)
        finally:
            self.train(was_training)

    def generate_text(
        self,
        prompt: str = "",
        max_new_tokens: int = 200,
        num_samples: int = 1,
        temperature: float = 0.8,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        stop_at_eot: bool = True,
        use_cache: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> list[str]:
        """Continuations of `prompt` (the prompt itself not included). An empty prompt starts a new
        document: the model sees the end-of-text token that separates documents in training."""
        tok = self.tokenizer
        ids = tok.encode(prompt) if prompt else []
        start = ids or [tok.eot_id]
        idx = torch.tensor([start] * num_samples, dtype=torch.long)
        out = self.generate(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop_token=tok.eot_id if stop_at_eot else None,
            use_cache=use_cache,
            generator=generator,
        )
        texts = []
        for row in out[:, len(start) :].tolist():
            if stop_at_eot and tok.eot_id in row:
                row = row[: row.index(tok.eot_id)]
            texts.append(tok.decode(row))
        return texts
