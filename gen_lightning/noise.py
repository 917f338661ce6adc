"""Output of libraries that is not the user's business, kept off the user's screen -- in this one place.

`install()` runs once when the CLI starts. Each filter names its source and matches exactly that output.

- DeepSpeed's logger writes to the `sys.stdout` of import time and, on a machine without CUDA, warns
  "Setting accelerator to CPU" while being imported. DeepSpeed is imported lazily and sometimes by
  jsonargparse itself (it resolves Lightning's `if TYPE_CHECKING: import deepspeed` while parsing a trainer
  file), so a `--print_config` under a DeepSpeed trainer file printed that line before its YAML. The import
  of `deepspeed` runs with stdout sent to stderr, which also keeps DeepSpeed's later log lines on stderr.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys

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


def install() -> None:
    """Idempotent: safe to call from every entry point."""
    if not any(isinstance(finder, _QuietImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImportFinder())
