"""Callback hooks go only to the callbacks that implement them.

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
that name (a wrapper set on it). `install()` is called where the CLI starts (gen_lightning/cli.py), as the other
patches are; tests/test_hook_dispatch.py checks that a run calls the same hooks, in the same order, as Lightning's.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.trainer import call

_lightning_dispatch = call._call_callback_hooks
log = logging.getLogger(call.__name__)  # Lightning's logger for this message


def _implements(callback: Callback, hook_name: str, base: Any) -> bool:
    return hook_name in getattr(callback, "__dict__", ()) or getattr(type(callback), hook_name, None) is not base


def dispatch(trainer, hook_name: str, *args: Any, monitoring_callbacks: Optional[bool] = None, **kwargs: Any) -> None:
    base = getattr(Callback, hook_name, None)
    if base is None or monitoring_callbacks is not None or not isinstance(trainer.profiler, PassThroughProfiler):
        return _lightning_dispatch(trainer, hook_name, *args, monitoring_callbacks=monitoring_callbacks, **kwargs)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(f"{trainer.__class__.__name__}: calling callback hook: {hook_name}")
    pl_module = trainer.lightning_module
    if pl_module:
        prev_fx_name = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name
    for callback in trainer.callbacks:
        if _implements(callback, hook_name, base):
            fn = getattr(callback, hook_name)
            if callable(fn):
                fn(trainer, trainer.lightning_module, *args, **kwargs)
    if pl_module:
        # restore current_fx when nested context (as Lightning does)
        pl_module._current_fx_name = prev_fx_name


def install() -> None:
    """Route Lightning's callback-hook calls through `dispatch` (idempotent)."""
    call._call_callback_hooks = dispatch


def uninstall() -> None:
    """Lightning's own loop again (tests compare the two)."""
    call._call_callback_hooks = _lightning_dispatch
