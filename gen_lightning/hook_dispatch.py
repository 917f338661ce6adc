"""Hooks go only to the callbacks and modules that implement them.

Lightning calls every hook on every callback: `call._call_callback_hooks` loops over all of `trainer.callbacks`,
and for each one enters a profiler context and formats `"[Callback]{state_key}.{hook}"`, even when the callback
inherits `Callback`'s empty method. A `gen-lightning fit` has 13 callbacks and a GAN batch fires 8 hooks (two each of
before/after backward and before the optimizer step): ~100 calls per batch that do nothing, ~30 us per hook warm and
several times that right after a backward has flushed the caches. Measured on the DCGAN digits benchmark
(benchmarks/overhead_gan.py), skipping them took the overhead over a plain loop from 1.070x to 1.048x.

`dispatch` is Lightning's loop with that one change (TorchTNT's loops do the same: meta-pytorch/tnt#455). Written by
hand because Lightning has no switch for it. What stays exactly Lightning's:
  - the callbacks that implement a hook are called in `trainer.callbacks` order, with the same arguments, and
    `pl_module._current_fx_name` names the hook while they run;
  - with a profiler configured (`--trainer.profiler simple`, ...) Lightning's own loop runs, so the report still
    has an entry per callback and hook;
  - `monitoring_callbacks` (epoch ends: checkpoint and early-stopping callbacks first or last) is Lightning's loop.
A callback "implements" a hook when its class overrides `Callback`'s method or the instance has its own attribute of
that name (a wrapper set on it). Which callbacks implement a hook is looked up once per hook and run, and again when
`trainer.callbacks` changes (`_implementers`); a hook with no implementer returns at once, and the module is read once
per hook, not once per callback as Lightning's loop does (3 property calls each).

`module_hook` does the same for the LightningModule's hooks (`call._call_lightning_module_hook`): a hook whose method
is an empty body (LightningModule's own `on_before_backward`, `on_train_batch_end`, ... that a module does not
override) is not called, which saves the profiler context, the formatted name and the two assignments of
`_current_fx_name` per call: 8 calls per GAN batch (on_train_batch_start/end, and per optimizer step
on_before/after_backward and on_before_optimizer_step). Hooks with a body (`on_before_batch_transfer` returns the
batch, ...), hooks a module overrides or sets on itself, and every hook when a profiler is configured are Lightning's.

`install()` is called where the CLI starts (gen_lightning/cli.py), as the other patches are;
tests/test_hook_dispatch.py checks that a run calls the same hooks, in the same order, as Lightning's.
"""

from __future__ import annotations

import dis
import functools
import logging
import operator
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback
from torch.nn import Module
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.trainer import call

_lightning_dispatch = call._call_callback_hooks
_lightning_module_hook = call._call_lightning_module_hook
log = logging.getLogger(call.__name__)  # Lightning's logger for this message
_module_setattr = Module.__setattr__


# Kept on the Trainer: (its callbacks, {hook: (Callback's method, the callbacks implementing it)}).
_CACHE = "_gen_lightning_hook_implementers"


def _implementers(trainer, hook_name: str, base: Any) -> list:
    """The callbacks of `trainer` that implement `hook_name`, in order. Looked up once per hook and run (the cache is
    dropped at `setup`, the first hook of every fit/validate/test/predict) and again whenever `trainer.callbacks`
    changes: the check is two attribute lookups per callback, ~200 a GAN batch (13 callbacks x 8 hooks), where a cached
    list is one. A hook set on a callback instance or class in the middle of a run is seen from the next run."""
    callbacks = tuple(trainer.callbacks)
    if hook_name == "setup":
        trainer.__dict__.pop(_CACHE, None)
    cached = trainer.__dict__.get(_CACHE)
    # `is`, not `==`: a callback with its own __eq__ (a dataclass) must not pass for another one.
    if cached is None or len(cached[0]) != len(callbacks) or not all(map(operator.is_, cached[0], callbacks)):
        cached = trainer.__dict__[_CACHE] = (callbacks, {})
    entry = cached[1].get(hook_name)
    if entry is None or entry[0] is not base:
        found = [
            callback
            for callback in callbacks
            if hook_name in getattr(callback, "__dict__", ()) or getattr(type(callback), hook_name, None) is not base
        ]
        entry = cached[1][hook_name] = (base, found)
    return entry[1]


def dispatch(trainer, hook_name: str, *args: Any, monitoring_callbacks: Optional[bool] = None, **kwargs: Any) -> None:
    base = getattr(Callback, hook_name, None)
    if base is None or monitoring_callbacks is not None or not isinstance(trainer.profiler, PassThroughProfiler):
        return _lightning_dispatch(trainer, hook_name, *args, monitoring_callbacks=monitoring_callbacks, **kwargs)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(f"{trainer.__class__.__name__}: calling callback hook: {hook_name}")
    callbacks = _implementers(trainer, hook_name, base)
    if not callbacks:
        return  # Lightning would set _current_fx_name and put it back: no difference once it returns
    pl_module = trainer.lightning_module
    if pl_module:
        prev_fx_name = pl_module._current_fx_name
        _set_fx_name(pl_module, hook_name)
    for callback in callbacks:
        fn = getattr(callback, hook_name)
        if callable(fn):
            fn(trainer, pl_module, *args, **kwargs)  # Lightning re-reads trainer.lightning_module (3 calls) for each
    if pl_module:
        # restore current_fx when nested context (as Lightning does)
        _set_fx_name(pl_module, prev_fx_name)


class PlainHookName:
    """LightningModule mixin (first base): `_current_fx_name`, the hook Lightning is running, is set straight into the
    instance's __dict__. Lightning sets it twice around every hook it calls (`call._call_strategy_hook` for
    training_step and batch_to_device, `_call_lightning_module_hook`, ...: 12 times a GAN batch); through
    nn.Module.__setattr__ each costs three isinstance checks (two of them Python-level `__instancecheck__`s) and three
    dict lookups, 1.4 us warm and several times that right after a backward, to store a str where `object` would. Every
    other attribute takes nn.Module's path."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)


_PLAIN_SETATTRS = (_module_setattr, PlainHookName.__setattr__)


def _set_fx_name(module, name: Optional[str]) -> None:
    """`module._current_fx_name = name`, straight into the instance's __dict__ when its class keeps nn.Module's
    __setattr__ (see PlainHookName for the cost) or PlainHookName's. A class with its own gets the assignment."""
    if type(module).__setattr__ in _PLAIN_SETATTRS:
        module.__dict__["_current_fx_name"] = name
    else:
        module._current_fx_name = name


@functools.lru_cache(maxsize=None)
def is_empty(function: Any) -> bool:
    """Whether a function's body does nothing but return None (a docstring and/or `pass`), read from its bytecode
    (RESUME / NOP / LOAD_CONST None + RETURN_VALUE, or RETURN_CONST None from Python 3.12)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("RESUME", "NOP", "RETURN_VALUE"):
            continue
        if instruction.opname in ("LOAD_CONST", "RETURN_CONST") and instruction.argval is None:
            continue
        return False
    return True


def module_hook(trainer, hook_name: str, *args: Any, pl_module: Optional[Any] = None, **kwargs: Any) -> Any:
    """Lightning's `_call_lightning_module_hook`, but a hook that is its class's empty method (not one set on the
    instance) is not called: None is what it would return."""
    module = pl_module or trainer.lightning_module
    if (
        module is not None
        and isinstance(trainer.profiler, PassThroughProfiler)
        and hook_name not in getattr(module, "__dict__", ())
        and is_empty(getattr(type(module), hook_name, None))
    ):
        return None
    return _lightning_module_hook(trainer, hook_name, *args, pl_module=pl_module, **kwargs)


def install() -> None:
    """Route Lightning's callback- and module-hook calls through `dispatch` and `module_hook` (idempotent)."""
    call._call_callback_hooks = dispatch
    call._call_lightning_module_hook = module_hook


def uninstall() -> None:
    """Lightning's own loops again (tests compare the two)."""
    call._call_callback_hooks = _lightning_dispatch
    call._call_lightning_module_hook = _lightning_module_hook
