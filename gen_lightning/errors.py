"""User-facing errors.

A `UserError` is a mistake the user can fix (a missing path, an empty corpus, a bad option value).
The CLI catches it and prints its message as one line, with no traceback, and exits with status 2.
Everything else is a bug in gen-lightning or a library and keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input; the message must name the problem and the fix."""


def check_learning_rates(**rates: float | None) -> None:
    """A learning rate <= 0 (or NaN) trains nothing or climbs the loss: one line naming the option, not a
    run that diverges or stands still. `check_learning_rates(lr=lr, min_lr=min_lr)`; None = not set; a
    `min_lr` (the floor of a decay) may be 0."""
    for name, value in rates.items():
        floor = name.startswith("min_")
        if value is not None and not (value >= 0 if floor else value > 0):
            raise UserError(
                f"model.{name} must be {'>= 0' if floor else '> 0'}, got {value}; give a positive "
                f"learning rate (e.g. --model.{name} 1e-3)"
            )
