"""A NaN/Inf loss stops the run with one line (step + loss) before any checkpoint holds it, or, with
--divergence.skip_bad_steps, the bad steps are dropped and training goes on."""

from __future__ import annotations

import math

import pytest
import torch

from gen_lightning.cli import main
from gen_lightning.models import VAEModule
from tests import helpers

# The shared tiny VAE without a logger (no W&B run for these in-process fits).
TINY_VAE = [*helpers.TINY_VAE, "--trainer.logger", "false"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["gen-lightning"])
    return tmp_path


def _poison_steps(monkeypatch, bad_steps: set[int]) -> None:
    """The loss of the given global steps becomes NaN (as after an overflow in the forward pass)."""
    real = VAEModule.training_step

    def training_step(self, batch, batch_idx):
        loss = real(self, batch, batch_idx)
        return loss * float("nan") if self.global_step in bad_steps else loss

    monkeypatch.setattr(VAEModule, "training_step", training_step)


def _all_finite(ckpt: dict) -> bool:
    return all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(in_tmp, monkeypatch, capsys):
    _poison_steps(monkeypatch, {5})
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY_VAE, "--trainer.max_steps", "20", "--checkpoint.every_n_train_steps", "2"])
    assert exit_info.value.code == 2
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("gen-lightning: error:")]
    assert len(err_lines) == 1
    assert "training diverged at step 5: loss = nan" in err_lines[0]
    last = torch.load(in_tmp / "runs/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and _all_finite(last)  # the step-4 state, written before the bad step


def test_skip_bad_steps_drops_them_and_training_goes_on(in_tmp, monkeypatch):
    _poison_steps(monkeypatch, {3, 4})
    main(
        [
            *TINY_VAE,
            "--trainer.max_steps",
            "8",
            "--divergence.skip_bad_steps",
            "2",
            "--checkpoint.every_n_train_steps",
            "1",
            "--checkpoint.save_top_k",
            "-1",
            "--checkpoint.filename",
            "{step}",
            "--checkpoint.monitor",
            "train/loss",
        ]
    )
    ckpts = in_tmp / "runs/checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["global_step"] == 8 and _all_finite(last)
    # Steps 3 and 4 (global_step when they start) changed nothing: the weights they leave (checkpoint
    # step=5) are those after step 2 (checkpoint step=3) ...
    after = {s: torch.load(ckpts / f"step={s}.ckpt", weights_only=True)["state_dict"] for s in (3, 5, 6)}
    assert all(torch.equal(after[3][k], after[5][k]) for k in after[3])
    # ... and the next good step trains again.
    assert any(not torch.equal(after[5][k], after[6][k]) for k in after[5])


def test_too_many_bad_steps_in_a_row_still_stop(in_tmp, monkeypatch, capsys):
    _poison_steps(monkeypatch, {2, 3, 4})
    with pytest.raises(SystemExit):
        main([*TINY_VAE, "--trainer.max_steps", "8", "--divergence.skip_bad_steps", "2"])
    err = capsys.readouterr().err
    assert "training diverged at step 4: loss = nan" in err and "(3 bad steps in a row)" in err


def test_absurd_learning_rate_through_the_cli(cli):
    """The real case: lr 1e6 overflows within a few steps; one line, exit 2, no traceback."""
    result = cli(*TINY_VAE, "--trainer.max_steps", "50", "--model.lr", "1e6", "--trainer.default_root_dir", "out")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if "training diverged" in ln]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    step = int(lines[0].split("at step ")[1].split(":")[0])
    assert 0 <= step < 50
    loss = lines[0].split("loss = ")[1].split(",")[0]
    assert not math.isfinite(float(loss)) or "non-finite" in lines[0]


def test_all_finite_is_exact_and_reads_nothing_on_the_host(monkeypatch):
    from gen_lightning.callbacks.divergence import all_finite

    def no_sync(*args, **kwargs):
        raise AssertionError("all_finite read a value on the host")

    fine = [torch.randn(3, 4), torch.randn(7)]
    huge = [torch.full((1000,), 1e17), torch.full((10,), 3e18)]  # sum of squares over both overflows fp32
    half = [torch.full((300,), 1000.0, dtype=torch.float16)]  # its squares overflow fp16
    cases = [(fine, True), (huge, True), (half, True), ([], True)]
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = [t.clone() for t in fine]
        broken[1][3] = bad
        cases.append((broken, False))
    with monkeypatch.context() as patched:
        for name in ("__bool__", "item", "tolist", "cpu"):
            patched.setattr(torch.Tensor, name, no_sync)
        results = [all_finite(grads) for grads, _ in cases]
    assert [bool(r) for r in results] == [expected for _, expected in cases]


def test_a_nan_gradient_with_a_finite_loss_is_caught_by_the_weights(in_tmp, monkeypatch, capsys):
    """The default mode reads no gradient in a step: a NaN gradient behind a finite loss is found in the
    weights it spoiled, before the next checkpoint holds them."""
    real = VAEModule.training_step

    def training_step(self, batch, batch_idx):
        loss = real(self, batch, batch_idx)
        if self.global_step == 5:
            # sqrt at 0: the value 0 (the loss stays finite), the gradient inf * 0 = NaN for every weight it touches
            loss = loss + torch.sqrt(sum(p.sum() for p in self.parameters()) * 0)
        return loss

    monkeypatch.setattr(VAEModule, "training_step", training_step)
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY_VAE, "--trainer.max_steps", "20", "--checkpoint.every_n_train_steps", "3"])
    assert exit_info.value.code == 2
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("gen-lightning: error:")]
    assert len(err_lines) == 1, err_lines
    assert (
        "training diverged at step 5: a non-finite gradient in one of steps 3-5 made the weights non-finite"
        in (err_lines[0])
    )
    last = torch.load(in_tmp / "runs/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 3 and _all_finite(last)  # written before the bad update


def test_the_guard_looks_before_each_update_only_when_it_drops_bad_steps():
    """With skip_bad_steps 0 nothing happens before an update (the losses are kept at each backward and the weights
    checked on logging steps), so the guard does not implement on_before_optimizer_step and the hook dispatch has
    nothing to call for it; with skip_bad_steps > 0 it does (the steps dropped: the test above)."""
    from lightning.pytorch.callbacks import Callback

    from gen_lightning.callbacks.divergence import DivergenceGuard
    from gen_lightning.hook_dispatch import _implementers

    class FakeTrainer:
        def __init__(self, callbacks):
            self.callbacks = callbacks

    stops, skips = DivergenceGuard(), DivergenceGuard(skip_bad_steps=2)
    base = Callback.on_before_optimizer_step
    assert _implementers(FakeTrainer([stops, skips]), "on_before_optimizer_step", base) == [skips]
    assert _implementers(FakeTrainer([stops, skips]), "on_before_backward", Callback.on_before_backward) == [
        stops,
        skips,
    ]
