"""kill -9 of one process of a 2-process DDP run: the survivor says in one line which rank died and which
checkpoint is intact, and exits 2 (gen_lightning/dead_rank.py). Before: a gloo traceback on the survivor, or
Lightning's observer SIGKILLing the launcher (exit 137) without a word."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, cli_env
from tests.matrix.spec import FAMILIES, STRATEGIES, cell_args


def child_of(pid: int) -> int:
    while True:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        if children:
            return int(children[0])
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["rank1_dies", "rank0_dies"])
def test_a_dead_rank_is_one_line_on_the_survivor_naming_it_and_the_intact_checkpoint(tmp_path, victim):
    args = [
        *cell_args(FAMILIES["gpt"], STRATEGIES["ddp"]),
        "--trainer.logger",
        "false",
        "--trainer.max_steps",
        100000,
        "--checkpoint.every_n_train_steps",
        1,
        "--trainer.default_root_dir",
        "run",
    ]
    run = subprocess.Popen(
        [sys.executable, "-m", "gen_lightning", "fit", *map(str, args)],
        cwd=tmp_path,
        env=cli_env(PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    rank1 = child_of(run.pid)  # Lightning's launcher (rank 0) starts rank 1 as its child
    while not last.exists():
        assert run.poll() is None, run.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(1)
    os.kill(rank1 if victim == 1 else run.pid, signal.SIGKILL)
    _, stderr = run.communicate()  # until every writer of the pipes (the survivor too) has ended
    if victim == 1:
        assert run.returncode == 2, stderr[-3000:]
    died = (
        f"rank 1 (PID {rank1}) died (killed by SIGKILL)"
        if victim == 1
        else f"rank 0 (PID {run.pid}, the launching process) died"
    )
    errors = [line for line in stderr.splitlines() if line.startswith("gen-lightning: error:")]
    assert len(errors) == 1 and died in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr and "GLHF" not in stderr, stderr[-3000:]
    step = int(errors[0].split("last.ckpt (step ")[1].split(")")[0])
    assert "is intact: continue with --ckpt_path last" in errors[0]
    assert torch.load(last, weights_only=True)["global_step"] >= step  # intact, and at least that far
