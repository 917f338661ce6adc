"""The conformance matrix: every family (tests/matrix/spec.py FAMILIES) under every strategy (STRATEGIES).

One process group per cell does every run (tests/matrix/cell.py); this test then reads what the runs wrote and
checks each contract of docs/conformance.md:
  loss       the training loss on W&B goes down over the run (a seeded threshold per family)
  resume     N steps == N/2 + resume to N through the CLI (every parameter to 1e-6)
  metric     the validation metrics under the strategy == one process on the same weights (1e-6 relative;
             odd validation sizes)
  nan        a NaN loss in one batch is skipped with --divergence.skip_bad_steps (no parameter moves in that
             batch), and without it stops the run with the one-line error, last.ckpt from before the bad step
  checkpoint the checkpoint converts (DeepSpeed), reloads with load_from_checkpoint (strict) and `sample` works
  wandb      the W&B offline run holds the family's keys, every row on the one step axis, media not blank
  syncs      a training batch that neither logs, validates, writes a checkpoint nor ends an epoch makes no
             host-device synchronisation (Tensor.item/__bool__/tolist/cpu, cuda.synchronize, collectives), per rank
A cell a strategy cannot serve must refuse in one line when a user tries it. When the whole matrix ran, the
session writes docs/conformance.md from these results (tests/matrix/report.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gen_lightning.cli import main as cli_main
from tests.conftest import REPO, cli_env
from tests.matrix import report
from tests.matrix.spec import FAMILIES, STRATEGIES, Family, Strategy, cell_args

CELLS = [(f, s) for s in STRATEGIES for f in FAMILIES]
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def _marks(strategy: Strategy) -> list:
    marks = [] if strategy.devices == 1 else [pytest.mark.slow]
    if strategy.deepspeed and not HAS_DEEPSPEED:
        marks.append(
            pytest.mark.skip(
                reason="deepspeed is not installed: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed"
            )
        )
    return marks


def module_class(family: Family):
    module_name, class_name = family.module.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), class_name)


class Cell:
    """What one cell's runs left behind, and the checks on it."""

    def __init__(self, family: Family, strategy: Strategy, folder: Path) -> None:
        self.family, self.strategy, self.folder = family, strategy, folder
        self.out = folder / "out"
        self.out.mkdir(parents=True)
        env = cli_env(WANDB_MODE="offline", PYTHONPATH=str(REPO), HOME=str(folder / "home"))
        self.process = subprocess.run(
            [sys.executable, "-m", "tests.matrix.cell", family.name, strategy.name, str(self.out)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        rank0 = self.out / "rank0.json"
        self.runs = json.loads(rank0.read_text()) if rank0.is_file() else {}

    def log_tail(self) -> str:
        return (self.process.stdout + self.process.stderr)[-4000:]

    def checkpoint(self, run: str) -> Path:
        if run == "straight":
            return self.out / "straight" / "gen-lightning" / "straight" / "checkpoints" / "last.ckpt"
        return self.out / run / "checkpoints" / "last.ckpt"

    def plain_checkpoint(self, run: str) -> Path:
        """A single-file checkpoint of `run`'s last state: DeepSpeed folders are converted (the `convert` verb)."""
        path = self.checkpoint(run)
        if not self.strategy.deepspeed:
            return path
        from gen_lightning.commands.convert import convert

        return convert(path, self.folder / f"{run}-fp32.ckpt", overwrite=True)  # called again for the same run


# -- the contracts ------------------------------------------------------------------------------------------------
def check_runs(cell: Cell) -> None:
    assert cell.process.returncode == 0 and cell.runs, f"the cell's process failed:\n{cell.log_tail()}"
    for name, outcome in cell.runs.items():
        if name != "stop":
            assert outcome["ok"], f"run '{name}' failed: {outcome}"


def check_loss(cell: Cell) -> None:
    from tests.helpers import history, wandb_records

    rows = [r for r in history(wandb_records(cell.out / "straight" / "wandb")) if cell.family.loss_key in r]
    losses = [r[cell.family.loss_key] for r in sorted(rows, key=lambda r: r["trainer/global_step"])]
    assert len(losses) >= 3, f"{cell.family.loss_key} logged {len(losses)} times"
    assert losses[-1] < cell.family.loss_drop * losses[0], f"{cell.family.loss_key}: {losses}"


def max_difference(a: Path, b: Path) -> float:
    first, second = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    assert first["global_step"] == second["global_step"], (first["global_step"], second["global_step"])
    sa, sb = first["state_dict"], second["state_dict"]
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].is_floating_point())


def check_resume(cell: Cell) -> None:
    diff = max_difference(cell.plain_checkpoint("straight"), cell.plain_checkpoint("resumed"))
    assert diff <= 1e-6, f"N steps vs N/2 + resume: parameters differ by {diff}"


def single_process_metrics(cell: Cell) -> dict:
    """`validate` of the straight run's weights on one process, in this process (the reference)."""
    out = cell.folder / "reference.json"
    args = [
        *cell_args(cell.family, STRATEGIES["single"]),
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        cell.folder / "reference",
        "--ckpt_path",
        cell.plain_checkpoint("straight"),
        "--trainer.callbacks+=tests.matrix.probes.MetricsDump",
        "--trainer.callbacks.path",
        out,
    ]
    cli_main(["validate", *map(str, args)])
    return json.loads(out.read_text())


def check_metric(cell: Cell, monkeypatch) -> None:
    under_strategy = json.loads((cell.out / "validate.json").read_text())
    monkeypatch.chdir(cell.folder)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr("sys.argv", ["gen-lightning"])
    reference = single_process_metrics(cell)
    for key in cell.family.metrics:
        assert key in under_strategy and key in reference, (key, sorted(under_strategy), sorted(reference))
        assert under_strategy[key] == pytest.approx(reference[key], rel=1e-6, abs=1e-9), (
            f"{key}: {under_strategy[key]} under {cell.strategy.label}, {reference[key]} on one process"
        )


def check_nan(cell: Cell) -> None:
    probe = json.loads((cell.out / "nan.json").read_text())
    assert probe["max_change"] == 0.0, f"parameters moved by {probe['max_change']} in the NaN batch"
    assert probe["skipped"] is not None and probe["skipped"] >= 1, probe
    assert probe["global_step"] >= cell.family.steps, "the run went on to the end after skipping"
    stop = cell.runs["stop"]
    assert not stop["ok"] and "\n" not in stop.get("user_error", "\n"), stop
    assert stop["user_error"].startswith("training diverged at step"), stop
    last = torch.load(cell.plain_checkpoint("stop"), map_location="cpu", weights_only=False)
    assert last["global_step"] == cell.family.bad_batch * cell.family.steps_per_batch, (
        "last.ckpt: the state before the NaN batch"
    )
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def check_checkpoint(cell: Cell, capsys) -> None:
    from gen_lightning.commands import sample

    plain = cell.plain_checkpoint("straight")
    model = module_class(cell.family).load_from_checkpoint(plain, map_location="cpu")  # strict
    assert sum(p.numel() for p in model.parameters()) > 0
    target = cell.folder / "sample.png"
    capsys.readouterr()
    assert sample.main(["--ckpt", str(plain), "--out", str(target), "--n", "16", *cell.family.sample_args]) == 0
    printed = capsys.readouterr().out
    if cell.family.table_media:
        assert printed.strip(), "sample printed nothing"
        if cell.family.echoes_prompt:  # a language model prints the prompt and its continuation
            assert printed.startswith(cell.family.sample_args[1]), printed
    else:
        from tests.helpers import assert_not_blank

        assert_not_blank(target)


def check_wandb(cell: Cell) -> None:
    from tests.helpers import assert_not_blank, history, history_keys, wandb_records

    folder = cell.out / "straight" / "wandb"
    records = wandb_records(folder)
    rows = history(records)
    keys = history_keys(records)
    expected = {cell.family.loss_key, *cell.family.wandb_keys, *cell.family.metrics}
    assert expected <= keys, f"missing on W&B: {sorted(expected - keys)}"
    assert all("trainer/global_step" in r for r in rows), "a row without the step axis"
    loss_steps = {r["trainer/global_step"] for r in rows if cell.family.loss_key in r}
    media = [r for r in rows if f"{cell.family.media_key}._type" in r]
    assert media, f"no {cell.family.media_key} on W&B"
    assert {r["trainer/global_step"] for r in media} <= loss_steps | {max(loss_steps)}, "media off the losses' axis"
    run_files = next(folder.glob("offline-run-*")) / "files"
    last = max(media, key=lambda r: r["trainer/global_step"])
    if cell.family.table_media:
        table = json.loads((run_files / last[f"{cell.family.media_key}.path"]).read_text())
        assert table["data"] and all(str(row[-1]).strip() for row in table["data"]), table
    else:
        assert_not_blank(run_files / last[f"{cell.family.media_key}.filenames"][0])


def check_syncs(cell: Cell) -> None:
    from tests.matrix.probes import quiet_batches

    files = sorted(cell.out.glob("syncs.json.rank*"))
    assert len(files) == cell.strategy.devices, f"sync counts of {len(files)} ranks"
    ranks = [json.loads(path.read_text()) for path in files]
    # A batch that logs on one rank (W&B writes on rank 0 only) is a logging batch on all.
    quiet = set.intersection(*({b["batch"] for b in quiet_batches(batches)} for batches in ranks))
    assert len(quiet) >= 2, f"only {len(quiet)} batches that do not log"
    for path, batches in zip(files, ranks):
        syncing = {b["batch"]: b["syncs"][:2] for b in batches if b["batch"] in quiet and b["syncs"]}
        assert not syncing, f"{path.name}: host-device syncs in batches that do not log: {syncing}"


CONTRACTS = ("loss", "resume", "metric", "nan", "checkpoint", "wandb", "syncs")
# The straight run's weights per cell (a single-file checkpoint), for the comparison across strategies below.
STRAIGHT_WEIGHTS: dict[tuple[str, str], Path] = {}


@pytest.mark.parametrize(
    ("family_name", "strategy_name"),
    [pytest.param(f, s, marks=_marks(STRATEGIES[s]), id=f"{f}-{s}") for f, s in CELLS],
)
def test_cell(family_name, strategy_name, tmp_path, monkeypatch, capsys):
    family, strategy = FAMILIES[family_name], STRATEGIES[strategy_name]
    if family_name in strategy.unsupported:
        check_refusal(family, strategy, tmp_path)
        report.record(family_name, strategy_name, {"refused": strategy.unsupported[family_name]})
        return
    cell = Cell(family, strategy, tmp_path)
    outcome: dict[str, str] = {}
    checks = {
        "loss": lambda: check_loss(cell),
        "resume": lambda: check_resume(cell),
        "metric": lambda: check_metric(cell, monkeypatch),
        "nan": lambda: check_nan(cell),
        "checkpoint": lambda: check_checkpoint(cell, capsys),
        "wandb": lambda: check_wandb(cell),
        "syncs": lambda: check_syncs(cell),
    }
    try:
        check_runs(cell)
    except AssertionError as err:
        report.record(family_name, strategy_name, {c: "not run" for c in CONTRACTS})
        raise AssertionError(str(err)) from None
    for name, check in checks.items():
        try:
            check()
            outcome[name] = "pass"
        except AssertionError as err:
            outcome[name] = f"FAIL: {str(err).splitlines()[0][:300]}"
    report.record(family_name, strategy_name, outcome)
    if outcome["resume"] == "pass":
        STRAIGHT_WEIGHTS[family_name, strategy_name] = cell.plain_checkpoint("straight")
    failed = {k: v for k, v in outcome.items() if v != "pass"}
    assert not failed, f"{family_name} under {strategy.label}: {failed}\n{cell.log_tail()[-1500:]}"


def check_refusal(family: Family, strategy: Strategy, folder: Path) -> None:
    """What a user trying the cell sees: one line, exit 2, no traceback, nothing trained."""
    from tests.conftest import run_cli

    result = run_cli(
        ["fit", *cell_args(family, strategy), "--trainer.logger", "false", "--trainer.max_steps", "2"],
        folder,
        env=cli_env(PYTHONPATH=str(REPO)),
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("gen-lightning: error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not list(folder.rglob("*.ckpt"))


TWO_PROCESS = [s for s, st in STRATEGIES.items() if st.devices == 2 and not st.unsupported]


@pytest.mark.slow
@pytest.mark.parametrize("family_name", list(FAMILIES))
def test_two_process_strategies_train_the_same_weights(family_name):
    """DDP, ZeRO-2 and ZeRO-3 on the same 2 shards of every batch compute the same updates: their straight runs
    must end with the same weights. This checks ZeRO-3's gathering (and each GAN engine's) against plain DDP."""
    runs = {s: STRAIGHT_WEIGHTS.get((family_name, s)) for s in TWO_PROCESS}
    missing = [s for s, path in runs.items() if path is None]
    if missing:
        pytest.skip(f"the cells {missing} of {family_name} did not run or failed in this session")
    states = {s: torch.load(path, map_location="cpu", weights_only=False)["state_dict"] for s, path in runs.items()}
    reference = states[TWO_PROCESS[0]]
    for strategy, state in states.items():
        assert state.keys() == reference.keys(), strategy
        for key in reference:
            torch.testing.assert_close(
                state[key].float(),
                reference[key].float(),
                rtol=1e-4,
                atol=1e-5,
                msg=f"{key}: {strategy} vs {TWO_PROCESS[0]}",
            )
