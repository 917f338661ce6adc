"""W&B as the default logger: what an offline run records, read back from its `.wandb` file.

The records are read with `wandb leet inspect --json`, wandb's own reader of the transaction log;
it works offline. No test opens a network connection: every run is WANDB_MODE=offline (or disabled).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CONFIGS, REPO, cli_env
from tests.helpers import assert_same_nonblank_image, history, history_keys, merged_config, wandb_records

FAKE_KEY = "fake-key-1234567890abcdef1234567890abcdef12345678"
TINY_RUN = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "6",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.log_every_n_steps",
    "2",
    "--trainer.enable_progress_bar",
    "false",
    "--throughput.window_size",
    "2",
]


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # HOME inside tmp_path: wandb's artifact staging and settings land where the secret scan looks.
    return cli_env(WANDB_MODE="offline", HOME=str(tmp_path / "home"), **extra)


def test_vae_offline_run_records_losses_lr_throughput_image_config_and_checkpoints(cli, tmp_path):
    result = cli(
        "fit",
        "--config",
        CONFIGS / "vae" / "mlp_digits.yaml",
        *TINY_RUN,
        "--trainer.callbacks.every_n_steps=0",
        "--trainer.callbacks.num_samples=16",  # the config's ImageSamples
        "--trainer.logger.init_args.log_model=true",
        "--trainer.logger.init_args.tags=[smoke,vae]",
        "--trainer.logger.init_args.name=tiny-vae",
        env=offline_env(tmp_path, WANDB_API_KEY=FAKE_KEY),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    records = wandb_records(tmp_path / "runs" / "wandb")

    keys = history_keys(records)
    for key in (
        "train/loss",
        "train/kl",
        "val/elbo",
        "lr-Adam",
        "throughput/samples_per_sec",
        "trainer/global_step",
        "throughput/flops_per_sec",
        "val/fid",
        "val/is",
    ):
        assert key in keys, f"{key} not logged; logged: {sorted(keys)}"
    assert not any(k.startswith("gpu/") for k in keys), "GPU memory is logged only on a GPU"
    assert (
        "throughput/device/mfu" not in keys
        and "MFU is not logged: the peak FLOPs of this device (cpu)" in result.stderr
    )
    flops = [item["throughput/flops_per_sec"] for item in history(records) if "throughput/flops_per_sec" in item]
    assert flops and all(v > 1e6 for v in flops)
    lr = [item["lr-Adam"] for item in history(records) if "lr-Adam" in item]
    assert lr and all(v == pytest.approx(1e-3) for v in lr)
    speeds = [item["throughput/samples_per_sec"] for item in history(records) if "throughput/samples_per_sec" in item]
    assert speeds and all(v > 0 for v in speeds)
    # leet flattens the image record: samples/samples._type, .count, .filenames
    images = [item for item in history(records) if item.get("samples/samples._type") == "images/separated"]
    assert images and all(item["samples/samples.count"] == 1 for item in images)
    png = (
        next((tmp_path / "runs" / "wandb").glob("offline-run-*")) / "files" / images[0]["samples/samples.filenames"][0]
    )
    # The PNG W&B stored shows what the local grid shows, pixel for pixel (it was all black: float grid).
    local = next((tmp_path / "runs").glob("gen-lightning/*/samples/samples_step*.png"))
    assert_same_nonblank_image(png, local)

    config = merged_config(records)
    assert config["model"]["lr"] == pytest.approx(1e-3) and config["model"]["class_path"].endswith("VAEModule")
    assert config["data"]["batch_size"] == 64 and config["trainer"]["limit_train_batches"] == 6
    assert config["command"].startswith("gen-lightning fit --config")
    if (REPO / ".git").exists():  # the commit of the checkout gen_lightning runs from
        assert len(config["git"]["commit"]) == 40 and isinstance(config["git"]["dirty"], bool)
    assert "_instantiator" not in config

    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["project"] == "gen-lightning" and run["run_group"] == "vae-mlp-digits"
    assert run["display_name"] == "tiny-vae" and run["tags"] == ["smoke", "vae"]

    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    assert artifacts and all(a["type"] == "model" for a in artifacts), "log_model: checkpoints as artifacts"
    assert {"best", "latest"} <= {alias for a in artifacts for alias in a["aliases"]}

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10
    leaks = [p for p in written if FAKE_KEY.encode() in p.read_bytes() or b"fake-key-1234" in p.read_bytes()]
    assert leaks == [], f"the API key was written to {leaks}"


def test_logger_goes_offline_without_a_key_and_says_how_to_sync(tmp_path, monkeypatch):
    from gen_lightning.loggers import GenWandbLogger

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.warns(UserWarning, match=r"no API key found, logging offline .*wandb sync"):
        logger = GenWandbLogger(save_dir=str(tmp_path / "runs"))
    assert logger.mode == "offline"

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert GenWandbLogger(save_dir=str(tmp_path / "runs")).mode == "online"
    assert GenWandbLogger(save_dir=str(tmp_path / "runs"), offline=True).mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert GenWandbLogger(save_dir=str(tmp_path / "runs"), offline=False).mode == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert GenWandbLogger(save_dir=str(tmp_path / "runs"), offline=False).mode == "offline"


def test_command_line_masks_secrets_and_config_folds_init_args():
    from gen_lightning.callbacks.config_saver import command_line, fold_init_args

    line = command_line(["fit", "--api_key=abc123", "--model.lr", "0.1", "token:xyz"])
    assert "abc123" not in line and "xyz" not in line and "--model.lr 0.1" in line
    folded = fold_init_args(
        {
            "model": {
                "class_path": "m.M",
                "init_args": {"lr": 0.1, "net": {"class_path": "n.N", "init_args": {"width": 8}}},
            },
            "seed_everything": 0,
        }
    )
    assert folded == {
        "model": {"class_path": "m.M", "lr": 0.1, "net": {"class_path": "n.N", "width": 8}},
        "seed_everything": 0,
    }


FAMILIES = {
    "gan": (
        [
            "--config",
            CONFIGS / "gan" / "dcgan_digits.yaml",
            "--trainer.callbacks.every_n_steps=2",
            "--trainer.callbacks.num_samples=16",
        ],
        {
            "train/d_loss",
            "train/g_loss",
            "val/d_loss",
            "lr-Adam",
            "lr-Adam-1",
            "throughput/samples_per_sec",
            "throughput/flops_per_sec",
            "val/fid",
        },
        "samples/samples._type",
        "images/separated",
        "GANModule",
    ),
    "gpt": (
        [
            "--config",
            CONFIGS / "gpt" / "nano_stdlib.yaml",
            "--trainer.max_steps=6",
            "--trainer.val_check_interval=6",
            "--trainer.callbacks.every_n_steps=1000",
            "--trainer.callbacks.max_new_tokens=16",
        ],
        {
            "train/loss",
            "val/loss",
            "val/perplexity",
            "lr-AdamW/pg1",
            "throughput/tokens_per_sec",
            "throughput/flops_per_sec",
        },
        "samples/text._type",
        "table-file",
        "GPTModule",
    ),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gan_and_gpt_offline_runs_record_their_metrics_samples_and_config(cli, tmp_path, family):
    args, expected_keys, sample_key, sample_type, module = FAMILIES[family]
    result = cli("fit", *args, *TINY_RUN, env=offline_env(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    records = wandb_records(tmp_path / "runs" / "wandb")
    keys = history_keys(records)
    assert expected_keys <= keys, f"missing {sorted(expected_keys - keys)}"
    assert any(item.get(sample_key) == sample_type for item in history(records)), f"no {sample_key} record"
    # One x-axis: media land on the steps of the losses logged in the same batch (a GAN's grids were at
    # global_step, 2 optimizer steps per batch, i.e. twice the losses' step).
    media_steps = {item["trainer/global_step"] for item in history(records) if sample_key in item}
    loss_key = "train/g_loss" if family == "gan" else "train/loss"
    loss_steps = {item["trainer/global_step"] for item in history(records) if loss_key in item}
    assert media_steps and max(media_steps) <= max(loss_steps), (sorted(media_steps), sorted(loss_steps))
    if family == "gan":  # grids every 2 batches, losses every 2 batches (log_every_n_steps 2): the same steps
        assert media_steps <= loss_steps, (sorted(media_steps), sorted(loss_steps))
        local = sorted((tmp_path / "runs").glob("gen-lightning/*/samples/samples_step*.png"))[-1]
        last = max((item for item in history(records) if sample_key in item), key=lambda i: i["trainer/global_step"])
        run_folder = next((tmp_path / "runs" / "wandb").glob("offline-run-*"))
        assert_same_nonblank_image(run_folder / "files" / last["samples/samples.filenames"][0], local)
    config = merged_config(records)
    assert config["model"]["class_path"].endswith(module) and config["command"].startswith("gen-lightning fit")


@pytest.mark.gpu
def test_gpu_run_logs_pytorch_memory_and_throughput(cli, tmp_path):
    result = cli(
        "fit",
        "--config",
        CONFIGS / "vae" / "conv_digits.yaml",
        *TINY_RUN,
        "--trainer.accelerator=gpu",
        "--trainer.devices=1",
        env=offline_env(tmp_path),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    items = [i for i in history(wandb_records(tmp_path / "runs" / "wandb")) if "gpu/max_allocated" in i]
    assert items, "GPUMemory logs on CUDA"
    assert all(0 < i["gpu/memory_allocated"] <= min(i["gpu/max_allocated"], i["gpu/memory_reserved"]) for i in items)
