"""gen_lightning/hook_dispatch.py: callback hooks go only to the callbacks that implement them, and a run sees
exactly the calls Lightning's own loop makes (same hooks, order, arguments, `_current_fx_name`)."""

from __future__ import annotations

import inspect
from unittest import mock

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.trainer import call

from gen_lightning import hook_dispatch
from tests.helpers import tiny_trainer

HOOKS = [
    name
    for name, value in vars(Callback).items()
    if inspect.isfunction(value)
    and (name.startswith("on_") or name in ("setup", "teardown"))
    and name not in ("on_save_checkpoint", "on_load_checkpoint")  # not dispatched by _call_callback_hooks
]


class Recorder(Callback):
    """Overrides every hook: records (its name, the hook, the module's _current_fx_name, the arguments' types)."""

    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    @property
    def state_key(self) -> str:
        return f"Recorder[{self.name}]"


def _recording(hook: str):
    def record(self, trainer, pl_module, *args, **kwargs):
        self.calls.append((self.name, hook, pl_module._current_fx_name, [type(a).__name__ for a in args], kwargs))

    return record


for _hook in HOOKS:
    setattr(Recorder, _hook, _recording(_hook))


class Silent(Callback):
    """Overrides nothing."""


class SomeHooks(Callback):
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.calls.append(("some", "on_train_batch_end", pl_module._current_fx_name, batch_idx))


def _run(tmp_path, calls: list, profiler=None) -> None:
    wrapped = Silent()  # a hook set on the instance (as a wrapper would be) counts as implemented
    wrapped.on_before_backward = lambda trainer, pl_module, loss: calls.append(("wrapped", "on_before_backward"))
    torch.manual_seed(0)
    trainer = tiny_trainer(
        tmp_path,
        max_steps=3,
        callbacks=[Recorder("a", calls), Silent(), SomeHooks(calls), wrapped, Recorder("b", calls)],
    )
    if profiler is not None:
        trainer.profiler = profiler
    trainer.fit(BoringModel())
    trainer.validate(trainer.lightning_module, verbose=False)


def test_a_run_makes_the_same_calls_as_lightnings_loop(tmp_path):
    lightning_calls, our_calls = [], []
    hook_dispatch.uninstall()
    try:
        _run(tmp_path / "lightning", lightning_calls)
    finally:
        hook_dispatch.install()
    _run(tmp_path / "ours", our_calls)
    assert our_calls == lightning_calls
    hooks_seen = {c[1] for c in our_calls}
    assert {"setup", "on_train_batch_end", "on_before_optimizer_step", "on_validation_end", "teardown"} <= hooks_seen
    assert ("wrapped", "on_before_backward") in our_calls and (
        "some",
        "on_train_batch_end",
        "on_train_batch_end",
        2,
    ) in our_calls
    # Inside each hook the module's _current_fx_name is that hook, as under Lightning's loop.
    assert all(c[1] == c[2] for c in our_calls if c[0] in ("a", "b", "some"))


def test_callbacks_that_do_not_implement_a_hook_are_not_called(tmp_path):
    calls, base_calls = [], []

    def counting(self, trainer, pl_module, outputs, batch, batch_idx):
        base_calls.append(type(self).__name__)

    with mock.patch.object(Callback, "on_train_batch_end", counting):
        hook_dispatch.uninstall()
        try:
            _run(tmp_path / "lightning", calls)
        finally:
            hook_dispatch.install()
        lightning_base_calls, base_calls[:] = list(base_calls), []
        _run(tmp_path / "ours", calls)
    assert lightning_base_calls.count("Silent") == 2 * 3  # two Silent instances x 3 batches under Lightning's loop
    assert base_calls == []


def test_with_a_profiler_every_callback_is_still_profiled(tmp_path):
    from lightning.pytorch.profilers import SimpleProfiler

    profiler = SimpleProfiler()
    _run(tmp_path, [], profiler=profiler)
    actions = set(profiler.recorded_durations)
    assert "[Callback]Silent.on_train_batch_end" in actions  # Lightning's loop: one entry per callback and hook
    assert "[Callback]Recorder[a].on_train_batch_end" in actions


def test_the_cli_installs_it(fit_parser):
    assert fit_parser is not None
    assert call._call_callback_hooks is hook_dispatch.dispatch


def test_lightnings_loop_is_the_one_mirrored():
    """dispatch copies Lightning's loop but for one test; a Lightning that changes the loop fails here, so that
    gen_lightning/hook_dispatch.py is re-checked against it (then update the fragments)."""
    source = inspect.getsource(hook_dispatch._lightning_dispatch)
    for fragment in (
        "prev_fx_name = pl_module._current_fx_name",
        "pl_module._current_fx_name = hook_name",
        "callbacks = trainer.callbacks",
        "fn = getattr(callback, hook_name)",
        "if callable(fn):",
        'with trainer.profiler.profile(f"[Callback]{callback.state_key}.{hook_name}"):',
        "fn(trainer, trainer.lightning_module, *args, **kwargs)",
        "pl_module._current_fx_name = prev_fx_name",
    ):
        assert fragment in source, f"Lightning's _call_callback_hooks changed ({fragment!r} is gone)"
    assert source.count("\n") < 40, "Lightning's _call_callback_hooks grew: re-check gen_lightning/hook_dispatch.py"
