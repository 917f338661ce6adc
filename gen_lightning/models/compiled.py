"""`compile: true` for every family: torch.compile a module's nets in place.

`nn.Module.compile()` (not `torch.compile(net)`, which wraps the net in an OptimizedModule) compiles the
net's `__call__` and leaves the module tree alone, so parameter names, `state_dict()` and checkpoints stay
those of the eager nets (no `_orig_mod.` prefix): a checkpoint of a compiled run loads into an eager model
and the other way round. Only `__call__` is compiled; methods called directly (a GPT's `generate`, beam
search steps) stay eager, which suits their changing shapes. Called from `setup`, which runs once per stage.
"""

from __future__ import annotations

from torch import nn


def compile_nets(*nets: nn.Module) -> None:
    for net in nets:
        if net._compiled_call_impl is None:  # torch's own marker of an in-place compile: once per net
            net.compile()
