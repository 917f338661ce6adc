"""Every private Lightning (and jsonargparse/torch) name gen-lightning touches still exists.

gen-lightning overrides or reads about twenty private hooks (listed below, each with the file that uses it);
pyproject.toml pins `lightning` to the minor versions they were checked on. A Lightning upgrade that renames
one fails here, naming the hook and the file, instead of as a confusing error deep inside a training run.
"""

from __future__ import annotations

import importlib

import pytest

# (module, attribute path, the gen-lightning file that relies on it)
PRIVATE_NAMES = [
    ("lightning.pytorch.core.optimizer", "_init_optimizers_and_lr_schedulers", "strategies/deepspeed_engines.py"),
    ("lightning.fabric.strategies.registry", "_StrategyRegistry", "strategies/submodule_ddp.py"),
    ("lightning.pytorch.overrides.distributed", "_register_ddp_comm_hook", "strategies/submodule_ddp.py"),
    ("lightning.pytorch.overrides.distributed", "_sync_module_states", "strategies/submodule_ddp.py"),
    ("lightning.pytorch.callbacks.throughput_monitor", "_plugin_to_compute_dtype", "callbacks/throughput.py"),
    ("lightning.fabric.strategies.launchers.subprocess_script", "_ChildProcessObserver._run", "dead_rank.py"),
    ("lightning.fabric.strategies.launchers.subprocess_script", "_ChildProcessObserver._terminate_all", "dead_rank.py"),
    ("lightning.pytorch.strategies.launchers.subprocess_script", "_launch_process_observer", "dead_rank.py"),
    ("lightning.pytorch.callbacks", "ModelCheckpoint._save_last_checkpoint", "callbacks/checkpoint.py"),
    ("lightning.pytorch.callbacks", "ModelCheckpoint._save_topk_checkpoint", "callbacks/checkpoint.py"),
    ("lightning.pytorch.callbacks", "ModelCheckpoint._should_skip_saving_checkpoint", "callbacks/checkpoint.py"),
    ("lightning.pytorch.callbacks", "ModelCheckpoint._monitor_candidates", "callbacks/preemption.py"),
    (
        "lightning.pytorch.loops.training_epoch_loop",
        "_TrainingEpochLoop._broadcast_sigterm_tensor",
        "callbacks/preemption.py",
    ),
    ("lightning.pytorch.callbacks", "RichProgressBar._add_task", "callbacks/progress_bar.py"),
    ("lightning.pytorch.callbacks", "RichProgressBar._get_train_description", "callbacks/progress_bar.py"),
    ("lightning.pytorch.callbacks", "RichProgressBar._update", "callbacks/progress_bar.py"),
    ("lightning.pytorch.cli", "LightningCLI._instantiate_trainer", "cli.py"),
    ("lightning.pytorch.cli", "LightningCLI._parse_ckpt_path", "cli.py"),
    ("lightning.pytorch.strategies", "DeepSpeedStrategy._init_deepspeed_distributed", "strategies/deepspeed_cpu.py"),
    ("lightning.pytorch.strategies", "DeepSpeedStrategy._init_optimizers", "strategies/deepspeed_cpu.py"),
    ("lightning.pytorch.strategies", "DeepSpeedStrategy._restore_zero_state", "strategies/deepspeed_cpu.py"),
    ("lightning.pytorch.strategies", "DDPStrategy._setup_model", "strategies/submodule_ddp.py"),
    ("lightning.pytorch.plugins.precision", "Precision._after_closure", "strategies/deepspeed_engines.py"),
    ("jsonargparse", "ArgumentParser._load_config_parser_mode", "config_links.py"),
    ("torch", "_foreach_norm", "callbacks/divergence.py"),
    ("lightning.pytorch.trainer.call", "_call_callback_hooks", "hook_dispatch.py"),
    ("lightning.pytorch.trainer.call", "_call_lightning_module_hook", "hook_dispatch.py"),
]


def _resolve(module: str, path: str):
    value = importlib.import_module(module)
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("module", "path", "user"), PRIVATE_NAMES, ids=[p for _, p, _ in PRIVATE_NAMES])
def test_private_name_exists(module, path, user):
    try:
        _resolve(module, path)
    except (ImportError, AttributeError):
        pytest.fail(
            f"{module}.{path} is gone from this Lightning/jsonargparse (gen_lightning/{user} uses it): "
            f"install the version pinned in pyproject.toml or port gen_lightning/{user}"
        )


def test_private_attributes_of_live_objects_exist():
    """Attributes set in `__init__`, so only an instance has them."""
    import torch
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.strategies import DDPStrategy

    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    checks = {
        "Trainer._accelerator_connector.cluster_environment (callbacks/preemption.py)": lambda: (
            trainer._accelerator_connector.cluster_environment
        ),
        "Trainer._logger_connector.should_update_logs (callbacks/logging_step.py)": lambda: (
            trainer._logger_connector.should_update_logs
        ),
        "FitLoop._combined_loader (callbacks/checkpoint.py)": lambda: trainer.fit_loop._combined_loader,
        "FitLoop._data_source (strategies/deepspeed_cpu.py)": lambda: trainer.fit_loop._data_source,
        "epoch_loop._batches_that_stepped (callbacks/logging_step.py)": lambda: (
            trainer.fit_loop.epoch_loop._batches_that_stepped
        ),
        "LightningModule._trainer (capabilities.py, models/image_family.py)": lambda: LightningModule()._trainer,
        "ModelCheckpoint._every_n_train_steps, _last_global_step_saved (callbacks/checkpoint.py)": lambda: (
            ModelCheckpoint()._every_n_train_steps,
            ModelCheckpoint()._last_global_step_saved,
        ),
        "WandbLogger._experiment, _wandb_init (loggers.py)": lambda: (
            WandbLogger(offline=True)._experiment,
            WandbLogger(offline=True)._wandb_init,
        ),
        "DDPStrategy._ddp_comm_hook/_state/_wrapper (strategies/submodule_ddp.py)": lambda: (
            DDPStrategy()._ddp_comm_hook,
            DDPStrategy()._ddp_comm_state,
            DDPStrategy()._ddp_comm_wrapper,
        ),
        "nn.Module._compiled_call_impl (models/compiled.py)": lambda: torch.nn.Linear(1, 1)._compiled_call_impl,
    }
    missing = []
    for name, read in checks.items():
        try:
            read()
        except AttributeError:
            missing.append(name)
    assert not missing, f"private attributes gone from this Lightning/torch: {missing}"


def test_the_pin_covers_the_installed_lightning():
    """The pin in pyproject.toml names the minor versions checked here; the installed one must be among them."""
    import re
    from pathlib import Path

    import lightning

    pin = re.search(r'"lightning(>=[^"]+)"', (Path(__file__).parents[1] / "pyproject.toml").read_text()).group(1)
    low, high = re.fullmatch(r">=(\d+\.\d+),<(\d+\.\d+)", pin).groups()
    installed = tuple(int(x) for x in lightning.__version__.split(".")[:2])
    assert tuple(map(int, low.split("."))) <= installed < tuple(map(int, high.split(".")))
