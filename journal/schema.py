"""The journal's schema: the ordered forward migrations and the function that applies them.

A ``schema_version`` table records every migration applied; opening an older file upgrades it
in place without losing rows (each step in its own transaction, so a crash mid-upgrade leaves
the previous version), and a file written by a newer daemon is refused with
:class:`journal.errors.SchemaTooNew`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from journal.errors import JournalError, SchemaTooNew

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    """One forward step of the schema: ``version`` is reached by running ``statements``."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "intents, orders with status history, fills, trades, day trades, equity, alerts, state, events",
        (
            """CREATE TABLE intents (
                intent_id TEXT PRIMARY KEY,
                symbol TEXT NOT NULL,
                side TEXT NOT NULL,
                strategy TEXT,
                confidence TEXT,
                payload TEXT NOT NULL,
                created_at TEXT NOT NULL)""",
            """CREATE TABLE orders (
                client_order_id TEXT PRIMARY KEY,
                broker_order_id TEXT UNIQUE,
                intent_id TEXT,
                parent_client_order_id TEXT,
                symbol TEXT NOT NULL,
                side TEXT NOT NULL,
                qty TEXT,
                order_type TEXT,
                order_class TEXT,
                status TEXT NOT NULL,
                filled_qty TEXT,
                filled_avg_price TEXT,
                origin TEXT NOT NULL,
                payload TEXT NOT NULL,
                raw TEXT,
                submitted_at TEXT NOT NULL,
                updated_at TEXT NOT NULL)""",
            "CREATE INDEX orders_by_status ON orders(status)",
            """CREATE TABLE order_status_history (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
                status TEXT NOT NULL,
                filled_qty TEXT,
                filled_avg_price TEXT,
                raw TEXT,
                at TEXT NOT NULL)""",
            "CREATE INDEX history_by_order ON order_status_history(client_order_id)",
            """CREATE TABLE fills (
                execution_id TEXT PRIMARY KEY,
                client_order_id TEXT,
                broker_order_id TEXT,
                symbol TEXT NOT NULL,
                side TEXT NOT NULL,
                qty TEXT NOT NULL,
                price TEXT NOT NULL,
                at TEXT NOT NULL)""",
            "CREATE INDEX fills_by_order ON fills(broker_order_id)",
            "CREATE INDEX fills_by_symbol ON fills(symbol)",
            """CREATE TABLE trades (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                symbol TEXT NOT NULL,
                strategy TEXT,
                side TEXT NOT NULL,
                qty TEXT NOT NULL,
                entry_at TEXT NOT NULL,
                exit_at TEXT NOT NULL,
                entry_price TEXT NOT NULL,
                exit_price TEXT NOT NULL,
                pnl TEXT NOT NULL,
                return_pct TEXT,
                exit_reason TEXT)""",
            "CREATE INDEX trades_by_exit ON trades(exit_at)",
            """CREATE TABLE day_trades (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                symbol TEXT NOT NULL,
                session_date TEXT NOT NULL)""",
            """CREATE TABLE equity_snapshots (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                equity TEXT NOT NULL,
                cash TEXT NOT NULL,
                positions_value TEXT NOT NULL)""",
            "CREATE INDEX equity_by_time ON equity_snapshots(at)",
            """CREATE TABLE alerts (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                level TEXT NOT NULL,
                title TEXT NOT NULL,
                message TEXT NOT NULL,
                at TEXT NOT NULL)""",
            "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL,
                payload TEXT NOT NULL,
                at TEXT NOT NULL)""",
            "CREATE INDEX events_by_kind ON events(kind, at)",
        ),
    ),
    Migration(
        2,
        "fill accounting against cumulative quantities, trade ids, day-trade refs, position adjustments",
        (
            "ALTER TABLE fills ADD COLUMN applied_qty TEXT",
            "ALTER TABLE fills ADD COLUMN cum_qty TEXT",
            "ALTER TABLE fills ADD COLUMN segments TEXT",
            "ALTER TABLE fills ADD COLUMN source TEXT NOT NULL DEFAULT 'broker'",
            "ALTER TABLE trades ADD COLUMN trade_id TEXT",
            "CREATE UNIQUE INDEX trades_by_id ON trades(trade_id) WHERE trade_id IS NOT NULL",
            "ALTER TABLE day_trades ADD COLUMN ref TEXT",
            "CREATE UNIQUE INDEX day_trades_by_ref ON day_trades(ref) WHERE ref IS NOT NULL",
            """CREATE TABLE position_adjustments (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                symbol TEXT NOT NULL,
                qty TEXT NOT NULL,
                reason TEXT NOT NULL,
                at TEXT NOT NULL)""",
        ),
    ),
    Migration(
        3,
        "maximum favourable and adverse excursion of each trade",
        (
            "ALTER TABLE trades ADD COLUMN mfe_pct TEXT",
            "ALTER TABLE trades ADD COLUMN mae_pct TEXT",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database (0 for an empty file)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(
    conn: sqlite3.Connection,
    migrations: Sequence[Migration] = MIGRATIONS,
    *,
    source: str = "database",
) -> int:
    """Bring ``conn``'s schema up to the last of ``migrations``; return the version reached.

    Each migration runs in its own transaction with its ``schema_version`` row, so a crash
    mid-upgrade leaves the file at the previous version. A file newer than the last
    migration is refused with :class:`SchemaTooNew`.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise JournalError(f"migrations must be numbered 1..n in order, got {versions}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, description TEXT NOT NULL)"
    )
    current = schema_version(conn)
    latest = versions[-1] if versions else 0
    if current > latest:
        raise SchemaTooNew(
            f"{source} has schema version {current}, newer than this daemon understands "
            f"(up to {latest}): run a newer version of the daemon or point --state-db elsewhere"
        )
    for migration in migrations:
        if migration.version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)",
                (migration.version, migration.description),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        log.info("journal_migrated", version=migration.version, description=migration.description)
    return max(current, latest)
