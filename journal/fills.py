"""Fills: every execution recorded once, and what the fills imply about positions.

A broker fill (an Alpaca ``FILL`` activity, a stream ``fill`` event) has an execution id and,
usually, the order's cumulative quantity after it (``cum_qty``). Sources that only know an
order's cumulative ``filled_qty`` and average price go through
:meth:`FillRepository.record_cumulative`, which records the difference from what is already
recorded for that order as a synthetic fill (priced so that the order's VWAP matches the
broker's). Each fill row remembers which slice of the order's cumulative quantity it accounts
for (:mod:`journal.segments`), so a real fill arriving after a synthetic one for the same
shares is remembered (its execution id) without being counted twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import structlog

from analytics.trade_ledger import FillRecord
from journal.codec import _dec, _parse_dec, _parse_ts, _side, _text, _ts
from journal.orders import OrderRepository
from journal.segments import (
    ZERO,
    Segment,
    _measure,
    _parse_segments,
    _segments_text,
    _subtract,
    _top,
    coverage,
)
from journal.store import Store

log = structlog.get_logger(__name__)

PRICE_QUANTUM = Decimal("0.000001")


class FillRepository:
    """The ``fills`` and ``position_adjustments`` tables (strategy and exit reason of a fill
    come from its order, through the :class:`~journal.orders.OrderRepository`)."""

    def __init__(self, store: Store, orders: OrderRepository) -> None:
        self._store = store
        self._orders = orders

    def record(
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
        with self._store.tx() as conn:
            row = self.insert(
                conn, execution_id=execution_id, cid=client_order_id, broker_order_id=broker_order_id,
                symbol=symbol, side=side, qty=qty, price=price, at=at, cum_qty=cum_qty,
            )
        return row is not None and row["applied_qty"] > ZERO

    def insert(
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
                cover, _unknown = coverage(conn, broker_order_id)
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

    def record_cumulative(
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
        with self._store.tx() as conn:
            row = self.insert_cumulative(
                conn, client_order_id, _text(broker_order_id, "broker_order_id"), symbol, side,
                cumulative_qty, avg_price, at,
            )
            return None if row is None else self.to_record(conn, row)

    def insert_cumulative(
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
        cover, unknown = coverage(conn, broker_order_id)
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
        return self.insert(
            conn, execution_id=execution_id, cid=cid, broker_order_id=broker_order_id, symbol=symbol,
            side=side, qty=missing, price=price, at=at, cum_qty=total, source="cumulative",
            applied=missing, segments=_top(gaps, missing),
        )

    def to_record(self, conn: sqlite3.Connection, row: Mapping[str, Any]) -> FillRecord:
        cid = row["client_order_id"]
        strategy = self._orders.strategy(conn, cid=cid) if cid else None
        return FillRecord(
            symbol=row["symbol"], side=row["side"], qty=row["applied_qty"], price=row["price"],
            at=row["at"], strategy=strategy, execution_id=row["execution_id"],
            exit_reason=self._orders.exit_reason(conn, cid),
        )

    def _out(self, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for key in ("qty", "price", "applied_qty", "cum_qty"):
            out[key] = _parse_dec(out[key])
        if out["applied_qty"] is None:
            out["applied_qty"] = out["qty"]
        out["at"] = _parse_ts(out["at"])
        out["segments"] = _parse_segments(out["segments"])
        return out

    def for_order(self, cid: str) -> list[dict[str, Any]]:
        """Fills of one order (by client order id), in the order they were recorded."""
        rows = self._store.read("SELECT * FROM fills WHERE client_order_id = ? ORDER BY rowid", (cid,))
        return [self._out(row) for row in rows]

    def select(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Every fill (optionally of one symbol), in the order they were recorded."""
        if symbol is None:
            rows = self._store.read("SELECT * FROM fills ORDER BY rowid")
        else:
            rows = self._store.read("SELECT * FROM fills WHERE symbol = ? ORDER BY rowid", (symbol,))
        return [self._out(row) for row in rows]

    def after(self, rowid: int) -> list[dict[str, Any]]:
        """Fills recorded after row ``rowid``, each with its ``rowid`` (what is new since a
        reader last looked, whichever path recorded them: REST, stream or cumulative)."""
        rows = self._store.read("SELECT rowid AS rowid, * FROM fills WHERE rowid > ? ORDER BY rowid", (rowid,))
        return [self._out(row) for row in rows]

    def records(self) -> list[FillRecord]:
        """Every counted fill as a :class:`FillRecord`, in recorded order (rebuilds a ledger)."""
        with self._store.reading() as conn:
            rows = conn.execute("SELECT * FROM fills ORDER BY rowid").fetchall()
            return [
                self.to_record(conn, out)
                for out in map(self._out, rows)
                if out["applied_qty"] > ZERO
            ]

    def record_of(self, execution_id: str) -> FillRecord | None:
        """One counted fill as a :class:`FillRecord` (strategy and exit reason resolved)."""
        with self._store.reading() as conn:
            row = conn.execute("SELECT * FROM fills WHERE execution_id = ?", (execution_id,)).fetchone()
            if row is None:
                return None
            out = self._out(row)
            if out["applied_qty"] <= ZERO:
                return None
            return self.to_record(conn, out)

    def implied_positions(self) -> dict[str, Decimal]:
        """Signed quantity per symbol implied by the fills and position adjustments."""
        with self._store.reading() as conn:
            return self.implied(conn)

    @staticmethod
    def implied(conn: sqlite3.Connection) -> dict[str, Decimal]:
        qty: dict[str, Decimal] = {}
        for row in conn.execute("SELECT symbol, side, qty, applied_qty FROM fills"):
            amount = Decimal(row["applied_qty"] or row["qty"])
            sign = 1 if row["side"] == "buy" else -1
            qty[row["symbol"]] = qty.get(row["symbol"], ZERO) + sign * amount
        for row in conn.execute("SELECT symbol, qty FROM position_adjustments"):
            qty[row["symbol"]] = qty.get(row["symbol"], ZERO) + Decimal(row["qty"])
        return qty
