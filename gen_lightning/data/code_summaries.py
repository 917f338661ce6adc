"""The bundled seq2seq task: code summarisation on the CPython standard library.

Every function and method (nested ones included) that has a docstring gives one pair: its source code
with the docstring removed -> the first sentence of the docstring. Real text on every machine that has
Python, no download. `ast` finds the functions and their docstrings; the source keeps the `def` line and
the body exactly as written (dedented), without decorators. Functions whose body is nothing but the
docstring are left out (without it no code would remain).

Split by module (one `.py` file), so that no function, and no near-copy of it in the same file, is on
both sides: the modules are put in an order fixed by a hash of their path and the first ones go to
validation until it holds `val_fraction` of the pairs.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

from gen_lightning.data.text import stdlib_files

# The first sentence: up to the first . ! or ? that ends a word (followed by a space or the end).
_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)")


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    origin: str  # where it came from, for error messages: "file:line"


def first_sentence(docstring: str) -> str:
    """The docstring's first sentence, on one line: its first paragraph cut after the first full stop."""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    match = _SENTENCE.match(paragraph)
    return match.group(1) if match else paragraph


def module_pairs(path: Path, root: Path) -> list[Pair]:
    """The (code without docstring -> first sentence) pairs of one module; none if it does not parse."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(text)
    except SyntaxError:  # a stdlib file for another Python version (e.g. lib2to3 test data)
        return []
    lines = text.splitlines(keepends=True)
    name = path.relative_to(root).as_posix()
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        docstring = ast.get_docstring(node, clean=True)
        if not docstring or len(node.body) < 2:
            continue
        doc_node, after = node.body[0], node.body[1]
        if doc_node.lineno == node.lineno or after.lineno == doc_node.end_lineno:
            continue  # docstring shares a line with code: no clean cut by lines
        kept = lines[node.lineno - 1 : doc_node.lineno - 1] + lines[doc_node.end_lineno : node.end_lineno]
        source = textwrap.dedent("".join(kept)).strip("\n")
        target = first_sentence(docstring)
        if source.strip() and target:
            pairs.append(Pair(source, target, f"{name}:{node.lineno}"))
    return pairs


def stdlib_code_summaries(val_fraction: float) -> tuple[list[Pair], list[Pair], dict]:
    """(train pairs, validation pairs, a summary) of the standard library, split by module."""
    root = Path(sysconfig.get_paths()["stdlib"])
    modules = {p.relative_to(root).as_posix(): module_pairs(p, root) for p in stdlib_files()}
    modules = {name: pairs for name, pairs in modules.items() if pairs}
    total = sum(len(pairs) for pairs in modules.values())
    order = sorted(modules, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    val_modules: set[str] = set()
    val_count = 0
    for name in order:
        if val_count >= val_fraction * total:
            break
        val_modules.add(name)
        val_count += len(modules[name])
    train = [pair for name in sorted(modules) if name not in val_modules for pair in modules[name]]
    val = [pair for name in sorted(val_modules) for pair in modules[name]]
    summary = {"modules": len(modules), "val_modules": sorted(val_modules)}
    return train, val, summary
