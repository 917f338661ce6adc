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


def _lightning_then_ours(run, tmp_path, lists: int = 1) -> tuple[list, list]:
    """`run(folder, *lists)` once under Lightning's own loops, once under hook_dispatch's: what each run recorded."""
    lightning, ours = [[] for _ in range(lists)], [[] for _ in range(lists)]
    hook_dispatch.uninstall()
    try:
        run(tmp_path / "lightning", *lightning)
    finally:
        hook_dispatch.install()
    run(tmp_path / "ours", *ours)
    return lightning, ours


def test_a_run_makes_the_same_calls_as_lightnings_loop(tmp_path):
    (lightning_calls,), (our_calls,) = _lightning_then_ours(_run, tmp_path)
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


class WatchesItsAttributes(BoringModel):
    """A module whose class has its own __setattr__: it records every `_current_fx_name` assigned to it."""

    def __init__(self) -> None:
        super().__init__()
        self.assigned = []

    def __setattr__(self, name, value) -> None:
        if name == "_current_fx_name" and "assigned" in self.__dict__:
            self.assigned.append(value)
        super().__setattr__(name, value)


def test_the_hook_name_is_set_through_a_modules_own_setattr(tmp_path):
    """dispatch writes `_current_fx_name` into the module's __dict__ only when its class keeps nn.Module's
    __setattr__; a class with its own sees each assignment, as under Lightning's loop."""
    runs = {}
    for name, install in (("lightning", hook_dispatch.uninstall), ("ours", hook_dispatch.install)):
        install()
        try:
            model = WatchesItsAttributes()
            calls = []
            tiny_trainer(tmp_path / name, max_steps=2, callbacks=[SomeHooks(calls)]).fit(model)
            runs[name] = model.assigned
        finally:
            hook_dispatch.install()
    # 2 batches: the callback's dispatch each time (Lightning's loop also sets it for the module's empty hook).
    assert runs["ours"].count("on_train_batch_end") == 2
    assert runs["lightning"].count("on_train_batch_end") == 4
    # Plain modules: the same value lands in the instance's __dict__, where attribute reads find it.
    plain = BoringModel()
    hook_dispatch._set_fx_name(plain, "on_train_batch_end")
    assert plain.__dict__["_current_fx_name"] == plain._current_fx_name == "on_train_batch_end"


class Logs(hook_dispatch.PlainHookName, BoringModel):
    """A module with PlainHookName whose training_step logs: `self.log` checks `_current_fx_name`."""

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("hook", float(self._current_fx_name == "training_step"))
        return out


def test_plain_hook_name_skips_nn_modules_setattr_for_the_hook_name_only(tmp_path):
    names = []
    modules_setattr = torch.nn.Module.__setattr__

    def counted(module, name, value):
        names.append(name)
        modules_setattr(module, name, value)

    model = Logs()
    with mock.patch.object(torch.nn.Module, "__setattr__", counted):
        trainer = tiny_trainer(tmp_path, max_steps=3, log_every_n_steps=1)
        trainer.fit(model)
        model.extra = torch.nn.Linear(2, 2)  # anything else still takes nn.Module's path: a submodule is registered
    assert "_current_fx_name" not in names and "extra" in names
    assert "extra" in model._modules
    assert trainer.callback_metrics["hook"] == 1.0  # the name Lightning set is the one the step reads
    assert model._current_fx_name is None  # and it was put back after each hook


def test_every_module_of_the_package_sets_the_hook_name_plainly():
    """Every LightningModule class of gen_lightning.models (where the package defines them all), found by importing
    each of its modules."""
    import importlib
    import pkgutil

    import lightning as L

    import gen_lightning.models

    classes = set()
    for info in pkgutil.walk_packages(gen_lightning.models.__path__, "gen_lightning.models."):
        module = importlib.import_module(info.name)
        classes |= {
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, L.LightningModule)
            and value.__module__.startswith("gen_lightning")
        }
    names = {cls.__name__ for cls in classes}
    assert {"GANModule", "VAEModule", "GPTModule", "LSTMModule", "Seq2SeqModule", "ClassifierModule"} <= names
    assert [cls.__name__ for cls in classes if cls.__setattr__ is not hook_dispatch.PlainHookName.__setattr__] == []


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
    assert call._call_lightning_module_hook is hook_dispatch.module_hook


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


class AddsOne(Callback):
    """Appends a Recorder to trainer.callbacks at the end of the first epoch."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            trainer.callbacks.append(Recorder("late", self.calls))


def _growing_run(tmp_path, calls: list) -> None:
    torch.manual_seed(0)
    trainer = tiny_trainer(tmp_path, max_steps=4, callbacks=[AddsOne(calls), SomeHooks(calls)])
    trainer.limit_train_batches = 2  # two epochs of two batches
    trainer.fit(BoringModel())
    late = trainer.callbacks[-1]
    trainer.validate(trainer.lightning_module, verbose=False)
    # A class changed between two runs of the same Trainer: the next run sees it (the lookup is redone at setup).
    with mock.patch.object(
        SomeHooks, "on_validation_batch_end", lambda self, *a, **k: self.calls.append("patched"), create=True
    ):
        trainer.validate(trainer.lightning_module, verbose=False)
    assert late in trainer.callbacks


def test_a_callback_added_during_a_run_gets_the_hooks_that_follow(tmp_path):
    (lightning_calls,), (our_calls,) = _lightning_then_ours(_growing_run, tmp_path)
    assert our_calls == lightning_calls
    late_batches = [c for c in our_calls if c[0] == "late" and c[1] == "on_train_batch_end"]
    assert len(late_batches) == 2  # the second epoch's two batches
    assert our_calls.count("patched") == 1


# -- module hooks (module_hook) ---------------------------------------------------------------------------------------


class RecordingModel(BoringModel):
    """Overrides two empty hooks and one with a body; another empty hook is set on the instance."""

    def __init__(self, calls: list) -> None:
        super().__init__()
        self.calls = calls
        self.on_after_backward = lambda: calls.append(("instance", "on_after_backward", self._current_fx_name))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.calls.append(("module", "on_train_batch_end", self._current_fx_name, batch_idx))

    def on_before_optimizer_step(self, optimizer) -> None:
        self.calls.append(("module", "on_before_optimizer_step", self._current_fx_name, type(optimizer).__name__))

    def on_before_batch_transfer(self, batch, dataloader_idx):
        self.calls.append(("module", "on_before_batch_transfer", self._current_fx_name))
        return batch * 2  # what it returns is the batch the step sees


def _module_run(tmp_path, calls: list, hooks_called: list) -> None:
    real = hook_dispatch._lightning_module_hook

    def counting(trainer, hook_name, *args, **kwargs):
        hooks_called.append(hook_name)
        return real(trainer, hook_name, *args, **kwargs)

    torch.manual_seed(0)
    model = RecordingModel(calls)
    trainer = tiny_trainer(tmp_path, max_steps=3)
    with mock.patch.object(hook_dispatch, "_lightning_module_hook", counting):
        if call._call_lightning_module_hook is not hook_dispatch.module_hook:  # Lightning's own: count it too
            with mock.patch.object(call, "_call_lightning_module_hook", counting):
                trainer.fit(model)
        else:
            trainer.fit(model)
    calls.append(("weights", [round(float(p.sum()), 6) for p in model.parameters()]))


def test_module_hooks_make_the_same_calls_and_empty_ones_are_skipped(tmp_path):
    (lightning_calls, lightning_hooks), (our_calls, our_hooks) = _lightning_then_ours(_module_run, tmp_path, lists=2)
    assert our_calls == lightning_calls  # same calls, order, _current_fx_name, and the same trained weights
    assert ("module", "on_before_optimizer_step", "on_before_optimizer_step", "SGD") in our_calls
    assert ("instance", "on_after_backward", "on_after_backward") in our_calls
    # LightningModule's empty hooks reach Lightning's caller under its loop, not under module_hook.
    for empty in ("on_before_backward", "on_train_batch_start", "on_before_zero_grad", "on_train_epoch_start"):
        assert empty in lightning_hooks and empty not in our_hooks, empty
    # Overridden, instance-set and non-empty hooks still go through Lightning's caller.
    for kept in ("on_train_batch_end", "on_before_optimizer_step", "on_after_backward", "on_before_batch_transfer"):
        assert our_hooks.count(kept) == lightning_hooks.count(kept) > 0, kept
    assert "transfer_batch_to_device" in our_hooks and "configure_optimizers" in our_hooks


def test_is_empty_reads_the_body():
    from lightning.pytorch import LightningModule

    assert hook_dispatch.is_empty(LightningModule.on_before_backward)
    assert hook_dispatch.is_empty(LightningModule.on_train_batch_end)
    assert not hook_dispatch.is_empty(LightningModule.on_before_batch_transfer)  # returns the batch
    assert not hook_dispatch.is_empty(LightningModule.transfer_batch_to_device)
    assert not hook_dispatch.is_empty(RecordingModel.on_train_batch_end)

    def returns_zero(self):
        """A docstring."""
        return 0

    def docstring_only(self):
        """Nothing else."""

    assert not hook_dispatch.is_empty(returns_zero) and hook_dispatch.is_empty(docstring_only)
    assert not hook_dispatch.is_empty(len)  # a builtin has no bytecode to read: called


def test_with_a_profiler_every_module_hook_is_profiled(tmp_path):
    from lightning.pytorch.profilers import SimpleProfiler

    trainer = tiny_trainer(tmp_path, max_steps=2)
    trainer.profiler = SimpleProfiler()
    trainer.fit(BoringModel())
    assert "[LightningModule]BoringModel.on_before_backward" in set(trainer.profiler.recorded_durations)


def test_lightnings_module_hook_caller_does_nothing_else():
    """module_hook skips Lightning's `_call_lightning_module_hook` for an empty hook: right only while that function
    does nothing but set `_current_fx_name`, call the hook inside the profiler and put the name back. A Lightning that
    adds more fails here, so that gen_lightning/hook_dispatch.py is re-checked against it."""
    source = inspect.getsource(hook_dispatch._lightning_module_hook)
    for fragment in (
        "fn = getattr(pl_module, hook_name)",
        "prev_fx_name = pl_module._current_fx_name",
        "pl_module._current_fx_name = hook_name",
        "output = fn(*args, **kwargs)",
        "pl_module._current_fx_name = prev_fx_name",
        "return output",
    ):
        assert fragment in source, f"Lightning's _call_lightning_module_hook changed ({fragment!r} is gone)"
    assert source.count("\n") < 32, (
        "Lightning's _call_lightning_module_hook grew: re-check gen_lightning/hook_dispatch.py"
    )
