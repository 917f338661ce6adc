"""`--ckpt_path last`: find the run to continue, or say why there is none.

Lightning resolves "last" through the checkpoint callback's folder, `runs/<project>/<W&B run id>/`,
and a new process gets a new random run id, so on its own it would look in an empty new folder,
warn, and train from scratch in yet another run. Here, before anything is built:

- the W&B run id comes from `--trainer.logger.init_args.id`, else WANDB_RUN_ID (set per Slurm job by
  launch/slurm/train.sbatch, so a requeued job is keyed by its job id), else the run folder of the
  project with the newest `last.ckpt`;
- that id is given to the logger, so the resumed run logs into the SAME W&B run and run folder
  (Lightning's WandbLogger passes resume="allow"), continuing at the saved step;
- no `last.ckpt` to continue from is an error (exit 2), not a silent fresh start.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from gen_lightning.errors import UserError

LAST = "last.ckpt"


_LAST_VERSION = re.compile(r"last(?:-v(\d+))?\.ckpt")


def newest_last(checkpoints: Path) -> Path:
    """`checkpoints/last.ckpt`, or the newest of `last.ckpt`, `last-v1.ckpt`, ... when Lightning's checkpoint
    callback added versions (it does when a run writes into a folder that already has a `last.ckpt`: a run
    started again with --overwrite): the most recently written one, the higher version on a tie. Never an older
    `last.ckpt` over a newer `last-vN.ckpt`."""
    found = (
        [p for p in checkpoints.glob("last*.ckpt") if _LAST_VERSION.fullmatch(p.name)] if checkpoints.is_dir() else []
    )
    if not found:
        return checkpoints / LAST
    return max(found, key=lambda p: (p.stat().st_mtime_ns, int(_LAST_VERSION.fullmatch(p.name).group(1) or 0)))


def _first_logger(trainer_config: Any) -> Any:
    logger = trainer_config.get("logger")
    return logger[0] if isinstance(logger, list) and logger else logger


def _run_id_with_newest_last(project_dir: Path) -> Optional[str]:
    found = [newest_last(folder) for folder in project_dir.glob("*/checkpoints")]
    found = [p for p in found if p.exists()]  # a DeepSpeed checkpoint is a folder
    if not found:
        return None
    return max(found, key=lambda p: p.stat().st_mtime).parent.parent.name


def resolve_last_checkpoint(config: Any) -> None:
    """Turn `ckpt_path: last` in a parsed subcommand config into the file it means (edits `config`)."""
    if config.get("ckpt_path") != "last":
        return
    dirpath = config.get("checkpoint", {}).get("dirpath") if config.get("checkpoint") else None
    logger = _first_logger(config.trainer)
    init_args = logger.get("init_args") if hasattr(logger, "get") else None
    if dirpath:
        last = newest_last(Path(dirpath))
        where = f"--checkpoint.dirpath {dirpath}"
    elif init_args is not None and "project" in init_args and "id" in init_args:  # a W&B logger
        project_dir = (
            Path(init_args.get("save_dir") or config.trainer.get("default_root_dir") or ".") / init_args.project
        )
        run_id = init_args.id or os.environ.get("WANDB_RUN_ID") or _run_id_with_newest_last(project_dir)
        if run_id is None:
            raise UserError(
                f"--ckpt_path last: no run under {project_dir}/ has checkpoints/{LAST}; start a "
                f"new run without --ckpt_path, or give a checkpoint file: --ckpt_path PATH"
            )
        init_args.id = run_id  # continue the same W&B run, in the same run folder
        last = newest_last(project_dir / run_id / "checkpoints")
        where = f"run {run_id}"
    elif not logger:
        last = newest_last(Path(config.trainer.get("default_root_dir") or ".") / "checkpoints")
        where = "--trainer.default_root_dir"
    else:
        return  # another logger: its folder is only known once built; Lightning resolves "last"
    if not last.exists():  # a file, or a folder of shards for DeepSpeed
        raise UserError(
            f"--ckpt_path last: {last} does not exist ({where}); start without --ckpt_path, "
            f"or give a checkpoint file: --ckpt_path PATH"
        )
    config.ckpt_path = str(last)
