"""What the matrix runs: the families (an experiment config + overrides for a run of seconds) and the strategies
(a trainer config). A family added to the framework joins the matrix by adding one Family here.

Every run of a cell is the real CLI (`gen_lightning.cli.build_cli`) with the shipped configs, plus the overrides
below, which only shrink the run (smaller nets, few batches) and make the validation set's size odd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import CONFIGS, REPO

MATRIX_CONFIGS = Path(__file__).parent / "configs"
MATRIX_DATA = Path(__file__).parent / "data"  # pairs.jsonl: 400 made-up functions and their summaries (seq2seq)


@dataclass(frozen=True)
class Family:
    name: str
    args: tuple  # config files and overrides of a tiny run
    module: str  # the LightningModule class (import path)
    steps: int  # optimizer steps of the full run; the resumed run stops at steps // 2 first
    loss_key: str  # the training loss on W&B
    metrics: tuple[str, ...]  # validation metrics that must equal the 1-process value on the same weights
    wandb_keys: tuple[str, ...]  # what the W&B run must hold (besides loss and metrics)
    media_key: str  # the W&B media key (image grid or text table)
    loss_drop: float  # the loss at the end must be below this fraction of the first logged loss
    sample_args: tuple = ()  # `gen-lightning sample` arguments beyond --ckpt/--out
    bad_batch: int = 5  # the batch whose losses are NaN in the NaN run (after a resume point)
    steps_per_batch: int = 1  # optimizer steps per batch (a GAN: n_critic + 1)
    echoes_prompt: bool = True  # `sample` prints the prompt before its output (language models; not seq2seq)

    @property
    def table_media(self) -> bool:
        """Text tables on W&B (and text from `sample`), not image grids."""
        return not self.media_key.startswith("samples/samples")


@dataclass(frozen=True)
class Strategy:
    name: str  # the id in test names and on the command line of the driver
    label: str  # the column of the table in docs/conformance.md
    trainer: str | None  # configs/trainer/<file>; None = the experiment's own (one process)
    devices: int
    extra: tuple = ()
    deepspeed: bool = False
    unsupported: dict = field(default_factory=dict)  # family -> why this cell cannot run (one line)


COMMON = (
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--throughput.window_size",
    "2",
)


def language_model(name: str, config: str, module: str, *net: str) -> Family:
    """A language model on the text layer: the stdlib's json package, 24 random windows an epoch (fresh each
    epoch), 31 validation windows, a text sample every 4 steps."""
    return Family(
        name,
        (
            "--config",
            str(CONFIGS / config),
            "--data.corpus",
            "stdlib:json/*.py",
            "--data.block_size",
            "32",
            *net,
            "--data.batch_size",
            "8",
            "--data.train_samples",
            "24",
            "--data.val_windows",
            "31",
            "--model.warmup_steps",
            "2",
            "--model.decay_steps",
            "10",
            "--model.dropout",
            "0.1",
            "--trainer.val_check_interval",
            "3",
            "--trainer.callbacks.every_n_steps",
            "4",
            "--trainer.callbacks.max_new_tokens",
            "16",
        ),
        module,
        steps=10,
        loss_key="train/loss",
        metrics=("val/loss", "val/perplexity"),
        wandb_keys=(
            "val/loss",
            "val/perplexity",
            "throughput/tokens_per_sec",
            "throughput/flops_per_sec",
            "lr-AdamW/pg1",
        ),
        media_key="samples/text",
        loss_drop=0.9,
        sample_args=("--prompt", "def ", "--max-new-tokens", "8"),
    )


IMAGE_METRICS = ("--config", str(MATRIX_CONFIGS / "image_callbacks.yaml"))  # FID on 200 samples, a grid every 2 batches

FAMILIES = {
    f.name: f
    for f in (
        Family(
            "vae",
            (
                "--config",
                str(CONFIGS / "vae" / "mlp_digits.yaml"),
                *IMAGE_METRICS,
                "--model.hidden_dim",
                "64",
                "--model.latent_dim",
                "8",
                "--model.kl_warmup_steps",
                "4",
                "--data.batch_size",
                "64",
                "--data.val_fraction",
                "0.0995",  # 179 validation images: odd, not a multiple of the batch
                "--trainer.limit_train_batches",
                "3",
            ),
            "gen_lightning.models.VAEModule",
            steps=10,
            loss_key="train/loss",
            metrics=("val/elbo", "val/recon", "val/kl", "val/fid"),
            wandb_keys=(
                "train/kl",
                "val/elbo",
                "val/fid",
                "val/is",
                "val/kid",
                "throughput/samples_per_sec",
                "throughput/flops_per_sec",
                "lr-Adam",
            ),
            media_key="samples/samples",
            loss_drop=0.97,
        ),
        Family(
            "gan",
            (
                "--config",
                str(CONFIGS / "gan" / "mlp_digits.yaml"),
                *IMAGE_METRICS,
                "--model.width",
                "8",
                "--model.latent_dim",
                "8",
                "--model.ema_decay",
                "0.9",
                "--data.batch_size",
                "32",
                "--data.val_fraction",
                "0.0995",
                "--trainer.limit_train_batches",
                "3",
            ),
            "gen_lightning.models.GANModule",
            steps=20,
            loss_key="train/d_loss",  # 2 optimizer steps per batch
            metrics=("val/d_loss", "val/d_real", "val/d_fake", "val/fid"),
            wandb_keys=("train/g_loss", "val/d_loss", "val/fid", "throughput/flops_per_sec", "lr-Adam", "lr-Adam-1"),
            media_key="samples/samples",
            loss_drop=0.98,
            steps_per_batch=2,
        ),
        language_model("gpt", "gpt/nano_stdlib.yaml", "gen_lightning.models.GPTModule", "--model.n_layer", "2"),
        language_model(
            "lstm",
            "lstm/stdlib.yaml",
            "gen_lightning.models.LSTMModule",
            "--model.n_embd",
            "32",
            "--model.n_hidden",
            "48",
        ),
        Family(
            "seq2seq",
            (
                "--config",
                str(CONFIGS / "seq2seq" / "code_summary.yaml"),
                "--data.train_file",
                str(MATRIX_DATA / "pairs.jsonl"),
                "--data.max_val_pairs",
                "39",  # odd, and not a multiple of the batch
                "--data.tokenizer",
                "byte",
                "--data.max_source_len",
                "128",
                "--data.max_target_len",
                "24",
                "--data.batch_size",
                "10",
                "--model.n_encoder_layer",
                "1",
                "--model.n_decoder_layer",
                "1",
                "--model.n_head",
                "2",
                "--model.n_embd",
                "32",
                "--model.num_beams",
                "2",
                "--model.max_new_tokens",
                "16",
                "--model.val_generate_batches",
                "null",
                "--model.warmup_steps",
                "2",
                "--model.lr",
                "3e-3",
                "--model.decay_steps",
                "10",
                "--trainer.limit_train_batches",
                "3",
                "--trainer.val_check_interval",
                "3",
            ),
            "gen_lightning.models.Seq2SeqModule",
            steps=10,
            loss_key="train/loss",
            metrics=("val/loss", "val/perplexity", "val/bleu", "val/chrf", "val/exact_match"),
            wandb_keys=(
                "val/bleu",
                "val/chrf",
                "throughput/samples_per_sec",
                "throughput/flops_per_sec",
                "lr-AdamW/pg1",
            ),
            media_key="samples/translations",
            loss_drop=0.9,
            echoes_prompt=False,
            sample_args=("--prompt", "def get_name(self, name):\n    return self._get(name)", "--max-new-tokens", "8"),
        ),
    )
}

FSDP_ON_CPU = (
    "FSDP is GPU-only: torch's FSDP refuses CPU devices ('FSDP needs a non-CPU accelerator device'); "
    "on a GPU run configs/trainer/fsdp.yaml (-m gpu)"
)
STRATEGIES = {
    s.name: s
    for s in (
        Strategy("single", "1 process", None, 1, ("--trainer.accelerator", "cpu", "--trainer.devices", "1")),
        Strategy("ddp", "DDP, 2 processes", "ddp.yaml", 2, ("--trainer.accelerator", "cpu")),
        Strategy(
            "zero2",
            "DeepSpeed ZeRO-2, 2 processes",
            "deepspeed_stage2.yaml",
            2,
            ("--trainer.accelerator", "cpu", "--trainer.devices", "2"),
            deepspeed=True,
        ),
        Strategy(
            "zero3",
            "DeepSpeed ZeRO-3, 2 processes",
            "deepspeed_stage3.yaml",
            2,
            ("--trainer.accelerator", "cpu", "--trainer.devices", "2"),
            deepspeed=True,
        ),
        Strategy(
            "fsdp",
            "FSDP, 2 processes",
            "fsdp.yaml",
            2,
            (),
            unsupported={
                "vae": FSDP_ON_CPU,
                "gpt": FSDP_ON_CPU,
                "lstm": FSDP_ON_CPU,
                "seq2seq": FSDP_ON_CPU,
                "gan": "FSDP wraps one module and the GAN trains two networks in turn (use DDP or DeepSpeed, "
                "which give each network its own unit); one line on any device",
            },
        ),
    )
}


def cell_args(family: Family, strategy: Strategy) -> list[str]:
    """The CLI arguments of a cell's runs, before the run-specific ones (steps, folders, logger)."""
    trainer = ["--config", str(CONFIGS / "trainer" / strategy.trainer)] if strategy.trainer else []
    # The trainer file first: the experiment's settings win, as the configs' comments say.
    return [*trainer, *family.args, *COMMON, *strategy.extra]


__all__ = ["FAMILIES", "REPO", "STRATEGIES", "Family", "Strategy", "cell_args"]
