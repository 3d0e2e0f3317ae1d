"""The project's own error types: problems a user can fix, each told in one sentence.

Command-line programs print a ``UserError`` (and the file-system errors a path can cause) as one line
and exit with status 2; any other exception is a bug and keeps its traceback. Set ``CINN_TRACEBACK=1``
to see the traceback of a user error too.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave: a file, a setting, an argument. Its message names it."""


class UsageError(UserError, ValueError):
    """Arguments or a run directory that cannot work together."""


class DataError(UserError, ValueError):
    """Photos that cannot serve: none found, none usable, a malformed list."""


class ReleaseError(UserError, ValueError):
    """A model release that is missing, incomplete or damaged."""


class DeviceError(UserError, RuntimeError):
    """A device was asked for that this machine does not have."""
