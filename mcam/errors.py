"""The one error type for user mistakes: the CLI prints it as one line (`mcam <cmd>: error: ...`) and exits 2.

Anything else that escapes a subcommand is a bug and keeps its traceback. Messages name the file, row and
field (or option) at fault and, where it helps, what would be accepted.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad input file, config key, option value); never a bug in MCAM."""


class UnknownNameError(UserError, KeyError):
    """A name (suite, detector, ...) nothing is registered under; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class InputError(UserError, ValueError):
    """Bad input data or configuration; a ValueError too, so older `except ValueError` callers still catch it."""
