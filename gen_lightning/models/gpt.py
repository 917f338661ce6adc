"""GPTModule: a GPT language model trained on next-token prediction.

Logged (models/language_model.py, shared with the LSTM):
  train/loss        mean next-token cross-entropy of the step's batch (nats/token)
  val/loss          total NLL / total tokens over the whole validation set (all ranks together)
  val/perplexity    exp(val/loss), token-weighted (metrics.TokenPerplexity), not a mean of batch values
The uniform baseline is log(vocab_size): 5.55 nats for the 257-id byte tokenizer. The learning rate
(warm-up, then cosine decay, set per optimizer step) is logged by the CLI's LR monitor.

What the Trainer does for it (set in the YAML, nothing here): gradient accumulation
(`trainer.accumulate_grad_batches`), clipping (`trainer.gradient_clip_val`), bf16/16-mixed precision
(`trainer.precision`), DDP/DeepSpeed (`trainer.strategy`).
The checkpoint carries the tokenizer (`checkpoint["tokenizer"]`), so sampling needs no data folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info

from gen_lightning.errors import UserError, check_learning_rates
from gen_lightning.models.compiled import compile_nets
from gen_lightning.models.language_model import LanguageModel, warmup_cosine  # noqa: F401 - re-exported
from gen_lightning.models.nets.transformer import GPT, GPTConfig

GPTSize = Literal["nano", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]


class GPTModule(LanguageModel):
    def __init__(
        self,
        size: GPTSize = "nano",
        n_layer: Optional[int] = None,
        n_head: Optional[int] = None,
        n_embd: Optional[int] = None,
        block_size: int = 128,
        vocab_size: int = 257,
        dropout: float = 0.0,
        bias: bool = True,
        lr: float = 1e-3,
        min_lr: Optional[float] = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        decay_steps: Optional[int] = None,
        compile: bool = False,
        init_from: Optional[str] = None,
    ) -> None:
        """
        Args:
            size: named architecture (nano: 4 layers, 4 heads, 128 wide; gpt2*: OpenAI's GPT-2 sizes);
                n_layer / n_head / n_embd override its numbers.
            n_layer: Transformer blocks; None = the size's.
            n_head: attention heads per block; None = the size's.
            n_embd: width of the residual stream; None = the size's.
            block_size: longest context in tokens (learned positions); linked from data.block_size by the CLI.
            vocab_size: token ids the model knows; linked from the data's tokenizer by the CLI.
            dropout: dropout probability in attention, MLP and embeddings (0 for pre-training on much data).
            bias: biases in the linear layers and LayerNorms (GPT-2: True).
            lr: peak AdamW learning rate, reached after the warm-up.
            min_lr: floor of the cosine decay; default lr / 10.
            weight_decay: AdamW decay, applied to 2-D weights only (not biases, LayerNorm gains).
            betas: AdamW betas (GPT-2: (0.9, 0.95)).
            warmup_steps: optimizer steps of linear LR warm-up.
            decay_steps: optimizer step where the cosine reaches min_lr; default the run's total steps.
            compile: torch.compile the network (faster steps after a one-off compile).
            init_from: start from these weights: a gen-lightning GPT checkpoint (.ckpt) or a Hugging Face
                GPT-2 folder (config.json + model.safetensors). The architecture must match; block_size
                may be smaller (position embeddings are cropped). Ignored when resuming (--ckpt_path).
        """
        super().__init__()
        check_learning_rates(lr=lr, min_lr=min_lr)
        self.save_hyperparameters()
        overrides = {k: v for k, v in dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd).items() if v is not None}
        try:
            config = GPTConfig.named(
                size, block_size=block_size, vocab_size=vocab_size, dropout=dropout, bias=bias, **overrides
            )
            self.net = GPT(config)
        except ValueError as err:
            raise UserError(f"model: {err}; change model.n_embd/n_head/size") from None

    @property
    def context_limit(self) -> tuple[int, str]:
        return self.net.config.block_size, "model.block_size"

    # -- setup: fit the data, maybe start from pretrained weights ---------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)  # the data fits the vocabulary and the context; the data's tokenizer
        if stage == "fit" and self.hparams.init_from and self.trainer.ckpt_path is None:
            self.load_pretrained(self.hparams.init_from)
        if self.hparams.compile:
            compile_nets(self.net)  # in place: parameter names (and checkpoints) stay those of the plain net

    def load_pretrained(self, source: str) -> None:
        """Copy weights from a GPT checkpoint or HF GPT-2 folder into this model (see `init_from`)."""
        from gen_lightning.models.hf_gpt2 import is_hf_gpt2_dir, load_hf_gpt2

        path = Path(source).expanduser()
        if is_hf_gpt2_dir(path):
            src_config, state = load_hf_gpt2(path)
            src_head, src_tokenizer = src_config.n_head, None
            origin = f"the Hugging Face GPT-2 folder {path.resolve()}"
        elif path.is_file():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            origin = f"the checkpoint {path.resolve()} (step {ckpt.get('global_step', '?')})"
            state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
            if not state:
                raise UserError(f"model.init_from: '{source}' is not a GPT checkpoint (no net.* weights in it)")
            src_head = _n_head_of(ckpt.get("hyper_parameters", {}))
            src_tokenizer = ckpt.get("tokenizer")
        else:
            raise UserError(f"model.init_from: '{source}' does not exist; give a .ckpt file or a HF GPT-2 folder")
        config = self.net.config
        if src_head is not None and src_head != config.n_head:
            raise UserError(
                f"model.init_from has {src_head} heads, this model {config.n_head}; set --model.n_head {src_head}"
            )
        if src_tokenizer is not None and self.tokenizer_json is not None and src_tokenizer != self.tokenizer_json:
            raise UserError(
                "model.init_from was trained with another tokenizer than this data's; token ids would not match "
                "(use data.tokenizer=byte for both, or the same BPE)"
            )
        wpe = state["transformer.wpe.weight"]
        src_positions = wpe.shape[0]
        if wpe.shape[0] < config.block_size:
            raise UserError(
                f"model.init_from knows {wpe.shape[0]} positions, fewer than model.block_size {config.block_size}; "
                f"set --model.block_size {wpe.shape[0]} (or less)"
            )
        state["transformer.wpe.weight"] = wpe[: config.block_size]  # a shorter context keeps the first positions
        mine = self.net.state_dict()
        wrong = [
            f"{k} {tuple(v.shape)} vs {tuple(mine[k].shape)}"
            for k, v in state.items()
            if k in mine and v.shape != mine[k].shape
        ]
        missing = sorted(set(mine) - set(state))
        if wrong or missing:
            raise UserError(
                f"model.init_from does not fit this architecture ({'; '.join(wrong[:3] or missing[:3])}); "
                f"set model.size/n_layer/n_head/n_embd/vocab_size/bias to the pretrained model's"
            )
        self.net.load_state_dict(state, strict=True)
        # Said once, so a log shows which weights a fine-tuning run started from.
        rank_zero_info(
            f"model.init_from: loaded a GPT (n_layer {config.n_layer}, n_embd {config.n_embd}, vocab {config.vocab_size}, "
            f"{self.net.num_params(non_embedding=False) / 1e6:.2f}M parameters; {config.block_size} of its "
            f"{src_positions} positions) from {origin}"
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.net(idx)


def _n_head_of(hparams: dict) -> Optional[int]:
    """n_head of a saved GPTModule from its hyper-parameters (it cannot be read off the weight shapes)."""
    if hparams.get("n_head") is not None:
        return int(hparams["n_head"])
    from gen_lightning.models.nets.transformer import GPT_SIZES

    size = hparams.get("size")
    return GPT_SIZES[size]["n_head"] if size in GPT_SIZES else None
