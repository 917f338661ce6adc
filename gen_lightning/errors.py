"""User-facing errors.

A `UserError` is a mistake the user can fix (a missing path, an empty corpus, a bad option value).
The CLI catches it and prints its message as one line, with no traceback, and exits with status 2.
Everything else is a bug in gen-lightning or a library and keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input; the message must name the problem and the fix."""
