"""Issue 18, item 7: nothing is replaced without a word. `sample --out`, `export --out`, `convert -o` and a new run
under an existing run id refuse in one line (exit 2) unless `--overwrite` (or, for the run, `--ckpt_path last`);
the files they name keep their bytes and mtime. `--ckpt_path last` takes the newest `last*.ckpt`.
In-process and parse-only, except one 1-step run with --overwrite."""

from __future__ import annotations

import os

import pytest
import torch

from gen_lightning.resume import _run_id_with_newest_last, newest_last
from tests.conftest import CONFIGS
from tests.helpers import QUIET_NO_CALLBACKS, assert_one_line_error, snapshot, unchanged

VAE = str(CONFIGS / "vae" / "mlp_digits.yaml")


# -- sample / export / convert ----------------------------------------------------------------------------
def test_sample_refuses_an_existing_out_file(cli_inprocess):
    grid = cli_inprocess.cwd / "grid.png"
    grid.write_bytes(b"yesterday's grid")
    before = unchanged(grid)
    result = cli_inprocess("sample", "--ckpt", "missing.ckpt", "--out", "grid.png")
    assert_one_line_error(result, "--out 'grid.png' already exists", "--overwrite")
    assert unchanged(grid) == before
    # With --overwrite the target passes: the next problem is the (missing) checkpoint.
    result = cli_inprocess("sample", "--ckpt", "missing.ckpt", "--out", "grid.png", "--overwrite")
    assert_one_line_error(result, "--ckpt 'missing.ckpt' does not exist")


def test_sample_default_out_is_not_replaced_either(tmp_path, monkeypatch):
    from gen_lightning.errors import UserError
    from gen_lightning.outputs import check_output_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "samples.png").write_bytes(b"x")  # the default --out of an image model
    with pytest.raises(UserError, match="'samples.png' already exists; pass --overwrite"):
        check_output_file("samples.png", "--out", overwrite=False)


def test_export_refuses_a_folder_that_is_not_empty(cli_inprocess):
    out = cli_inprocess.cwd / "hf"
    out.mkdir()
    (out / "config.json").write_text("{}")
    before = snapshot(out)
    result = cli_inprocess("export", "--ckpt", "missing.ckpt", "--out", "hf")
    assert_one_line_error(result, "--out 'hf' is a folder that is not empty", "--overwrite")
    assert snapshot(out) == before
    result = cli_inprocess("export", "--ckpt", "missing.ckpt", "--out", "hf", "--overwrite")
    assert_one_line_error(result, "does not exist")  # past the target check: the checkpoint is missing


def _zero_folder(cwd):
    """Enough of a DeepSpeed checkpoint folder for `convert` to accept it as one (its `latest` tag file)."""
    folder = cwd / "last.ckpt"
    folder.mkdir()
    (folder / "latest").write_text("checkpoint")
    return folder


@pytest.mark.parametrize(
    "out_args, target", [(["-o", "best.ckpt"], "best.ckpt"), ([], "last-fp32.ckpt")], ids=["named", "default"]
)
def test_convert_refuses_an_existing_output(cli_inprocess, out_args, target):
    _zero_folder(cli_inprocess.cwd)
    existing = cli_inprocess.cwd / target
    existing.write_bytes(b"an earlier conversion")
    before = unchanged(existing)
    result = cli_inprocess("convert", "last.ckpt", *out_args)
    assert_one_line_error(result, f"'{target}' already exists", "--overwrite")
    assert unchanged(existing) == before


def test_convert_output_that_is_a_folder(cli_inprocess):
    _zero_folder(cli_inprocess.cwd)
    (cli_inprocess.cwd / "out").mkdir()
    result = cli_inprocess("convert", "last.ckpt", "-o", "out")
    assert_one_line_error(result, "-o 'out' is a folder", "-o out/model-fp32.ckpt")


# -- a run id that exists -------------------------------------------------------------------------------------
def _existing_run(cwd, run_id="r1"):
    """The files a finished run leaves in runs/gen-lightning/<id>/."""
    folder = cwd / "runs" / "gen-lightning" / run_id
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("model: {lr: 0.001}\n")
    (folder / "summary.json").write_text('{"global_step": 100}')
    torch.save({"global_step": 100}, folder / "checkpoints" / "last.ckpt")
    return folder


def test_new_run_with_an_existing_run_id_is_refused(cli_inprocess):
    folder = _existing_run(cli_inprocess.cwd)
    before = snapshot(folder)
    result = cli_inprocess(
        "fit", "--config", VAE, *QUIET_NO_CALLBACKS, "--trainer.max_steps", "1", "--trainer.logger.init_args.id", "r1"
    )
    assert_one_line_error(
        result,
        "run 'r1' (--trainer.logger.init_args.id) already exists",
        "config.yaml, summary.json, checkpoints/",
        "--ckpt_path last",
        "--overwrite",
    )
    assert snapshot(folder) == before
    assert not list(folder.glob("checkpoints/last-v*.ckpt"))


def test_wandb_run_id_from_the_environment_is_checked_too(cli_inprocess, monkeypatch):
    folder = _existing_run(cli_inprocess.cwd, "slurm-77")
    before = snapshot(folder)
    monkeypatch.setenv("WANDB_RUN_ID", "slurm-77")
    result = cli_inprocess("fit", "--config", VAE, *QUIET_NO_CALLBACKS, "--trainer.max_steps", "1")
    assert_one_line_error(result, "run 'slurm-77' (WANDB_RUN_ID) already exists")
    assert snapshot(folder) == before


def test_a_requeued_slurm_job_is_the_same_run(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from gen_lightning.loggers import GenWandbLogger
    from gen_lightning.preflight import check_new_run

    monkeypatch.setenv("WANDB_MODE", "disabled")
    _existing_run(tmp_path, "slurm-78")
    logger = GenWandbLogger(save_dir=str(tmp_path / "runs"), id="slurm-78")
    trainer = SimpleNamespace(loggers=[logger], default_root_dir=str(tmp_path))
    from gen_lightning.errors import UserError

    with pytest.raises(UserError, match="already exists"):
        check_new_run(trainer, None, overwrite=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    check_new_run(trainer, None, overwrite=False)  # requeued: Lightning resumes the hpc checkpoint itself
    check_new_run(trainer, "runs/gen-lightning/slurm-78/checkpoints/last.ckpt", overwrite=False)


def test_overwrite_starts_the_run_again_and_last_takes_its_checkpoint(tmp_path, monkeypatch):
    from gen_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr("sys.argv", ["gen-lightning"])
    folder = _existing_run(tmp_path)
    os.utime(folder / "checkpoints" / "last.ckpt", (1e9, 1e9))  # written long ago
    main(
        [
            "fit",
            "--config",
            VAE,
            *QUIET_NO_CALLBACKS,
            "--trainer.max_steps",
            "1",
            "--model.hidden_dim",
            "16",
            "--model.latent_dim",
            "2",
            "--trainer.logger.init_args.id",
            "r1",
            "--overwrite",
        ]
    )
    assert (folder / "config.yaml").read_text() != "model: {lr: 0.001}\n"
    # Whether Lightning replaced last.ckpt or wrote last-v1.ckpt beside it, `--ckpt_path last` takes this run's.
    assert torch.load(newest_last(folder / "checkpoints"), weights_only=True)["global_step"] == 1


# -- --ckpt_path last with several last*.ckpt ------------------------------------------------------------------
def test_newest_last_is_the_most_recently_written(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    assert newest_last(checkpoints) == checkpoints / "last.ckpt"  # none yet: the name resume.py reports
    for name, when in (
        ("last.ckpt", 3e9),
        ("last-v1.ckpt", 1e9),
        ("last-v2.ckpt", 2e9),
        ("last-fp32.ckpt", 4e9),
        ("best-step=5.ckpt", 5e9),
    ):
        (checkpoints / name).write_bytes(b"x")
        os.utime(checkpoints / name, (when, when))
    assert newest_last(checkpoints).name == "last.ckpt"
    os.utime(checkpoints / "last-v2.ckpt", (3.5e9, 3.5e9))
    assert newest_last(checkpoints).name == "last-v2.ckpt"  # never an older last.ckpt over a newer last-vN.ckpt
    os.utime(checkpoints / "last.ckpt", (3.5e9, 3.5e9))
    assert newest_last(checkpoints).name == "last-v2.ckpt"  # a tie: the higher version


def test_ckpt_path_last_finds_the_run_whose_newest_last_is_newest(tmp_path):
    for run, name, when in (("a", "last.ckpt", 2e9), ("b", "last.ckpt", 1e9), ("b", "last-v1.ckpt", 3e9)):
        path = tmp_path / run / "checkpoints" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (when, when))
    assert _run_id_with_newest_last(tmp_path) == "b"
