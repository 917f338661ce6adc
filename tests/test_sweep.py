"""`gen-lightning sweep FILE --local`: W&B sweep files run without a server, resumable, DDP-consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, REPO, cli_env

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))
TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def write_sweep(path: Path, parameters: str, configs: list[Path], method: str = "grid", metric: str = "val/elbo") -> Path:
    command = "\n".join(f"  - --config\n  - {c}" for c in configs)
    path.write_text(
        f"method: {method}\nmetric:\n  name: {metric}\n  goal: maximize\nparameters:\n"
        + textwrap.indent(textwrap.dedent(parameters).strip(), "  ")
        + f"\ncommand:\n  - ${{env}}\n  - gen-lightning\n  - fit\n{command}\n  - ${{args}}\n"
    )
    return path


def states(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/state.json")}


# -- the sweep files of the repository ------------------------------------------------------------------
@pytest.mark.parametrize("sweep_file", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_parses_with_the_real_cli(sweep_file, monkeypatch):
    from gen_lightning.commands._sweep_spec import expand_command, load_sweep
    from gen_lightning.commands.sweep import check_configuration

    monkeypatch.chdir(REPO)  # the files' config paths are relative to the repository root
    spec = load_sweep(sweep_file)
    assert spec.metric, "every sweep names the metric it ranks by"
    indices = range(spec.grid_size()) if spec.method == "grid" else range(3)
    for index in indices:
        params = spec.configuration(index)
        config = check_configuration(spec, index, params, expand_command(spec, params))
        for name, value in params.items():  # the override reached the parsed config
            node = config.fit
            for part in name.split("."):
                node = getattr(node, part) if hasattr(node, part) else getattr(node.init_args, part)
            expected = pytest.approx(value) if isinstance(value, float) else value
            assert node == expected, f"{name}: parsed {node}, swept {value}"


def test_vae_sweep_runs_two_configurations_and_puts_their_metric_side_by_side(cli):
    (cli.cwd / "configs").symlink_to(CONFIGS)
    result = cli("sweep", "configs/sweeps/vae_mlp_digits.yaml", "--local", "--count", "2", "--", *TINY,
                 env=cli_env(WANDB_MODE="offline"), timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    done = states(cli.cwd / "runs" / "sweeps" / "vae_mlp_digits")
    assert sorted(done) == [0, 1]
    assert done[0]["params"] != done[1]["params"]
    assert {s["params"]["model.lr"] for s in done.values()} == {3e-4, 1e-3}
    elbos = [done[i]["metrics"]["val/elbo"] for i in (0, 1)]
    assert all(s["status"] == "done" for s in done.values()) and elbos[0] != elbos[1]
    table = output[output.index("sweep vae_mlp_digits (grid)"):]
    assert "val/elbo ↑" in table and "model.lr" in table
    for i, elbo in enumerate(elbos):  # one row per run, with its own metric
        row = next(line for line in table.splitlines() if line.startswith(f"│ {i} "))
        assert f"{elbo:.4g}" in row
    best = max((0, 1), key=lambda i: elbos[i])
    assert "★" in next(line for line in table.splitlines() if line.startswith(f"│ {best} "))
    for i in (0, 1):  # each run logged offline, named after the sweep
        runs = list((cli.cwd / "runs" / "sweeps" / "vae_mlp_digits" / str(i) / "wandb").glob("offline-run-*/*.wandb"))
        assert len(runs) == 1


def test_failed_run_is_recorded_and_an_interrupted_sweep_resumes(tmp_path):
    sweep = write_sweep(tmp_path / "bs.yaml", """
        data.batch_size:
          values: [0, 16]
        """, [CONFIGS / "vae" / "mlp_digits.yaml"])
    sweep_dir = tmp_path / "runs" / "sweeps" / "bs"
    args = [sys.executable, "-m", "gen_lightning", "sweep", str(sweep), "--local", "--", *TINY]
    env = cli_env()  # WANDB_MODE=disabled: nothing of W&B may be written
    log = tmp_path / "first.log"  # a file, not a pipe: nothing can block on a full pipe buffer
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        # Configuration 0 fails (batch size 0); stop the sweep with SIGTERM while configuration 1 runs.
        deadline = time.time() + 300
        while states(sweep_dir).get(1, {}).get("status") != "running":
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"configuration 1 never started:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    first = log.read_text()
    assert proc.returncode == 130, first[-3000:]
    assert "interrupted at configuration 1" in first
    recorded = states(sweep_dir)
    assert recorded[0]["status"] == "failed" and "data.batch_size must be >= 1" in recorded[0]["error"]
    assert recorded[1]["status"] == "interrupted"

    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = second.stdout + second.stderr
    assert second.returncode == 1, output[-3000:]  # the sweep holds a failed run
    assert "configuration 0: failed, skipped" in output and "configuration 1 (2/2)" in output
    recorded = states(sweep_dir)
    assert recorded[1]["status"] == "done" and recorded[1]["metrics"]["val/elbo"] < 0
    row0 = next(line for line in output.splitlines() if line.startswith("│ 0 "))
    assert "FAILED: data.batch_size must be >= 1" in row0
    assert not list(tmp_path.rglob("wandb")), "WANDB_MODE=disabled writes nothing"


RECORDER = '''
import json, os
from lightning.pytorch.callbacks import Callback

class RecordHparams(Callback):
    def on_train_start(self, trainer, pl_module):
        out = os.path.join(os.environ["RECORD_DIR"], f"rank{trainer.global_rank}.json")
        with open(out, "w") as f:
            json.dump({"hparams": dict(pl_module.hparams), "world_size": trainer.world_size}, f)
'''


def test_ddp_run_of_a_sweep_gives_every_rank_the_same_parameters_and_one_wandb_run(tmp_path):
    (tmp_path / "recorder.py").write_text(RECORDER)
    (tmp_path / "record.yaml").write_text("trainer:\n  callbacks:\n    - class_path: recorder.RecordHparams\n")
    sweep = write_sweep(tmp_path / "ddp.yaml", """
        model.lr:
          values: [0.0123, 0.0456]
        model.latent_dim:
          value: 7
        """, [CONFIGS / "trainer" / "ddp.yaml", CONFIGS / "vae" / "mlp_digits.yaml", tmp_path / "record.yaml"])
    env = cli_env(WANDB_MODE="offline", RECORD_DIR=str(tmp_path),
                  PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "gen_lightning", "sweep", str(sweep), "--local", "--index", "1", "--",
         "--trainer.max_steps=4", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["hparams"] == ranks[1]["hparams"]
    assert ranks[0]["hparams"]["lr"] == 0.0456 and ranks[0]["hparams"]["latent_dim"] == 7
    sweep_dir = tmp_path / "runs" / "sweeps" / "ddp"
    assert sorted(states(sweep_dir)) == [1], "--index runs exactly that configuration"
    assert len(list(tmp_path.rglob("offline-run-*/*.wandb"))) == 1, "only rank 0 logs to W&B"


# -- mistakes in a sweep file: one line, before anything runs ------------------------------------------
def test_unknown_parameter_is_one_line_and_nonzero_exit(tmp_path, capsys, monkeypatch):
    from gen_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "bad.yaml", "model.lrr:\n  values: [0.1]\n", [CONFIGS / "vae" / "mlp_digits.yaml"])
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(sweep), "--local"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1, err
    assert "configuration 0 (model.lrr=0.1) is rejected" in err and "model.lrr" in err
    assert not (tmp_path / "runs").exists(), "nothing ran"


@pytest.mark.parametrize("body, message", [
    ("method: bayes\nparameters: {model.lr: {values: [1]}}\ncommand: [gen-lightning, fit, '${args}']",
     "bayes needs the W&B server"),
    ("method: grid\nparameters: {model.lr: {min: 0.1, max: 1.0}}\ncommand: [gen-lightning, fit, '${args}']",
     "a grid needs `values`"),
    ("method: random\nparameters: {model.lr: {distribution: beta}}\ncommand: [gen-lightning, fit, '${args}']",
     "distribution 'beta' is not supported"),
    ("method: grid\nparameters: {model.lr: {values: [1]}}\ncommand: [gen-lightning, fit]",
     "must be a list ending in ${args}"),
])
def test_sweep_file_mistakes_are_named(tmp_path, body, message):
    from gen_lightning.commands._sweep_spec import load_sweep
    from gen_lightning.errors import UserError

    (tmp_path / "s.yaml").write_text(body)
    with pytest.raises(UserError, match=message.replace("$", r"\$").replace("{", r"\{").replace("}", r"\}")):
        load_sweep(tmp_path / "s.yaml")


def test_random_configurations_depend_only_on_their_index(tmp_path):
    from gen_lightning.commands._sweep_spec import load_sweep
    from gen_lightning.errors import UserError

    (tmp_path / "r.yaml").write_text(textwrap.dedent("""
        method: random
        parameters:
          model.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
          model.latent_dim: {min: 2, max: 9}
          model.net: {values: [mlp, conv]}
        command: [gen-lightning, fit, '${args}']
        """))
    spec = load_sweep(tmp_path / "r.yaml")
    draws = [spec.configuration(i) for i in range(20)]
    assert draws == [spec.configuration(i) for i in range(20)], "the same index, the same configuration"
    assert spec.configuration(3, seed=1) != draws[3]
    assert all(1e-4 <= d["model.lr"] <= 1e-2 and isinstance(d["model.latent_dim"], int) for d in draws)
    assert {d["model.net"] for d in draws} == {"mlp", "conv"} and len({d["model.lr"] for d in draws}) == 20
    with pytest.raises(UserError, match="give --count N"):
        spec.size(None)
    assert spec.size(5) == 5


def test_command_is_expanded_as_wandb_agent_does(tmp_path, monkeypatch):
    from gen_lightning.commands._sweep_spec import expand_command, load_sweep

    monkeypatch.setenv("DATA_ROOT", "/scratch/data")
    (tmp_path / "g.yaml").write_text(textwrap.dedent("""
        method: grid
        parameters:
          model.beta: {values: [1.0, 0.5]}
          model.lr: {values: [0.1, 0.2, 0.3]}
        command: ['${env}', gen-lightning, fit, --data.root, '${envvar:DATA_ROOT}', '${args}']
        """))
    spec = load_sweep(tmp_path / "g.yaml")
    assert spec.grid_size() == 6
    assert [spec.configuration(i)["model.lr"] for i in range(3)] == [0.1, 0.2, 0.3]  # last varies fastest
    assert expand_command(spec, spec.configuration(4)) == [
        "/usr/bin/env", "gen-lightning", "fit", "--data.root", "/scratch/data", "--model.beta=0.5", "--model.lr=0.2"]
