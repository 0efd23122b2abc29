"""Errors a user can fix.

:class:`UserError` marks a mistake in what the user gave — a missing file or folder, a bad flag,
a config key or value that does not exist, a port out of range or in use — as opposed to a bug.
The command line (``tfrrl_cli``) prints such an error's message as one line that says what is
wrong and what to do, and exits with code 2; anything else is a bug and keeps its traceback.
Subclass it together with the built-in type callers may already catch (e.g.
``class LinkSpecError(UserError, ValueError)``).
"""


class UserError(Exception):
    """A mistake in the user's input; its message says what is wrong and what to do."""
