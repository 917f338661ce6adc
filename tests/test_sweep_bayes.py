"""A `bayes` sweep with `early_terminate: hyperband` (configs/sweeps/vae_bayes_hyperband.yaml as it is):
Optuna's TPE draws lr and beta, its HyperbandPruner stops trials that are behind at a validation. A pruned
trial's run stops itself cleanly and says so (checkpoint, state, W&B); the best trial printed is the one
the study database holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import CONFIGS, cli_env
from tests.sweep_helpers import TINY, states, study_of, sweep_cmd, wandb_run

STEPS_PER_EPOCH = 4  # TINY's limit_train_batches; one validation per epoch


@pytest.mark.slow
def test_bayes_sweep_with_hyperband_prunes_trials_and_prints_the_best_the_study_holds(tmp_path):
    (tmp_path / "configs").symlink_to(CONFIGS)
    sweep_dir = tmp_path / "runs" / "sweeps" / "vae_bayes_hyperband"
    result = subprocess.run(
        sweep_cmd(
            Path("configs/sweeps/vae_bayes_hyperband.yaml"), "--count", "4", "--", *TINY, "--trainer.max_epochs=3"
        ),
        check=False,
        cwd=tmp_path,
        env=cli_env(WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    study = study_of(sweep_dir, "vae_bayes_hyperband")
    assert study.direction.name == "MAXIMIZE" and len(study.trials) == 4
    assert all(1e-4 <= t.params["model.lr"] <= 1e-2 and 0.25 <= t.params["model.beta"] <= 2.0 for t in study.trials)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert pruned and complete and len(pruned) + len(complete) == 4, [t.state for t in study.trials]
    for t in study.trials:
        folder = sweep_dir / str(t.number)
        (last,) = folder.rglob("last.ckpt")
        step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        (run,) = folder.rglob("offline-run-*")
        seen = wandb_run(run)  # every trial a W&B run of the sweep's group, its parameters and state in it
        assert seen["state"] == "finished" and seen["config"]["sweep"]["params"] == t.params
        assert seen["name"] == f"vae_bayes_hyperband-{t.number}" and "sweep-vae_bayes_hyperband" in seen["tags"]
        if t in pruned:
            # min_iter 2: judged at its 2nd validation, stopped there, its checkpoint and run complete.
            assert t.user_attrs["pruned"]["validation"] == 2 == len(t.intermediate_values)
            assert step == t.user_attrs["pruned"]["global_step"] == 2 * STEPS_PER_EPOCH
            assert states(sweep_dir)[t.number]["status"] == "pruned"
            assert seen["summary"]["sweep/state"] == "pruned" and "pruned" in seen["tags"]
            assert seen["summary"]["sweep/pruned_at_validation"] == 2
            assert t.value == t.intermediate_values[2], "a pruned trial's value is its last reported one"
            assert f"sweep: trial {t.number} pruned at validation 2" in output
        else:
            assert len(t.intermediate_values) == 3 and step == 3 * STEPS_PER_EPOCH
            assert seen["summary"]["sweep/state"] == "complete" and "pruned" not in seen["tags"]
            assert t.value == pytest.approx(seen["summary"]["val/elbo"])
    # The best trial printed is the best trial of the database (the file, read afresh).
    best = study_of(sweep_dir, "vae_bayes_hyperband").best_trial
    assert best in complete
    assert f"best: trial {best.number} val/elbo={best.value!r} {json.dumps(best.params)}" in output
    table = output[output.index("sweep vae_bayes_hyperband (bayes): 4 trials of 4") :]
    first_row = next(line for line in table.splitlines() if line.startswith("│"))
    assert f"│     {best.number} │" in first_row and "★" in first_row
    assert sum("pruned @ 2" in line for line in table.splitlines()) == len(pruned)
    records = subprocess.run(
        ["wandb", "leet", "inspect", "--json", str(run)],
        check=False,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert '"run_group":"vae_bayes_hyperband"' in records.stdout  # the run record holds the group

    # The sweep's W&B summary run: the table ranking the trials, best first, as the study holds them.
    (summary_run,) = (sweep_dir / "wandb").glob("offline-run-*")
    seen = wandb_run(summary_run)
    assert seen["name"] == "vae_bayes_hyperband-summary" and seen["summary"]["best/trial"] == best.number
    assert (
        seen["summary"]["best/val/elbo"] == best.value and seen["summary"]["best/model.lr"] == best.params["model.lr"]
    )
    assert seen["summary"]["trials/complete"] == len(complete) and seen["summary"]["trials/pruned"] == len(pruned)
    table = json.loads((summary_run / "files" / seen["summary"]["sweep/trials"]["path"]).read_text())
    column = {name: i for i, name in enumerate(table["columns"])}
    assert table["data"][0][column["trial"]] == best.number and len(table["data"]) == 4
    values = [row[column["val/elbo"]] for row in table["data"] if row[column["state"]] == "complete"]
    assert values == sorted(values, reverse=True) == sorted((t.value for t in complete), reverse=True)
