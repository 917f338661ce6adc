"""GPTModule: a GPT language model trained on next-token prediction.

Logged:
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

import inspect
import math
from pathlib import Path
from typing import Literal, Optional

import lightning as L
import torch
import torch.nn.functional as F

from gen_lightning.data.tokenizers import Tokenizer, tokenizer_from_json
from gen_lightning.errors import UserError
from gen_lightning.metrics import TokenPerplexity
from gen_lightning.models.flops import count, meta_like, meta_twin
from gen_lightning.models.nets.transformer import GPT, GPTConfig

GPTSize = Literal["nano", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]


def warmup_cosine(step: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> float:
    """LR multiplier at optimizer step `step`: linear warm-up to 1, cosine down to `min_ratio` at
    `decay_steps`, then flat (nanoGPT's schedule)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_ratio)


class GPTModule(L.LightningModule):
    checkpoint_metric = ("val/loss", "min")

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
            block_size: longest context in tokens (learned positions); must be >= data.block_size.
            vocab_size: token ids the model knows; must cover the data's (byte: 257; bpe: data.vocab_size).
            min_lr: floor of the cosine decay; default lr / 10.
            weight_decay: AdamW decay, applied to 2-D weights only (not biases, LayerNorm gains).
            warmup_steps: optimizer steps of linear LR warm-up.
            decay_steps: optimizer step where the cosine reaches min_lr; default the run's total steps.
            compile: torch.compile the network (faster steps after a one-off compile).
            init_from: start from these weights: a gen-lightning GPT checkpoint (.ckpt) or a Hugging Face
                GPT-2 folder (config.json + model.safetensors). The architecture must match; block_size
                may be smaller (position embeddings are cropped). Ignored when resuming (--ckpt_path).
        """
        super().__init__()
        self.save_hyperparameters()
        overrides = {k: v for k, v in dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd).items() if v is not None}
        try:
            config = GPTConfig.named(size, block_size=block_size, vocab_size=vocab_size, dropout=dropout,
                                     bias=bias, **overrides)
            self.net = GPT(config)
        except ValueError as err:
            raise UserError(f"model: {err}; change model.n_embd/n_head/size") from None
        self.val_perplexity = TokenPerplexity()
        self.tokenizer_json: Optional[str] = None  # from the DataModule at setup, or from the checkpoint

    @property
    def tokenizer(self) -> Tokenizer:
        if self.tokenizer_json is None:
            raise UserError("this model has no tokenizer yet: train it on a TextDataModule first")
        return tokenizer_from_json(self.tokenizer_json)

    # -- setup: fit the data, maybe start from pretrained weights ---------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        config = self.net.config
        data_vocab = getattr(datamodule, "vocab_size", None)
        if data_vocab is not None and data_vocab > config.vocab_size:
            raise UserError(
                f"the data's tokenizer has {data_vocab} ids but model.vocab_size is {config.vocab_size}; "
                f"set --model.vocab_size {data_vocab} (or more)"
            )
        data_block = getattr(datamodule, "block_size", None)
        if data_block is not None and data_block > config.block_size:
            raise UserError(
                f"data.block_size {data_block} is longer than model.block_size {config.block_size}; "
                f"set --model.block_size {data_block} or --data.block_size {config.block_size}"
            )
        if getattr(datamodule, "tokenizer", None) is not None:
            self.tokenizer_json = datamodule.tokenizer.to_json()
        if stage == "fit" and self.hparams.init_from and self.trainer.ckpt_path is None:
            self.load_pretrained(self.hparams.init_from)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile()  # in place: parameter names (and checkpoints) stay those of the plain net
            self._compiled = True

    def load_pretrained(self, source: str) -> None:
        """Copy weights from a GPT checkpoint or HF GPT-2 folder into this model (see `init_from`)."""
        from gen_lightning.models.hf_gpt2 import is_hf_gpt2_dir, load_hf_gpt2

        path = Path(source).expanduser()
        if is_hf_gpt2_dir(path):
            src_config, state = load_hf_gpt2(path)
            src_head, src_tokenizer = src_config.n_head, None
        elif path.is_file():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
            if not state:
                raise UserError(f"model.init_from: '{source}' is not a GPT checkpoint (no net.* weights in it)")
            src_head = _n_head_of(ckpt.get("hyper_parameters", {}))
            src_tokenizer = ckpt.get("tokenizer")
        else:
            raise UserError(f"model.init_from: '{source}' does not exist; give a .ckpt file or a HF GPT-2 folder")
        config = self.net.config
        if src_head is not None and src_head != config.n_head:
            raise UserError(f"model.init_from has {src_head} heads, this model {config.n_head}; set --model.n_head {src_head}")
        if src_tokenizer is not None and self.tokenizer_json is not None and src_tokenizer != self.tokenizer_json:
            raise UserError(
                "model.init_from was trained with another tokenizer than this data's; token ids would not match "
                "(use data.tokenizer=byte for both, or the same BPE)"
            )
        wpe = state["transformer.wpe.weight"]
        if wpe.shape[0] < config.block_size:
            raise UserError(
                f"model.init_from knows {wpe.shape[0]} positions, fewer than model.block_size {config.block_size}; "
                f"set --model.block_size {wpe.shape[0]} (or less)"
            )
        state["transformer.wpe.weight"] = wpe[: config.block_size]  # a shorter context keeps the first positions
        mine = self.net.state_dict()
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(mine[k].shape)}" for k, v in state.items()
                 if k in mine and v.shape != mine[k].shape]
        missing = sorted(set(mine) - set(state))
        if wrong or missing:
            raise UserError(
                f"model.init_from does not fit this architecture ({'; '.join(wrong[:3] or missing[:3])}); "
                f"set model.size/n_layer/n_head/n_embd/vocab_size/bias to the pretrained model's"
            )
        self.net.load_state_dict(state, strict=True)

    # -- training ---------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.net(idx)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def flops_per_batch(self, batch) -> int:
        """FLOPs of one training step on `batch` (forward + backward of the LM loss), counted on the meta device;
        `GPT.analytic_flops` is nanoGPT's closed form of the same number."""
        twin, (x, y) = meta_twin(self), (meta_like(batch[0]), meta_like(batch[1]))
        return count(twin.net, lambda: twin.net(x), lambda logits: F.cross_entropy(logits.flatten(0, 1), y.flatten()))

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
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
            # Decay only matrices (linear weights, embeddings); biases and LayerNorm gains stay free.
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), **self._fused_kwargs(params))
        decay_steps = hp.decay_steps or self.trainer.estimated_stepping_batches
        if not math.isfinite(decay_steps):
            raise UserError("the LR schedule needs an end: set trainer.max_steps, trainer.max_epochs or model.decay_steps")
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

    # -- checkpoints carry the tokenizer ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokenizer"] = self.tokenizer_json

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("tokenizer")
        # Resuming/evaluating on data tokenized another way would feed the model ids it never learnt.
        if saved is not None and self.tokenizer_json is not None and saved != self.tokenizer_json:
            raise UserError("the checkpoint was trained with another tokenizer than this data's (data.tokenizer / "
                            "data.vocab_size); use the checkpoint's tokenizer settings, or start without --ckpt_path")
        self.tokenizer_json = saved

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """Token ids in, prompt + continuation out; see `GPT.generate` for the sampling options."""
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
            idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            stop_token=tok.eot_id if stop_at_eot else None, use_cache=use_cache, generator=generator,
        )
        texts = []
        for row in out[:, len(start):].tolist():
            if stop_at_eot and tok.eot_id in row:
                row = row[: row.index(tok.eot_id)]
            texts.append(tok.decode(row))
        return texts


def _n_head_of(hparams: dict) -> Optional[int]:
    """n_head of a saved GPTModule from its hyper-parameters (it cannot be read off the weight shapes)."""
    if hparams.get("n_head") is not None:
        return int(hparams["n_head"])
    from gen_lightning.models.nets.transformer import GPT_SIZES

    size = hparams.get("size")
    return GPT_SIZES[size]["n_head"] if size in GPT_SIZES else None
