"""The executor's plain data and rules: prices Alpaca accepts, deterministic client order
ids, the records of a submission and of a tracked order, and what protects a position.

Imported by name from :mod:`order_executor` (the face) by the rest of the daemon.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any, Literal, Protocol, Sequence

from broker.models import Order, Position

CENT = Decimal("0.01")
HUNDREDTH_CENT = Decimal("0.0001")
PROTECTIVE_TYPES = frozenset({"stop", "stop_limit", "trailing_stop"})
MAX_CLIENT_ORDER_ID = 48


def round_price(price: Decimal, *, side: Literal["up", "down", "nearest"] = "nearest") -> Decimal:
    """A price Alpaca accepts: 2 decimals at $1 and above, 4 below (the sub-penny rule)."""
    quantum = CENT if price >= 1 else HUNDREDTH_CENT
    rounding = {"up": ROUND_CEILING, "down": ROUND_DOWN, "nearest": ROUND_HALF_UP}[side]
    return price.quantize(quantum, rounding=rounding)


def client_order_id_for(intent_id: str, attempt: int = 0) -> str:
    """A deterministic ``client_order_id`` (at most 48 characters) for one intent and attempt.

    Short intent ids are kept readable; long ones keep a readable prefix and a hash suffix.
    """
    suffix = f"-{attempt}"
    room = MAX_CLIENT_ORDER_ID - len(suffix)
    if len(intent_id) <= room:
        return intent_id + suffix
    digest = hashlib.sha256(intent_id.encode()).hexdigest()[:12]
    return f"{intent_id[: room - 13]}~{digest}{suffix}"


class IntentLike(Protocol):
    intent_id: str
    symbol: str
    side: str
    strategy: str
    confidence: float
    entry_price: float
    stop_price: float | None
    target_price: float | None


class JournalLike(Protocol):
    def record_order_submission(self, client_order_id: str, intent_id: str | None, symbol: str,
                                side: str, qty: Decimal, order_type: str, order_class: str,
                                payload: dict[str, Any], at: datetime) -> None: ...

    def update_order(self, client_order_id: str, *, status: str, at: datetime,
                     broker_order_id: str | None = None, filled_qty: Decimal | None = None,
                     filled_avg_price: Decimal | None = None,
                     raw: dict[str, Any] | None = None) -> None: ...


@dataclass
class ExecutionResult:
    """What happened to one submission attempt."""

    client_order_id: str
    symbol: str
    status: Literal["submitted", "in_flight", "rejected"]
    reason: str = ""
    order: Order | None = None
    error_code: int | None = None


@dataclass
class TrackedOrder:
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    intent_id: str | None
    strategy: str | None
    expected_price: Decimal | None
    submitted_at: datetime
    status: str = "pending"
    broker_order_id: str | None = None
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    stop_price: Decimal | None = None
    target_price: Decimal | None = None


def protected_quantity(position: Position, open_orders: Sequence[Order]) -> Decimal:
    """Shares of ``position`` covered by working protective stop orders at the broker.

    Counts sell stops (stop, stop-limit, trailing) for a long, buy stops for a short, including
    legs of bracket/OCO orders (``held`` legs of an unfilled entry protect nothing yet).
    """
    exit_side = "sell" if position.qty > 0 else "buy"
    covered = Decimal(0)
    for order in flatten_orders(open_orders):
        if order.symbol != position.symbol or order.side != exit_side:
            continue
        if order.type not in PROTECTIVE_TYPES or not order.is_open or order.status == "held":
            continue
        covered += order.remaining_qty or Decimal(0)
    return covered


def flatten_orders(orders: Sequence[Order]) -> list[Order]:
    """Orders and their legs (nested or listed flat), each id once."""
    out: list[Order] = []
    for order in orders:
        out.append(order)
        if order.legs:
            out.extend(flatten_orders(order.legs))
    # the same leg may be listed both nested and flat: keep one of each id
    unique: dict[str, Order] = {}
    for order in out:
        unique.setdefault(order.id, order)
    return list(unique.values())
