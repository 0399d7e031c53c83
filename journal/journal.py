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
  the protection step's job. The algorithm lives in :mod:`journal.reconciliation`.

The journal is a small store (:mod:`journal.store`: the connection, the schema of
:mod:`journal.schema`, transactions, latched state) and one repository per record kind:
:mod:`journal.orders` (intents, orders, status history), :mod:`journal.fills` (executions,
cumulative quantities, implied positions; slices in :mod:`journal.segments`),
:mod:`journal.trades` (round trips, day trades), :mod:`journal.equity`, :mod:`journal.events`
(events, alerts) and :mod:`journal.operator` (operator commands, last cycle, status summary);
value conversions are in :mod:`journal.codec`. :class:`Journal` is their one public face:
every caller holds a ``Journal`` and calls the methods below, which delegate.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from analytics.trade_ledger import ClosedTrade, FillRecord
from broker.models import Activity, Order, Position
from journal.codec import _json, _ts
from journal.equity import EquityRepository
from journal.errors import JournalError, JournalUnusable, SchemaTooNew
from journal.events import AlertRepository, EventRepository
from journal.fills import PRICE_QUANTUM, FillRepository
from journal.operator import OPERATOR_COMMANDS, OperatorRepository
from journal.orders import OrderRepository
from journal.reconciliation import (
    ReconciliationReport,
    _as_activity,
    _as_order,
    _as_position,
    reconcile_fills,
    reconcile_missing,
    reconcile_orders,
    reconcile_positions,
)
from journal.schema import LATEST_VERSION, MIGRATIONS, Migration, migrate, schema_version
from journal.segments import ZERO, Segment, counted
from journal.store import Store
from journal.trades import TradeRepository

#: Names callers import from here (the journal's public face), wherever they are defined.
__all__ = [
    "DEFAULT_GRACE_SECONDS", "LATEST_VERSION", "MIGRATIONS", "OPERATOR_COMMANDS", "PRICE_QUANTUM", "ZERO",
    "Journal", "JournalError", "JournalUnusable", "Migration", "ReconciliationReport", "SchemaTooNew",
    "migrate", "schema_version",
]

#: Seconds after which a submission the broker does not know becomes ``never_landed``.
DEFAULT_GRACE_SECONDS = 600.0


class Journal:
    """The SQLite journal. One per process; calls are synchronous, short and committed.

    Each method delegates to the store or to the repository of its record kind, where its
    documentation lives.
    """

    def __init__(self, path: Path | str) -> None:
        self._store = Store(path)
        self.path = self._store.path
        self.schema_version = self._store.schema_version
        self._orders = OrderRepository(self._store)
        self._fills = FillRepository(self._store, self._orders)
        self._trades = TradeRepository(self._store)
        self._equity = EquityRepository(self._store)
        self._events = EventRepository(self._store)
        self._alerts = AlertRepository(self._store)
        self._operator = OperatorRepository(self._store, self._orders, self._trades)

    # -- the store -------------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint and close. Further calls raise :class:`JournalError`."""
        self._store.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def journal_mode(self) -> str:
        return self._store.journal_mode()

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        self._store.set_state(key, value)

    def get_state(self, key: str) -> dict[str, Any] | None:
        return self._store.get_state(key)

    def delete_state(self, key: str) -> None:
        self._store.delete_state(key)

    # -- intents and orders (journal.orders) -------------------------------------------------

    def record_intent(
        self, intent_id: str, symbol: str, side: str, strategy: str | None,
        confidence: float | Decimal | None, payload: dict[str, Any], created_at: datetime,
    ) -> None:
        self._orders.record_intent(intent_id, symbol, side, strategy, confidence, payload, created_at)

    def symbols_with_intents(self, session: date) -> set[str]:
        return self._orders.symbols_with_intents(session)

    def intent(self, intent_id: str) -> dict[str, Any] | None:
        return self._orders.intent(intent_id)

    def record_order_submission(
        self, client_order_id: str, intent_id: str | None, symbol: str, side: str,
        qty: Decimal | int | str | None, order_type: str, order_class: str, payload: dict[str, Any],
        at: datetime,
    ) -> None:
        self._orders.record_submission(
            client_order_id, intent_id, symbol, side, qty, order_type, order_class, payload, at)

    def update_order(
        self, client_order_id: str, *, status: str, at: datetime, broker_order_id: str | None = None,
        filled_qty: Decimal | None = None, filled_avg_price: Decimal | None = None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        self._orders.update(
            client_order_id, status=status, at=at, broker_order_id=broker_order_id,
            filled_qty=filled_qty, filled_avg_price=filled_avg_price, raw=raw)

    def orders(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._orders.select(status)

    def order_by_client_id(self, cid: str) -> dict[str, Any] | None:
        return self._orders.by_client_id(cid)

    def order_by_broker_id(self, broker_order_id: str) -> dict[str, Any] | None:
        return self._orders.by_broker_id(broker_order_id)

    def order_history(self, cid: str) -> list[dict[str, Any]]:
        return self._orders.history(cid)

    def open_submissions(self) -> list[dict[str, Any]]:
        return self._orders.open_submissions()

    def orders_to_reconcile(self, *, short_fills: bool = True) -> list[dict[str, Any]]:
        return self._orders.to_reconcile(short_fills=short_fills)

    def strategy_for_order(self, broker_order_id: str) -> str | None:
        return self._orders.strategy_for_order(broker_order_id)

    def order_count(self) -> int:
        return self._orders.count()

    # -- fills (journal.fills) -------------------------------------------------------------

    def record_fill(
        self, execution_id: str, client_order_id: str | None, broker_order_id: str | None, symbol: str,
        side: str, qty: Decimal | int | str, price: Decimal | int | str, at: datetime, *,
        cum_qty: Decimal | int | str | None = None,
    ) -> bool:
        return self._fills.record(
            execution_id, client_order_id, broker_order_id, symbol, side, qty, price, at, cum_qty=cum_qty)

    def record_cumulative_fill(
        self, client_order_id: str | None, broker_order_id: str, symbol: str, side: str,
        cumulative_qty: Decimal | int | str, avg_price: Decimal | int | str | None, at: datetime,
    ) -> FillRecord | None:
        return self._fills.record_cumulative(
            client_order_id, broker_order_id, symbol, side, cumulative_qty, avg_price, at)

    def fills_for(self, cid: str) -> list[dict[str, Any]]:
        return self._fills.for_order(cid)

    def fills(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return self._fills.select(symbol)

    def fills_after(self, rowid: int) -> list[dict[str, Any]]:
        """Fills recorded after row ``rowid`` (each with its ``rowid``); 0 gives every fill."""
        return self._fills.after(rowid)

    def fill_records(self) -> list[FillRecord]:
        return self._fills.records()

    def fill_record(self, execution_id: str) -> FillRecord | None:
        return self._fills.record_of(execution_id)

    def implied_positions(self) -> dict[str, Decimal]:
        return self._fills.implied_positions()

    # -- trades and day trades (journal.trades), equity (journal.equity) -----------------------

    def record_trade(
        self, symbol: str, strategy: str | None, entry_at: datetime, exit_at: datetime, qty: Decimal,
        entry_price: Decimal, exit_price: Decimal, pnl: Decimal, exit_reason: str | None, *,
        side: str = "long", return_pct: Decimal | None = None, trade_id: str | None = None,
        mfe_pct: Decimal | None = None, mae_pct: Decimal | None = None,
    ) -> bool:
        return self._trades.record(
            symbol, strategy, entry_at, exit_at, qty, entry_price, exit_price, pnl, exit_reason,
            side=side, return_pct=return_pct, trade_id=trade_id, mfe_pct=mfe_pct, mae_pct=mae_pct)

    def record_closed_trade(self, trade: ClosedTrade) -> bool:
        return self._trades.record_closed(trade)

    def trades(self, since: datetime | None = None) -> list[dict[str, Any]]:
        return self._trades.select(since)

    def raw_trade_rows(self) -> list[dict[str, Any]]:
        return self._trades.raw_rows()

    def record_day_trade(self, symbol: str, session_date: date, *, ref: str | None = None) -> bool:
        return self._trades.record_day_trade(symbol, session_date, ref=ref)

    def day_trades(self, since: date) -> list[tuple[str, date]]:
        return self._trades.day_trades(since)

    def record_equity(self, at: datetime, equity: Decimal, cash: Decimal, positions_value: Decimal) -> None:
        self._equity.record(at, equity, cash, positions_value)

    def equity_curve(self, since: datetime | None = None) -> list[tuple[datetime, Decimal]]:
        return self._equity.curve(since)

    def raw_equity_rows(self) -> list[dict[str, Any]]:
        return self._equity.raw_rows()

    # -- alerts and events (journal.events), operator commands and status (journal.operator) ---

    def record_alert(self, level: str, title: str, message: str, at: datetime) -> None:
        self._alerts.record(level, title, message, at)

    def alerts(self, since: datetime | None = None) -> list[dict[str, Any]]:
        return self._alerts.select(since)

    def log_event(self, kind: str, payload: dict[str, Any], at: datetime) -> None:
        self._events.log(kind, payload, at)

    def events(self, kind: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        return self._events.select(kind, since)

    def queue_operator_command(self, kind: str, reason: str, at: datetime) -> dict[str, Any]:
        return self._operator.queue(kind, reason, at)

    def operator_commands(self, *, pending: bool = False) -> list[dict[str, Any]]:
        return self._operator.commands(pending=pending)

    def mark_operator_command_applied(self, command_id: str) -> None:
        self._operator.mark_applied(command_id)

    def last_operator_seq(self) -> int:
        return self._operator.last_seq()

    def last_cycle(self, at: datetime, data: dict[str, Any]) -> None:
        self._operator.last_cycle(at, data)

    def get_last_cycle(self) -> dict[str, Any] | None:
        return self._operator.get_last_cycle()

    def status_summary(self, *, day_trades_since: date | None = None) -> dict[str, Any]:
        return self._operator.status_summary(day_trades_since=day_trades_since)

    # -- the row primitives reconciliation writes through (journal.reconciliation.OrderStore) --

    def _update(
        self, conn: sqlite3.Connection, cid: str, *, status: str, stamp: str, broker_order_id: str | None,
        filled_qty: str | None, filled_avg_price: str | None, raw: str | None,
    ) -> tuple[str, str] | None:
        return self._orders.apply_update(
            conn, cid, status=status, stamp=stamp, broker_order_id=broker_order_id,
            filled_qty=filled_qty, filled_avg_price=filled_avg_price, raw=raw)

    def _history(
        self, conn: sqlite3.Connection, cid: str, status: str, filled_qty: str | None,
        avg: str | None, raw: str | None, stamp: str,
    ) -> None:
        self._orders.add_history(conn, cid, status, filled_qty, avg, raw, stamp)

    def _counted(self, conn: sqlite3.Connection, broker_order_id: str) -> Decimal:
        return counted(conn, broker_order_id)

    def _insert_fill(
        self, conn: sqlite3.Connection, *, execution_id: str, cid: str | None, broker_order_id: str | None,
        symbol: str, side: str, qty: Any, price: Any, at: datetime, cum_qty: Any = None,
        source: str = "broker", applied: Decimal | None = None, segments: list[Segment] | None = None,
    ) -> dict[str, Any] | None:
        return self._fills.insert(
            conn, execution_id=execution_id, cid=cid, broker_order_id=broker_order_id, symbol=symbol,
            side=side, qty=qty, price=price, at=at, cum_qty=cum_qty, source=source, applied=applied,
            segments=segments)

    def _cumulative(
        self, conn: sqlite3.Connection, cid: str | None, broker_order_id: str, symbol: str, side: str,
        cumulative_qty: Any, avg_price: Any, at: datetime,
    ) -> dict[str, Any] | None:
        return self._fills.insert_cumulative(conn, cid, broker_order_id, symbol, side, cumulative_qty, avg_price, at)

    def _fill_record(self, conn: sqlite3.Connection, row: Mapping[str, Any]) -> FillRecord:
        return self._fills.to_record(conn, row)

    def _implied(self, conn: sqlite3.Connection) -> dict[str, Decimal]:
        return self._fills.implied(conn)

    # -- reconciliation (journal.reconciliation) --------------------------------------------

    def record_legs(self, order: Order | Mapping[str, Any], *, at: datetime) -> list[str]:
        """Journal the legs (take-profit, stop) of a bracket/OCO/OTO order the broker just
        accepted, under their own client order ids and linked to the parent, exactly as
        reconciliation adopts them; returns the client order ids newly journaled.

        Without this a stop leg that fills before the next reconciliation is a fill of an
        unknown order: no exit reason (the stop-loss guard never counts it), no strategy.
        """
        stamp = _ts(at, "at")
        report = ReconciliationReport(at=datetime.fromisoformat(stamp))
        with self._store.tx() as conn:
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
        with self._store.tx() as conn:
            reconcile_orders(self, conn, orders, report, stamp)
            reconcile_fills(self, conn, orders, fills, report, now)
            reconcile_missing(self, conn, orders, report, now, grace_seconds, stamp)
            reconcile_positions(self, conn, positions, report, stamp)
            conn.execute(
                "INSERT INTO events (kind, payload, at) VALUES (?, ?, ?)",
                ("reconciliation", _json(report.to_dict(), "reconciliation report"), stamp),
            )
        return report
