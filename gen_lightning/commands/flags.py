"""One flag style across verbs: the extra verbs take LightningCLI's spelling (`--ckpt_path`, `--max_new_tokens`:
words joined by underscores, as in `fit --ckpt_path` and `--trainer.max_steps`), and the dashed spelling
(`--max-new-tokens`) as an alias, so muscle memory from either world works. `--help` shows both.

argparse has no notion of spelling aliases; a parser that registers both spellings of every long option is the
whole of it.
"""

from __future__ import annotations

import argparse


def both_spellings(names: tuple[str, ...]) -> tuple[str, ...]:
    """`--max-new-tokens` -> (`--max_new_tokens`, `--max-new-tokens`); short options and positionals as given."""
    spelled: list[str] = []
    for name in names:
        if name.startswith("--"):
            for variant in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
                if variant not in spelled:
                    spelled.append(variant)
        else:
            spelled.append(name)
    return tuple(spelled)


def _spelling_aliases(add_argument):
    def add(*names, **kwargs):
        return add_argument(*both_spellings(names), **kwargs)

    return add


class VerbParser(argparse.ArgumentParser):
    """An ArgumentParser whose long options answer to both spellings (and whose groups' options too)."""

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*both_spellings(names), **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        group.add_argument = _spelling_aliases(group.add_argument)
        return group

    def add_mutually_exclusive_group(self, **kwargs):
        group = super().add_mutually_exclusive_group(**kwargs)
        group.add_argument = _spelling_aliases(group.add_argument)
        return group
