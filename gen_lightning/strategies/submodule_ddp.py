"""SubmoduleDDPStrategy: Lightning's DDP that can wrap, one by one, the networks a module names.

Why it exists: DDP's reducer expects every parameter of the module it wraps to receive a gradient
in every backward. A GAN trains its two networks in alternate backwards: the discriminator step
leaves the generator without gradients and the generator step leaves the (frozen) discriminator
without. Lightning's `ddp` wraps the whole LightningModule and fails with "parameters that were not
used in producing the loss"; `ddp_find_unused_parameters_true` works, but walks the autograd graph
after every forward and all-reduces the idle network's gradients as zeros.

The fix is StyleGAN2-ADA's: one DistributedDataParallel wrapper per network. A module opts in with

    ddp_submodules = ("generator", "discriminator")

and runs a network through `network_unit(self, "generator")` (gen_lightning/capabilities.py: the strategy hands
out the wrapper, `unit_for`) exactly when it trains that network; every
other use (sampling, scoring fakes for the generator's loss, validation) calls the plain network.
Each backward then reduces exactly the gradients it produced. Parameters stay where they were
(`generator.*`, not `generator.module.*`), so checkpoints are the same with and without DDP.

Modules that name nothing (VAE, GPT) get Lightning's DDPStrategy unchanged; that is why this class
can be registered under the plain `ddp` names (see `register`, which the CLI calls where it starts).
"""

from __future__ import annotations

from typing import Optional

from lightning.fabric.strategies.registry import _StrategyRegistry
from lightning.pytorch.overrides.distributed import _register_ddp_comm_hook, _sync_module_states
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from torch import nn

from gen_lightning.capabilities import TrainsNetworksInTurn

# The names Lightning registers for DDPStrategy with each process start method.
DDP_NAMES = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


class SubmoduleDDPStrategy(DDPStrategy):
    """DDPStrategy, and for a module that trains several networks in turn (capabilities.TrainsNetworksInTurn)
    one DDP wrapper per network, handed out by `unit_for` (capabilities.WrapsNetworks)."""

    _units: dict[str, nn.Module] = {}

    def unit_for(self, name: str) -> Optional[nn.Module]:
        return self._units.get(name)

    def configure_ddp(self) -> None:
        module = self.lightning_module
        if not isinstance(module, TrainsNetworksInTurn):
            super().configure_ddp()
            return
        # DDP makes the ranks agree on what it wraps; this also covers what no wrapper holds
        # (e.g. an EMA copy), so every rank starts from rank 0's state.
        _sync_module_states(module)
        self._units = {name: self._setup_model(module.get_submodule(name)) for name in module.ddp_submodules}
        if self.root_device.type == "cuda":  # comm hooks are NCCL-only, as in DDPStrategy
            for unit in self._units.values():
                _register_ddp_comm_hook(
                    model=unit,
                    ddp_comm_state=self._ddp_comm_state,
                    ddp_comm_hook=self._ddp_comm_hook,
                    ddp_comm_wrapper=self._ddp_comm_wrapper,
                )

    def teardown(self) -> None:
        self._units = {}  # back to the plain networks for whatever follows fit
        super().teardown()


def register(registry: _StrategyRegistry = StrategyRegistry) -> None:
    """Make `strategy: ddp` (and ddp_spawn/fork/notebook) mean SubmoduleDDPStrategy. The
    `ddp_find_unused_parameters_*` names keep Lightning's DDPStrategy (the benchmark baseline)."""
    for name, start_method in DDP_NAMES.items():
        registry.register(
            name,
            SubmoduleDDPStrategy,
            override=True,
            start_method=start_method,
            description=f"DDP (start_method '{start_method}'), one wrapper per network a module names in "
            f"`ddp_submodules` (gen_lightning.strategies.submodule_ddp)",
        )
