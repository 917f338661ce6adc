"""The verb list of `gen-lightning`, built without importing torch or Lightning.

`gen-lightning --help` used to build the whole LightningCLI parser to print it: `import lightning` alone is
3-13 s on 2 cores (ARCHITECTURE.md), for a list of seven words. Here the extra verbs are found as module files
of `gen_lightning.commands` and described by the first line of their docstring, read with `ast` (importing
them would import torch); the four Lightning verbs are described in Lightning's own words.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

PROG = "gen-lightning"
# LightningCLI's subcommands with the first line of the Trainer method's docstring (what its --help shows).
LIGHTNING_VERBS = {
    "fit": "Runs the full optimization routine.",
    "validate": "Perform one evaluation epoch over the validation set.",
    "test": "Perform one evaluation epoch over the test set.",
    "predict": "Run inference on your data.",
}


def extra_verbs() -> list[str]:
    """Verbs beyond fit/validate/test/predict: one module each in gen_lightning.commands."""
    from gen_lightning import commands  # a package with no imports of its own

    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def _summary(verb: str) -> str:
    from gen_lightning import commands

    source = Path(commands.__path__[0], f"{verb}.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    # The docstrings open with "`gen-lightning VERB ARGS`: what it does"; the list shows what it does.
    text = line.split("`: ", 1)[1] if line.startswith("`") and "`: " in line else line
    return text[:1].upper() + text[1:]


def verb_help() -> str:
    rows = {**LIGHTNING_VERBS, **{verb: _summary(verb) for verb in extra_verbs()}}
    width = max(map(len, rows))
    lines = [f"usage: {PROG} VERB [options]", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {text}" for verb, text in rows.items()]
    lines += ["", f"`{PROG} VERB --help` lists a verb's options (for fit/validate/test/predict: every config key)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The console script: the verb list here, everything else in gen_lightning.cli (which imports Lightning)."""
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    if args in ([], ["-h"], ["--help"]):
        print(verb_help())
        sys.exit(0 if args else 2)  # no verb at all is a usage mistake, as in LightningCLI
    from gen_lightning.cli import main as cli_main

    cli_main(argv)
