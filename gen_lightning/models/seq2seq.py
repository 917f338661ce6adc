"""Seq2SeqModule: a Transformer encoder-decoder trained with teacher forcing on source -> target pairs.

Logged:
  train/loss         label-smoothed cross-entropy of the step's target tokens (nats/token)
  val/loss           total NLL / total target tokens over the whole validation set (no smoothing; all ranks)
  val/perplexity     exp(val/loss), token-weighted (metrics.TokenPerplexity)
  val/bleu           corpus SacreBLEU (torchmetrics, 13a tokenisation), 0-100 as sacrebleu prints it,
  val/chrf           chrF (torchmetrics), 0-100,
  val/exact_match    fraction of outputs equal to the reference;
                     these three on the generated outputs of the first `val_generate_batches` validation
                     batches of every rank (the same batches at every validation), decoded with `num_beams`.
All of them are sums over pairs or tokens in torchmetrics states, added across ranks before the division:
the value under DDP is the single-process one. The best checkpoint is the one with the highest val/bleu.

Data: PairedTextDataModule (data/paired.py); its tokenizer travels in the checkpoint like the GPT's.
`init_from` a GPT checkpoint of the same width warm-starts encoder and decoder (Rothe et al. 2020).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric
from torchmetrics.text import CHRFScore, SacreBLEUScore

from gen_lightning.data.buckets import IGNORE_INDEX, PairBatch
from gen_lightning.data.paired import PairedTextDataModule
from gen_lightning.hook_dispatch import PlainHookName
from gen_lightning.models.compiled import compile_nets
from gen_lightning.data.tokenizers import Tokenizer, tokenizer_from_json
from gen_lightning.errors import UserError, check_learning_rates
from gen_lightning.metrics import TokenPerplexity
from gen_lightning.models.flops import count, meta_like, meta_twin
from gen_lightning.models.gpt import GPTModule, _n_head_of, warmup_cosine
from gen_lightning.models.nets.seq2seq import Seq2Seq, Seq2SeqConfig, until_stop
from gen_lightning.strategies.sharding import parameters_are_sharded


class Seq2SeqModule(PlainHookName, L.LightningModule):
    checkpoint_metric = ("val/bleu", "max")
    progress_bar_values = {"loss": "train/loss"}

    def __init__(
        self,
        n_encoder_layer: int = 4,
        n_decoder_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        source_block_size: int = 256,
        target_block_size: int = 65,
        vocab_size: int = 257,
        dropout: float = 0.1,
        bias: bool = True,
        label_smoothing: float = 0.1,
        word_dropout: float = 0.0,
        lr: float = 1e-3,
        min_lr: Optional[float] = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        decay_steps: Optional[int] = None,
        num_beams: int = 4,
        length_penalty: float = 1.0,
        max_new_tokens: Optional[int] = None,
        val_generate_batches: Optional[int] = 4,
        init_from: Optional[str] = None,
        compile: bool = False,
    ) -> None:
        """
        Args:
            n_encoder_layer: encoder blocks (non-causal self-attention + MLP).
            n_decoder_layer: decoder blocks (causal self-attention + cross-attention + MLP).
            n_head: attention heads (n_embd must be divisible by it).
            n_embd: width of both stacks (the decoder's token embedding is its output head).
            source_block_size: encoder positions; linked from data.max_source_len by the CLI.
            target_block_size: decoder positions; linked from data.max_target_len + 1 (the start token) by the CLI.
            vocab_size: token ids the model knows; linked from the data's tokenizer by the CLI.
            dropout: dropout on embeddings, attention and residual branches.
            bias: biases in the linear layers and LayerNorms.
            label_smoothing: share of each target's probability spread over all ids (Szegedy et al. 2016).
            word_dropout: in training, share of the decoder's input tokens replaced by the end-of-text id
                (target-side word dropout, Sennrich et al. 2016): the decoder then leans on the source sooner.
            lr: peak learning rate of AdamW.
            min_lr: floor of the cosine decay; default lr / 10.
            weight_decay: AdamW decay, applied to 2-D weights only (not biases, LayerNorm gains).
            betas: AdamW's betas.
            warmup_steps: optimizer steps of linear LR warm-up.
            decay_steps: optimizer step where the cosine reaches min_lr; default the run's total steps.
            num_beams: beam size of the validation outputs (1 = greedy).
            length_penalty: beam search ranks finished outputs by log-probability / length ** this.
            max_new_tokens: longest generated target (stop token included); default target_block_size.
            val_generate_batches: validation batches per rank whose outputs are generated and scored
                (BLEU, chrF, exact match); None = all of them; 0 = none (those metrics are not logged).
            init_from: a GPT checkpoint (.ckpt) of the same width, heads and tokenizer, with at least as many
                layers: its embeddings, self-attention, MLP and LayerNorm weights start both the encoder and
                the decoder; cross-attention starts fresh. Ignored when resuming (--ckpt_path).
            compile: torch.compile the network's training forward in place (beam search stays eager: its shapes
                change every step); checkpoints keep the eager parameter names.
        """
        super().__init__()
        check_learning_rates(lr=lr, min_lr=min_lr)
        self.save_hyperparameters()
        if not 0.0 <= word_dropout < 1.0:
            raise UserError(f"model.word_dropout must be in [0, 1), got {word_dropout}")
        if num_beams < 1 or (val_generate_batches is not None and val_generate_batches < 0):
            raise UserError(
                f"model.num_beams must be >= 1 and model.val_generate_batches >= 0 (or null), "
                f"got {num_beams} and {val_generate_batches}"
            )
        try:
            self.net = Seq2Seq(
                Seq2SeqConfig(
                    vocab_size=vocab_size,
                    source_block_size=source_block_size,
                    target_block_size=target_block_size,
                    n_encoder_layer=n_encoder_layer,
                    n_decoder_layer=n_decoder_layer,
                    n_head=n_head,
                    n_embd=n_embd,
                    dropout=dropout,
                    bias=bias,
                )
            )
        except ValueError as err:
            raise UserError(f"model: {err}; change model.n_embd/n_head") from None
        self.max_new_tokens = max_new_tokens or target_block_size
        if not 1 <= self.max_new_tokens <= target_block_size:
            raise UserError(
                f"model.max_new_tokens must be in 1..model.target_block_size ({target_block_size}), "
                f"got {max_new_tokens}"
            )
        self.val_perplexity = TokenPerplexity()
        self.val_bleu = SacreBLEUScore()
        self.val_chrf = CHRFScore()
        self.val_exact_match = MeanMetric()
        self.validation_examples: list[tuple[str, str, str]] = []  # (source, reference, generated), rank's 1st batch
        self.tokenizer_json: Optional[str] = None  # from the DataModule at setup, or from the checkpoint
        self._tokenizer: Optional[tuple[str, Tokenizer]] = None

    @property
    def tokenizer(self) -> Tokenizer:
        if self.tokenizer_json is None:
            raise UserError("this model has no tokenizer yet: train it on a PairedTextDataModule first")
        if self._tokenizer is None or self._tokenizer[0] != self.tokenizer_json:  # a BPE takes ms to rebuild
            self._tokenizer = (self.tokenizer_json, tokenizer_from_json(self.tokenizer_json))
        return self._tokenizer[1]

    # -- setup: fit the data, maybe warm-start from a GPT -----------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not isinstance(datamodule, PairedTextDataModule):
            raise UserError(
                "Seq2SeqModule trains on source/target pairs: set data.class_path to "
                "gen_lightning.data.PairedTextDataModule"
            )
        config = self.net.config
        fits = [
            (datamodule.vocab_size, config.vocab_size, "the data's tokenizer has {} ids", "model.vocab_size"),
            (
                datamodule.max_source_len,
                config.source_block_size,
                "data.max_source_len is {}",
                "model.source_block_size",
            ),
            (
                datamodule.max_target_len + 1,
                config.target_block_size,
                "data.max_target_len + 1 (start token) is {}",
                "model.target_block_size",
            ),
        ]
        for need, have, what, option in fits:
            if need > have:
                raise UserError(f"{what.format(need)} but {option} is {have}; set --{option} {need} (or more)")
        if datamodule.tokenizer is not None:
            self.tokenizer_json = datamodule.tokenizer.to_json()
        if stage == "fit" and self.hparams.init_from and self.trainer.ckpt_path is None:
            self.load_pretrained(self.hparams.init_from)
        if self.hparams.compile:
            compile_nets(self.net)  # the training forward; beam search calls the net's methods, eager

    def load_pretrained(self, source: str) -> None:
        """Warm-start encoder and decoder from a GPT checkpoint (see `init_from`); cross-attention stays fresh."""
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"model.init_from: '{source}' does not exist; give a GPT checkpoint (.ckpt)")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        gpt = {
            k[len("net.transformer.") :]: v
            for k, v in ckpt.get("state_dict", {}).items()
            if k.startswith("net.transformer.")
        }
        if "wte.weight" not in gpt:
            raise UserError(
                f"model.init_from: '{source}' is not a GPT checkpoint (no net.transformer.* weights); "
                f"give one written by a GPTModule run"
            )
        config, (vocab, width) = self.net.config, gpt["wte.weight"].shape
        gpt_layers = 1 + max(int(k.split(".")[1]) for k in gpt if k.startswith("h."))
        gpt_heads = _n_head_of(ckpt.get("hyper_parameters", {}))
        wanted = max(config.n_encoder_layer, config.n_decoder_layer)
        problems = [
            (width != config.n_embd, f"is {width} wide, this model {config.n_embd}; set --model.n_embd {width}"),
            (
                gpt_heads is not None and gpt_heads != config.n_head,
                f"has {gpt_heads} heads, this model {config.n_head}; set --model.n_head {gpt_heads}",
            ),
            (
                vocab != config.vocab_size,
                f"knows {vocab} token ids, this model {config.vocab_size}; "
                f"use the GPT's tokenizer and --model.vocab_size {vocab}",
            ),
            (
                gpt_layers < wanted,
                f"has {gpt_layers} layers, this model needs {wanted}; "
                f"set --model.n_encoder_layer/--model.n_decoder_layer <= {gpt_layers}",
            ),
            (
                ckpt.get("tokenizer") is not None
                and self.tokenizer_json is not None
                and ckpt["tokenizer"] != self.tokenizer_json,
                "was trained with another tokenizer than this data's; token ids would not match (use data.tokenizer "
                "byte for both, or the same BPE)",
            ),
        ]
        for bad, message in problems:
            if bad:
                raise UserError(f"model.init_from '{source}' {message}")
        state = self.net.state_dict()
        copied = {"encoder.wte.weight": gpt["wte.weight"], "decoder.wte.weight": gpt["wte.weight"]}  # = lm_head
        positions = {}
        for stack, layers in (("encoder", config.n_encoder_layer), ("decoder", config.n_decoder_layer)):
            wpe = state[f"{stack}.wpe.weight"].clone()
            n = min(len(wpe), len(gpt["wpe.weight"]))  # positions the GPT never saw keep their fresh init
            wpe[:n] = gpt["wpe.weight"][:n]
            copied[f"{stack}.wpe.weight"], positions[stack] = wpe, f"{n}/{len(wpe)}"
            for key, value in gpt.items():
                if key.startswith("ln_f.") or (key.startswith("h.") and int(key.split(".")[1]) < layers):
                    copied[f"{stack}.{key}"] = value  # the same names: Block and DecoderBlock share GPT's
        self.net.load_state_dict({**state, **copied, "lm_head.weight": gpt["wte.weight"]})
        fresh = sum(1 for k in state if ".cross_attn." in k or ".ln_cross." in k)
        rank_zero_info(
            f"init_from: {len(copied)} tensors from {path} (embeddings, self-attention, MLP and LayerNorms "
            f"of {config.n_encoder_layer} encoder and {config.n_decoder_layer} decoder blocks; positions "
            f"encoder {positions['encoder']}, decoder {positions['decoder']}); {fresh} cross-attention "
            f"tensors fresh"
        )

    # -- training ---------------------------------------------------------------------------------
    def forward(self, source: torch.Tensor, source_mask: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        return self.net(source, source_mask, target_in)

    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        target_in = batch.target_in
        if self.hparams.word_dropout > 0:
            # Drawn from the global generator: seeded by seed_everything, saved by the RNG-state callback.
            drop = torch.rand(target_in.shape, device=target_in.device) < self.hparams.word_dropout
            drop[:, 0] = False  # the start token stays
            target_in = target_in.masked_fill(drop, self.tokenizer.eot_id)
        logits = self.net(batch.source, batch.source_mask, target_in)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.target_out.flatten(),
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.hparams.label_smoothing,
        )
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=batch.source.size(0))
        return loss

    def flops_per_batch(self, batch: PairBatch) -> int:
        """FLOPs of one training step on `batch` (encoder, decoder and head, forward + backward of the loss),
        counted on the meta device (models/flops.py); padded positions count, as they are computed."""
        twin = meta_twin(self)
        source, mask, target_in, target_out = (
            meta_like(t) for t in (batch.source, batch.source_mask, batch.target_in, batch.target_out)
        )
        return count(
            twin.net,
            lambda: twin.net(source, mask, target_in),
            lambda logits: F.cross_entropy(logits.flatten(0, 1), target_out.flatten(), ignore_index=IGNORE_INDEX),
        )

    def validation_step(self, batch: PairBatch, batch_idx: int) -> None:
        logits = self.net(batch.source, batch.source_mask, batch.target_in)
        labels = batch.target_out
        nll_sum = F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        self.val_perplexity.update(nll_sum, (labels != IGNORE_INDEX).sum())
        cap = self.hparams.val_generate_batches
        if cap is not None and batch_idx >= cap:
            return
        # Under ZeRO-3 every forward gathers parameters from all ranks: each rank must decode the same
        # number of steps, so no rank stops early when its own rows are done.
        generated = self.generate_ids(
            batch.source,
            batch.source_mask,
            num_beams=self.hparams.num_beams,
            stop_when_done=not parameters_are_sharded(self.trainer),
        )
        tok = self.tokenizer
        outputs = [tok.decode(ids) for ids in generated]
        references = [
            tok.decode(until_stop([i for i in row if i != IGNORE_INDEX], tok.eot_id)) for row in labels.tolist()
        ]
        self.val_bleu.update(outputs, [[r] for r in references])
        self.val_chrf.update(outputs, [[r] for r in references])
        self.val_exact_match.update(torch.tensor([float(o.strip() == r.strip()) for o, r in zip(outputs, references)]))
        if batch_idx == 0:
            sources = [tok.decode(row[mask].tolist()) for row, mask in zip(batch.source, batch.source_mask)]
            self.validation_examples = list(zip(sources, references, outputs))

    def on_validation_epoch_end(self) -> None:
        # compute() adds each metric's sums over all ranks first: one value, the 1-process one, everywhere.
        perplexity = self.val_perplexity.compute()
        self.log("val/loss", perplexity.log().float(), prog_bar=True, sync_dist=True)
        self.log("val/perplexity", perplexity.float(), sync_dist=True)
        if self.hparams.val_generate_batches != 0:
            self.log("val/bleu", 100 * self.val_bleu.compute().float(), prog_bar=True, sync_dist=True)
            self.log("val/chrf", 100 * self.val_chrf.compute().float(), sync_dist=True)
            self.log("val/exact_match", self.val_exact_match.compute().float(), sync_dist=True)
        for metric in (self.val_perplexity, self.val_bleu, self.val_chrf, self.val_exact_match):
            metric.reset()

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]  # the tied embedding appears once
        groups = [
            # Decay only matrices (linear weights, embeddings); biases and LayerNorm gains stay free.
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), **GPTModule._fused_kwargs(params))
        decay_steps = hp.decay_steps or self.trainer.estimated_stepping_batches
        if decay_steps == float("inf"):
            raise UserError(
                "the LR schedule needs an end: set trainer.max_steps, trainer.max_epochs or model.decay_steps"
            )
        min_ratio = (hp.min_lr if hp.min_lr is not None else hp.lr / 10) / hp.lr
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, hp.warmup_steps, int(decay_steps), min_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- checkpoints carry the tokenizer ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokenizer"] = self.tokenizer_json

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("tokenizer")
        if saved is not None and self.tokenizer_json is not None and saved != self.tokenizer_json:
            raise UserError(
                "the checkpoint was trained with another tokenizer than this data's (data.tokenizer / "
                "data.vocab_size); use the checkpoint's tokenizer settings, or start without --ckpt_path"
            )
        self.tokenizer_json = saved

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(
        self,
        source: torch.Tensor,
        source_mask: torch.Tensor,
        num_beams: int = 1,
        max_new_tokens: Optional[int] = None,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        use_cache: bool = True,
        stop_when_done: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> list[list[int]]:
        """One target per source row, as ids without the stop token. num_beams > 1: beam search (with
        `length_penalty`); else greedy (temperature 0) or sampling (temperature / top_k / top_p)."""
        eot, steps = self.tokenizer.eot_id, max_new_tokens or self.max_new_tokens
        was_training = self.training
        self.eval()
        try:
            if num_beams > 1:
                out = self.net.beam_search(
                    source,
                    source_mask,
                    steps,
                    eot,
                    eot,
                    num_beams=num_beams,
                    length_penalty=self.hparams.length_penalty,
                    use_cache=use_cache,
                    stop_when_done=stop_when_done,
                )
            else:
                out = self.net.generate(
                    source,
                    source_mask,
                    steps,
                    eot,
                    eot,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    use_cache=use_cache,
                    stop_when_done=stop_when_done,
                    generator=generator,
                )
        finally:
            self.train(was_training)
        return [until_stop(row, eot) for row in out.tolist()]

    def generate_targets(
        self,
        sources: Sequence[str],
        max_new_tokens: int = 64,
        generator: Optional[torch.Generator] = None,
        num_beams: int = 1,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        use_cache: bool = True,
    ) -> list[str]:
        """The generated target text of each source text (see `generate_ids` for the options)."""
        tok, limit = self.tokenizer, self.net.config.source_block_size
        encoded = tok.encode_batch(list(sources))
        for text, ids in zip(sources, encoded):
            if not ids:
                raise UserError("a source text is empty; give the model something to summarise")
            if len(ids) > limit:
                raise UserError(
                    f"a source of {len(ids)} tokens is longer than the model's source_block_size {limit} "
                    f"('{text[:40]}...'); shorten it"
                )
        width = max(len(ids) for ids in encoded)
        source = torch.full((len(encoded), width), tok.eot_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.bool)
        for i, ids in enumerate(encoded):
            source[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), True
        ids = self.generate_ids(
            source.to(self.device),
            mask.to(self.device),
            num_beams=num_beams,
            max_new_tokens=min(max_new_tokens, self.net.config.target_block_size),
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            use_cache=use_cache,
            generator=generator,
        )
        return [tok.decode(row) for row in ids]
