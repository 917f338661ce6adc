"""TextSamples: what the language model writes from a fixed prompt, every N optimizer steps.

Each sample goes two places: a table of (step, prompt, text) rows on every logger that has `log_text`
(W&B: one table that grows through the run; loggers without text support are skipped), and
`<run dir>/samples/text.md`, readable with any editor while training runs. The sampling generator is
re-seeded every time, so differences between two samples come from the weights alone.
Works with any LightningModule that has `generate_text(prompt, ...)` (GPTModule).
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from gen_lightning.callbacks.logging_step import logging_step
from gen_lightning.run_dir import run_dir
from gen_lightning.strategies.sharding import parameters_are_sharded


class TextSamples(Callback):
    def __init__(
        self,
        prompt: str = "def ",
        every_n_steps: int = 100,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            prompt: the text every sample continues.
            every_n_steps: a sample every this many optimizer steps (and one at the end of training).
            max_new_tokens: tokens generated after the prompt.
            temperature: divides the logits before sampling (lower: more predictable text).
            top_k: sample among the k most likely tokens only; None = all.
            top_p: sample among the most likely tokens whose probabilities sum to p (nucleus); None = all.
            seed: seed of the sampling generator, re-seeded for every sample.
        """
        self.prompt, self.every_n_steps, self.max_new_tokens = prompt, every_n_steps, max_new_tokens
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed
        self.rows: list[list] = []
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # With gradient accumulation several batches end on the same optimizer step: sample once.
        if step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        self.write_sample(trainer, pl_module, logging_step(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_step:  # the final model always gets a sample
            self._last_step = trainer.global_step
            self.write_sample(trainer, pl_module, logging_step(trainer, training_ended=True))

    def write_sample(self, trainer: L.Trainer, pl_module: L.LightningModule, log_step: int) -> None:
        """One sample of the current weights; `log_step` is where it goes on the loggers' x-axis."""
        # Generation touches no collective op, so the other ranks go on; unless the weights are sharded
        # (ZeRO-3, FSDP): then every rank must run the same forwards and rank 0 alone writes.
        if not trainer.is_global_zero and not parameters_are_sharded(trainer):
            return
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        text = pl_module.generate_text(
            self.prompt,
            self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            generator=generator,
        )[0]
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        self.rows.append([step, self.prompt, text])
        for logger in trainer.loggers:
            if hasattr(logger, "log_text"):
                # The whole table each time: a W&B table logged under one key shows its latest version.
                # log_step: the x-axis of the losses (callbacks/logging_step.py)
                logger.log_text(key="samples/text", columns=["step", "prompt", "text"], data=self.rows, step=log_step)
        folder = run_dir(trainer) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "text.md", "a", encoding="utf-8") as f:
            f.write(f"## step {step}\n\n````\n{self.prompt}{text}\n````\n\n")
