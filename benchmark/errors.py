"""Error types that the CLI maps to exit codes.

``UserError`` (and its subclasses) means bad input or bad configuration: the CLI prints its
message as one line and exits with code 2. Anything else is an internal error (exit code 1).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration; the message says what, where, and how to fix it."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message as a single line: ``what (where); fix``."""
        text = self.what
        if self.where:
            text += f" [{self.where}]"
        if self.fix:
            text += f"; fix: {self.fix}"
        return " ".join(text.split())


class ConfigError(UserError):
    """An unknown or invalid configuration value."""


class DataError(UserError):
    """A malformed, missing or inconsistent input file."""


class UnknownNameError(UserError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.one_line()
