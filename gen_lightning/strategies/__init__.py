"""Strategies Lightning lacks. Importing this package registers them under their names."""

from gen_lightning.strategies.deepspeed_cpu import DeepSpeedCPUStrategy  # noqa: F401 - CPU-capable DeepSpeed
from gen_lightning.strategies.submodule_ddp import SubmoduleDDPStrategy, ddp_unit, register

register()  # `strategy: ddp` now also works for modules that train several networks in turn (GAN)

__all__ = ["SubmoduleDDPStrategy", "ddp_unit"]
