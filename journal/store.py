"""The journal's store: one SQLite connection, its schema, its transactions and its key/values.

Opening the file sets WAL mode with ``synchronous=FULL`` (every write commits before the
method returns, so nothing written is lost to ``kill -9``) and brings the schema up to date
(:mod:`journal.schema`). A file that cannot be a journal is refused with
:class:`journal.errors.JournalUnusable` (one line, exit 2) instead of a traceback.

The repositories of ``journal/`` (orders, fills, trades, equity, alerts, events, operator
commands) write through :meth:`Store.tx` and read through :meth:`Store.read` or
:meth:`Store.reading`; the lock makes one store safe to share between the loop and worker
threads. The ``state`` table (latched states: breaker, trading state, last cycle, ...) is a
plain key/value map kept here, since several repositories read it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from core.private_files import private_dir, private_file, tighten
from journal.codec import _json, _text
from journal.errors import JournalError, JournalUnusable
from journal.schema import MIGRATIONS, migrate

log = structlog.get_logger(__name__)


class Store:
    """An open journal file. One per process; calls are synchronous, short and committed."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise JournalUnusable(f"state database {self.path}: is a directory; give --state-db a file path")
        try:
            if str(path) != ":memory:":
                private_dir(self.path.parent)
                private_file(self.path)  # SQLite gives the -wal and -shm files the db file's mode
        except OSError as exc:
            raise JournalUnusable(
                f"state database {self.path}: cannot create its folder {self.path.parent} "
                f"({exc.strerror}); give --state-db a path in a writable folder"
            ) from None
        self.lock = threading.RLock()
        self._depth = 0
        try:
            self.conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise JournalUnusable(f"cannot open the journal at {self.path}: {exc}") from None
        self.conn.row_factory = sqlite3.Row
        try:
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.schema_version = migrate(self.conn, MIGRATIONS, source=str(self.path))
            for sidecar in ("-wal", "-shm"):
                tighten(f"{self.path}{sidecar}")
        except sqlite3.OperationalError as exc:
            self.conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise JournalError(f"{self.path} is not a usable journal: {exc}") from None
            raise JournalUnusable(f"state database {self.path} is not a usable journal: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise JournalUnusable(
                f"state database {self.path} is not a usable journal: {exc} (an SQLite file written "
                "by this daemon is expected; point --state-db at it or at a new path)"
            ) from None
        except BaseException:
            self.conn.close()
            raise
        if str(mode).lower() != "wal":
            log.warning("journal_not_wal", path=str(self.path), journal_mode=mode)
        self._closed = False

    def close(self) -> None:
        """Checkpoint and close. Further calls raise :class:`JournalError`."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # another process may hold the WAL; data is safe anyway
                log.debug("journal_checkpoint_skipped", error=str(exc))
            self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed on exit (nested calls join the outer one)."""
        with self.lock:
            self.check_open()
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, for a read of several statements."""
        with self.lock:
            self.check_open()
            yield self.conn

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one query."""
        with self.reading() as conn:
            return conn.execute(sql, params).fetchall()

    def check_open(self) -> None:
        if getattr(self, "_closed", True):
            raise JournalError(f"the journal at {self.path} is closed")

    def journal_mode(self) -> str:
        """SQLite's journal mode for this file (``wal``)."""
        return str(self.read("PRAGMA journal_mode")[0][0])

    # -- latched state: key -> JSON object ---------------------------------------------------

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        """Store a latched state (JSON; Decimals and datetimes are stored as strings)."""
        if not isinstance(value, dict):
            raise ValueError(f"state {key!r} must be a dict, got {type(value).__name__}")
        text = _json(value, f"state {key!r}")
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (_text(key, "state key"), text),
            )

    def get_state(self, key: str) -> dict[str, Any] | None:
        rows = self.read("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else None

    def delete_state(self, key: str) -> None:
        with self.tx() as conn:
            conn.execute("DELETE FROM state WHERE key = ?", (key,))
