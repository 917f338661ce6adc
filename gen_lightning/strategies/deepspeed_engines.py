"""One DeepSpeed engine per network, for modules that train several networks in turn (the GAN).

Why by hand: Lightning's DeepSpeedStrategy wraps the whole LightningModule in one engine with one optimizer
("DeepSpeed currently only supports single optimizer"), and no GAN library drives DeepSpeed either. A GAN
steps two optimizers over two disjoint networks, so each network gets its own `deepspeed.initialize`: its
own ZeRO optimizer (stage 1-3, offload), its own gradient partitions and reduction hooks, its own
checkpoint shards. The module names its networks with the same attribute the per-network DDP uses,

    ddp_submodules = ("generator", "discriminator")

and calls `network_unit(self, name)` when it trains one: under this strategy that returns the network's
engine. Everything else (sampling, scoring fakes for the generator loss) calls the plain network; under
ZeRO-3 the engine's hooks sit on the network itself, so plain calls gather the shards too.

The mixin replaces, only when the module names networks:
  - engine set-up: each optimizer from `configure_optimizers` goes to the engine of the network whose
    parameters it holds; Lightning keeps scheduling and counting steps through its optimizer wrappers;
  - `backward`: the engine of the network being trained, i.e. the only one whose parameters require
    gradients (the module freezes the other, see GANModule.training_only);
  - `optimizer_step`: the engine that owns the optimizer;
  - checkpoints: a folder with one DeepSpeed tag per network (`<ckpt>/generator/`, `<ckpt>/discriminator/`)
    plus the Lightning state and whatever no engine holds (the EMA generator) as the first engine's
    client state. `gen-lightning convert` gathers them into one fp32 `.ckpt` (gen_lightning.commands.convert).
Modules that name nothing (VAE, GPT) keep the stock one-engine path unchanged.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Mapping, Optional

import torch
from lightning.pytorch.core.optimizer import _init_optimizers_and_lr_schedulers
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from gen_lightning.errors import UserError
from gen_lightning.capabilities import NamesGradientClip, TrainsNetworksInTurn

# ENGINES_FILE, written into a multi-engine checkpoint folder: the tags (network names) in order, the first holds
# the Lightning state. `convert`, `load_checkpoint` and the resumability check read it.
from gen_lightning.strategies.zero_shards import ENGINES_FILE

# The first engine's client state holds the Lightning checkpoint under this one key, apart from DeepSpeed's own.
LIGHTNING_STATE_KEY = "lightning"


class PerNetworkEngines:
    """Mixin for a DeepSpeedStrategy subclass (see DeepSpeedCPUStrategy)."""

    _engines: dict[str, Any]

    # -- which path --------------------------------------------------------------------------------------------
    def _network_names(self) -> tuple[str, ...]:
        module = self.lightning_module
        return tuple(module.ddp_submodules) if isinstance(module, TrainsNetworksInTurn) else ()

    def unit_for(self, name: str) -> Optional[nn.Module]:
        """The engine that trains network `name` (capabilities.WrapsNetworks); None on the one-engine path."""
        return (getattr(self, "_engines", None) or {}).get(name)

    @property
    def _per_network(self) -> bool:
        return bool(getattr(self, "_engines", None))

    # -- set-up ------------------------------------------------------------------------------------------------
    def init_deepspeed(self) -> None:
        names = self._network_names()
        if not names:
            return super().init_deepspeed()
        module = self.lightning_module
        self._clip_like(module)
        training = module.trainer.training
        optimizers, schedulers = _init_optimizers_and_lr_schedulers(module) if training else ([], [])
        self._engines = {}
        ds_optimizers = {}
        for name in names:
            network = module.get_submodule(name)
            if not training:
                self._engines[name], _ = self._network_engine(network, None)
                continue
            configured = _optimizer_of(network, optimizers, name)
            # Keyed by the configured optimizer: ZeRO-Offload may replace it by DeepSpeedCPUAdam.
            self._engines[name], ds_optimizers[id(configured)] = self._network_engine(
                network, self._replace_optimizer(configured, schedulers)
            )
        # Lightning's optimizer list, in configure_optimizers' order, now holds DeepSpeed's optimizers: the
        # module's `self.optimizers()` hands them back wrapped, and `opt.step()` lands in `optimizer_step`.
        self.optimizers = [ds_optimizers[id(opt)] for opt in optimizers]
        # A scheduler keeps working on its optimizer's param-group dicts, which the ZeRO optimizer shares.
        self.lr_scheduler_configs = schedulers
        # The Trainer calls `strategy.model` for training_step/validation_step: the module itself, which runs
        # each network through its engine (capabilities.network_unit -> unit_for) or plainly.
        self.model = module

    def _clip_like(self, module: nn.Module) -> None:
        """Manual optimization clips in the module, which under DeepSpeed is a no-op: the engines clip in their
        step, so the module's value (capabilities.NamesGradientClip) becomes their `gradient_clipping`."""
        if isinstance(module, NamesGradientClip) and module.gradient_clip > 0:
            self.config["gradient_clipping"] = module.gradient_clip

    def _network_engine(self, network: nn.Module, optimizer: Optional[torch.optim.Optimizer]):
        import deepspeed

        if optimizer is None:
            # As Lightning's own inference engine: ZeRO settings only for stage 3, whose weights stay sharded;
            # stages 1-2 shard only optimizer state and refuse to start without an optimizer.
            config = {"train_micro_batch_size_per_gpu": 1}
            if self.zero_stage_3:
                config["zero_optimization"] = self.config["zero_optimization"]
            config.update(
                {k: self.config[k] for k in ("fp16", "bf16", "zero_allow_untested_optimizer") if k in self.config}
            )
        else:
            config = self.config
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.root_device.index),
            config=config,
            model=network,
            model_parameters=[p for p in network.parameters() if p.requires_grad] if optimizer else [],
            optimizer=optimizer,
            dist_init_required=False,
        )
        if engine.lr_scheduler is not None:  # Lightning steps the schedulers, not the engine
            engine.lr_scheduler = None
        return engine, ds_optimizer

    def _replace_optimizer(self, optimizer: torch.optim.Optimizer, schedulers: list) -> torch.optim.Optimizer:
        """Hook for ZeRO-Offload's CPU Adam (DeepSpeedCPUStrategy); the optimizer as it is by default."""
        return optimizer

    # -- training ----------------------------------------------------------------------------------------------
    def _engine_in_training(self):
        trained = [
            name for name, engine in self._engines.items() if any(p.requires_grad for p in engine.module.parameters())
        ]
        if len(trained) != 1:
            raise RuntimeError(
                f"one network must be trained per backward under per-network DeepSpeed engines, found {trained or 'none'}"
                "; freeze the others (GANModule.training_only) before calling manual_backward"
            )
        return self._engines[trained[0]]

    def backward(self, closure_loss: torch.Tensor, optimizer, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self._per_network:
            return super().backward(closure_loss, optimizer, *args, **kwargs)
        module = self.lightning_module
        self.pre_backward(closure_loss)
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)  # on_before_backward hooks
        self._engine_in_training().backward(closure_loss, *args, **kwargs)
        closure_loss = self.precision_plugin.post_backward(closure_loss, module)  # on_after_backward hooks
        self.post_backward(closure_loss)
        return closure_loss

    def optimizer_step(self, optimizer, closure: Callable[[], Any], model=None, **kwargs: Any) -> Any:
        if not self._per_network:
            return super().optimizer_step(optimizer, closure, model, **kwargs)
        module = model or self.lightning_module
        closure()  # manual optimization: Lightning's do-nothing closure
        self.precision_plugin._after_closure(module, optimizer)  # on_before_optimizer_step hooks
        (engine,) = [e for e in self._engines.values() if e.optimizer is optimizer]
        # DeepSpeed's step: ZeRO update of this network's partitions, gradient clipping from the config, zero_grad.
        return engine.step(**kwargs)

    # -- checkpoints -------------------------------------------------------------------------------------------
    def _outside_engines(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Entries of the module's state_dict that no engine saves (an EMA copy, other buffers)."""
        prefixes = tuple(f"{name}." for name in self._engines)
        return {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options: Optional[Any] = None) -> None:
        if not self._per_network:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        from pathlib import Path

        filepath = self.broadcast(str(filepath))
        client_state = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
        client_state["state_dict"] = self._outside_engines(checkpoint["state_dict"])
        for i, (name, engine) in enumerate(self._engines.items()):
            # Every rank writes its shards of this network (a collective); rank 0 also the client state.
            engine.save_checkpoint(
                filepath,
                tag=name,
                client_state={LIGHTNING_STATE_KEY: client_state} if i == 0 else {},
                save_latest=False,
                exclude_frozen_parameters=self.exclude_frozen_parameters,
            )
        if self.is_global_zero:
            (Path(filepath) / ENGINES_FILE).write_text("\n".join(self._engines) + "\n")
        self.barrier("per_network_save")

    def load_checkpoint(self, checkpoint_path, weights_only: Optional[bool] = None) -> dict[str, Any]:
        if not self._per_network:
            return super().load_checkpoint(checkpoint_path, weights_only)
        from pathlib import Path

        folder = Path(checkpoint_path)
        engines_file = folder / ENGINES_FILE
        if not engines_file.is_file():
            raise UserError(
                f"'{checkpoint_path}' is not a checkpoint of per-network DeepSpeed engines (no {ENGINES_FILE}); "
                f"resume a GAN from the checkpoint folder its DeepSpeed run wrote, or load a converted .ckpt without DeepSpeed"
            )
        saved = engines_file.read_text().split()
        if saved != list(self._engines):
            raise UserError(f"the checkpoint holds the networks {saved} but the model trains {list(self._engines)}")
        fitting = self.lightning_module.trainer.state.fn == TrainerFn.FITTING
        client_state = None
        for i, (name, engine) in enumerate(self._engines.items()):
            _, state = engine.load_checkpoint(
                str(folder),
                tag=name,
                load_optimizer_states=fitting,
                load_lr_scheduler_states=False,
                load_module_strict=self.lightning_module.strict_loading,
            )
            if i == 0 and state is not None:
                client_state = state.get(LIGHTNING_STATE_KEY)
        if client_state is None:
            raise UserError(f"DeepSpeed could not read the checkpoint '{checkpoint_path}'; is it complete?")
        return client_state

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        if not self._per_network:
            return super().load_model_state_dict(checkpoint, strict)
        # The engines loaded their networks; here goes what they do not hold.
        outside = checkpoint["state_dict"]
        expected = self._outside_engines(self.lightning_module.state_dict())
        if strict and outside.keys() != expected.keys():
            raise UserError(
                f"the checkpoint's non-network state {sorted(outside)} does not match the model's {sorted(expected)}; "
                "was it written by the same model configuration?"
            )
        self.lightning_module.load_state_dict(outside, strict=False)

    def teardown(self) -> None:
        self._engines = {}  # back to the plain networks for whatever follows fit
        super().teardown()


def _optimizer_of(network: nn.Module, optimizers: list, name: str) -> torch.optim.Optimizer:
    """The optimizer whose parameters are exactly those of `network`."""
    wanted = {id(p) for p in network.parameters() if p.requires_grad}
    matches = [opt for opt in optimizers if {id(p) for g in opt.param_groups for p in g["params"]} == wanted]
    if len(matches) != 1:
        raise UserError(
            f"per-network DeepSpeed engines need one optimizer over exactly the parameters of '{name}'; "
            f"configure_optimizers returned {len(optimizers)} optimizer(s), {len(matches)} of them over '{name}'"
        )
    return matches[0]
