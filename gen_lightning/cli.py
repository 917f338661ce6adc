"""`gen-lightning`: Lightning's own CLI (fit / validate / test / predict) set up for this project.

- YAML files merge in order (`--config a.yaml --config b.yaml`), then dotted overrides
  (`--model.lr 3e-4`); omegaconf parser mode adds `${...}` interpolation inside the YAML.
- `class_path` picks the DataModule and LightningModule: no registry of our own.
- Every key is checked against the `__init__` type hints; a mistake is one line on stderr, exit 2.
- Defaults: W&B logger (offline without an API key), `runs/` as the root folder, a checkpoint
  callback keeping `last.ckpt` + the best by the family's metric (`--checkpoint.*` to change it),
  and the dashboard callbacks: learning rates, throughput, GPU memory (`--lr_monitor.*`,
  `--throughput.*`; docs/wandb.md).
"""

from __future__ import annotations

import sys
from typing import Optional

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from gen_lightning.callbacks import GenCheckpoint, GenLearningRateMonitor, GenThroughput, GPUMemory, RunConfigSaver
from gen_lightning.callbacks.divergence import DivergenceGuard
from gen_lightning.callbacks.preemption import PreemptionCheckpoint
from gen_lightning.callbacks.rng_state import RNGState
from gen_lightning import cuda_probe, dead_rank, hook_dispatch, noise, result_metric_move
from gen_lightning.cli_args import prepare_args
from gen_lightning.cli_errors import condense, find_user_error
from gen_lightning.config_links import RefusesLinkedModelKeys, link_data_to_model
from gen_lightning.errors import UserError
from gen_lightning.preflight import check_checkpoint_family, check_checkpoint_fits, check_new_run, check_output_folders
from gen_lightning.resume import resolve_last_checkpoint
from gen_lightning.verbs import extra_verbs, verb_help
from gen_lightning.strategies import register as register_strategies

PROG = "gen-lightning"


class _OneLineErrorParser(RefusesLinkedModelKeys, LightningArgumentParser):
    """A config mistake is the user's: say it in one line (the key and the problem), not a usage dump."""

    def error(self, message: str, ex: Optional[Exception] = None):
        raise UserError(condense(message))


class GenLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(GenCheckpoint, "checkpoint")
        # What a W&B dashboard shows without any code (docs/wandb.md): always on, set with --<key>.*
        parser.add_lightning_class_args(GenLearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(GenThroughput, "throughput")
        parser.add_lightning_class_args(GPUMemory, "gpu_memory")
        # Reliability (docs/reliability.md): NaN/Inf guard, save-on-signal, RNG state in checkpoints.
        parser.add_lightning_class_args(DivergenceGuard, "divergence")
        parser.add_lightning_class_args(PreemptionCheckpoint, "preemption")
        parser.add_lightning_class_args(RNGState, "rng_state")
        link_data_to_model(parser)
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="start a run under the id of an existing run (replaces its config.yaml and summary.json)",
        )

    def _instantiate_trainer(self, config: dict, callbacks: list):
        # The project's progress bar (callbacks/progress_bar.py) unless the bar is off or another one is configured.
        from lightning.pytorch.callbacks import ProgressBar

        from gen_lightning.callbacks.progress_bar import GenProgressBar

        configured = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, GenProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the model's hyperparameters (and class) from --ckpt_path here, so first:
        # `last` -> the run's file (the logger's run id with it), and one line for a bad or foreign file.
        subcommand = self.config.get("subcommand")
        if subcommand:
            resolve_last_checkpoint(self.config[subcommand])
            check_checkpoint_family(
                self.config[subcommand].get("ckpt_path"), self.config[subcommand].get("model"), subcommand
            )
        super()._parse_ckpt_path()

    def _preflight(self) -> None:
        check_output_folders(self.trainer)
        check_new_run(
            self.trainer,
            self.config_init[self.subcommand].get("ckpt_path"),
            bool(self.config_init[self.subcommand].get("overwrite")),
        )
        check_checkpoint_fits(self.config_init[self.subcommand].get("ckpt_path"), self.model)

    # Before anything is written: unwritable output folders, unreadable or foreign checkpoints.
    before_fit = before_validate = before_test = before_predict = _preflight


def _trainer_defaults() -> dict:
    from jsonargparse import lazy_instance

    from gen_lightning.loggers import GenWandbLogger

    return {"default_root_dir": "runs", "logger": lazy_instance(GenWandbLogger)}


def build_cli(
    args: Optional[list[str]] = None, run: bool = True, cli_class: type[GenLightningCLI] = GenLightningCLI
) -> GenLightningCLI:
    noise.install()  # before parsing: jsonargparse may import DeepSpeed (gen_lightning/noise.py)
    dead_rank.install()  # a rank that dies is one line on the others, not a traceback (gen_lightning/dead_rank.py)
    hook_dispatch.install()  # hooks only to the callbacks and modules that implement them (hook_dispatch.py)
    cuda_probe.install()  # no NVML probe in every optimizer step on a machine without a GPU (gen_lightning/cuda_probe.py)
    result_metric_move.install()  # self.log without re-copying what is already in place (result_metric_move.py)
    # Here, where the CLI starts, and not as a side effect of an import: `strategy: ddp` (and ddp_spawn/fork/
    # notebook) become SubmoduleDDPStrategy, which is Lightning's DDP for every module that names no networks and
    # one wrapper per network for the GAN (gen_lightning/strategies/submodule_ddp.py).
    register_strategies()
    try:
        cli = cli_class(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfigSaver,
            trainer_defaults=_trainer_defaults(),
            parser_class=_OneLineErrorParser,
            parser_kwargs={"parser_mode": "omegaconf"},
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )
    except BaseException:
        if run:
            _finish_wandb_run(exit_code=1)
        raise
    if run:  # with run=False the caller trains, and ends the run
        _finish_wandb_run(exit_code=0)
    return cli


def _run_extra_verb(verb: str, argv: list[str]) -> int:
    import importlib

    return importlib.import_module(f"gen_lightning.commands.{verb}").main(argv) or 0


def _finish_wandb_run(exit_code: int) -> None:
    """End the W&B run the subcommand started. Lightning's WandbLogger leaves it open until the interpreter exits,
    and a second run in the same process (a notebook, the in-process tests, the matrix driver) would then log into
    the first one, whatever `--trainer.logger.init_args.id` says ("a wandb run already in progress ... will reuse
    this run"). wandb is only looked at when the run imported it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish(exit_code=exit_code)


def _close_process_group() -> None:
    """Leave a multi-process run in step. Measured: without barrier + destroy, ~1 in 4 CPU (gloo) runs
    abort at interpreter exit ("terminate called without an active exception", exit 134)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args and args[0] in extra_verbs():
            sys.exit(_run_extra_verb(args[0], args[1:]))
        if args in (["-h"], ["--help"]):  # the verb list (gen_lightning/verbs.py), not Lightning's parser
            print(verb_help())
            return
        args = prepare_args(args)  # --config files checked, `--key -1e-3` joined (cli_args.py)
        if argv is None:
            sys.argv[1:] = args  # Lightning reads sys.argv itself (and warns when given both)
        build_cli(None if argv is None else args)
        _close_process_group()
    except Exception as err:  # noqa: BLE001 - only user mistakes are turned into one line
        user_error = find_user_error(err)
        if user_error is None:
            raise
        print(f"{PROG}: error: {user_error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
