"""The journal: one SQLite file that remembers every decision, order, fill and latch.

What a user relies on:

* **Nothing written is lost to ``kill -9``.** Every write commits before the method returns
  (WAL mode, ``synchronous=FULL``), and the trading loop journals a decision *before* acting
  on it: the intent before sizing, the order (with its ``client_order_id``) before the POST.
* **Versioned schema.** A ``schema_version`` table and an ordered list of forward
  :data:`MIGRATIONS`; opening an older file upgrades it in place without losing rows, and a
  file written by a newer version of the daemon is refused with :class:`SchemaTooNew`.
* **Exact money and time.** Decimals are stored as TEXT and read back as ``Decimal``;
  timestamps are ISO-8601 UTC; a naive datetime is refused with a ValueError naming it.
* **The broker is the source of truth.** :meth:`Journal.reconcile` compares the journal with
  the broker's orders, positions and fills: an order journaled as submitted that never
  reached the broker (after a grace period) becomes ``never_landed``; a broker order the
  journal does not know (sent but not journaled, or placed by hand) is adopted and flagged;
  fills missed while the daemon was down are recorded once (deduplicated by execution id;
  Alpaca's cumulative ``filled_qty`` turned into deltas); a position changed by hand is
  flagged and adopted. Reconciliation never places an order: protecting what it finds is
  the protection step's job. The algorithm lives in :mod:`journal.reconciliation`, the
  value conversions in :mod:`journal.codec`; this module keeps the store and its records.

Fills and cumulative quantities. A broker fill (an Alpaca ``FILL`` activity, a stream
``fill`` event) has an execution id and, usually, the order's cumulative quantity after it
(``cum_qty``). Sources that only know an order's cumulative ``filled_qty`` and average price
go through :meth:`Journal.record_cumulative_fill`, which records the difference from what
is already recorded for that order as a synthetic fill (priced so that the order's VWAP
matches the broker's). Each fill row remembers which slice of the order's cumulative
quantity it accounts for, so a real fill arriving after a synthetic one for the same shares
is remembered (its execution id) without being counted twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import structlog

from core.errors import ConfigError, TradingError
from broker.models import TERMINAL_ORDER_STATUSES, Activity, Order, Position
from analytics.trade_ledger import ClosedTrade, FillRecord
from journal.codec import (
    _dec,
    _dec_text,
    _json,
    _jsonable,
    _opt_dec_text,
    _parse_dec,
    _parse_ts,
    _side,
    _text,
    _ts,
)
from journal.reconciliation import (
    CLOSED_STATUSES,
    ReconciliationReport,
    _as_activity,
    _as_order,
    _as_position,
    reconcile_fills,
    reconcile_missing,
    reconcile_orders,
    reconcile_positions,
)

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
PRICE_QUANTUM = Decimal("0.000001")
#: Seconds after which a submission the broker does not know becomes ``never_landed``.
DEFAULT_GRACE_SECONDS = 600.0
#: What ``python main.py halt``/``rearm`` queue for the daemon.
OPERATOR_COMMANDS = frozenset({"halt", "rearm"})


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


# -- schema --------------------------------------------------------------------------------


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


# -- slices of an order's cumulative quantity ------------------------------------------------

Segment = tuple[Decimal, Decimal]


def _merge(segments: Sequence[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for lo, hi in sorted(s for s in segments if s[1] > s[0]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _subtract(segment: Segment, cover: Sequence[Segment]) -> list[Segment]:
    """The parts of ``segment`` not inside ``cover`` (merged, sorted)."""
    pieces: list[Segment] = []
    lo, hi = segment
    for c_lo, c_hi in _merge(cover):
        if c_hi <= lo or c_lo >= hi:
            continue
        if c_lo > lo:
            pieces.append((lo, c_lo))
        lo = max(lo, c_hi)
        if lo >= hi:
            break
    if lo < hi:
        pieces.append((lo, hi))
    return pieces


def _measure(segments: Sequence[Segment]) -> Decimal:
    return sum((hi - lo for lo, hi in segments), ZERO)


def _top(segments: Sequence[Segment], qty: Decimal) -> list[Segment]:
    """The highest ``qty`` worth of ``segments``."""
    out: list[Segment] = []
    for lo, hi in sorted(segments, reverse=True):
        if qty <= ZERO:
            break
        take = min(hi - lo, qty)
        out.append((hi - take, hi))
        qty -= take
    return sorted(out)


def _segments_text(segments: Sequence[Segment]) -> str:
    return json.dumps([[str(lo), str(hi)] for lo, hi in segments])


def _parse_segments(text: str | None) -> list[Segment] | None:
    if text is None:
        return None
    return [(Decimal(lo), Decimal(hi)) for lo, hi in json.loads(text)]


# -- the journal -----------------------------------------------------------------------------


class Journal:
    """The SQLite journal. One per process; calls are synchronous, short and committed."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise JournalUnusable(f"state database {self.path}: is a directory; give --state-db a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalUnusable(
                f"state database {self.path}: cannot create its folder {self.path.parent} "
                f"({exc.strerror}); give --state-db a path in a writable folder"
            ) from None
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise JournalUnusable(f"cannot open the journal at {self.path}: {exc}") from None
        self._conn.row_factory = sqlite3.Row
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self.schema_version = migrate(self._conn, MIGRATIONS, source=str(self.path))
        except sqlite3.OperationalError as exc:
            self._conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise JournalError(f"{self.path} is not a usable journal: {exc}") from None
            raise JournalUnusable(f"state database {self.path} is not a usable journal: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise JournalUnusable(
                f"state database {self.path} is not a usable journal: {exc} (an SQLite file written "
                "by this daemon is expected; point --state-db at it or at a new path)"
            ) from None
        except BaseException:
            self._conn.close()
            raise
        if str(mode).lower() != "wal":
            log.warning("journal_not_wal", path=str(self.path), journal_mode=mode)
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint and close. Further calls raise :class:`JournalError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # another process may hold the WAL; data is safe anyway
                log.debug("journal_checkpoint_skipped", error=str(exc))
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed on exit (nested calls join the outer one)."""
        with self._lock:
            self._check_open()
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params).fetchall()

    def _check_open(self) -> None:
        if getattr(self, "_closed", True):
            raise JournalError(f"the journal at {self.path} is closed")

    def journal_mode(self) -> str:
        """SQLite's journal mode for this file (``wal``)."""
        return str(self._read("PRAGMA journal_mode")[0][0])

    # -- intents and orders ----------------------------------------------------------------

    def record_intent(
        self,
        intent_id: str,
        symbol: str,
        side: str,
        strategy: str | None,
        confidence: float | Decimal | None,
        payload: dict[str, Any],
        created_at: datetime,
    ) -> None:
        """Journal a trade intent before acting on it (a repeat of the same id is ignored)."""
        row = (
            _text(intent_id, "intent_id"), _text(symbol, "symbol"), _side(side), strategy,
            _opt_dec_text(confidence, "confidence"), _json(payload, "intent payload"),
            _ts(created_at, "created_at"),
        )
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO intents (intent_id, symbol, side, strategy, confidence, "
                "payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def symbols_with_intents(self, session: date) -> set[str]:
        """Symbols with a trade intent created during ``session`` (a New York date)."""
        from core.clock import EXCHANGE_TZ

        start = datetime.combine(session, datetime.min.time(), EXCHANGE_TZ).astimezone(timezone.utc)
        end = start + timedelta(days=1)
        rows = self._read("SELECT DISTINCT symbol FROM intents WHERE created_at >= ? AND created_at < ?",
                          [_ts(start, "start"), _ts(end, "end")])
        return {r["symbol"] for r in rows}

    def intent(self, intent_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM intents WHERE intent_id = ?", (intent_id,))
        if not rows:
            return None
        row = dict(rows[0])
        row["confidence"] = _parse_dec(row["confidence"])
        row["payload"] = json.loads(row["payload"])
        row["created_at"] = _parse_ts(row["created_at"])
        return row

    def record_order_submission(
        self,
        client_order_id: str,
        intent_id: str | None,
        symbol: str,
        side: str,
        qty: Decimal | int | str | None,
        order_type: str,
        order_class: str,
        payload: dict[str, Any],
        at: datetime,
    ) -> None:
        """Journal an order BEFORE it is POSTed, as ``submitted``.

        Idempotent on ``client_order_id``: journaling the same id again (a retry, or the
        same intent after a restart) keeps the first record, so the broker's duplicate-id
        refusal and this record agree that there is one order.
        """
        cid = _text(client_order_id, "client_order_id")
        stamp = _ts(at, "at")
        values = (
            cid, intent_id, _text(symbol, "symbol"), _side(side), _opt_dec_text(qty, "qty"),
            order_type, order_class or "simple", "submitted", "submitted",
            _json(payload, "order payload"), stamp, stamp,
        )
        with self._tx() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO orders (client_order_id, intent_id, symbol, side, qty, "
                "order_type, order_class, status, origin, payload, submitted_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            ).rowcount
            if inserted:
                self._history(conn, cid, "submitted", None, None, None, stamp)
            else:
                log.info("journal_submission_repeated", client_order_id=cid)

    def update_order(
        self,
        client_order_id: str,
        *,
        status: str,
        at: datetime,
        broker_order_id: str | None = None,
        filled_qty: Decimal | None = None,
        filled_avg_price: Decimal | None = None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        """Record what the broker said about an order (status history kept on change).

        A terminal order (filled, canceled, ...) is not reopened by a late non-terminal
        update; ``never_landed`` is a guess and is revised by anything the broker says.
        """
        with self._tx() as conn:
            self._update(
                conn, _text(client_order_id, "client_order_id"), status=_text(status, "status"),
                stamp=_ts(at, "at"), broker_order_id=broker_order_id,
                filled_qty=_opt_dec_text(filled_qty, "filled_qty"),
                filled_avg_price=_opt_dec_text(filled_avg_price, "filled_avg_price"),
                raw=None if raw is None else _json(raw, "raw order"),
            )

    def _update(
        self,
        conn: sqlite3.Connection,
        cid: str,
        *,
        status: str,
        stamp: str,
        broker_order_id: str | None,
        filled_qty: str | None,
        filled_avg_price: str | None,
        raw: str | None,
    ) -> tuple[str, str] | None:
        """Apply an update; return (old, new) status when the status changed."""
        row = conn.execute(
            "SELECT status, filled_qty, broker_order_id FROM orders WHERE client_order_id = ?", (cid,)
        ).fetchone()
        if row is None:
            raise JournalError(f"unknown client_order_id {cid!r}: journal the submission first")
        old = row["status"]
        if old in TERMINAL_ORDER_STATUSES and status not in TERMINAL_ORDER_STATUSES:
            log.debug("journal_update_ignored", client_order_id=cid, status=status, current=old)
            return None
        if broker_order_id and row["broker_order_id"] and broker_order_id != row["broker_order_id"]:
            log.warning(
                "journal_broker_id_changed", client_order_id=cid,
                previous=row["broker_order_id"], broker_order_id=broker_order_id,
            )
        conn.execute(
            "UPDATE orders SET status = ?, updated_at = ?, "
            "broker_order_id = COALESCE(?, broker_order_id), filled_qty = COALESCE(?, filled_qty), "
            "filled_avg_price = COALESCE(?, filled_avg_price), raw = COALESCE(?, raw) "
            "WHERE client_order_id = ?",
            (status, stamp, broker_order_id or None, filled_qty, filled_avg_price, raw, cid),
        )
        changed_qty = filled_qty is not None and (
            row["filled_qty"] is None or Decimal(filled_qty) != Decimal(row["filled_qty"])
        )
        if status != old or changed_qty:
            self._history(conn, cid, status, filled_qty, filled_avg_price, raw, stamp)
        return (old, status) if status != old else None

    @staticmethod
    def _history(
        conn: sqlite3.Connection, cid: str, status: str, filled_qty: str | None,
        avg: str | None, raw: str | None, stamp: str,
    ) -> None:
        conn.execute(
            "INSERT INTO order_status_history (client_order_id, status, filled_qty, "
            "filled_avg_price, raw, at) VALUES (?, ?, ?, ?, ?, ?)",
            (cid, status, filled_qty, avg, raw, stamp),
        )

    def _order_out(self, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for key in ("qty", "filled_qty", "filled_avg_price"):
            out[key] = _parse_dec(out[key])
        for key in ("submitted_at", "updated_at"):
            out[key] = _parse_ts(out[key])
        out["payload"] = json.loads(out["payload"])
        out["raw"] = None if out["raw"] is None else json.loads(out["raw"])
        return out

    def orders(self, status: str | None = None) -> list[dict[str, Any]]:
        """Journaled orders (optionally of one status), oldest first."""
        if status is None:
            rows = self._read("SELECT * FROM orders ORDER BY submitted_at, rowid")
        else:
            rows = self._read(
                "SELECT * FROM orders WHERE status = ? ORDER BY submitted_at, rowid", (status,)
            )
        return [self._order_out(row) for row in rows]

    def order_by_client_id(self, cid: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM orders WHERE client_order_id = ?", (cid,))
        return self._order_out(rows[0]) if rows else None

    def order_by_broker_id(self, broker_order_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM orders WHERE broker_order_id = ?", (broker_order_id,))
        return self._order_out(rows[0]) if rows else None

    def order_history(self, cid: str) -> list[dict[str, Any]]:
        """Every status the order went through, oldest first."""
        rows = self._read(
            "SELECT status, filled_qty, filled_avg_price, at FROM order_status_history "
            "WHERE client_order_id = ? ORDER BY id",
            (cid,),
        )
        return [
            {
                "status": r["status"], "filled_qty": _parse_dec(r["filled_qty"]),
                "filled_avg_price": _parse_dec(r["filled_avg_price"]), "at": _parse_ts(r["at"]),
            }
            for r in rows
        ]

    def open_submissions(self) -> list[dict[str, Any]]:
        """Orders the daemon journaled that are not yet terminal (for reconciliation)."""
        placeholders = ",".join("?" * len(CLOSED_STATUSES))
        rows = self._read(
            f"SELECT * FROM orders WHERE origin = 'submitted' AND status NOT IN ({placeholders}) "
            "ORDER BY submitted_at, rowid",
            sorted(CLOSED_STATUSES),
        )
        return [self._order_out(row) for row in rows]

    def orders_to_reconcile(self, *, short_fills: bool = True) -> list[dict[str, Any]]:
        """Orders whose journaled state may be behind the broker's, oldest first.

        Every order the journal still thinks is working, whatever its origin (the daemon's
        submissions, bracket legs, adopted orders: a leg canceled at the broker while the
        daemon was down or between cycles is not in the broker's open list any more), and
        every order whose recorded fills fall short of its journaled ``filled_qty`` (a
        ``kill -9`` between the order update and the fill), and every bracket/OCO/OTO order
        whose legs were never journaled (a ``kill -9`` before they were first listed).
        Reconciliation looks each up.
        ``short_fills=False`` skips the second kind (it reads every closed order's fills).
        """
        placeholders = ",".join("?" * len(CLOSED_STATUSES))
        closed_with_fills = (
            "OR (broker_order_id IS NOT NULL AND filled_qty IS NOT NULL AND filled_qty != '0') "
            "OR (broker_order_id IS NOT NULL AND order_class IN ('bracket', 'oco', 'oto') AND NOT EXISTS "
            "(SELECT 1 FROM orders AS leg WHERE leg.parent_client_order_id = orders.client_order_id)) "
            if short_fills else "")
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                f"SELECT * FROM orders WHERE status NOT IN ({placeholders}) {closed_with_fills}"
                "ORDER BY submitted_at, rowid",
                sorted(CLOSED_STATUSES),
            ).fetchall()
            out = []
            for row in rows:
                if row["status"] in CLOSED_STATUSES and row["order_class"] not in ("bracket", "oco", "oto"):
                    counted = self._counted(self._conn, row["broker_order_id"])
                    if counted >= Decimal(row["filled_qty"] or 0):
                        continue
                elif row["status"] in CLOSED_STATUSES:
                    counted = self._counted(self._conn, row["broker_order_id"])
                    has_legs = self._conn.execute(
                        "SELECT 1 FROM orders WHERE parent_client_order_id = ?", (row["client_order_id"],)
                    ).fetchone()
                    if has_legs and counted >= Decimal(row["filled_qty"] or 0):
                        continue
                out.append(self._order_out(row))
            return out

    def strategy_for_order(self, broker_order_id: str) -> str | None:
        """The strategy of the intent behind a broker order (or behind its parent)."""
        with self._lock:
            self._check_open()
            return self._strategy(self._conn, broker_order_id=broker_order_id)

    def _strategy(
        self, conn: sqlite3.Connection, *, broker_order_id: str | None = None, cid: str | None = None
    ) -> str | None:
        if cid is None and broker_order_id is not None:
            row = conn.execute(
                "SELECT client_order_id FROM orders WHERE broker_order_id = ?", (broker_order_id,)
            ).fetchone()
            cid = row[0] if row else None
        for _ in range(3):  # the order, its parent, the parent's parent
            if cid is None:
                return None
            row = conn.execute(
                "SELECT o.parent_client_order_id, i.strategy FROM orders o "
                "LEFT JOIN intents i ON i.intent_id = o.intent_id WHERE o.client_order_id = ?",
                (cid,),
            ).fetchone()
            if row is None:
                return None
            if row["strategy"]:
                return str(row["strategy"])
            cid = row["parent_client_order_id"]
        return None

    def _exit_reason(self, conn: sqlite3.Connection, cid: str | None) -> str | None:
        if cid is None:
            return None
        row = conn.execute(
            "SELECT order_type, parent_client_order_id FROM orders WHERE client_order_id = ?", (cid,)
        ).fetchone()
        if row is None:
            return None
        if cid.startswith("emergency-"):
            return "emergency_stop"
        if cid.startswith("exit-"):
            return "strategy_exit"
        if row["order_type"] in ("stop", "stop_limit"):
            return "stop_loss"
        if row["order_type"] == "trailing_stop":
            return "trailing_stop_loss"
        if row["order_type"] == "limit" and row["parent_client_order_id"]:
            return "take_profit"
        return None

    # -- fills -----------------------------------------------------------------------------

    def record_fill(
        self,
        execution_id: str,
        client_order_id: str | None,
        broker_order_id: str | None,
        symbol: str,
        side: str,
        qty: Decimal | int | str,
        price: Decimal | int | str,
        at: datetime,
        *,
        cum_qty: Decimal | int | str | None = None,
    ) -> bool:
        """Record one execution; False when its execution id was already recorded.

        ``cum_qty`` (the order's cumulative filled quantity after this execution, as in an
        Alpaca FILL activity or a stream event's ``order.filled_qty``) lets the journal tell
        whether these shares were already counted from a cumulative quantity; if they all
        were, the execution id is remembered and False is returned.
        """
        with self._tx() as conn:
            row = self._insert_fill(
                conn, execution_id=execution_id, cid=client_order_id, broker_order_id=broker_order_id,
                symbol=symbol, side=side, qty=qty, price=price, at=at, cum_qty=cum_qty,
            )
        return row is not None and row["applied_qty"] > ZERO

    def _insert_fill(
        self,
        conn: sqlite3.Connection,
        *,
        execution_id: str,
        cid: str | None,
        broker_order_id: str | None,
        symbol: str,
        side: str,
        qty: Any,
        price: Any,
        at: datetime,
        cum_qty: Any = None,
        source: str = "broker",
        applied: Decimal | None = None,
        segments: list[Segment] | None = None,
    ) -> dict[str, Any] | None:
        execution_id = _text(execution_id, "execution_id")
        quantity, fill_price = _dec(qty, "fill qty"), _dec(price, "fill price")
        if quantity <= ZERO:
            raise ValueError(f"fill qty must be positive, got {quantity}")
        if fill_price <= ZERO:
            raise ValueError(f"fill price must be positive, got {fill_price}")
        values = (_text(symbol, "symbol"), _side(side), _ts(at, "fill time"))
        cumulative = None if cum_qty is None else _dec(cum_qty, "cum_qty")
        if conn.execute("SELECT 1 FROM fills WHERE execution_id = ?", (execution_id,)).fetchone():
            return None
        if cid is None and broker_order_id:
            found = conn.execute(
                "SELECT client_order_id FROM orders WHERE broker_order_id = ?", (broker_order_id,)
            ).fetchone()
            cid = found[0] if found else None
        if applied is None:
            if cumulative is not None and broker_order_id and cumulative >= quantity:
                cover, _unknown = self._coverage(conn, broker_order_id)
                segments = _subtract((cumulative - quantity, cumulative), cover)
                applied = _measure(segments)
            else:
                applied, segments = quantity, None
        conn.execute(
            "INSERT INTO fills (execution_id, client_order_id, broker_order_id, symbol, side, qty, "
            "price, at, applied_qty, cum_qty, segments, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                execution_id, cid, broker_order_id, *values[:2], str(quantity), str(fill_price),
                values[2], str(applied), None if cumulative is None else str(cumulative),
                None if segments is None else _segments_text(segments), source,
            ),
        )
        if applied < quantity:
            log.info(
                "journal_fill_already_counted", execution_id=execution_id,
                broker_order_id=broker_order_id, qty=str(quantity), counted=str(applied),
            )
        return {
            "execution_id": execution_id, "client_order_id": cid, "broker_order_id": broker_order_id,
            "symbol": values[0], "side": values[1], "qty": quantity, "applied_qty": applied,
            "price": fill_price, "at": _parse_ts(values[2]), "source": source,
        }

    def _coverage(self, conn: sqlite3.Connection, broker_order_id: str) -> tuple[list[Segment], Decimal]:
        """Known slices of the order's cumulative quantity, and the quantity of unknown place."""
        cover: list[Segment] = []
        unknown = ZERO
        for row in conn.execute(
            "SELECT qty, applied_qty, segments FROM fills WHERE broker_order_id = ?", (broker_order_id,)
        ):
            segments = _parse_segments(row["segments"])
            if segments is None:
                unknown += Decimal(row["applied_qty"] or row["qty"])
            else:
                cover.extend(segments)
        return _merge(cover), unknown

    @staticmethod
    def _counted(conn: sqlite3.Connection, broker_order_id: str) -> Decimal:
        return sum(
            (
                Decimal(row["applied_qty"] or row["qty"])
                for row in conn.execute(
                    "SELECT qty, applied_qty FROM fills WHERE broker_order_id = ?", (broker_order_id,)
                )
            ),
            ZERO,
        )

    def record_cumulative_fill(
        self,
        client_order_id: str | None,
        broker_order_id: str,
        symbol: str,
        side: str,
        cumulative_qty: Decimal | int | str,
        avg_price: Decimal | int | str | None,
        at: datetime,
    ) -> FillRecord | None:
        """Turn an order's cumulative ``filled_qty`` into a fill for what is not yet recorded.

        Returns the delta as a :class:`FillRecord` (for the trade ledger), or None when the
        journal already accounts for ``cumulative_qty``. The delta is priced so the order's
        recorded VWAP equals the broker's ``avg_price``; its execution id is
        ``cum:<broker_order_id>:<cumulative_qty>``.
        """
        with self._tx() as conn:
            row = self._cumulative(
                conn, client_order_id, _text(broker_order_id, "broker_order_id"), symbol, side,
                cumulative_qty, avg_price, at,
            )
            return None if row is None else self._fill_record(conn, row)

    def _cumulative(
        self,
        conn: sqlite3.Connection,
        cid: str | None,
        broker_order_id: str,
        symbol: str,
        side: str,
        cumulative_qty: Any,
        avg_price: Any,
        at: datetime,
    ) -> dict[str, Any] | None:
        total = _dec(cumulative_qty, "cumulative_qty")
        if total < ZERO:
            raise ValueError(f"cumulative_qty must not be negative, got {total}")
        if total == ZERO:
            return None
        if avg_price is None:
            raise ValueError(f"order {broker_order_id} has filled_qty {total} but no filled_avg_price")
        average = _dec(avg_price, "avg_price")
        if average <= ZERO:
            raise ValueError(f"avg_price must be positive, got {average}")
        cover, unknown = self._coverage(conn, broker_order_id)
        gaps = _subtract((ZERO, total), cover)
        missing = _measure(gaps) - unknown
        if missing <= ZERO:
            return None
        recorded_value = ZERO
        for row in conn.execute(
            "SELECT qty, applied_qty, price FROM fills WHERE broker_order_id = ?", (broker_order_id,)
        ):
            recorded_value += Decimal(row["applied_qty"] or row["qty"]) * Decimal(row["price"])
        price = (total * average - recorded_value) / missing
        if price <= ZERO:
            log.warning(
                "journal_cumulative_price_inconsistent", broker_order_id=broker_order_id,
                cumulative_qty=str(total), avg_price=str(average),
            )
            price = average
        price = price.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN).normalize()
        execution_id = f"cum:{broker_order_id}:{total}"
        suffix = 1
        while conn.execute("SELECT 1 FROM fills WHERE execution_id = ?", (execution_id,)).fetchone():
            suffix += 1
            execution_id = f"cum:{broker_order_id}:{total}:{suffix}"
        return self._insert_fill(
            conn, execution_id=execution_id, cid=cid, broker_order_id=broker_order_id, symbol=symbol,
            side=side, qty=missing, price=price, at=at, cum_qty=total, source="cumulative",
            applied=missing, segments=_top(gaps, missing),
        )

    def _fill_record(self, conn: sqlite3.Connection, row: Mapping[str, Any]) -> FillRecord:
        cid = row["client_order_id"]
        strategy = self._strategy(conn, cid=cid) if cid else None
        return FillRecord(
            symbol=row["symbol"], side=row["side"], qty=row["applied_qty"], price=row["price"],
            at=row["at"], strategy=strategy, execution_id=row["execution_id"],
            exit_reason=self._exit_reason(conn, cid),
        )

    def _fill_out(self, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for key in ("qty", "price", "applied_qty", "cum_qty"):
            out[key] = _parse_dec(out[key])
        if out["applied_qty"] is None:
            out["applied_qty"] = out["qty"]
        out["at"] = _parse_ts(out["at"])
        out["segments"] = _parse_segments(out["segments"])
        return out

    def fills_for(self, cid: str) -> list[dict[str, Any]]:
        """Fills of one order (by client order id), in the order they were recorded."""
        rows = self._read("SELECT * FROM fills WHERE client_order_id = ? ORDER BY rowid", (cid,))
        return [self._fill_out(row) for row in rows]

    def fills(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Every fill (optionally of one symbol), in the order they were recorded."""
        if symbol is None:
            rows = self._read("SELECT * FROM fills ORDER BY rowid")
        else:
            rows = self._read("SELECT * FROM fills WHERE symbol = ? ORDER BY rowid", (symbol,))
        return [self._fill_out(row) for row in rows]

    def fill_records(self) -> list[FillRecord]:
        """Every counted fill as a :class:`FillRecord`, in recorded order (rebuilds a ledger)."""
        with self._lock:
            self._check_open()
            rows = self._conn.execute("SELECT * FROM fills ORDER BY rowid").fetchall()
            return [
                self._fill_record(self._conn, out)
                for out in map(self._fill_out, rows)
                if out["applied_qty"] > ZERO
            ]

    def fill_record(self, execution_id: str) -> FillRecord | None:
        """One counted fill as a :class:`FillRecord` (strategy and exit reason resolved)."""
        with self._lock:
            self._check_open()
            row = self._conn.execute("SELECT * FROM fills WHERE execution_id = ?", (execution_id,)).fetchone()
            if row is None:
                return None
            out = self._fill_out(row)
            if out["applied_qty"] <= ZERO:
                return None
            return self._fill_record(self._conn, out)

    def implied_positions(self) -> dict[str, Decimal]:
        """Signed quantity per symbol implied by the fills and position adjustments."""
        with self._lock:
            self._check_open()
            return self._implied(self._conn)

    @staticmethod
    def _implied(conn: sqlite3.Connection) -> dict[str, Decimal]:
        qty: dict[str, Decimal] = {}
        for row in conn.execute("SELECT symbol, side, qty, applied_qty FROM fills"):
            amount = Decimal(row["applied_qty"] or row["qty"])
            sign = 1 if row["side"] == "buy" else -1
            qty[row["symbol"]] = qty.get(row["symbol"], ZERO) + sign * amount
        for row in conn.execute("SELECT symbol, qty FROM position_adjustments"):
            qty[row["symbol"]] = qty.get(row["symbol"], ZERO) + Decimal(row["qty"])
        return qty

    # -- trades, day trades, equity, alerts ------------------------------------------------

    def record_trade(
        self,
        symbol: str,
        strategy: str | None,
        entry_at: datetime,
        exit_at: datetime,
        qty: Decimal,
        entry_price: Decimal,
        exit_price: Decimal,
        pnl: Decimal,
        exit_reason: str | None,
        *,
        side: str = "long",
        return_pct: Decimal | None = None,
        trade_id: str | None = None,
    ) -> bool:
        """Record a closed round trip; False when ``trade_id`` was already recorded."""
        if side not in ("long", "short"):
            raise ValueError(f"trade side must be 'long' or 'short', got {side!r}")
        values = (
            _text(symbol, "symbol"), strategy, side, _dec_text(qty, "qty"),
            _ts(entry_at, "entry_at"), _ts(exit_at, "exit_at"), _dec_text(entry_price, "entry_price"),
            _dec_text(exit_price, "exit_price"), _dec_text(pnl, "pnl"),
            _opt_dec_text(return_pct, "return_pct"), exit_reason or None, trade_id,
        )
        with self._tx() as conn:
            return bool(
                conn.execute(
                    "INSERT OR IGNORE INTO trades (symbol, strategy, side, qty, entry_at, exit_at, "
                    "entry_price, exit_price, pnl, return_pct, exit_reason, trade_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                ).rowcount
            )

    def record_closed_trade(self, trade: ClosedTrade) -> bool:
        """Record a :class:`~analytics.trade_ledger.ClosedTrade` (idempotent on its ``trade_id``)."""
        return self.record_trade(
            trade.symbol, trade.strategy, trade.entry_at, trade.exit_at, trade.qty,
            trade.entry_price, trade.exit_price, trade.pnl, trade.exit_reason,
            side=trade.side, return_pct=trade.return_pct, trade_id=trade.trade_id or None,
        )

    def trades(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Closed trades (exit at or after ``since``), oldest exit first."""
        if since is None:
            rows = self._read("SELECT * FROM trades ORDER BY exit_at, id")
        else:
            rows = self._read(
                "SELECT * FROM trades WHERE exit_at >= ? ORDER BY exit_at, id", (_ts(since, "since"),)
            )
        out = []
        for row in rows:
            item = dict(row)
            for key in ("qty", "entry_price", "exit_price", "pnl", "return_pct"):
                item[key] = _parse_dec(item[key])
            for key in ("entry_at", "exit_at"):
                item[key] = _parse_ts(item[key])
            out.append(item)
        return out

    def record_day_trade(self, symbol: str, session_date: date, *, ref: str | None = None) -> bool:
        """Record a day trade; with ``ref`` (e.g. the trade id) a repeat is ignored (False)."""
        if not isinstance(session_date, date) or isinstance(session_date, datetime):
            raise ValueError(f"session_date must be a date, got {session_date!r}")
        with self._tx() as conn:
            return bool(
                conn.execute(
                    "INSERT OR IGNORE INTO day_trades (symbol, session_date, ref) VALUES (?, ?, ?)",
                    (_text(symbol, "symbol"), session_date.isoformat(), ref),
                ).rowcount
            )

    def day_trades(self, since: date) -> list[tuple[str, date]]:
        """Day trades on or after ``since``: (symbol, session date), oldest first."""
        rows = self._read(
            "SELECT symbol, session_date FROM day_trades WHERE session_date >= ? ORDER BY session_date, id",
            (since.isoformat(),),
        )
        return [(row["symbol"], date.fromisoformat(row["session_date"])) for row in rows]

    def record_equity(
        self, at: datetime, equity: Decimal, cash: Decimal, positions_value: Decimal
    ) -> None:
        """An equity snapshot (one per cycle)."""
        values = (
            _ts(at, "at"), _dec_text(equity, "equity"), _dec_text(cash, "cash"),
            _dec_text(positions_value, "positions_value"),
        )
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO equity_snapshots (at, equity, cash, positions_value) VALUES (?, ?, ?, ?)",
                values,
            )

    def equity_curve(self, since: datetime | None = None) -> list[tuple[datetime, Decimal]]:
        """(time, equity) snapshots at or after ``since``, oldest first."""
        if since is None:
            rows = self._read("SELECT at, equity FROM equity_snapshots ORDER BY at, id")
        else:
            rows = self._read(
                "SELECT at, equity FROM equity_snapshots WHERE at >= ? ORDER BY at, id",
                (_ts(since, "since"),),
            )
        return [(datetime.fromisoformat(r["at"]), Decimal(r["equity"])) for r in rows]

    def raw_equity_rows(self) -> list[dict[str, Any]]:
        """Every equity snapshot as stored (text, unparsed; ``id``, ``at``, ``equity``), for
        readers that must survive a row that does not parse (``python main.py report``)."""
        return [dict(r) for r in self._read("SELECT id, at, equity FROM equity_snapshots ORDER BY at, id")]

    def order_count(self) -> int:
        """How many orders are journaled (without parsing any)."""
        return int(self._read("SELECT COUNT(*) AS n FROM orders")[0]["n"])

    def raw_trade_rows(self) -> list[dict[str, Any]]:
        """Every closed trade as stored (text, unparsed), oldest exit first; see
        :meth:`raw_equity_rows`."""
        return [dict(r) for r in self._read("SELECT * FROM trades ORDER BY exit_at, id")]

    def record_alert(self, level: str, title: str, message: str, at: datetime) -> None:
        """An alert as delivered (after secret scrubbing)."""
        values = (str(level), str(title), str(message), _ts(at, "at"))
        with self._tx() as conn:
            conn.execute("INSERT INTO alerts (level, title, message, at) VALUES (?, ?, ?, ?)", values)

    def alerts(self, since: datetime | None = None) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT level, title, message, at FROM alerts WHERE at >= ? ORDER BY at, id",
            (_ts(since, "since") if since else "",),
        )
        return [{**dict(r), "at": _parse_ts(r["at"])} for r in rows]

    # -- state and events ------------------------------------------------------------------

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        """Store a latched state (JSON; Decimals and datetimes are stored as strings)."""
        if not isinstance(value, dict):
            raise ValueError(f"state {key!r} must be a dict, got {type(value).__name__}")
        text = _json(value, f"state {key!r}")
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (_text(key, "state key"), text),
            )

    def get_state(self, key: str) -> dict[str, Any] | None:
        rows = self._read("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else None

    def delete_state(self, key: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM state WHERE key = ?", (key,))

    def log_event(self, kind: str, payload: dict[str, Any], at: datetime) -> None:
        """A journaled event (rearm, halt, reconciliation result, ...)."""
        values = (_text(kind, "event kind"), _json(payload, f"event {kind!r}"), _ts(at, "at"))
        with self._tx() as conn:
            conn.execute("INSERT INTO events (kind, payload, at) VALUES (?, ?, ?)", values)

    def events(self, kind: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """Journaled events, oldest first: ``{"kind", "payload", "at"}``."""
        sql, params = "SELECT kind, payload, at FROM events WHERE at >= ?", [
            _ts(since, "since") if since else ""
        ]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._read(sql + " ORDER BY at, id", params)
        return [
            {"kind": r["kind"], "payload": json.loads(r["payload"]), "at": _parse_ts(r["at"])}
            for r in rows
        ]

    # -- operator commands -----------------------------------------------------------------

    def queue_operator_command(self, kind: str, reason: str, at: datetime) -> dict[str, Any]:
        """Append an operator command (``halt``/``rearm``) for the daemon; return it with its
        ``seq``: the journal's own insertion sequence, which orders commands whatever the
        clocks of the processes that queued them said (a ``halt`` queued after a ``rearm``
        always comes after it)."""
        if kind not in OPERATOR_COMMANDS:
            raise ValueError(f"operator command must be one of {sorted(OPERATOR_COMMANDS)}, got {kind!r}")
        payload = {"id": uuid.uuid4().hex, "kind": kind, "reason": _text(reason, "reason"),
                   "at": _ts(at, "at")}
        with self._tx() as conn:
            seq = conn.execute(
                "INSERT INTO events (kind, payload, at) VALUES (?, ?, ?)",
                ("operator_command", _json(payload, "operator command"), payload["at"]),
            ).lastrowid
        return {**payload, "seq": int(seq or 0)}

    def operator_commands(self, *, pending: bool = False) -> list[dict[str, Any]]:
        """Operator commands in the order they were queued (by ``seq``), each with its
        ``seq``; ``pending``: only those the daemon has not applied yet."""
        rows = self._read("SELECT id, payload FROM events WHERE kind = 'operator_command' ORDER BY id")
        commands = [{**json.loads(r["payload"]), "seq": int(r["id"])} for r in rows]
        if not pending:
            return commands
        applied = set((self.get_state("operator_commands_applied") or {}).get("ids", []))
        return [c for c in commands if c.get("id") not in applied]

    def mark_operator_command_applied(self, command_id: str) -> None:
        """Remember that the daemon applied (or deliberately ignored) this command."""
        with self._tx():
            applied = set((self.get_state("operator_commands_applied") or {}).get("ids", []))
            applied.add(_text(command_id, "command id"))
            self.set_state("operator_commands_applied", {"ids": sorted(applied)})

    def last_operator_seq(self) -> int:
        """The ``seq`` of the newest operator command queued so far (0: none)."""
        row = self._read("SELECT MAX(id) FROM events WHERE kind = 'operator_command'")
        return int(row[0][0] or 0)

    def last_cycle(self, at: datetime, data: dict[str, Any]) -> None:
        """Remember the latest completed cycle (for ``python main.py status``)."""
        self.set_state("last_cycle", {"at": _ts(at, "at"), "data": data})

    def get_last_cycle(self) -> dict[str, Any] | None:
        """``{"at": datetime, "data": {...}}`` of the latest cycle, or None."""
        value = self.get_state("last_cycle")
        if value is None:
            return None
        return {"at": _parse_ts(value.get("at")), "data": value.get("data", {})}

    def status_summary(self, *, day_trades_since: date | None = None) -> dict[str, Any]:
        """What ``python main.py status`` shows from the journal (JSON-friendly).

        Last cycle, every latched state (breaker, trading state, ...), open submissions,
        recent day trades (default: the 14 days before the last cycle), the latest equity
        snapshot and the latest reconciliation.
        """
        last = self.get_last_cycle()
        if day_trades_since is None:
            anchor = last["at"].date() if last and last["at"] else date.min + timedelta(days=14)
            day_trades_since = anchor - timedelta(days=14)
        state = {
            r["key"]: json.loads(r["value"])
            for r in self._read("SELECT key, value FROM state WHERE key != 'last_cycle' ORDER BY key")
        }
        equity = self._read("SELECT at, equity, cash, positions_value FROM equity_snapshots ORDER BY at DESC, id DESC LIMIT 1")
        reconciliation = self._read(
            "SELECT payload, at FROM events WHERE kind = 'reconciliation' ORDER BY at DESC, id DESC LIMIT 1"
        )
        return _jsonable(
            {
                "schema_version": self.schema_version,
                "last_cycle": last,
                "state": state,
                "open_submissions": [
                    {k: o[k] for k in ("client_order_id", "broker_order_id", "symbol", "side", "qty",
                                       "order_type", "status", "submitted_at")}
                    for o in self.open_submissions()
                ],
                "day_trades": [
                    {"symbol": s, "session_date": d} for s, d in self.day_trades(day_trades_since)
                ],
                "last_equity": dict(equity[0]) if equity else None,
                "last_reconciliation": (
                    {"at": reconciliation[0]["at"], **json.loads(reconciliation[0]["payload"])}
                    if reconciliation else None
                ),
            }
        )

    # -- reconciliation --------------------------------------------------------------------

    def record_legs(self, order: Order | Mapping[str, Any], *, at: datetime) -> list[str]:
        """Journal the legs (take-profit, stop) of a bracket/OCO/OTO order the broker just
        accepted, under their own client order ids and linked to the parent, exactly as
        reconciliation adopts them; returns the client order ids newly journaled.

        Without this a stop leg that fills before the next reconciliation is a fill of an
        unknown order: no exit reason (the stop-loss guard never counts it), no strategy.
        """
        stamp = _ts(at, "at")
        report = ReconciliationReport(at=datetime.fromisoformat(stamp))
        with self._tx() as conn:
            reconcile_orders(self, conn, [_as_order(order)], report, stamp)
        return [str(leg["client_order_id"]) for leg in report.legs_adopted]

    def reconcile(
        self,
        broker_orders: Sequence[Order | Mapping[str, Any]],
        broker_positions: Sequence[Position | Mapping[str, Any]],
        broker_fills: Sequence[Activity | Mapping[str, Any]],
        *,
        at: datetime,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> ReconciliationReport:
        """Make the journal agree with the broker; report what differed. Never sends an order.

        ``broker_orders``: the broker's open orders, plus its recent closed ones when
        available (``status=all``, ``after`` = the oldest open submission) so an order that
        filled while the daemon was down is seen; nested legs are included. ``broker_fills``:
        FILL activities (others are ignored). ``broker_positions``: every open position.
        The whole reconciliation is one transaction, journaled as a ``reconciliation`` event.
        """
        stamp = _ts(at, "at")
        now = datetime.fromisoformat(stamp)
        orders = [_as_order(o) for o in broker_orders]
        positions = [_as_position(p) for p in broker_positions]
        fills = [_as_activity(f) for f in broker_fills]
        report = ReconciliationReport(at=now)
        with self._tx() as conn:
            reconcile_orders(self, conn, orders, report, stamp)
            reconcile_fills(self, conn, orders, fills, report, now)
            reconcile_missing(self, conn, orders, report, now, grace_seconds, stamp)
            reconcile_positions(self, conn, positions, report, stamp)
            conn.execute(
                "INSERT INTO events (kind, payload, at) VALUES (?, ?, ?)",
                ("reconciliation", _json(report.to_dict(), "reconciliation report"), stamp),
            )
        return report
