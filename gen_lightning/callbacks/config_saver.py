"""RunConfigSaver: the merged config goes into the run folder and to every logger.

Lightning's stock SaveConfigCallback writes `config.yaml` into `trainer.log_dir`, which for the W&B
logger is the shared save_dir: the second run then refuses to start. Writing into the run's own
folder (next to its checkpoints) keeps one config per run and nothing is ever overwritten.
"""

from __future__ import annotations

import sys

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from gen_lightning.run_dir import run_dir


class RunConfigSaver(SaveConfigCallback):
    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = False) -> None:
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Called on rank 0 only.
        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.config_filename
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=self.multifile)
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config["command"] = " ".join(["gen-lightning", *sys.argv[1:]])
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})
