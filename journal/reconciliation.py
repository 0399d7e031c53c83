"""Reconciliation: make the journal agree with the broker, and report what differed.

The broker is the source of truth. :meth:`journal.journal.Journal.reconcile` hands the
broker's orders (open ones and recent closed ones, legs nested), positions and FILL
activities to the functions here, inside one transaction of the journal:

* :func:`reconcile_orders`: a broker order the journal does not know is adopted and flagged
  (``sent_not_journaled`` when its client order id is the daemon's own, else
  ``not_journaled``); a leg of a known bracket/OCO/OTO order is adopted as a leg; a known
  order takes the broker's status and fill;
* :func:`reconcile_fills`: fills missed while the daemon was down are recorded once
  (deduplicated by execution id; an order's cumulative ``filled_qty`` turned into deltas);
* :func:`reconcile_missing`: a submission the broker never saw becomes ``never_landed``
  after a grace period, one whose fills add up to the whole order is ``filled``, the rest
  are ``unresolved`` (look them up by client order id);
* :func:`reconcile_positions`: a broker quantity that differs from what the journaled fills
  imply is flagged and adopted (a position adjustment row).

Nothing here sends an order: protecting what reconciliation finds is the protection step's
job. The functions write through the journal's own row primitives (:class:`OrderStore`), so
an order or fill adopted here is stored exactly as one the daemon journaled itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import structlog

from analytics.trade_ledger import FillRecord
from broker.models import TERMINAL_ORDER_STATUSES, Activity, Order, Position
from journal.codec import _json, _jsonable, _ts

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
#: Statuses after which the journal expects nothing more of an order.
CLOSED_STATUSES = frozenset(TERMINAL_ORDER_STATUSES | {"never_landed"})
#: Client order id prefixes the daemon itself uses for orders that have no intent.
DAEMON_PREFIXES = ("protect-", "emergency-")


class OrderStore(Protocol):
    """The journal's row primitives reconciliation writes through (see ``journal.journal``)."""

    def _update(
        self, conn: sqlite3.Connection, cid: str, *, status: str, stamp: str,
        broker_order_id: str | None, filled_qty: str | None, filled_avg_price: str | None,
        raw: str | None,
    ) -> tuple[str, str] | None: ...

    def _history(
        self, conn: sqlite3.Connection, cid: str, status: str, filled_qty: str | None,
        avg: str | None, raw: str | None, stamp: str,
    ) -> None: ...

    def _counted(self, conn: sqlite3.Connection, broker_order_id: str) -> Decimal: ...

    def _insert_fill(
        self, conn: sqlite3.Connection, *, execution_id: str, cid: str | None,
        broker_order_id: str | None, symbol: str, side: str, qty: Any, price: Any, at: datetime,
        cum_qty: Any = None, source: str = "broker", applied: Decimal | None = None,
        segments: list[tuple[Decimal, Decimal]] | None = None,
    ) -> dict[str, Any] | None: ...

    def _cumulative(
        self, conn: sqlite3.Connection, cid: str | None, broker_order_id: str, symbol: str,
        side: str, cumulative_qty: Any, avg_price: Any, at: datetime,
    ) -> dict[str, Any] | None: ...

    def _fill_record(self, conn: sqlite3.Connection, row: Mapping[str, Any]) -> FillRecord: ...

    def _implied(self, conn: sqlite3.Connection) -> dict[str, Decimal]: ...


@dataclass
class ReconciliationReport:
    """What one reconciliation found and did. Nothing in it was sent to the broker.

    Flagged (a human may want to look): ``adopted_orders`` (broker orders the journal did
    not know: ``reason`` is ``sent_not_journaled`` when the id is the daemon's own, else
    ``not_journaled``), ``never_landed`` (journaled submissions the broker never saw) and
    ``position_mismatches`` (broker quantity differs from what the journaled fills imply;
    the broker's quantity is adopted). Informational: ``legs_adopted`` (bracket/OCO legs of
    known orders), ``status_changes``, ``fills_recorded`` (missed fills now recorded),
    ``duplicate_fills`` (already known), ``unresolved`` (acknowledged orders the journal
    thinks are open but the broker did not list: look them up by client order id).
    ``new_fills`` feeds the trade ledger; it is left out of :meth:`to_dict`.
    """

    at: datetime
    adopted_orders: list[dict[str, Any]] = field(default_factory=list)
    legs_adopted: list[dict[str, Any]] = field(default_factory=list)
    status_changes: list[dict[str, Any]] = field(default_factory=list)
    never_landed: list[dict[str, Any]] = field(default_factory=list)
    unresolved: list[dict[str, Any]] = field(default_factory=list)
    fills_recorded: list[dict[str, Any]] = field(default_factory=list)
    duplicate_fills: int = 0
    position_mismatches: list[dict[str, Any]] = field(default_factory=list)
    new_fills: list[FillRecord] = field(default_factory=list)

    @property
    def discrepancies(self) -> list[dict[str, Any]]:
        """Every flagged finding, each with a ``kind``; empty when journal and broker agree."""
        found: list[dict[str, Any]] = []
        found += [{"kind": "adopted_order", **item} for item in self.adopted_orders]
        found += [{"kind": "never_landed", **item} for item in self.never_landed]
        found += [{"kind": "position_mismatch", **item} for item in self.position_mismatches]
        return found

    @property
    def has_discrepancies(self) -> bool:
        return bool(self.adopted_orders or self.never_landed or self.position_mismatches)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (Decimals and times as strings); safe to log as keyword fields."""
        return _jsonable(
            {
                "at": self.at,
                "adopted_orders": self.adopted_orders,
                "legs_adopted": self.legs_adopted,
                "status_changes": self.status_changes,
                "never_landed": self.never_landed,
                "unresolved": self.unresolved,
                "fills_recorded": self.fills_recorded,
                "duplicate_fills": self.duplicate_fills,
                "position_mismatches": self.position_mismatches,
                "discrepancy_count": len(self.discrepancies),
            }
        )


def _flatten(orders: Sequence[Order]) -> list[tuple[Order, Order | None]]:
    """Every order and nested leg once, each with its parent (None for top level)."""
    out: list[tuple[Order, Order | None]] = []
    seen: set[str] = set()

    def walk(order: Order, parent: Order | None) -> None:
        if order.id not in seen:
            seen.add(order.id)
            out.append((order, parent))
        for leg in order.legs or ():
            walk(leg, order)

    for order in orders:
        walk(order, None)
    return out


_RAW_ORDER_FIELDS = (
    "id", "client_order_id", "status", "symbol", "side", "type", "time_in_force", "order_class",
    "qty", "notional", "filled_qty", "filled_avg_price", "limit_price", "stop_price",
    "trail_price", "trail_percent", "extended_hours", "created_at", "updated_at",
    "submitted_at", "filled_at", "canceled_at", "expired_at", "replaced_by", "replaces",
)


def _order_raw(order: Order) -> dict[str, Any]:
    """The broker's view of an order, as journaled (legs are journaled as orders of their own)."""
    return {name: getattr(order, name) for name in _RAW_ORDER_FIELDS}


def _as_order(value: Any) -> Order:
    return value if isinstance(value, Order) else Order.model_validate(value)


def _as_position(value: Any) -> Position:
    return value if isinstance(value, Position) else Position.model_validate(value)


def _as_activity(value: Any) -> Activity:
    return value if isinstance(value, Activity) else Activity.model_validate(value)


def reconcile_orders(
    store: OrderStore, conn: sqlite3.Connection, orders: list[Order], report: ReconciliationReport, stamp: str
) -> None:
    known = {
        row["client_order_id"]: row
        for row in conn.execute("SELECT client_order_id, broker_order_id, status FROM orders")
    }
    by_broker_id = {row["broker_order_id"]: cid for cid, row in known.items() if row["broker_order_id"]}
    for order, parent in _flatten(orders):
        raw = _json(_order_raw(order), "broker order")
        cid = order.client_order_id
        if cid not in known and order.id in by_broker_id:
            cid = by_broker_id[order.id]  # same order, the journal knows it by another id
        if cid in known:
            change = store._update(
                conn, cid, status=order.status, stamp=stamp, broker_order_id=order.id,
                filled_qty=str(order.filled_qty),
                filled_avg_price=None if order.filled_avg_price is None else str(order.filled_avg_price),
                raw=raw,
            )
            if change:
                report.status_changes.append(
                    {"client_order_id": cid, "broker_order_id": order.id, "symbol": order.symbol,
                     "from": change[0], "to": change[1]}
                )
            continue
        parent_cid = None
        if parent is not None:
            parent_cid = by_broker_id.get(parent.id, parent.client_order_id)
        origin = "leg" if parent_cid in known else "adopted"
        conn.execute(
            "INSERT INTO orders (client_order_id, broker_order_id, parent_client_order_id, symbol, "
            "side, qty, order_type, order_class, status, filled_qty, filled_avg_price, origin, "
            "payload, raw, submitted_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cid, order.id, parent_cid, order.symbol, order.side,
                None if order.qty is None else str(order.qty), order.type, order.order_class,
                order.status, str(order.filled_qty),
                None if order.filled_avg_price is None else str(order.filled_avg_price),
                origin, "{}", raw, _ts(order.submitted_at or order.created_at, "order time"), stamp,
            ),
        )
        store._history(
            conn, cid, order.status, str(order.filled_qty),
            None if order.filled_avg_price is None else str(order.filled_avg_price), raw, stamp,
        )
        known[cid] = {"client_order_id": cid, "broker_order_id": order.id, "status": order.status}
        by_broker_id[order.id] = cid
        # fills recorded before the order was known (a leg that filled while the daemon
        # was down) now name it
        conn.execute("UPDATE fills SET client_order_id = ? WHERE broker_order_id = ? AND client_order_id IS NULL",
                     (cid, order.id))
        item = {
            "client_order_id": cid, "broker_order_id": order.id, "symbol": order.symbol,
            "side": order.side, "qty": order.qty, "type": order.type, "status": order.status,
        }
        if origin == "leg":
            report.legs_adopted.append({**item, "parent_client_order_id": parent_cid})
        else:
            intent_id = _matching_intent(conn, cid)
            if intent_id is not None:
                conn.execute(
                    "UPDATE orders SET intent_id = ? WHERE client_order_id = ?", (intent_id, cid)
                )
            daemon = intent_id is not None or cid.startswith(DAEMON_PREFIXES)
            item["reason"] = "sent_not_journaled" if daemon else "not_journaled"
            if parent_cid is not None:
                item["parent_client_order_id"] = parent_cid
            report.adopted_orders.append(item)

def _matching_intent(conn: sqlite3.Connection, cid: str) -> str | None:
    """The journaled intent whose deterministic client order id this is, if any."""
    # order_executor.client_order_id_for(): "<intent_id>-<attempt>", or, for long ids,
    # "<intent_id prefix>~<hash>-<attempt>".
    head = cid.split("~", 1)[0] if "~" in cid else None
    row = conn.execute(
        "SELECT intent_id FROM intents WHERE substr(?, 1, length(intent_id) + 1) = intent_id || '-' "
        "OR (? IS NOT NULL AND substr(intent_id, 1, length(?)) = ?) "
        "ORDER BY length(intent_id) DESC LIMIT 1",
        (cid, head, head, head),
    ).fetchone()
    return None if row is None else str(row[0])

def reconcile_missing(
    store: OrderStore,
    conn: sqlite3.Connection,
    orders: list[Order],
    report: ReconciliationReport,
    now: datetime,
    grace_seconds: float,
    stamp: str,
) -> None:
    at_broker = {o.client_order_id for o, _ in _flatten(orders)} | {o.id for o, _ in _flatten(orders)}
    placeholders = ",".join("?" * len(CLOSED_STATUSES))
    rows = conn.execute(
        "SELECT client_order_id, broker_order_id, symbol, side, qty, status, submitted_at "
        f"FROM orders WHERE status NOT IN ({placeholders}) AND origin = 'submitted'",
        sorted(CLOSED_STATUSES),
    ).fetchall()
    for row in rows:
        if row["client_order_id"] in at_broker or (row["broker_order_id"] in at_broker):
            continue
        submitted = datetime.fromisoformat(row["submitted_at"])
        item = {
            "client_order_id": row["client_order_id"], "broker_order_id": row["broker_order_id"],
            "symbol": row["symbol"], "side": row["side"], "qty": row["qty"],
            "status": row["status"], "submitted_at": submitted,
        }
        if row["broker_order_id"]:
            counted = store._counted(conn, row["broker_order_id"])
            if row["qty"] is not None and counted >= Decimal(row["qty"]) > ZERO:
                # Not listed, but its fills add up to the whole order: it filled.
                store._update(
                    conn, row["client_order_id"], status="filled", stamp=stamp,
                    broker_order_id=None, filled_qty=str(counted), filled_avg_price=None, raw=None,
                )
                report.status_changes.append(
                    {"client_order_id": row["client_order_id"],
                     "broker_order_id": row["broker_order_id"], "symbol": row["symbol"],
                     "from": row["status"], "to": "filled", "inferred_from_fills": True}
                )
            else:
                report.unresolved.append(item)
        elif (now - submitted).total_seconds() >= grace_seconds:
            store._update(
                conn, row["client_order_id"], status="never_landed", stamp=stamp,
                broker_order_id=None, filled_qty=None, filled_avg_price=None, raw=None,
            )
            report.never_landed.append(item)

def reconcile_fills(
    store: OrderStore,
    conn: sqlite3.Connection,
    orders: list[Order],
    fills: list[Activity],
    report: ReconciliationReport,
    now: datetime,
) -> None:
    for activity in sorted(fills, key=lambda a: (a.transaction_time or now, a.id)):
        if activity.activity_type != "FILL":
            continue
        if not (activity.symbol and activity.side and activity.qty and activity.price):
            log.warning("journal_fill_incomplete", execution_id=activity.id)
            continue
        row = store._insert_fill(
            conn, execution_id=activity.id, cid=None, broker_order_id=activity.order_id,
            symbol=activity.symbol, side=activity.side, qty=activity.qty, price=activity.price,
            at=activity.transaction_time or now, cum_qty=activity.cum_qty,
        )
        _note_fill(store, conn, row, report)
    for order, _parent in _flatten(orders):
        if order.filled_qty <= ZERO:
            continue
        row = store._cumulative(
            conn, None, order.id, order.symbol, order.side, order.filled_qty,
            order.filled_avg_price, order.filled_at or order.updated_at or now,
        )
        if row is not None:
            row["client_order_id"] = row["client_order_id"] or order.client_order_id
            _note_fill(store, conn, row, report)

def _note_fill(
    store: OrderStore, conn: sqlite3.Connection, row: dict[str, Any] | None, report: ReconciliationReport
) -> None:
    if row is None or row["applied_qty"] <= ZERO:
        report.duplicate_fills += 1
        return
    report.fills_recorded.append(
        {k: row[k] for k in ("execution_id", "client_order_id", "broker_order_id", "symbol",
                             "side", "applied_qty", "price", "at", "source")}
    )
    report.new_fills.append(store._fill_record(conn, row))

def reconcile_positions(
    store: OrderStore,
    conn: sqlite3.Connection,
    positions: list[Position],
    report: ReconciliationReport,
    stamp: str,
) -> None:
    implied = store._implied(conn)
    broker = {p.symbol: p.qty for p in positions}
    for symbol in sorted(set(implied) | set(broker)):
        journal_qty = implied.get(symbol, ZERO)
        broker_qty = broker.get(symbol, ZERO)
        if journal_qty == broker_qty:
            continue
        difference = broker_qty - journal_qty
        conn.execute(
            "INSERT INTO position_adjustments (symbol, qty, reason, at) VALUES (?, ?, ?, ?)",
            (symbol, str(difference), "reconciliation: broker quantity adopted", stamp),
        )
        report.position_mismatches.append(
            {"symbol": symbol, "journal_qty": journal_qty, "broker_qty": broker_qty,
             "difference": difference}
        )
