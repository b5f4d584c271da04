"""Error types that the CLI maps to exit codes.

``UserError`` (and its subclasses) means bad input or bad configuration: the CLI prints its
message as one line and exits with code 2. Anything else is an internal error (exit code 1).
"""

from __future__ import annotations

import errno


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


_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_DATABASE_HINTS = ("database or disk is full", "attempt to write a readonly database",
                   "unable to open database file")


def environment_error(exc: BaseException) -> UserError | None:
    """A :class:`UserError` for a failure caused by the machine, not by stbench, else None.

    A full disk, an exceeded quota, a read-only or forbidden folder (an ``OSError`` with that
    errno, or a SQLite store that says so, anywhere in the exception's chain) is a problem the
    user fixes: exit code 2 with one line, not an internal error.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ENVIRONMENT_ERRNOS:
            what = "access refused" if current.errno in (errno.EACCES, errno.EPERM) else \
                "cannot write"
            return UserError(f"{what}: {_ENVIRONMENT_ERRNOS[current.errno]}",
                             where=str(current.filename) if current.filename else None,
                             fix="free disk space or fix the folder's permissions, or point "
                                 "tracking.dir / cache.dir / --json at another folder")
        text = str(current)
        hint = next((h for h in _DATABASE_HINTS if h in text), None)
        if hint is not None:
            return UserError(f"cannot write to the tracking or tuning database: {hint}",
                             fix="free disk space or fix the permissions of tracking.dir "
                                 "(or tracking.uri / tuning.storage)")
        current = current.__cause__ or current.__context__
    return None
