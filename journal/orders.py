"""Trade intents and orders: journaled before acting, then kept in step with the broker.

An intent is journaled before it is sized, an order (with its deterministic
``client_order_id``) before it is POSTed, as ``submitted``; every status the broker reports
afterwards is kept in ``order_status_history``. A terminal order is not reopened by a late
update. Reconciliation (:mod:`journal.reconciliation`) writes through :meth:`OrderRepository.apply_update`
and :meth:`OrderRepository.add_history`, so an adopted order is stored like any other.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import structlog

from broker.models import TERMINAL_ORDER_STATUSES
from journal.codec import _json, _opt_dec_text, _parse_dec, _parse_ts, _side, _text, _ts
from journal.errors import JournalError
from journal.reconciliation import CLOSED_STATUSES
from journal import segments
from journal.store import Store

log = structlog.get_logger(__name__)


class OrderRepository:
    """The ``intents``, ``orders`` and ``order_status_history`` tables."""

    def __init__(self, store: Store) -> None:
        self._store = store

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
        with self._store.tx() as conn:
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
        rows = self._store.read("SELECT DISTINCT symbol FROM intents WHERE created_at >= ? AND created_at < ?",
                          [_ts(start, "start"), _ts(end, "end")])
        return {r["symbol"] for r in rows}

    def intent(self, intent_id: str) -> dict[str, Any] | None:
        rows = self._store.read("SELECT * FROM intents WHERE intent_id = ?", (intent_id,))
        if not rows:
            return None
        row = dict(rows[0])
        row["confidence"] = _parse_dec(row["confidence"])
        row["payload"] = json.loads(row["payload"])
        row["created_at"] = _parse_ts(row["created_at"])
        return row

    def record_submission(
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
        with self._store.tx() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO orders (client_order_id, intent_id, symbol, side, qty, "
                "order_type, order_class, status, origin, payload, submitted_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            ).rowcount
            if inserted:
                self.add_history(conn, cid, "submitted", None, None, None, stamp)
            else:
                log.info("journal_submission_repeated", client_order_id=cid)

    def update(
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
        with self._store.tx() as conn:
            self.apply_update(
                conn, _text(client_order_id, "client_order_id"), status=_text(status, "status"),
                stamp=_ts(at, "at"), broker_order_id=broker_order_id,
                filled_qty=_opt_dec_text(filled_qty, "filled_qty"),
                filled_avg_price=_opt_dec_text(filled_avg_price, "filled_avg_price"),
                raw=None if raw is None else _json(raw, "raw order"),
            )

    def apply_update(
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
            self.add_history(conn, cid, status, filled_qty, filled_avg_price, raw, stamp)
        return (old, status) if status != old else None

    @staticmethod
    def add_history(
        conn: sqlite3.Connection, cid: str, status: str, filled_qty: str | None,
        avg: str | None, raw: str | None, stamp: str,
    ) -> None:
        conn.execute(
            "INSERT INTO order_status_history (client_order_id, status, filled_qty, "
            "filled_avg_price, raw, at) VALUES (?, ?, ?, ?, ?, ?)",
            (cid, status, filled_qty, avg, raw, stamp),
        )

    def _out(self, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for key in ("qty", "filled_qty", "filled_avg_price"):
            out[key] = _parse_dec(out[key])
        for key in ("submitted_at", "updated_at"):
            out[key] = _parse_ts(out[key])
        out["payload"] = json.loads(out["payload"])
        out["raw"] = None if out["raw"] is None else json.loads(out["raw"])
        return out

    def select(self, status: str | None = None) -> list[dict[str, Any]]:
        """Journaled orders (optionally of one status), oldest first."""
        if status is None:
            rows = self._store.read("SELECT * FROM orders ORDER BY submitted_at, rowid")
        else:
            rows = self._store.read(
                "SELECT * FROM orders WHERE status = ? ORDER BY submitted_at, rowid", (status,)
            )
        return [self._out(row) for row in rows]

    def by_client_id(self, cid: str) -> dict[str, Any] | None:
        rows = self._store.read("SELECT * FROM orders WHERE client_order_id = ?", (cid,))
        return self._out(rows[0]) if rows else None

    def by_broker_id(self, broker_order_id: str) -> dict[str, Any] | None:
        rows = self._store.read("SELECT * FROM orders WHERE broker_order_id = ?", (broker_order_id,))
        return self._out(rows[0]) if rows else None

    def history(self, cid: str) -> list[dict[str, Any]]:
        """Every status the order went through, oldest first."""
        rows = self._store.read(
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
        rows = self._store.read(
            f"SELECT * FROM orders WHERE origin = 'submitted' AND status NOT IN ({placeholders}) "
            "ORDER BY submitted_at, rowid",
            sorted(CLOSED_STATUSES),
        )
        return [self._out(row) for row in rows]

    def to_reconcile(self, *, short_fills: bool = True) -> list[dict[str, Any]]:
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
        with self._store.reading() as conn:
            rows = conn.execute(
                f"SELECT * FROM orders WHERE status NOT IN ({placeholders}) {closed_with_fills}"
                "ORDER BY submitted_at, rowid",
                sorted(CLOSED_STATUSES),
            ).fetchall()
            out = []
            for row in rows:
                if row["status"] in CLOSED_STATUSES and row["order_class"] not in ("bracket", "oco", "oto"):
                    counted = segments.counted(conn, row["broker_order_id"])
                    if counted >= Decimal(row["filled_qty"] or 0):
                        continue
                elif row["status"] in CLOSED_STATUSES:
                    counted = segments.counted(conn, row["broker_order_id"])
                    has_legs = conn.execute(
                        "SELECT 1 FROM orders WHERE parent_client_order_id = ?", (row["client_order_id"],)
                    ).fetchone()
                    if has_legs and counted >= Decimal(row["filled_qty"] or 0):
                        continue
                out.append(self._out(row))
            return out

    def strategy_for_order(self, broker_order_id: str) -> str | None:
        """The strategy of the intent behind a broker order (or behind its parent)."""
        with self._store.reading() as conn:
            return self.strategy(conn, broker_order_id=broker_order_id)

    def strategy(
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

    def exit_reason(self, conn: sqlite3.Connection, cid: str | None) -> str | None:
        if cid is None:
            return None
        row = conn.execute(
            "SELECT order_type, parent_client_order_id FROM orders WHERE client_order_id = ?", (cid,)
        ).fetchone()
        if row is None:
            return None
        if cid.startswith("emergency-"):
            # a market exit, not a stop fill: "stop" in a reason means the stop order filled
            # (the stop-loss guard counts emergency exits too, by this name)
            return "emergency_exit"
        if cid.startswith("exit-"):
            return "strategy_exit"
        if row["order_type"] in ("stop", "stop_limit"):
            return "stop_loss"
        if row["order_type"] == "trailing_stop":
            return "trailing_stop_loss"
        if row["order_type"] == "limit" and row["parent_client_order_id"]:
            return "take_profit"
        return None

    def count(self) -> int:
        """How many orders are journaled (without parsing any)."""
        return int(self._store.read("SELECT COUNT(*) AS n FROM orders")[0]["n"])
