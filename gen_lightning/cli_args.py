"""The command line before jsonargparse reads it: two mistakes it would report without saying where.

- A `--config` YAML file with a syntax error or a key given twice: jsonargparse (through omegaconf) says
  "Problems parsing config: while parsing a flow sequence", with neither the file nor the line. Each
  `--config` file is read here first with PyYAML, whose errors carry the line; a duplicate key, which
  PyYAML alone would quietly resolve to the last value, is an error too (a custom loader: PyYAML has no
  option for it).
- `--model.lr -1e-3`: argparse takes a token starting with `-` that is not a plain negative integer or
  decimal for an option, so it answers "argument --model: expected one argument". Such a value is
  joined to its key (`--model.lr=-1e-3`), which jsonargparse parses, so the model's own check names the
  real problem (a negative learning rate).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gen_lightning.errors import UserError

_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|-(inf|nan)", re.IGNORECASE)
_KEY = re.compile(r"--[A-Za-z_][\w.]*")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice."""


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(
                None, None, f"duplicate key '{key}' (first given on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def check_yaml_file(path: str | Path, option: str = "--config") -> None:
    """One line naming the file, the line and the problem for a YAML file that does not parse (or repeats a key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{option} {path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from None
    try:
        yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = ": ".join(part for part in (err.context, err.problem) if part)
        fix = "keep one of them" if isinstance(err, _DuplicateKey) else "fix the file"
        if "'\\t'" in problem:
            fix = "YAML indents with spaces, not tabs"
        raise UserError(f"{option} {where}: invalid YAML: {problem}; {fix}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{option} {path}: invalid YAML: {' '.join(str(err).split())}; fix the file") from None


def prepare_args(args: list[str]) -> list[str]:
    """`args` with every `--config` file checked and negative numbers joined to their keys."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key, equals, value = arg.partition("=")
        if not equals and i + 1 < len(args):
            value = args[i + 1]
        # `--config FILE`, and a YAML file given to any key (`--model model.yaml`); jsonargparse also takes
        # inline YAML, and names a missing file itself.
        config = key in ("--config", "-c")  # LightningCLI's short form too
        if (config or _KEY.fullmatch(key) and value.endswith((".yaml", ".yml"))) and Path(value).is_file():
            check_yaml_file(value, option=key)
        if _KEY.fullmatch(arg) and i + 1 < len(args) and _NUMBER.fullmatch(args[i + 1]):
            out.append(f"{arg}={args[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out
