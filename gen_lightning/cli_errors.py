"""Turn jsonargparse's nested validation reports into one line a user can act on.

jsonargparse reports a bad `--model.beta abc` as a multi-line tree ("Parser key "model": Does not
validate against any of the Union subtypes ... - Parser key "beta": Expected a <class 'float'>...").
The user needs the key, what was expected and what was given: `model.beta: expected float, got abc`.
"""

from __future__ import annotations

import re
from typing import Optional

from gen_lightning.errors import UserError

HINT = " (run `gen-lightning fit --help` to list the accepted keys)"
_KEY = re.compile(r'Parser key "([^"]+)":\s*(.*)')
_UNKNOWN = re.compile(r"Option '([^']+)' is not accepted")
_EXPECTED = re.compile(r"Expected a <class '([\w.]+)'>")
_CONDENSED = re.compile(r"([\w.]+): (.*)")
_CONDENSED_UNKNOWN = re.compile(r"unknown key '([^']+)'")
_LITERAL = re.compile(r"Expected a typing.Literal\[(.*)\]")


def condense(message: str) -> str:
    lines = [ln.strip() for ln in str(message).replace(HINT, "").splitlines() if ln.strip()]
    if not lines:
        return "invalid arguments" + HINT
    key, reason = "", lines[0]
    match = _KEY.match(reason)
    if match:
        key, rest = match.groups()
        errors = [ln[2:] for ln in lines if ln.startswith("- ")]
        given = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Given value:")), None)
        candidates = [rest] if rest else (errors or lines[1:2])
        specific = [c for c in candidates if not _EXPECTED.fullmatch(c)]
        if specific:
            reason = specific[0]
        else:  # only type mismatches, e.g. Optional[int] given "abc"
            types = [t.replace("NoneType", "null") for c in candidates for t in _EXPECTED.findall(c)]
            reason = f"expected {' or '.join(types) or 'another value'}, got {given}"
        # A nested class's own parser names the init argument, raw or already condensed by us.
        inner = _KEY.match(reason) or _CONDENSED.match(reason)
        if inner:
            key, reason = f"{key}.{inner.group(1)}", inner.group(2)
        elif _CONDENSED_UNKNOWN.match(reason):
            return f"unknown key '{key}.{_CONDENSED_UNKNOWN.match(reason).group(1)}'{HINT}"
    unknown = _UNKNOWN.search(reason)
    if unknown:
        name = f"{key}.{unknown.group(1)}" if key else unknown.group(1)
        return f"unknown key '{name}'{HINT}"
    reason = _EXPECTED.sub(r"expected \1", reason)
    reason = _LITERAL.sub(r"expected one of \1", reason).replace(". Got value:", ", got")
    return (f"{key}: {reason}" if key else reason) + HINT


def find_user_error(err: BaseException) -> Optional[UserError]:
    """The UserError behind `err`, if any: jsonargparse and Lightning wrap exceptions in their own.

    Lightning's MisconfigurationException is by definition a settings mistake (e.g. automatic gradient
    clipping asked of a manually optimized GAN), so it is reported the same way. So is a full disk
    (ENOSPC): nothing to debug, and every checkpoint is written to a temporary file and renamed
    (checkpoint_io.py), so the last complete one is intact."""
    import errno

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    original, seen = err, set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        if isinstance(err, MisconfigurationException):
            return UserError(" ".join(str(err).split()))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            where = f" (writing '{err.filename}')" if err.filename else ""
            return UserError(
                f"No space left on device{where}; the last complete checkpoint is intact: free some "
                f"space, then continue with --ckpt_path last"
            )
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    from gen_lightning.dead_rank import lost_peer

    line = lost_peer(original)  # not a mistake, but a fault with one thing to say: which rank died, what is saved
    return UserError(line) if line else None
