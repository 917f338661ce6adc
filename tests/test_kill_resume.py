"""kill -9 at any moment, then `--ckpt_path last`, again and again: the run ends with the parameters and the step of a
run that was never interrupted, and leaves no temporary or stale files behind.

Each faulted run is a real subprocess that SIGKILLs itself (tests/faults.py) at a seeded random step of each kind:
mid-epoch, on an epoch's last batch, in the middle of validation, inside a checkpoint write. `last.ckpt` is
written every step (`--checkpoint.every_n_train_steps 1`), as a run that can be killed any time would do. The
uninterrupted reference runs in this process (the same CLI entry, no interpreter start-up).
"""

from __future__ import annotations

import random

import pytest
import torch

from gen_lightning.cli import main
from tests.conftest import REPO, cli_env, run_cli
from tests.matrix.spec import FAMILIES, STRATEGIES, cell_args

EPOCH = 3  # batches per epoch of the matrix families (limit_train_batches / train_samples): validation at each end
KILLED_FAMILIES = ("vae", "gan", "gpt")


def moments(family: str, steps_per_batch: int, batches: int) -> list[tuple[str, int]]:
    """One seeded random kill of each kind, in order of the step (optimizer steps; a GAN batch has 2)."""
    rng = random.Random(f"kill-{family}")
    last_batches = [b for b in range(EPOCH, batches - 1, EPOCH)]
    mid = rng.choice([b for b in range(2, batches - 1) if b % EPOCH])
    kinds = [
        ("after_step", mid),
        ("after_step", rng.choice(last_batches)),
        ("validation", rng.choice(last_batches)),
        ("checkpoint_write", rng.choice(last_batches)),
    ]  # an epoch's end: the best file is written, then last
    # At one step, a kill in its validation comes before one after it (the run resumed from before the step
    # validates it again; one resumed from after the step does not).
    order = {"validation": 0, "checkpoint_write": 1, "after_step": 2}
    return sorted(((kind, batch * steps_per_batch) for kind, batch in kinds), key=lambda kv: (kv[1], order[kv[0]]))


@pytest.mark.slow
@pytest.mark.parametrize("family_name", KILLED_FAMILIES)
def test_sigkill_at_any_moment_then_resume_ends_like_an_uninterrupted_run(family_name, tmp_path, monkeypatch):
    family = FAMILIES[family_name]
    batches = 4 * EPOCH  # 12 batches, 4 epochs, 4 validations
    steps = batches * family.steps_per_batch
    args = [
        *cell_args(family, STRATEGIES["single"]),
        "--trainer.logger",
        "false",
        "--trainer.max_steps",
        str(steps),
        "--checkpoint.every_n_train_steps",
        "1",
    ]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr("sys.argv", ["gen-lightning"])
    main(["fit", *args, "--trainer.default_root_dir", str(tmp_path / "straight")])

    faulted = tmp_path / "faulted"
    env = cli_env(PYTHONPATH=str(REPO))
    for i, (where, step) in enumerate(moments(family_name, family.steps_per_batch, batches)):
        resume = ["--ckpt_path", "last"] if i else []
        result = run_cli(
            [
                "fit",
                *args,
                "--trainer.default_root_dir",
                faulted,
                *resume,
                "--trainer.callbacks+=tests.faults.SelfKill",
                "--trainer.callbacks.step",
                step,
                "--trainer.callbacks.where",
                where,
            ],
            tmp_path,
            env=env,
        )
        assert result.returncode == -9, f"{where} at step {step}: the run was to be killed\n{result.stderr[-3000:]}"
    result = run_cli(["fit", *args, "--trainer.default_root_dir", faulted, "--ckpt_path", "last"], tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(faulted / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == straight["global_step"] == steps
    diff = max(
        (straight["state_dict"][k].double() - resumed["state_dict"][k].double()).abs().max().item()
        for k in straight["state_dict"]
        if straight["state_dict"][k].is_floating_point()
    )
    assert diff <= 1e-6, f"{family_name}: 4 kills and resumes end {diff} away from the uninterrupted run"
    # Nothing left behind: no temporary checkpoint of a killed writer, one best checkpoint (save_top_k 1).
    names = sorted(p.name for p in (faulted / "checkpoints").iterdir())
    assert not [n for n in names if ".tmp" in n], names
    assert len([n for n in names if n.startswith("best-")]) <= 1, names
