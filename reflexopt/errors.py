"""One error tree. Every message says what is wrong, where, and what to do about it.

The CLI turns any :class:`ReflexoptError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import errno
from pathlib import Path


class ReflexoptError(Exception):
    """Base class of every error reflexopt raises on purpose."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


def _where(path: str | Path, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


class InputFileError(ReflexoptError):
    """A file the user gave is missing, unreadable or malformed."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, fix: str | None = None):
        self.path = str(path)
        self.line = line
        super().__init__(f"{_where(path, line)}: {message}", fix=fix)


class DataError(InputFileError):
    """A dataset row is invalid."""


class PromptError(InputFileError):
    """A prompt file is invalid or does not fit the data."""


class RubricError(InputFileError):
    """A judge rubric cannot be found or read."""


class ConfigError(ReflexoptError):
    """An option or combination of options is invalid."""


class ModelError(ReflexoptError):
    """A model id is unknown or a model cannot be started."""


class MetricError(ReflexoptError):
    """A metric name or its argument is invalid."""


class BudgetExceeded(ReflexoptError):
    """A hard budget (calls or cost) would be exceeded by the next call."""


def disk_full(exc: BaseException) -> str | None:
    """When `exc`, or an error that caused it, is a full disk (ENOSPC, a quota, SQLite's "database or disk is
    full" under an Optuna or SQLAlchemy wrapper): the file it was writing ("" when unknown). Else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return str(e.filename or "")
        if "database or disk is full" in str(e) or "No space left on device" in str(e):
            return ""
        e = e.__cause__ or e.__context__
    return None
