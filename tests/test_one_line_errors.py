"""Issue 18, item 8: the mistakes that printed a traceback and exited 1 are one line naming the problem and the
fix, exit 2, and the file they name is left as it was. In-process (`cli_inprocess`); only the image and
full-disk cases train, for a few steps."""

from __future__ import annotations

import errno
import random

import pytest
import torch
from PIL import Image

from tests.conftest import CONFIGS
from tests.helpers import QUIET_NO_CALLBACKS, TINY_VAE, assert_one_line_error, snapshot, unchanged
from tests.sweep_helpers import sweep_text

VAE = str(CONFIGS / "vae" / "mlp_digits.yaml")
GAN = str(CONFIGS / "gan" / "mlp_digits.yaml")


# -- config files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, fragments",
    [
        ("model:\n  lr: 1.0e-3\n  beta: [1\n", ["bad.yaml:4:1", "invalid YAML", "flow sequence", "fix the file"]),
        (
            "trainer:\n  max_steps: 1\nmodel:\n  beta: 1.0\ntrainer:\n  max_steps: 2\n",
            ["bad.yaml:5:1", "duplicate key 'trainer'", "first given on line 1", "keep one of them"],
        ),
        ("model:\n  lr: 1.0e-3\n  lr: 2.0e-3\n", ["bad.yaml:3:3", "duplicate key 'lr'", "line 2"]),
        ("model:\n\tlr: 1.0e-3\n", ["bad.yaml:2:1", "invalid YAML", "spaces, not tabs"]),
    ],
    ids=["syntax", "duplicate-top-level", "duplicate-nested", "tab"],
)
def test_yaml_mistake_names_file_line_and_problem(cli_inprocess, text, fragments):
    bad = cli_inprocess.cwd / "bad.yaml"
    bad.write_text(text)
    before = unchanged(bad)
    for spelling in (["--config", "bad.yaml"], ["--config=bad.yaml"], ["-c", "bad.yaml"]):
        result = cli_inprocess("fit", "--config", VAE, *spelling, "--trainer.logger", "false")
        assert_one_line_error(result, *fragments)
    assert unchanged(bad) == before
    assert not (cli_inprocess.cwd / "runs").exists()


def test_yaml_file_given_to_a_key_is_checked_too(cli_inprocess):
    (cli_inprocess.cwd / "model.yaml").write_text(
        "class_path: gen_lightning.models.VAEModule\ninit_args:\n  lr: 1.0e-3\n  lr: 2.0e-3\n"
    )
    result = cli_inprocess("fit", "--config", VAE, "--model", "model.yaml", "--trainer.logger", "false")
    assert_one_line_error(result, "--model model.yaml:4:3", "duplicate key 'lr'")


def test_sweep_file_with_a_duplicate_key_names_the_line(cli_inprocess):
    sweep = cli_inprocess.cwd / "s.yaml"
    sweep.write_text(sweep_text() + "method: random\n")
    result = cli_inprocess("sweep", "s.yaml", "--local")
    assert_one_line_error(result, "s.yaml:5:1", "duplicate key 'method'", "first given on line 1")
    assert sorted(p.name for p in cli_inprocess.cwd.iterdir()) == ["s.yaml"]


# -- learning rates -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config, args, fragment",
    [
        (VAE, ["--model.lr", "-1e-3"], "model.lr must be > 0, got -0.001"),
        (VAE, ["--model.lr=-1e-3"], "model.lr must be > 0, got -0.001"),
        (VAE, ["--model.lr", "0"], "model.lr must be > 0, got 0"),
        (GAN, ["--model.d_lr", "-2e-4"], "model.d_lr must be > 0, got -0.0002"),
    ],
    ids=["space", "equals", "zero", "gan-d_lr"],
)
def test_learning_rate_must_be_positive(cli_inprocess, config, args, fragment):
    result = cli_inprocess("fit", "--config", config, "--trainer.logger", "false", *args)
    assert_one_line_error(result, fragment, "give a positive learning rate")
    assert not (cli_inprocess.cwd / "runs").exists()


def test_a_negative_number_after_a_key_is_its_value():
    from gen_lightning.cli_args import prepare_args

    assert prepare_args(["fit", "--model.lr", "-1e-3", "--trainer.max_steps", "-1", "--a", "-.5", "--b", "-v"]) == [
        "fit",
        "--model.lr=-1e-3",
        "--trainer.max_steps=-1",
        "--a=-.5",
        "--b",
        "-v",
    ]


def test_min_lr_zero_is_a_valid_floor():
    from gen_lightning.errors import UserError, check_learning_rates

    check_learning_rates(lr=1e-3, min_lr=0.0)
    with pytest.raises(UserError, match="model.min_lr must be >= 0, got -1"):
        check_learning_rates(lr=1e-3, min_lr=-1.0)


# -- checkpoint contents --------------------------------------------------------------------------------
def _lightning_checkpoint() -> dict:
    """The keys a `gen-lightning fit` checkpoint has (no weights needed: the checks run before the model is built)."""
    return {
        "state_dict": {},
        "pytorch-lightning_version": "2.6.6",
        "optimizer_states": [{}],
        "loops": {},
        "epoch": 0,
        "global_step": 2,
        "hyper_parameters": {"_class_path": "gen_lightning.models.VAEModule"},
    }


def _without(*keys):
    return lambda: {k: v for k, v in _lightning_checkpoint().items() if k not in keys}


@pytest.mark.parametrize(
    "make, subcommand, fragments",
    [
        (lambda: [torch.zeros(2)], "fit", ["is not a Lightning checkpoint", "holds a list, not a dict"]),
        (lambda: {"net.weight": torch.zeros(2)}, "fit", ["no model weights (state_dict)", "no Lightning version"]),
        (
            _without("optimizer_states"),
            "fit",
            ["cannot be used to resume training", "no optimizer states", "save_weights_only"],
        ),
        (_without("loops"), "fit", ["cannot be used to resume training", "no loop state"]),
        (_without("optimizer_states", "loops"), "fit", ["no optimizer states, no loop state"]),
        (_without("pytorch-lightning_version"), "validate", ["cannot be used:", "no Lightning version"]),
        (
            lambda: {**_lightning_checkpoint(), "pytorch-lightning_version": "1.4.0"},
            "fit",
            ["written by Lightning 1.4.0", "resuming needs a checkpoint of Lightning 2.x", "validate, test or sample"],
        ),
    ],
    ids=["not-a-dict", "bare-state-dict", "no-optimizer", "no-loops", "weights-only", "no-version", "old-lightning"],
)
def test_checkpoint_lacking_what_the_command_needs(cli_inprocess, make, subcommand, fragments):
    ckpt = cli_inprocess.cwd / "odd.ckpt"
    torch.save(make(), ckpt)
    before = unchanged(ckpt)
    result = cli_inprocess(subcommand, "--config", VAE, "--trainer.logger", "false", "--ckpt_path", "odd.ckpt")
    assert_one_line_error(result, "odd.ckpt", *fragments)
    assert unchanged(ckpt) == before
    assert not list(cli_inprocess.cwd.rglob("checkpoints"))


def test_weights_only_checkpoint_is_still_fine_for_validate():
    from gen_lightning.preflight import check_checkpoint_contents

    check_checkpoint_contents("w.ckpt", _without("optimizer_states", "loops")(), "validate")


@pytest.mark.parametrize("inside", [[], ["checkpoints/last.ckpt"]], ids=["empty", "run-folder"])
def test_a_folder_as_ckpt_path_is_a_folder(cli_inprocess, inside):
    folder = cli_inprocess.cwd / "run"
    folder.mkdir()
    for name in inside:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save(_lightning_checkpoint(), folder / name)
    before = snapshot(folder)
    result = cli_inprocess("fit", "--config", VAE, "--trainer.logger", "false", "--ckpt_path", "run")
    assert_one_line_error(
        result,
        "--ckpt_path 'run' is a folder, not a checkpoint file",
        *(["e.g. --ckpt_path run/checkpoints/last.ckpt"] if inside else []),
    )
    assert "does not exist" not in result.stderr
    assert snapshot(folder) == before


def test_safe_torch_load_says_folder(tmp_path):
    from gen_lightning.checkpoint_io import safe_torch_load
    from gen_lightning.errors import UserError

    with pytest.raises(UserError, match="is a folder, not a checkpoint file"):
        safe_torch_load(tmp_path)


# -- images -----------------------------------------------------------------------------------------------
def test_decompression_bomb_is_a_corrupt_or_unreadable_image(cli_inprocess, monkeypatch):
    # PIL refuses images over 2 x MAX_IMAGE_PIXELS; a lower limit makes a 64 x 64 file the "bomb" (a real one is
    # a 50 MB+ allocation).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = cli_inprocess.cwd / "images"
    (root / "a").mkdir(parents=True)
    for i in range(8):
        Image.new("L", (8, 8), color=random.randint(0, 255)).save(root / "a" / f"{i}.png")
    Image.new("L", (64, 64)).save(root / "a" / "bomb.png")
    before = unchanged(root / "a" / "bomb.png")
    result = cli_inprocess(
        *TINY_VAE,
        "--data.dataset",
        "folder",
        "--data.root",
        str(root),
        "--data.image_size",
        "8",
        "--data.channels",
        "1",
        "--data.batch_size",
        "3",
        "--data.val_fraction",
        "0.3",
        "--trainer.max_steps",
        "20",
        "--trainer.logger",
        "false",
    )
    assert_one_line_error(result, "corrupt or unreadable image", "bomb.png", "decompression bomb")
    assert unchanged(root / "a" / "bomb.png") == before
    assert not list(cli_inprocess.cwd.rglob("*.ckpt"))


# -- where sample / export / convert write ---------------------------------------------------------------
def test_sample_out_folder(cli_inprocess):
    (cli_inprocess.cwd / "grids").mkdir()
    result = cli_inprocess("sample", "--ckpt", "missing.ckpt", "--out", "grids")
    assert_one_line_error(result, "--out 'grids' is a folder", "--out grids/samples.png")


def test_sample_out_read_only_file(cli_inprocess):
    target = cli_inprocess.cwd / "grid.png"
    target.write_bytes(b"an older grid")
    target.chmod(0o444)
    before = unchanged(target)
    result = cli_inprocess("sample", "--ckpt", "missing.ckpt", "--out", "grid.png", "--overwrite")
    assert_one_line_error(result, "--out 'grid.png' is read-only", "chmod u+w")
    assert unchanged(target) == before


def test_sample_out_under_a_file(cli_inprocess):
    (cli_inprocess.cwd / "occupied").write_text("a file")
    result = cli_inprocess("sample", "--ckpt", "missing.ckpt", "--out", "occupied/grid.png")
    assert_one_line_error(result, "occupied/grid.png", "is a file, not a folder")


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda path: path.mkdir(), "is a folder, not a checkpoint file or a Hugging Face GPT-2 export"),
        (lambda path: torch.save([1, 2], path), "is not a Lightning checkpoint (it holds a list, not a dict)"),
    ],
    ids=["folder", "not-a-dict"],
)
def test_sample_ckpt_that_is_no_checkpoint(cli_inprocess, make, fragment):
    make(cli_inprocess.cwd / "odd.ckpt")
    result = cli_inprocess("sample", "--ckpt", "odd.ckpt")
    assert_one_line_error(result, "--ckpt 'odd.ckpt'", fragment)


def test_export_out_file(cli_inprocess):
    target = cli_inprocess.cwd / "model.bin"
    target.write_bytes(b"weights")
    before = unchanged(target)
    result = cli_inprocess("export", "--ckpt", "missing.ckpt", "--out", "model.bin")
    assert_one_line_error(result, "--out 'model.bin' is a file", "give a folder")
    assert unchanged(target) == before


# -- sweep bounds ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parameters, message",
    [
        (
            "{model.lr: {distribution: log_uniform_values, min: 0, max: 0.1}}",
            "parameter model.lr: log_uniform_values needs bounds > 0 (a log scale), got min 0",
        ),
        ("{model.lr: {distribution: log_uniform_values, min: -1.0e-3, max: 0.1}}", "got min -0.001; give min > 0"),
        ("{model.lr: {distribution: uniform, min: 0.1, max: 0.01}}", "min 0.1 is greater than max 0.01; swap them"),
        (
            "{model.lr: {distribution: log_uniform_values, min: 1e-4, max: 1.0e-2}}",
            "min must be a number, got '1e-4'; YAML reads 1e-4 as text",
        ),
        ("{model.lr: {values: [0.001, 0.01], probabilities: [0.7, 0.7]}}", "`probabilities` has no Optuna equivalent"),
    ],
    ids=["log-zero", "log-negative", "min-over-max", "yaml-string", "probabilities"],
)
def test_sweep_bounds_are_one_line(cli_inprocess, parameters, message):
    sweep = cli_inprocess.cwd / "s.yaml"
    sweep.write_text(sweep_text("random", parameters))
    before = unchanged(sweep)
    result = cli_inprocess("sweep", "s.yaml", "--local", "--count", "2")
    assert_one_line_error(result, message)
    assert unchanged(sweep) == before
    assert sorted(p.name for p in cli_inprocess.cwd.iterdir()) == ["s.yaml"]


# -- W&B and the disk --------------------------------------------------------------------------------------
def test_wandb_online_without_a_key_is_one_line_before_training(cli_inprocess, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(cli_inprocess.cwd))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    result = cli_inprocess("fit", "--config", VAE, *QUIET_NO_CALLBACKS, "--trainer.max_steps", "2")
    assert_one_line_error(result, "WANDB_MODE=online but no API key found", "wandb login", "WANDB_MODE=offline")
    assert not list(cli_inprocess.cwd.rglob("*.ckpt")) and not list(cli_inprocess.cwd.rglob("config.yaml"))


def test_full_disk_during_a_checkpoint_write(cli_inprocess, monkeypatch):
    import gen_lightning.checkpoint_io as checkpoint_io

    real_save, calls = torch.save, []

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        calls.append(obj.get("global_step"))
        if len(calls) > 1:  # the first checkpoint fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", save_until_the_disk_is_full)
    result = cli_inprocess(
        *TINY_VAE,
        "--trainer.max_steps",
        "4",
        "--checkpoint.every_n_train_steps",
        "1",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        "out",
    )
    assert_one_line_error(
        result, "No space left on device", "the last complete checkpoint is intact", "--ckpt_path last"
    )
    assert calls == [1, 2]
    last = cli_inprocess.cwd / "out" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 1  # the first checkpoint, whole
    assert not [p for p in (cli_inprocess.cwd / "out").rglob("*") if ".tmp" in p.name]


def test_full_disk_during_the_config_write(cli_inprocess, monkeypatch):
    from jsonargparse import ArgumentParser

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "out/config.yaml")

    monkeypatch.setattr(ArgumentParser, "save", full)
    result = cli_inprocess(
        *TINY_VAE, "--trainer.max_steps", "2", "--trainer.logger", "false", "--trainer.default_root_dir", "out"
    )
    assert_one_line_error(result, "No space left on device (writing 'out/config.yaml')")
    assert not list(cli_inprocess.cwd.rglob("*.ckpt"))


def test_only_a_full_disk_among_os_errors_is_one_line():
    from gen_lightning.cli_errors import find_user_error

    assert find_user_error(OSError(errno.EIO, "Input/output error")) is None
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert str(find_user_error(wrapped)).startswith("No space left on device;")


def test_negative_learning_rate_through_the_console_script(cli):
    # The real process: main() reads sys.argv itself (the joined `--model.lr=-1e-3` goes back into it).
    result = cli("fit", "--config", VAE, "--trainer.logger", "false", "--model.lr", "-1e-3")
    assert_one_line_error(result, "model.lr must be > 0, got -0.001")
    assert "not recommended to provide both args and command line arguments" not in result.stderr
