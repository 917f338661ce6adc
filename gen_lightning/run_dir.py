"""Where a run's files live.

One folder per run holds everything about it: `config.yaml`, `checkpoints/`, `samples/`. It is the
folder Lightning's ModelCheckpoint derives from the first logger (`save_dir/name/version`), so the
config and the checkpoints always sit side by side: with the W&B logger that is
`runs/<project>/<wandb run id>/`; with no logger it is `trainer.default_root_dir`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


def run_dir(trainer: L.Trainer) -> Path:
    # Mirrors ModelCheckpoint's rule for its dirpath (minus the trailing "checkpoints").
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir or trainer.default_root_dir
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        return Path(save_dir) / str(logger.name) / version
    return Path(trainer.default_root_dir)
