"""A two-node Slurm job without Slurm: two processes given the SLURM_* variables srun would set on two nodes.

Lightning's SLURMEnvironment reads ranks, node rank and world size from them; `--trainer.num_nodes 2
--trainer.devices 1` is what launch/slurm/train.sbatch passes for `--nodes 2 --ntasks-per-node 1`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.helpers import free_port
from tests.conftest import CONFIGS, cli_env
from tests.slurm.probe import PROBE_PATH, probe_config, probe_lines

STEPS = 4


def slurm_task_env(rank: int, port: int) -> dict[str, str]:
    return cli_env(
        SLURM_NTASKS="2",
        SLURM_PROCID=str(rank),
        SLURM_NODEID=str(rank),
        SLURM_NNODES="2",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_LOCALID="0",
        SLURM_NODELIST="n[1-2]",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="gen-lightning-test",  # "bash" or "interactive" would make Lightning ignore SLURM
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        PYTHONPATH=PROBE_PATH,
    )


def experiment_args(family: str, folder) -> list:
    if family == "vae":
        return ["--config", CONFIGS / "vae" / "mlp_digits.yaml", "--data.batch_size", 32, "--model.hidden_dim", 64]
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
    ]


def test_two_simulated_slurm_nodes_train_as_one_job(tmp_path):
    """The GPT: its token cache is built once per node (prepare_data), here by both "nodes" at once."""
    args = [
        sys.executable,
        "-m",
        "gen_lightning",
        "fit",
        "--config",
        CONFIGS / "trainer" / "multinode.yaml",
        *experiment_args("gpt", tmp_path),
        "--config",
        probe_config(tmp_path),
        "--trainer.accelerator",
        "cpu",
        "--trainer.num_nodes",
        2,
        "--trainer.devices",
        1,
        "--trainer.max_steps",
        STEPS,
        "--trainer.val_check_interval",
        STEPS,
        "--trainer.limit_val_batches",
        2,
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    port = free_port()
    procs = [
        subprocess.Popen(
            list(map(str, args)),
            cwd=tmp_path,
            env=slurm_task_env(rank, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            proc.kill()
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank}:\n{output[-3000:]}"
        (end,) = probe_lines(output, "end")
        # Each process is one node of a 2-node job: its own node rank, one world of 2, every step taken.
        assert end["rank"] == end["node_rank"] == str(rank)
        assert end["world"] == "2" and end["step"] == str(STEPS)
    last = tmp_path / "runs" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == STEPS


def test_torchrun_script_trains_two_nodes(tmp_path):
    """launch/torchrun.sh started twice, as on two machines (NODE_RANK 0 and 1), one process each."""
    port = free_port()
    args = [
        *map(str, experiment_args("vae", tmp_path)),
        "--config",
        probe_config(tmp_path),
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_steps",
        str(STEPS),
        "--trainer.val_check_interval",
        str(STEPS),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    script = CONFIGS.parent / "launch" / "torchrun.sh"
    procs = [
        subprocess.Popen(
            ["bash", str(script), "--config", str(CONFIGS / "trainer" / "multinode.yaml"), *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(
                NNODES="2",
                NODE_RANK=str(node),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
                NPROC_PER_NODE="1",
                PYTHON=sys.executable,
                PYTHONPATH=PROBE_PATH,
            ),
        )
        for node in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            proc.kill()
    for node, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"node {node}:\n{output[-3000:]}"
        (end,) = probe_lines(output, "end")
        assert (end["rank"], end["node_rank"], end["world"], end["step"]) == (str(node), str(node), "2", str(STEPS))


@pytest.mark.gpu
def test_fsdp_config_trains_the_gpt_on_gpus(cli):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    result = cli(
        "fit",
        "--config",
        CONFIGS / "trainer" / "fsdp.yaml",
        *experiment_args("gpt", cli.cwd),
        "--trainer.max_steps",
        STEPS,
        "--trainer.val_check_interval",
        STEPS,
        "--trainer.limit_val_batches",
        2,
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    last = cli.cwd / "runs" / "checkpoints" / "last.ckpt"
    assert last.is_file()  # state_dict_type full: one ordinary file
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == STEPS
