"""DeepSpeedCPUStrategy: Lightning's DeepSpeedStrategy, which also runs on CPU processes (gloo).

Why: DeepSpeed's engine itself runs ZeRO 1-3 on CPU with the gloo backend, but Lightning's strategy refuses
any accelerator but CUDA. Three checks stand in the way, and only on CPU are they replaced:
  - `setup_environment` raises for a non-CUDA accelerator     -> DDPStrategy's (no accelerator check)
  - `root_device` is `cpu` with no index, and DeepSpeed reads `device.index` as the local device id
                                                                -> `cpu:0` (CPU has one device)
  - `setup_distributed` validates CUDA device indices          -> the same steps without that check
On a CUDA accelerator every override defers to the stock strategy, so one trainer config
(`configs/trainer/deepspeed_*.yaml`) serves a GPU cluster and a CPU-only CI alike.

One addition for both devices: with ZeRO-Offload, DeepSpeed rejects a plain torch Adam/AdamW ("use
DeepSpeedCPUAdam") because the optimizer step then runs on the CPU, where torch's Adam is several times slower.
The strategy rebuilds the module's Adam/AdamW as DeepSpeedCPUAdam with the same parameter groups and
hyper-parameters, so model configs and `configure_optimizers` need no DeepSpeed-specific edits.

And for modules that train several networks in turn (the GAN): one engine per network, see
gen_lightning/strategies/deepspeed_engines.py.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from gen_lightning.errors import UserError
from gen_lightning.strategies.deepspeed_engines import PerNetworkEngines
from gen_lightning.strategies.zero_shards import check_resumable

INSTALL_HINT = "DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed  (or pip install 'gen-lightning[deepspeed]')"


def deepspeed_available() -> bool:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return False
    return True


def announce_shm_op_compile() -> None:
    """DeepSpeed compiles its shared-memory communication op for CPU processes the first time it starts (~25 s on
    2 cores, silent); say so once, before, with where it is cached."""
    from pathlib import Path

    from torch.utils.cpp_extension import _get_build_directory

    folder = Path(_get_build_directory("deepspeed_shm_comm", verbose=False))
    if not list(folder.glob("*.so")):
        rank_zero_info(
            f"DeepSpeed: compiling its CPU communication op (deepspeed_shm_comm) -- once, ~30 s; cached in "
            f"{folder} (set TORCH_EXTENSIONS_DIR to move the cache)"
        )


class DeepSpeedCPUStrategy(PerNetworkEngines, DeepSpeedStrategy):
    strategy_name = "deepspeed_cpu"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Takes every argument of Lightning's `DeepSpeedStrategy` (stage, offload_optimizer, offload_parameters,
        config, ...)."""
        if not deepspeed_available():
            raise UserError(f"the DeepSpeed strategy needs the deepspeed package; install it with {INSTALL_HINT}")
        super().__init__(*args, **kwargs)

    @property
    def _on_cpu(self) -> bool:
        return isinstance(self.accelerator, CPUAccelerator)

    def setup_environment(self) -> None:
        if self._on_cpu:
            DDPStrategy.setup_environment(self)  # calls self.setup_distributed()
        else:
            super().setup_environment()

    @property
    def root_device(self) -> torch.device:
        if self._on_cpu:
            return torch.device("cpu", 0)
        return super().root_device

    def setup_distributed(self) -> None:
        if not self._on_cpu:
            return super().setup_distributed()
        # The stock steps minus `_validate_device_index_selection`, which only makes sense for CUDA indices.
        reset_seed()
        self.set_world_ranks()
        announce_shm_op_compile()
        self._init_deepspeed_distributed()

    # -- evaluating a ZeRO-3 checkpoint folder (validate / test / predict) -------------------------------------------
    def load_checkpoint(self, checkpoint_path, weights_only=None):
        from pathlib import Path

        from lightning.pytorch.trainer.states import TrainerFn

        fitting = self.lightning_module.trainer.state.fn == TrainerFn.FITTING
        if fitting and Path(checkpoint_path).is_dir():
            check_resumable(checkpoint_path, self.world_size)  # another world size, a missing shard: one line
        if fitting or not self.zero_stage_3 or not Path(checkpoint_path).is_dir():
            return super().load_checkpoint(checkpoint_path, weights_only)
        # Without an optimizer DeepSpeed's ZeRO-3 engine cannot read its own shards back (DeepSpeed 0.19:
        # AttributeError '_restore_from_bit16_weights'; the weights live in the optimizer's partitions). Gather
        # them into full fp32 weights as `gen-lightning convert` does and load those into the sharded module.
        from gen_lightning.commands.convert import gathered_checkpoint

        self._loading_gathered = True
        return gathered_checkpoint(self.broadcast(str(checkpoint_path)))

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        if getattr(self, "_loading_gathered", False):
            self._loading_gathered = False
            self.model_to_device()
            self._restore_zero_state(checkpoint, strict=strict)  # Lightning's: gathers each shard, loads on rank 0
            # ...and only ZeRO's own shards reach the other ranks from there: what no engine partitions (a GAN's
            # EMA generator, buffers) every rank loads itself (each holds the gathered checkpoint).
            module = self.lightning_module
            partitioned = {name for name, p in module.named_parameters(remove_duplicate=False) if hasattr(p, "ds_id")}
            rest = {k: v for k, v in checkpoint["state_dict"].items() if k not in partitioned}
            module.load_state_dict(rest, strict=False)
            return
        super().load_model_state_dict(checkpoint, strict)

    # -- the divergence guard's view of DeepSpeed's own overflow skipping (capabilities.SkipsNonFiniteSteps) ------
    def skipped_steps(self) -> int:
        """Updates the engines skipped for inf/NaN gradients so far (ZeRO 1-3 check every step)."""
        engines = list(self._engines.values()) if self._per_network else [self.deepspeed_engine]
        return sum(int(engine.skipped_steps) for engine in engines)

    def _auto_select_batch_size(self) -> int:
        # Lightning's reads `train_dataloader.batch_sampler.batch_size` and fails on a loader whose sampler yields
        # whole batches (batch_size=None, no batch sampler: PairedTextDataModule's length buckets). The value only
        # labels DeepSpeed's throughput log (train_micro_batch_size_per_gpu), as in Lightning.
        data_source = self.lightning_module.trainer.fit_loop._data_source
        if not data_source.is_defined():
            return 1
        loader = data_source.dataloader()
        batch_sampler = getattr(loader, "batch_sampler", None)
        if batch_sampler is None:
            return int(getattr(getattr(loader, "sampler", None), "batch_size", None) or 1)
        return batch_sampler.batch_size

    # -- ZeRO-Offload: the optimizer step runs on the CPU, so it must be DeepSpeed's vectorised CPU Adam ----------
    @property
    def _offloads_optimizer(self) -> bool:
        zero = (self.config or {}).get("zero_optimization") or {}
        return (zero.get("offload_optimizer") or {}).get("device", "none") in ("cpu", "nvme")

    def _init_optimizers(self):
        optimizer, scheduler_config = super()._init_optimizers()
        return self._replace_optimizer(optimizer, [scheduler_config] if scheduler_config else []), scheduler_config

    def _replace_optimizer(self, optimizer, schedulers: list):
        if not self._offloads_optimizer or type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
            return optimizer
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        defaults = optimizer.defaults
        cpu_adam = DeepSpeedCPUAdam(
            optimizer.param_groups,  # the same group dicts: per-group lr/weight decay (and a scheduler's) carry over
            lr=defaults["lr"],
            betas=defaults["betas"],
            eps=defaults["eps"],
            weight_decay=defaults["weight_decay"],
            adamw_mode=type(optimizer) is torch.optim.AdamW,
        )
        for config in schedulers:
            if config.scheduler.optimizer is optimizer:
                config.scheduler.optimizer = cpu_adam
        rank_zero_info(f"ZeRO-Offload: {type(optimizer).__name__} replaced by DeepSpeedCPUAdam with the same settings")
        return cpu_adam
