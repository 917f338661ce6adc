"""What a newcomer sees of a run: no library noise, the run folder once, a summary at the end, a progress bar
that counts steps when the run is bounded by steps."""

from __future__ import annotations

from types import SimpleNamespace

from tests.conftest import CONFIGS, cli_env

NOISE = [
    "'set_vital' is deprecated",  # torchdata
    "isinstance(treespec, LeafSpec)",  # Lightning's _pytree on torch 2.14
    "seamless cloud logging",  # Lightning's litlogger tip
    "The `srun` command is available on your system but is not used",  # SLURMEnvironment, outside a job
    "Setting accelerator to CPU",  # DeepSpeed
    "v_num",
]


def test_a_run_says_where_it_is_and_how_it_ended_without_library_noise(cli):
    result = cli(
        "fit",
        "--config",
        CONFIGS / "vae" / "mlp_digits.yaml",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.limit_val_batches",
        "2",
        env=cli_env(WANDB_MODE="offline", HOME=str(cli.cwd / "home")),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert [n for n in NOISE if n in output] == []
    (run_line,) = [line for line in result.stdout.splitlines() if line.startswith("run folder: ")]
    run = cli.cwd / run_line.removeprefix("run folder: ")
    assert (run / "config.yaml").is_file()
    summary = result.stdout[result.stdout.index("run finished at step 4") :]
    assert "last checkpoint: " in summary and "best checkpoint: " in summary and "(val/elbo = " in summary
    assert "final validation: " in summary and "val/fid " in summary
    assert "W&B (offline): upload with `wandb sync " in summary and "offline-run-" in summary


def test_progress_bar_counts_steps_when_the_run_is_bounded_by_steps():
    from gen_lightning.callbacks.progress_bar import GenProgressBar

    bar = GenProgressBar()
    by_steps = SimpleNamespace(max_steps=300, max_epochs=-1, num_training_batches=2600, global_step=12)
    bar._trainer = by_steps
    assert bar.total_train_batches == 300 and bar._get_train_description(0) == "Step"
    bar._trainer = SimpleNamespace(max_steps=-1, max_epochs=20, num_training_batches=26)
    assert bar.total_train_batches == 26 and bar._get_train_description(3).startswith("Epoch 3/19")
