"""What goes wrong with the journal, as exceptions every module of ``journal/`` raises."""

from __future__ import annotations

from core.errors import ConfigError, TradingError


class JournalError(TradingError):
    """The journal cannot do what was asked (closed, unknown order, unusable file)."""


class JournalUnusable(JournalError, ConfigError):
    """The state database cannot be opened as a journal (a directory, not SQLite, corrupt, a
    folder that cannot be created): bad input, so also a :class:`core.errors.ConfigError` and
    ``main`` ends with exit 2 and this one line instead of a traceback."""

    def __init__(self, problem: str) -> None:
        ConfigError.__init__(self, [problem])


class SchemaTooNew(JournalUnusable):
    """The file was written by a newer version of the daemon than this one."""
