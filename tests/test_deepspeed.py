"""DeepSpeed beyond the conformance matrix (tests/test_conformance.py, which trains, resumes, converts and
reloads every family under ZeRO-2 and ZeRO-3 on two CPU processes and checks their weights against DDP's):
`convert` on what is not a ZeRO checkpoint, ZeRO-Offload's CPU Adam, `--print_config` under a DeepSpeed
trainer file, and the stock strategy on a GPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.conftest import CONFIGS, REPO, cli_env
from tests.helpers import QUIET

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed",
)


def experiment_args(family: str, folder: Path) -> list:
    if family == "vae":
        return ["--config", CONFIGS / "vae" / "mlp_digits.yaml", "--data.batch_size", 32, "--model.hidden_dim", 64]
    if family == "gan":
        # EMA (state outside both engines), clipping (handed to the engines) and each rank's parameters saved.
        return [
            "--config",
            CONFIGS / "gan" / "mlp_digits.yaml",
            "--data.batch_size",
            32,
            "--model.width",
            8,
            "--model.ema_decay",
            0.9,
            "--model.grad_clip",
            1.0,
            "--trainer.callbacks+=tests.test_gan_cli.RankParameters",
        ]
    corpus = folder / "corpus.py"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(2000)))
    return [
        "--config",
        CONFIGS / "gpt" / "nano_stdlib.yaml",
        "--data.corpus",
        corpus,
        "--data.cache_dir",
        folder / "cache",
        "--data.batch_size",
        8,
        "--data.val_windows",
        16,
        "--model.n_layer",
        1,
        "--model.decay_steps",
        6,
    ]


def checkpoint_tags(family: str) -> list[str]:
    """The DeepSpeed tags (sub-folders) of a checkpoint folder: one per engine."""
    return ["generator", "discriminator"] if family == "gan" else ["checkpoint"]


def test_convert_rejects_what_is_not_a_zero_checkpoint(tmp_path):
    from gen_lightning.commands.convert import convert
    from gen_lightning.errors import UserError

    single = tmp_path / "single.ckpt"
    torch.save({"state_dict": {}}, single)
    with pytest.raises(UserError, match="already a single-file checkpoint"):
        convert(single)
    (tmp_path / "empty.ckpt").mkdir()
    with pytest.raises(UserError, match="not a DeepSpeed checkpoint folder"):
        convert(tmp_path / "empty.ckpt")
    with pytest.raises(UserError, match="does not exist"):
        convert(tmp_path / "missing.ckpt")


def cpu_adam_is_built() -> bool:
    from torch.utils.cpp_extension import _get_build_directory

    return any(Path(_get_build_directory("cpu_adam", verbose=False)).glob("cpu_adam*.so"))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vae", "gan"])  # the GAN: one CPU Adam per network engine
def test_zero2_offload_trains_with_deepspeed_cpu_adam(cli, family):
    if not cpu_adam_is_built():
        pytest.skip(
            "DeepSpeed's cpu_adam op is not compiled yet (1-3 min once, then cached); build it with: "
            "python -c 'from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load()'"
        )
    result = cli(
        "fit",
        "--config",
        CONFIGS / "trainer" / "deepspeed_stage2_offload.yaml",
        *experiment_args(family, cli.cwd),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        1,
        "--trainer.max_steps",
        4,
        "--trainer.val_check_interval",
        4,
        "--trainer.limit_val_batches",
        2,
        *QUIET,
        env=cli_env(PYTHONPATH=str(REPO)),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    replaced = output.count("Adam replaced by DeepSpeedCPUAdam")
    assert replaced == len(checkpoint_tags(family))  # one CPU Adam per engine
    for tag in checkpoint_tags(family):
        assert (cli.cwd / "runs" / "checkpoints" / "last.ckpt" / tag).is_dir()


@pytest.mark.gpu
def test_stock_deepspeed_on_gpu_with_bf16_and_offload(cli):
    """The same trainer config on a GPU: Lightning's own DeepSpeedStrategy path (NCCL), bf16, ZeRO-Offload."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    result = cli(
        "fit",
        "--config",
        CONFIGS / "trainer" / "deepspeed_stage2_offload.yaml",
        *experiment_args("gpt", cli.cwd),
        "--trainer.devices",
        1,
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.max_steps",
        5,
        "--trainer.val_check_interval",
        5,
        "--trainer.limit_val_batches",
        2,
        *QUIET,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "GPU available: True, used: True" in output and "Adam replaced by DeepSpeedCPUAdam" in output
    last = cli.cwd / "runs" / "checkpoints" / "last.ckpt"
    assert last.is_dir()
    result = cli("convert", last)
    assert result.returncode == 0, result.stderr[-3000:]
    converted = torch.load(cli.cwd / "runs" / "checkpoints" / "last-fp32.ckpt", map_location="cpu", weights_only=False)
    assert converted["global_step"] == 5
    assert all(v.dtype == torch.float32 for v in converted["state_dict"].values())  # bf16 training, fp32 master


def test_print_config_under_a_deepspeed_trainer_is_yaml_that_loads_again(cli):
    # DeepSpeed warns "Setting accelerator to CPU" while it is imported (by jsonargparse, during parsing): on
    # stdout that line came before the YAML and the printed config did not load again.
    args = [
        "fit",
        "--config",
        CONFIGS / "trainer" / "deepspeed_stage3.yaml",
        "--config",
        CONFIGS / "vae" / "mlp_digits.yaml",
    ]
    first = cli(*args, "--print_config")
    assert first.returncode == 0, first.stderr[-2000:]
    import yaml

    config = yaml.safe_load(first.stdout)
    assert config["trainer"]["strategy"]["init_args"]["stage"] == 3
    (cli.cwd / "printed.yaml").write_text(first.stdout)
    again = cli("fit", "--config", cli.cwd / "printed.yaml", "--print_config")
    assert again.returncode == 0, again.stderr[-2000:]
    assert yaml.safe_load(again.stdout) == config
