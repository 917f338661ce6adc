"""DeepSpeed ZeRO-2 and ZeRO-3 on two CPU processes (gloo), through the real CLI and the shipped trainer
configs: train, save (a folder of per-rank shards), resume, convert to one fp32 .ckpt, load it back.
The GAN runs one engine per network (gen_lightning/strategies/deepspeed_engines.py).

Two ranks with the same seed and data make ZeRO-2 and ZeRO-3 compute the same updates, so the two
converted checkpoints must hold the same weights: that checks that the stage-3 shards were gathered
right against stage 2, whose full fp32 weights DeepSpeed also keeps beside the shards.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.conftest import CONFIGS, REPO, cli_env, run_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed",
)

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]
FIRST_STEPS, RESUMED_STEPS = 4, 6  # even: a GAN batch is 2 optimizer steps (D and G)


def experiment_args(family: str, folder: Path) -> list:
    if family == "vae":
        return ["--config", CONFIGS / "vae" / "mlp_digits.yaml", "--data.batch_size", 32, "--model.hidden_dim", 64]
    if family == "gan":
        # EMA (state outside both engines), clipping (handed to the engines) and each rank's parameters saved.
        return ["--config", CONFIGS / "gan" / "mlp_digits.yaml", "--data.batch_size", 32, "--model.width", 8,
                "--model.ema_decay", 0.9, "--model.grad_clip", 1.0,
                "--trainer.callbacks+=tests.test_gan_cli.RankParameters"]
    corpus = folder / "corpus.py"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(2000)))
    return ["--config", CONFIGS / "gpt" / "nano_stdlib.yaml", "--data.corpus", corpus, "--data.cache_dir",
            folder / "cache", "--data.batch_size", 8, "--data.val_windows", 16, "--model.n_layer", 1,
            "--model.decay_steps", RESUMED_STEPS]  # else the cosine ends at the first run's max_steps


def fit(stage: int, family: str, folder: Path, steps: int, *extra) -> str:
    result = run_cli(
        ["fit", "--config", CONFIGS / "trainer" / f"deepspeed_stage{stage}.yaml", *experiment_args(family, folder),
         "--trainer.accelerator", "cpu", "--trainer.devices", 2, "--trainer.max_steps", steps,
         "--trainer.val_check_interval", steps, "--trainer.limit_val_batches", 2, *QUIET, *extra],
        folder, env=cli_env(PYTHONPATH=str(REPO)),  # the GAN run imports a test callback
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def checkpoint_tags(family: str) -> list[str]:
    """The DeepSpeed tags (sub-folders) of a checkpoint folder: one per engine."""
    return ["generator", "discriminator"] if family == "gan" else ["checkpoint"]


class ZeroRun:
    """One family trained under one ZeRO stage: FIRST_STEPS, then resumed to RESUMED_STEPS, then converted."""

    def __init__(self, family: str, stage: int, folder: Path) -> None:
        self.family, self.stage, self.folder = family, stage, folder
        self.last = folder / "runs" / "checkpoints" / "last.ckpt"
        self.first_output = fit(stage, family, folder, FIRST_STEPS)
        self.shards_after_first = {tag: sorted(p.name for p in (self.last / tag).iterdir())
                                   for tag in checkpoint_tags(family)}
        self.resumed_output = fit(stage, family, folder, RESUMED_STEPS, "--ckpt_path", self.last)
        result = run_cli(["convert", self.last], folder)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        self.converted = folder / "runs" / "checkpoints" / "last-fp32.ckpt"


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    runs: dict[tuple[str, int], ZeroRun] = {}

    def get(family: str, stage: int) -> ZeroRun:
        if (family, stage) not in runs:
            runs[family, stage] = ZeroRun(family, stage, tmp_path_factory.mktemp(f"{family}-zero{stage}"))
        return runs[family, stage]

    return get


def module_class(family: str):
    from gen_lightning.models import GANModule, GPTModule, VAEModule

    return {"vae": VAEModule, "gan": GANModule, "gpt": GPTModule}[family]


@pytest.mark.parametrize("family, stage", [("vae", 2), ("vae", 3), ("gan", 2), ("gan", 3), ("gpt", 2), ("gpt", 3)])
def test_zero_trains_on_two_cpu_processes_saves_resumes_and_converts(zero_run, family, stage):
    run = zero_run(family, stage)
    assert "MEMBER: 1/2" in run.first_output and "MEMBER: 2/2" in run.first_output
    # A DeepSpeed checkpoint is a folder (the GAN's: one sub-folder per network, each its own engine); each
    # rank wrote its own shard of the optimizer state (and, in stage 3, of the parameters).
    expected = {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)}
    if stage == 3:
        expected |= {f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in (0, 1)}
    else:
        expected |= {"mp_rank_00_model_states.pt"}
    for tag, shards in run.shards_after_first.items():
        assert set(shards) == expected, tag

    converted = torch.load(run.converted, map_location="cpu", weights_only=False)
    assert f"Restored all states from the checkpoint at {run.last}" in run.resumed_output
    assert converted["global_step"] == RESUMED_STEPS  # resumed at FIRST_STEPS, not retrained from 0
    cls = module_class(family)
    model = cls.load_from_checkpoint(run.converted, map_location="cpu")  # strict: every key, full shapes
    assert all(v.dtype == torch.float32 and v.numel() > 0 for k, v in converted["state_dict"].items()
               if not k.endswith("n_averaged"))
    with torch.no_grad():
        if family in ("vae", "gan"):
            out = model.sample(4, generator=torch.Generator().manual_seed(0))
            assert out.shape == (4, 1, 28, 28) and out.isfinite().all()
        else:
            logits = model(torch.randint(0, 257, (2, 16)))
            assert logits.shape[-1] == 257 and logits.isfinite().all()
    if family == "gan":
        # The EMA generator lives outside both engines: it travelled with the Lightning state, and it moved.
        assert "generator_ema.n_averaged" in converted["state_dict"]
        assert int(converted["state_dict"]["generator_ema.n_averaged"]) == RESUMED_STEPS // 2  # 1 G step per batch
        # G and D are the same on both ranks at the end (each rank's full weights, gathered under ZeRO-3) and
        # equal to the converted checkpoint.
        rank0, rank1 = (torch.load(run.folder / f"rank{r}_params.pt") for r in (0, 1))
        assert {k.split(".")[0] for k in rank0} == {"generator", "discriminator", "generator_ema"}
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), key
            torch.testing.assert_close(converted["state_dict"][key], rank0[key], msg=key)


@pytest.mark.parametrize("family", ["vae", "gan", "gpt"])
def test_zero3_gathers_the_same_weights_as_zero2(zero_run, family):
    zero2 = torch.load(zero_run(family, 2).converted, map_location="cpu", weights_only=False)["state_dict"]
    zero3 = torch.load(zero_run(family, 3).converted, map_location="cpu", weights_only=False)["state_dict"]
    assert zero2.keys() == zero3.keys()
    for key in zero2:
        torch.testing.assert_close(zero3[key], zero2[key], rtol=1e-4, atol=1e-5, msg=key)
    # ... and stage 2's conversion agrees with the full fp32 module DeepSpeed saved beside the shards.
    for tag in checkpoint_tags(family):
        module = torch.load(zero_run(family, 2).last / tag / "mp_rank_00_model_states.pt",
                            map_location="cpu", weights_only=False)["module"]
        prefix = "" if tag == "checkpoint" else f"{tag}."
        for key, value in module.items():
            torch.testing.assert_close(zero2[prefix + key], value.float(), msg=key)


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
        pytest.skip("DeepSpeed's cpu_adam op is not compiled yet (1-3 min once, then cached); build it with: "
                    "python -c 'from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load()'")
    result = cli("fit", "--config", CONFIGS / "trainer" / "deepspeed_stage2_offload.yaml",
                 *experiment_args(family, cli.cwd), "--trainer.accelerator", "cpu", "--trainer.devices", 1,
                 "--trainer.max_steps", 4, "--trainer.val_check_interval", 4, "--trainer.limit_val_batches", 2,
                 *QUIET, env=cli_env(PYTHONPATH=str(REPO)))
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
    result = cli("fit", "--config", CONFIGS / "trainer" / "deepspeed_stage2_offload.yaml",
                 *experiment_args("gpt", cli.cwd), "--trainer.devices", 1, "--trainer.precision", "bf16-mixed",
                 "--trainer.max_steps", 5, "--trainer.val_check_interval", 5, "--trainer.limit_val_batches", 2,
                 *QUIET)
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
    args = ["fit", "--config", CONFIGS / "trainer" / "deepspeed_stage3.yaml", "--config", CONFIGS / "vae" / "mlp_digits.yaml"]
    first = cli(*args, "--print_config")
    assert first.returncode == 0, first.stderr[-2000:]
    import yaml

    config = yaml.safe_load(first.stdout)
    assert config["trainer"]["strategy"]["init_args"]["stage"] == 3
    (cli.cwd / "printed.yaml").write_text(first.stdout)
    again = cli("fit", "--config", cli.cwd / "printed.yaml", "--print_config")
    assert again.returncode == 0, again.stderr[-2000:]
    assert yaml.safe_load(again.stdout) == config
