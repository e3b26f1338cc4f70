"""The one base class of errors a user can fix.

Every error that comes from a user's request, config or the state of their data (a missing
snapshot, an empty split, a bad manifest) derives from `MillpondError`: the CLI prints it as
one line naming the cause and the fix and exits with status 2, and `--debug` shows the
traceback. Anything else escaping a command is a bug, and keeps its traceback.
"""

from __future__ import annotations


class MillpondError(Exception):
    """An error the user can fix; its message names the cause and the fix."""


class NotEnoughDataError(MillpondError, ValueError):
    """A snapshot, split or table holds too little to do what was asked."""
