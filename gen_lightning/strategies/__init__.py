"""Strategies Lightning lacks. Importing this package changes nothing in Lightning: `register()` (called by the CLI
where it starts, gen_lightning/cli.py `build_cli`) makes `strategy: ddp` mean SubmoduleDDPStrategy."""

from gen_lightning.strategies.deepspeed_cpu import DeepSpeedCPUStrategy
from gen_lightning.strategies.submodule_ddp import SubmoduleDDPStrategy, register

__all__ = ["DeepSpeedCPUStrategy", "SubmoduleDDPStrategy", "register"]
