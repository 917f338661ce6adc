"""TranslationSamples: source / reference / generated rows of every validation, for conditional text models.

The rows are the outputs the validation metrics (BLEU, chrF) were computed on, which the module keeps
(`KeepsValidationExamples`), so the table costs no forward pass, and no rank waits for another under ZeRO-3.
They go two places, like TextSamples': a table of (step, source, reference, generated) rows on every
logger that has `log_text` (W&B: one table under `samples/translations` that grows through the run) and
`<run dir>/samples/translations.md`, readable while training runs.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from gen_lightning.capabilities import KeepsValidationExamples
from gen_lightning.errors import UserError
from gen_lightning.run_dir import run_dir


class TranslationSamples(Callback):
    def __init__(self, num_rows: int = 8, max_source_chars: int = 600) -> None:
        """
        Args:
            num_rows: rows per validation (the first pairs of rank 0's first validation batch).
            max_source_chars: sources longer than this are cut (with " ...") in the table.
        """
        self.num_rows, self.max_source_chars = num_rows, max_source_chars
        self.rows: list[list] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, KeepsValidationExamples):
            raise UserError(
                f"TranslationSamples needs a model that keeps its validation outputs (Seq2SeqModule), "
                f"not {type(pl_module).__name__}; remove the callback from trainer.callbacks"
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not pl_module.validation_examples:
            return
        step = trainer.global_step
        new = []
        for source, reference, generated in pl_module.validation_examples[: self.num_rows]:
            if len(source) > self.max_source_chars:
                source = source[: self.max_source_chars] + " ..."
            new.append([step, source, reference, generated])
        self.rows += new
        for logger in trainer.loggers:
            if hasattr(logger, "log_text"):  # loggers without text support (CSV, TensorBoard) are skipped
                # The whole table each time: a W&B table logged under one key shows its latest version.
                logger.log_text(
                    key="samples/translations",
                    columns=["step", "source", "reference", "generated"],
                    data=self.rows,
                    step=step,
                )
        folder = run_dir(trainer) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "translations.md", "a", encoding="utf-8") as f:
            f.write(f"## step {step}\n\n")
            for _, source, reference, generated in new:
                f.write(f"````\n{source}\n````\n- reference: {reference}\n- generated: {generated}\n\n")
