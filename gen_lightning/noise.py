"""Output of libraries that is not the user's business, kept off the user's screen -- in this one place.

`install()` runs once when the CLI starts (every rank). Each filter names its source and matches exactly that
output; nothing broader is silenced.

- torchdata 0.11's StatefulDataLoader calls `torch.set_vital`, which torch 2.14 deprecates: a UserWarning
  "'set_vital' is deprecated" at every loader iteration start, from library code to library code.
- Lightning 2.6's `utilities/_pytree.py` builds torch's `LeafSpec`, deprecated in torch 2.14 (FutureWarning
  "`isinstance(treespec, LeafSpec)` is deprecated").
- Lightning's logger connector suggests installing `litlogger` on every run ("💡 Tip: For seamless cloud
  logging...", an info record of `lightning.pytorch.utilities.rank_zero`): advertising, not the user's run.
- Lightning's SLURMEnvironment warns "The `srun` command is available on your system but is not used" on a
  machine with Slurm installed whenever a run is not under srun. Silenced only outside a Slurm job (no
  SLURM_JOB_ID), where it is never the user's intent; inside an allocation the hint may be right and stays.

- DeepSpeed's logger writes to the `sys.stdout` of import time and, on a machine without CUDA, warns
  "Setting accelerator to CPU" while being imported (a warning record of the "DeepSpeed" logger, dropped:
  the run says which accelerator it uses itself). Loading DeepSpeed's CPU ops makes torch's cpp_extension
  warn "No CUDA runtime is found" on a machine without one: dropped as well. DeepSpeed is imported lazily and sometimes by
  jsonargparse itself (it resolves Lightning's `if TYPE_CHECKING: import deepspeed` while parsing a trainer
  file), so a `--print_config` under a DeepSpeed trainer file printed that line before its YAML. The import
  of `deepspeed` runs with stdout sent to stderr, which also keeps DeepSpeed's later log lines on stderr.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import warnings

_QUIET_MODULES = ("deepspeed",)


class _StdoutToStderrLoader(importlib.abc.Loader):
    """Runs a module's import with sys.stdout pointing at sys.stderr."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            self.loader.exec_module(module)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _QUIET_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _StdoutToStderrLoader(spec.loader)
        return spec


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def install() -> None:
    """Idempotent: safe to call from every entry point."""
    if not any(isinstance(finder, _QuietImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImportFinder())
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated", category=UserWarning)
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    if "SLURM_JOB_ID" not in os.environ:
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
    for name, prefix in (
        ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud logging"),
        ("DeepSpeed", "Setting accelerator to CPU"),
        ("torch.utils.cpp_extension", "No CUDA runtime is found"),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefix))
