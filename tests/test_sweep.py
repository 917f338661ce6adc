"""`gen-lightning sweep FILE --local`: W&B sweep files on an Optuna study.

Here: the file -> Optuna mapping, the checks before anything starts (one line, exit 2), a failed trial
and an interrupted sweep, DDP inside a trial with pruning. Workers sharing a study and a killed worker:
test_sweep_workers.py; Bayesian search with hyperband: test_sweep_bayes.py; Slurm: test_sweep_slurm.py.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import CONFIGS, REPO, cli_env
from tests.sweep_helpers import TINY, VAE, states, study_of, sweep_cmd, sweep_text, wandb_run

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


def write_sweep(
    path: Path, parameters: str, configs: list[Path], method: str = "grid", metric: str = "val/elbo", more: str = ""
) -> Path:
    command = "\n".join(f"  - --config\n  - {c}" for c in configs)
    path.write_text(
        f"method: {method}\nmetric:\n  name: {metric}\n  goal: maximize\n{more}parameters:\n"
        + textwrap.indent(textwrap.dedent(parameters).strip(), "  ")
        + f"\ncommand:\n  - ${{env}}\n  - gen-lightning\n  - fit\n{command}\n  - ${{args}}\n"
    )
    return path


# -- the sweep files of the repository ------------------------------------------------------------------
@pytest.mark.parametrize("sweep_file", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_parses_with_the_real_cli(sweep_file, monkeypatch):
    from gen_lightning.commands.sweep import check_configuration
    from gen_lightning.sweeps.spec import WANDB_KEYS, expand_command, load_sweep

    monkeypatch.chdir(REPO)  # the files' config paths are relative to the repository root
    spec = load_sweep(sweep_file)
    import yaml

    assert set(yaml.safe_load(sweep_file.read_text())) <= set(WANDB_KEYS), "`wandb sweep FILE` takes it as it is"
    configurations = spec.covering_configurations()
    for name, d in spec.distributions.items():  # every value (or both bounds) of every parameter is checked
        seen = {c[name] for c in configurations}
        assert seen == (set(d.choices) if hasattr(d, "choices") else {d.low, d.high}), name
    for params in configurations:
        config = check_configuration(spec, params, expand_command(spec, params))
        for name, value in params.items():  # the override reached the parsed config
            node = config.fit
            for part in name.split("."):
                node = getattr(node, part) if hasattr(node, part) else getattr(node.init_args, part)
            expected = pytest.approx(value) if isinstance(value, float) else value
            assert node == expected, f"{name}: parsed {node}, swept {value}"


def ask_all(spec, n: int, seed: int = 0) -> list[dict]:
    """The parameters of the first n trials of a fresh study (in memory), drawn as a worker draws them."""
    import optuna

    from gen_lightning.sweeps.trial import suggest

    drawn = []

    def objective(trial):
        if spec.method != "grid":
            trial.study.sampler = spec.sampler(seed, trial.number)
        drawn.append(suggest(trial, spec.distributions))
        return 0.0

    optuna.create_study(direction=spec.goal, sampler=spec.sampler(seed)).optimize(objective, n_trials=n)
    return drawn


def test_grid_gives_the_same_configurations_as_before():
    from gen_lightning.sweeps.spec import load_sweep

    spec = load_sweep(CONFIGS / "sweeps" / "vae_mlp_digits.yaml")
    # The configurations the runner before Optuna ran: every combination, the last parameter fastest.
    before = [{"model.beta": b, "model.lr": lr} for b, lr in itertools.product([1.0, 0.5], [3.0e-4, 1.0e-3, 3.0e-3])]
    assert spec.grid_configurations() == before
    assert spec.budget(None) == 6 and spec.budget(2) == 2
    drawn = ask_all(spec, 6)
    assert sorted(map(json.dumps, drawn)) == sorted(map(json.dumps, before)), "each combination exactly once"
    assert ask_all(spec, 6) == drawn, "the same seed, the same order"


def test_random_and_bayes_draws_depend_on_the_seed_and_the_trial_number(tmp_path):
    from gen_lightning.sweeps.spec import load_sweep

    for method in ("random", "bayes"):
        (tmp_path / "r.yaml").write_text(
            textwrap.dedent(f"""
            method: {method}
            metric: {{name: val/loss}}
            parameters:
              model.lr: {{distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}}
              model.latent_dim: {{min: 2, max: 9}}
              model.net: {{values: [mlp, conv]}}
            command: [gen-lightning, fit, '${{args}}']
            """)
        )
        spec = load_sweep(tmp_path / "r.yaml")
        draws = ask_all(spec, 12)
        assert draws == ask_all(spec, 12), f"{method}: one seed gives one sequence"
        assert ask_all(spec, 12, seed=1) != draws
        assert all(1e-4 <= d["model.lr"] <= 1e-2 and isinstance(d["model.latent_dim"], int) for d in draws)
        assert {d["model.net"] for d in draws} == {"mlp", "conv"} and len({d["model.lr"] for d in draws}) == 12


@pytest.mark.parametrize(
    "parameter, expected",
    [
        ({"values": [1, 2]}, "CategoricalDistribution(choices=(1, 2))"),
        ({"value": 0.5}, "CategoricalDistribution(choices=(0.5,))"),
        ({"distribution": "constant", "value": "mlp"}, "CategoricalDistribution(choices=('mlp',))"),
        ({"min": 2, "max": 9}, "IntDistribution(high=9, log=False, low=2, step=1)"),
        ({"distribution": "int_uniform", "min": 2, "max": 9}, "IntDistribution(high=9, log=False, low=2, step=1)"),
        ({"min": 0.1, "max": 0.9}, "FloatDistribution(high=0.9, log=False, low=0.1, step=None)"),
        (
            {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
            "FloatDistribution(high=1.0, log=False, low=0.0, step=0.25)",
        ),
        (
            {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "FloatDistribution(high=0.01, log=True, low=0.0001, step=None)",
        ),
        (
            {"distribution": "q_log_uniform_values", "min": 16, "max": 512},
            "IntDistribution(high=512, log=True, low=16, step=1)",
        ),
    ],
)
def test_wandb_distributions_map_onto_optuna(parameter, expected):
    from gen_lightning.sweeps.spec import to_distribution

    assert repr(to_distribution("p", parameter)) == expected


def test_log_uniform_is_the_log_uniform_over_exp_bounds_and_hyperband_maps_onto_optuna():
    import math

    from gen_lightning.sweeps.spec import pruner_for, to_distribution

    d = to_distribution("p", {"distribution": "log_uniform", "min": math.log(1e-4), "max": math.log(1e-2)})
    assert d.log and d.low == pytest.approx(1e-4) and d.high == pytest.approx(1e-2)
    pruner = pruner_for({"type": "hyperband", "min_iter": 2, "eta": 3})
    assert (type(pruner).__name__, pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (
        "HyperbandPruner",
        2,
        "auto",
        3,
    )
    pruner = pruner_for({"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3})  # W&B's brackets at 9 and 3
    assert (pruner._min_resource, pruner._max_resource) == (3, 27)
    assert type(pruner_for(None)).__name__ == "NopPruner"


def test_command_is_expanded_as_wandb_agent_does(tmp_path, monkeypatch):
    from gen_lightning.sweeps.spec import expand_command, load_sweep

    monkeypatch.setenv("DATA_ROOT", "/scratch/data")
    (tmp_path / "g.yaml").write_text(
        textwrap.dedent("""
        method: grid
        metric: {name: val/elbo}
        parameters:
          model.beta: {values: [1.0, 0.5]}
          model.lr: {values: [0.1, 0.2, 0.3]}
        command: ['${env}', gen-lightning, fit, --data.root, '${envvar:DATA_ROOT}', '${args}']
        """)
    )
    spec = load_sweep(tmp_path / "g.yaml")
    assert expand_command(spec, {"model.beta": 0.5, "model.lr": 0.2}) == [
        "/usr/bin/env",
        "gen-lightning",
        "fit",
        "--data.root",
        "/scratch/data",
        "--model.beta=0.5",
        "--model.lr=0.2",
    ]


def test_the_budget_is_counted_by_trial_numbers_and_a_rerun_replaces_its_original():
    import optuna
    from optuna.trial import TrialState

    from gen_lightning.sweeps.queue import (
        is_surplus,
        open_failures,
        requeue,
        retried_from,
        work_left,
    )

    study = optuna.create_study()
    for value in (1.0, 2.0):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), value)
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), state=TrialState.FAIL)
    assert not work_left(study, 3) and work_left(study, 4)
    (failed,) = open_failures(study.get_trials())
    requeue(study, failed)  # --retry-failed: a WAITING copy, run before anything new
    assert work_left(study, 3) and open_failures(study.get_trials()) == []
    rerun = study.ask()
    assert rerun.number == 3 and rerun.params == failed.params
    trials = study.get_trials(deepcopy=False)
    assert retried_from(trials[3]) == 2, "a re-run is never surplus: it replaces trial 2 in the budget"
    late = study.ask()  # another worker asked at the same instant as the last one of the budget
    trials = study.get_trials(deepcopy=False)
    assert is_surplus(trials, late.number, budget=3) and not is_surplus(trials, 2, budget=3)


def test_a_changed_sweep_file_or_a_folder_of_another_study_is_refused(tmp_path):
    from gen_lightning.commands.sweep import check_folder
    from gen_lightning.errors import UserError
    from gen_lightning.sweeps.spec import load_sweep
    from gen_lightning.sweeps.storage import open_study, storage_url

    (tmp_path / "s.yaml").write_text(sweep_text(parameters="{model.lr: {values: [0.1, 0.2]}}"))
    url = storage_url(None, tmp_path)
    open_study(load_sweep(tmp_path / "s.yaml"), url, None, 0)
    open_study(load_sweep(tmp_path / "s.yaml"), url, None, 0)  # the same file joins the study
    (tmp_path / "s.yaml").write_text(sweep_text(parameters="{model.lr: {values: [0.1, 0.3]}}"))
    with pytest.raises(
        UserError, match=r"study 's' in .* was made from another version of .*s.yaml \(parameters differ"
    ):
        open_study(load_sweep(tmp_path / "s.yaml"), url, None, 0)
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "state.json").write_text(json.dumps({"index": 0, "params": {}, "status": "done"}))
    with pytest.raises(UserError, match="holds trials of an older sweep"):
        check_folder(tmp_path, "s", url)


# -- mistakes: one line, exit 2, nothing started --------------------------------------------------------
BAD_INPUTS = {
    "unknown method": (sweep_text(method="hyperopt"), [], "unknown method 'hyperopt'; use one of grid, random, bayes"),
    "no Optuna equivalent": (
        sweep_text("random", "{model.lr: {distribution: normal, mu: 0.001, sigma: 0.0001}}"),
        ["--count", "2"],
        "parameter model.lr: distribution 'normal' has no Optuna equivalent",
    ),
    "empty values": (
        sweep_text(parameters="{model.lr: {values: []}}"),
        [],
        "parameter model.lr: `values` must be a non-empty list",
    ),
    "parameter the CLI refuses": (
        sweep_text(parameters="{model.lrr: {values: [0.1]}}"),
        [],
        "a configuration (model.lrr=0.1) is rejected",
    ),
    "journal in a missing folder": (
        sweep_text(),
        ["--storage", "/nonexistent/sweeps/study.journal"],
        "cannot open the study storage '/nonexistent/sweeps/study.journal'",
    ),
    "database that cannot be opened": (
        sweep_text(),
        ["--storage", "sqlite:////nonexistent/study.db"],
        "cannot open the study storage 'sqlite:////nonexistent/study.db'",
    ),
    "unknown database": (
        sweep_text(),
        ["--storage", "nosuchdb://host/study"],
        "cannot open the study storage 'nosuchdb://host/study'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_starts(case, tmp_path, capsys, monkeypatch):
    from gen_lightning.cli import main

    body, args, message = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(body)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "bad.yaml", "--local", *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("gen-lightning: error: "), err
    assert message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "nothing was created, nothing ran"


@pytest.mark.parametrize(
    "body, message",
    [
        (sweep_text(parameters="{model.lr: {min: 0.1, max: 1.0}}"), "a grid needs `values`"),
        (sweep_text("random", "{model.lr: {distribution: beta}}"), "distribution 'beta' has no Optuna equivalent"),
        (sweep_text("random", "{model.lr: {distribution: gamma}}"), "distribution 'gamma' is not a W&B distribution"),
        (
            sweep_text("random", "{model.lr: {values: [1, 2], probabilities: [0.9, 0.1]}}"),
            "`probabilities` has no Optuna equivalent",
        ),
        (
            sweep_text("random", "{model.bs: {distribution: q_log_uniform_values, min: 8, max: 512, q: 8}}"),
            "q_log_uniform_values with q=8, min=8 has no Optuna equivalent",
        ),
        (
            sweep_text("bayes", more="early_terminate: {type: hyperband, min_iter: 1, strict: true}\n"),
            "strict has no Optuna equivalent",
        ),
        (sweep_text("bayes", more="early_terminate: {type: envelope}\n"), "type 'envelope' is not supported"),
        (sweep_text(metric=""), "the study needs the metric it optimizes"),
        (sweep_text(command="[gen-lightning, fit]"), "must be a list ending in ${args}"),
        (sweep_text(more="sampler: tpe\n"), "sampler is not a W&B sweep key"),
    ],
)
def test_sweep_file_mistakes_are_named(tmp_path, body, message):
    import re

    from gen_lightning.errors import UserError
    from gen_lightning.sweeps.spec import load_sweep

    (tmp_path / "s.yaml").write_text(body)
    with pytest.raises(UserError, match=re.escape(message)):
        load_sweep(tmp_path / "s.yaml")


# -- running trials ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_failed_trial_is_recorded_and_an_interrupted_sweep_resumes(tmp_path):
    sweep = write_sweep(
        tmp_path / "bs.yaml",
        """
        data.batch_size:
          values: [0, 16]
        """,
        [VAE],
    )
    sweep_dir = tmp_path / "runs" / "sweeps" / "bs"
    args = sweep_cmd(sweep, "--", *TINY, "--trainer.max_epochs=15")
    env = cli_env()  # WANDB_MODE=disabled: nothing of W&B may be written
    log = tmp_path / "first.log"  # a file, not a pipe: nothing can block on a full pipe buffer
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        # The batch size 0 trial fails; stop the sweep with SIGTERM while the other one trains (has a last.ckpt).
        deadline = time.time() + 300
        while not (
            running := [
                n
                for n, s in states(sweep_dir).items()
                if s["status"] == "running"
                and s["params"]["data.batch_size"] == 16
                and list((sweep_dir / str(n)).rglob("last.ckpt"))
            ]
        ):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the batch size 16 trial never trained:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    first = log.read_text()
    assert proc.returncode == 130, first[-3000:]
    interrupted = running[0]
    assert f"interrupted at trial {interrupted}; it is queued again" in first
    assert states(sweep_dir)[interrupted]["status"] == "interrupted"

    second = subprocess.run(args, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = second.stdout + second.stderr
    assert second.returncode == 1, output[-3000:]  # the sweep holds a failed trial
    trials = study_of(sweep_dir, "bs").trials
    assert len(trials) == 3, "the two configurations and the re-run of the interrupted one, nothing else"
    (rerun,) = [t for t in trials if t.system_attrs.get("failed_trial") == interrupted]
    assert rerun.state.name == "COMPLETE" and rerun.params == {"data.batch_size": 16}
    assert trials[interrupted].state.name == "FAIL" and trials[interrupted].user_attrs["error"] == "interrupted"
    assert rerun.value == states(sweep_dir)[rerun.number]["metrics"]["val/elbo"]
    (failed,) = [t for t in trials if t.params == {"data.batch_size": 0}]
    assert failed.state.name == "FAIL" and "data.batch_size must be >= 1" in failed.user_attrs["error"]
    assert states(sweep_dir)[failed.number]["status"] == "failed"
    row = next(line for line in output.splitlines() if line.startswith("│") and f"│ {failed.number:>5} │" in line)
    assert "FAILED: data.batch_size must be >= 1" in row
    row = next(line for line in output.splitlines() if line.startswith("│") and f"│ {interrupted:>5} │" in line)
    assert f"FAILED: interrupted → re-run as {rerun.number}" in row
    assert not list(tmp_path.rglob("wandb")), "WANDB_MODE=disabled writes nothing"


RECORDER = """
import json, os
from lightning.pytorch.callbacks import Callback

class RecordHparams(Callback):
    def on_train_end(self, trainer, pl_module):
        out = os.path.join(os.environ["RECORD_DIR"], f"rank{trainer.global_rank}.json")
        with open(out, "w") as f:
            json.dump({"hparams": dict(pl_module.hparams), "world_size": trainer.world_size,
                       "global_step": trainer.global_step, "epoch": trainer.current_epoch}, f)
"""


@pytest.mark.slow
def test_ddp_trial_gets_its_parameters_on_every_rank_and_all_ranks_stop_when_pruned(tmp_path):
    import optuna

    from gen_lightning.sweeps.spec import load_sweep
    from gen_lightning.sweeps.storage import open_study, storage_url

    (tmp_path / "recorder.py").write_text(RECORDER)
    (tmp_path / "record.yaml").write_text("trainer:\n  callbacks:\n    - class_path: recorder.RecordHparams\n")
    sweep = write_sweep(
        tmp_path / "ddp.yaml",
        """
        model.lr:
          value: 0.0456
        model.latent_dim:
          value: 7
        """,
        [CONFIGS / "trainer" / "ddp.yaml", VAE, tmp_path / "record.yaml"],
        method="random",
        more="early_terminate: {type: hyperband, min_iter: 1, eta: 4}\n",
    )
    # A finished trial far ahead at its validations: the DDP trial is behind at its first one and is pruned
    # there (one hyperband bracket: log_4 of 2 + 1 validations is < 1; `completed_rung_0` is what Optuna's
    # successive halving records of a trial that reached the first rung).
    sweep_dir = tmp_path / "runs" / "sweeps" / "ddp"
    sweep_dir.mkdir(parents=True)
    spec = load_sweep(sweep)
    study = open_study(spec, storage_url(None, sweep_dir), None, 0)
    study.add_trial(
        optuna.trial.create_trial(
            params={"model.lr": 0.0456, "model.latent_dim": 7},
            distributions=spec.distributions,
            value=0.0,
            intermediate_values={1: 0.0, 2: 0.0},
            system_attrs={"completed_rung_0": 0.0},
        )
    )
    env = cli_env(
        WANDB_MODE="offline",
        RECORD_DIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    )
    result = subprocess.run(
        sweep_cmd(
            sweep,
            "--count",
            "5",
            "--index",
            "3",
            "--",
            "--trainer.max_epochs=3",
            "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
        ),
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["hparams"] == ranks[1]["hparams"]
    assert ranks[0]["hparams"]["lr"] == 0.0456 and ranks[0]["hparams"]["latent_dim"] == 7
    # Pruned at the end of epoch 0: both ranks stopped there, after 3 of the 9 steps.
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 3
    trial = study_of(sweep_dir, "ddp").trials[1]
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned"]["validation"] == 1
    assert trial.user_attrs["array_task"] == "3", "--index ran one trial and recorded the index"
    assert len(study_of(sweep_dir, "ddp").trials) == 2
    state = states(sweep_dir)[1]
    assert state["status"] == "pruned" and state["pruned"]["global_step"] == 3
    (last,) = (sweep_dir / "1").rglob("last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3, "the checkpoint is written"
    (run,) = (sweep_dir / "1").rglob("offline-run-*")  # only rank 0 logs to W&B
    recorded = wandb_run(run)
    assert recorded["summary"]["sweep/state"] == "pruned" and "pruned" in recorded["tags"]
    assert recorded["config"]["sweep"]["trial"] == 1 and recorded["name"] == "ddp-1"
