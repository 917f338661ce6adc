"""A DeepSpeed checkpoint on another number of processes, or with a shard missing: one line, exit 2, before any
engine reads the folder, and the folder untouched (strategies/zero_shards.py). DeepSpeed 0.19 alone fails with a
traceback from inside the engine (`ZeRORuntimeException ... DP world size of 2`), after every rank built its model.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

from gen_lightning.errors import UserError
from gen_lightning.strategies.zero_shards import check_resumable
from tests.conftest import CONFIGS
from tests.helpers import QUIET

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")


def fake_zero_folder(root: Path, world_size: int, tags=("checkpoint",), stage3: bool = False) -> Path:
    """The file layout DeepSpeed 0.19 writes (names and the model-states record), without the tensors."""
    folder = root / "last.ckpt"
    for tag in tags:
        (folder / tag).mkdir(parents=True)
        for rank in range(world_size if stage3 else 1):
            prefix = f"zero_pp_rank_{rank}_" if stage3 else ""
            torch.save({"dp_world_size": world_size}, folder / tag / f"{prefix}mp_rank_00_model_states.pt")
        for rank in range(world_size):
            torch.save({}, folder / tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    if len(tags) > 1:
        (folder / "engines.txt").write_text("\n".join(tags) + "\n")
    else:
        (folder / "latest").write_text(tags[0])
    return folder


@pytest.mark.parametrize("tags", [("checkpoint",), ("generator", "discriminator")], ids=["one_engine", "per_network"])
@pytest.mark.parametrize("stage3", [False, True], ids=["zero2", "zero3"])
def test_another_world_size_and_a_missing_shard_are_one_line(tmp_path, tags, stage3):
    folder = fake_zero_folder(tmp_path, 2, tags, stage3)
    check_resumable(folder, 2)  # the same world size, every shard there: resumable
    for world_size in (1, 4):
        with pytest.raises(
            UserError,
            match=rf"written by DeepSpeed on 2 processes and this run has {world_size}: .*"
            rf"resume with 2 processes .*`gen-lightning convert {folder}`",
        ):
            check_resumable(folder, world_size)
    (folder / tags[-1] / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(UserError, match=rf"misses the optimizer shard of rank 1 of 2 in {tags[-1]}/"):
        check_resumable(folder, 2)
    for path in (folder / tags[0]).glob("*model_states.pt"):
        path.unlink()
    with pytest.raises(UserError, match=rf"misses its model states in {tags[0]}/"):
        check_resumable(folder, 2)


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_zero2_run_of_two_processes_resumed_on_one_is_refused_in_one_line(cli):
    """The real thing: a 2-process ZeRO-2 run, then `--ckpt_path` of its last.ckpt on 1 process."""
    args = [
        "fit",
        "--config",
        CONFIGS / "trainer" / "deepspeed_stage2.yaml",
        "--config",
        CONFIGS / "vae" / "mlp_digits.yaml",
        "--data.batch_size",
        32,
        "--model.hidden_dim",
        32,
        "--trainer.accelerator",
        "cpu",
        *QUIET,
        "--trainer.limit_val_batches",
        0,
        "--trainer.default_root_dir",
        "run",
    ]
    first = cli(*args, "--trainer.devices", 2, "--trainer.max_steps", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    last = cli.cwd / "run" / "checkpoints" / "last.ckpt"
    before = folder_digest(last)
    resumed = cli(*args, "--trainer.devices", 1, "--trainer.max_steps", 4, "--ckpt_path", last)
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    errors = [line for line in resumed.stderr.splitlines() if line.startswith("gen-lightning: error:")]
    assert len(errors) == 1 and "written by DeepSpeed on 2 processes and this run has 1" in errors[0], resumed.stderr[
        -3000:
    ]
    assert "Traceback" not in resumed.stderr
    assert folder_digest(last) == before
