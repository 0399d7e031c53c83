"""Orders of the simulated broker: the request rules that need no account state, the order
record, and its Alpaca JSON shape.

:func:`parse_order_request` validates a ``POST /v2/orders`` body exactly as far as the body
alone allows (types, required prices, sub-penny rule, order-class shape, extended-hours and
TIF combinations) and answers Alpaca's 422 bodies. Rules that depend on positions, open
orders, prices or the session live in the engine.

Emulated quirk: ``take_profit``/``stop_loss`` sent without ``order_class`` are ignored and a
simple order is created, as Alpaca does (alpaca-py #289).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from simulator.errors import unprocessable, validation_error
from simulator.matching import OrderTerms
from simulator.wire import num, parse_bool, parse_decimal, parse_positive, places, ts

SIDES = ("buy", "sell")
TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIFS = ("day", "gtc", "opg", "cls", "ioc", "fok")
CLASSES = ("simple", "bracket", "oco", "oto")
INTENTS = ("buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close")
MAX_CLIENT_ORDER_ID = 128

OPEN_STATUSES = frozenset(
    {"new", "partially_filled", "accepted", "pending_new", "held", "done_for_day", "pending_cancel", "pending_replace"}
)
# Orders that can still execute (``held`` legs wait for their parent; ``accepted`` for the session).
WORKING_STATUSES = frozenset({"new", "partially_filled"})


@dataclass
class OrderRequest:
    """A validated order body (prices as Decimal, enums lower case)."""

    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    trail_price: Decimal | None
    trail_percent: Decimal | None
    extended_hours: bool
    client_order_id: str | None
    order_class: str  # "simple" | "bracket" | "oco" | "oto"
    take_profit_limit: Decimal | None
    stop_loss_stop: Decimal | None
    stop_loss_limit: Decimal | None

    @property
    def fractional(self) -> bool:
        return self.qty is not None and self.qty != self.qty.to_integral_value()


def check_sub_penny(value: Decimal, field_name: str) -> None:
    """422 42210000 unless ``value`` uses at most 2 decimals (>= $1) or 4 (< $1)."""
    allowed = 2 if value >= 1 else 4
    if places(value) > allowed:
        raise unprocessable(
            f"invalid {field_name} {num(value)}. sub-penny increment does not fulfill minimum pricing criteria"
        )


def _price(body: dict[str, Any], key: str, label: str | None = None) -> Decimal | None:
    value = body.get(key)
    if value is None:
        return None
    price = parse_decimal(value, label or key)
    if price <= 0:
        raise validation_error(f"{label or key} must be > 0")
    check_sub_penny(price, label or key)
    return price


def _choice(body: dict[str, Any], key: str, allowed: tuple[str, ...], *, default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        raise validation_error(f"{key} is required")
    text = str(value)
    if text not in allowed:
        raise validation_error(f"invalid {key}: {text!r} (allowed: {', '.join(allowed)})")
    return text


def parse_order_request(body: Any) -> OrderRequest:
    """Validate a ``POST /v2/orders`` body; raise Alpaca's 422 for the first problem found."""
    if not isinstance(body, dict):
        raise validation_error("request body must be a JSON object")
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol.strip():
        raise validation_error("symbol is required")
    side = _choice(body, "side", SIDES)
    kind = _choice(body, "type", TYPES)
    tif = _choice(body, "time_in_force", TIFS)
    raw_class = body.get("order_class") or "simple"
    if raw_class == "mleg":
        raise unprocessable("mleg orders are only supported for options")
    order_class = _choice({"order_class": raw_class}, "order_class", CLASSES)

    qty = parse_positive(body["qty"], "qty") if body.get("qty") is not None else None
    notional = parse_positive(body["notional"], "notional") if body.get("notional") is not None else None
    if qty is None and notional is None:
        raise validation_error("qty or notional is required")
    if qty is not None and notional is not None:
        raise validation_error("only one of qty or notional may be specified")
    if notional is not None and (kind != "market" or tif != "day"):
        raise unprocessable("notional orders must be market orders with time_in_force day")

    extended = parse_bool(body.get("extended_hours", False), "extended_hours")
    cid = body.get("client_order_id")
    if cid is not None:
        if not isinstance(cid, str) or not cid:
            raise validation_error("client_order_id must be a non-empty string")
        if len(cid) > MAX_CLIENT_ORDER_ID:
            raise validation_error(f"client_order_id must be no more than {MAX_CLIENT_ORDER_ID} characters")
    intent = body.get("position_intent")
    if intent is not None and intent not in INTENTS:
        raise validation_error(f"invalid position_intent: {intent!r}")

    take_profit = body.get("take_profit") if order_class != "simple" else None
    stop_loss = body.get("stop_loss") if order_class != "simple" else None
    for name, leg in (("take_profit", take_profit), ("stop_loss", stop_loss)):
        if leg is not None and not isinstance(leg, dict):
            raise validation_error(f"{name} must be an object")
    tp_limit = _price(take_profit, "limit_price", "take_profit.limit_price") if take_profit else None
    sl_stop = _price(stop_loss, "stop_price", "stop_loss.stop_price") if stop_loss else None
    sl_limit = _price(stop_loss, "limit_price", "stop_loss.limit_price") if stop_loss else None

    limit_price = _price(body, "limit_price")
    stop_price = _price(body, "stop_price")
    trail_price = parse_decimal(body["trail_price"], "trail_price") if body.get("trail_price") is not None else None
    trail_percent = (
        parse_decimal(body["trail_percent"], "trail_percent") if body.get("trail_percent") is not None else None
    )

    if order_class == "oco":
        if kind != "limit":
            raise unprocessable("oco orders must be limit orders")
        if tp_limit is None or sl_stop is None:
            raise validation_error("oco orders require take_profit.limit_price and stop_loss.stop_price")
        if limit_price is not None and limit_price != tp_limit:
            raise validation_error("limit_price must equal take_profit.limit_price for oco orders")
        limit_price = tp_limit

    _check_type_prices(kind, limit_price, stop_price, trail_price, trail_percent, tif)

    if tif in ("ioc", "fok", "opg", "cls") and kind not in ("market", "limit"):
        raise unprocessable(f"time_in_force {tif} is only allowed for market and limit orders")
    if extended:
        if kind != "limit" or tif != "day":
            raise unprocessable("extended hours order must be DAY limit orders")
        if order_class != "simple":
            raise unprocessable("extended hours orders must be simple orders")
    if qty is not None and qty != qty.to_integral_value():
        if order_class != "simple":
            raise unprocessable("fractional orders must be simple orders")
        if kind not in ("market", "limit") or tif != "day":
            raise unprocessable("fractional orders must be market or limit orders with time_in_force day")

    if order_class in ("bracket", "oto"):
        if kind not in ("market", "limit"):
            raise validation_error(f"{order_class} orders must be market or limit orders")
        if tif not in ("day", "gtc"):
            raise validation_error(f"{order_class} orders must be day or gtc orders")
        if order_class == "bracket":
            if tp_limit is None:
                raise validation_error("bracket orders require take_profit.limit_price")
            if sl_stop is None:
                raise validation_error("bracket orders require stop_loss.stop_price")
        elif (tp_limit is None) == (sl_stop is None):
            raise validation_error("oto orders require exactly one of take_profit or stop_loss")
    if order_class == "oco" and tif not in ("day", "gtc"):
        raise validation_error("oco orders must be day or gtc orders")
    if tp_limit is not None and sl_stop is not None:
        # The exit side is opposite the entry side; for an oco the order itself is the exit.
        exit_side = side if order_class == "oco" else ("sell" if side == "buy" else "buy")
        if exit_side == "sell" and not tp_limit > sl_stop:
            raise unprocessable("take_profit.limit_price must be > stop_loss.stop_price")
        if exit_side == "buy" and not tp_limit < sl_stop:
            raise unprocessable("take_profit.limit_price must be < stop_loss.stop_price")
    if sl_stop is not None and sl_limit is not None:
        exit_side = side if order_class == "oco" else ("sell" if side == "buy" else "buy")
        if (exit_side == "sell" and sl_limit > sl_stop) or (exit_side == "buy" and sl_limit < sl_stop):
            raise unprocessable("stop_loss.limit_price must not be better than stop_loss.stop_price")

    return OrderRequest(
        symbol=symbol.strip(),
        side=side,
        type=kind,
        time_in_force=tif,
        qty=qty,
        notional=notional,
        limit_price=limit_price,
        stop_price=stop_price,
        trail_price=trail_price,
        trail_percent=trail_percent,
        extended_hours=extended,
        client_order_id=cid,
        order_class=order_class,
        take_profit_limit=tp_limit,
        stop_loss_stop=sl_stop,
        stop_loss_limit=sl_limit,
    )


def _check_type_prices(
    kind: str,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    trail_price: Decimal | None,
    trail_percent: Decimal | None,
    tif: str,
) -> None:
    needs_limit = kind in ("limit", "stop_limit")
    needs_stop = kind in ("stop", "stop_limit")
    if needs_limit and limit_price is None:
        raise validation_error(f"limit_price is required for {kind} orders")
    if not needs_limit and limit_price is not None:
        raise validation_error(f"limit_price is not allowed for {kind} orders")
    if needs_stop and stop_price is None:
        raise validation_error(f"stop_price is required for {kind} orders")
    if not needs_stop and stop_price is not None:
        raise validation_error(f"stop_price is not allowed for {kind} orders")
    if kind == "trailing_stop":
        if (trail_price is None) == (trail_percent is None):
            raise validation_error("trailing_stop orders require exactly one of trail_price or trail_percent")
        if trail_price is not None and trail_price <= 0:
            raise validation_error("trail_price must be > 0")
        if trail_percent is not None and not 0 < trail_percent < 100:
            raise validation_error("trail_percent must be between 0 and 100")
        if tif not in ("day", "gtc"):
            raise unprocessable("trailing_stop orders must be day or gtc orders")
    elif trail_price is not None or trail_percent is not None:
        raise validation_error(f"trail_price and trail_percent are not allowed for {kind} orders")


@dataclass
class SimOrder:
    """One order of the simulated account, with everything its Alpaca JSON shows."""

    id: str
    client_order_id: str
    seq: int
    symbol: str
    asset_id: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    trail_price: Decimal | None
    trail_percent: Decimal | None
    extended_hours: bool
    order_class: str  # "" for simple, else bracket | oco | oto
    position_intent: str | None
    status: str
    created_at: datetime
    # The first minute bar this order may execute on (never a bar that began before it existed).
    eligible_from: datetime
    # The session date this order belongs to; day orders expire at its close (post end if extended).
    session: date
    expires_at: datetime | None = None
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    expired_at: datetime | None = None
    canceled_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    filled_qty: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    parent_id: str | None = None
    leg_ids: list[str] = field(default_factory=list)
    oco_group: str | None = None  # shared by the two exits of an OCO pair / bracket
    triggered: bool = False
    hwm: Decimal | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_working(self) -> bool:
        return self.status in WORKING_STATUSES

    @property
    def remaining(self) -> Decimal:
        """Quantity still to execute (notional orders: unknown until filled, reported as 0)."""
        if self.qty is None:
            return Decimal(0)
        return self.qty - self.filled_qty

    @property
    def filled_avg_price(self) -> Decimal | None:
        if self.filled_qty == 0:
            return None
        return (self.filled_value / self.filled_qty).quantize(Decimal("1e-9")).normalize()

    def terms(self) -> OrderTerms:
        """The matcher's view of this order (its trigger state is written back by :meth:`absorb`)."""
        return OrderTerms(
            side=self.side,
            type=self.type,
            limit_price=self.limit_price,
            stop_price=self.stop_price,
            trail_price=self.trail_price,
            trail_percent=self.trail_percent,
            triggered=self.triggered,
            mark=self.hwm,
        )

    def absorb(self, terms: OrderTerms) -> None:
        """Keep the trigger state the matcher computed (stop-limit triggered, trailing mark)."""
        self.triggered = terms.triggered
        self.hwm = terms.mark

    def touch(self, now: datetime) -> None:
        self.updated_at = now

    def to_json(self, legs: list[dict[str, Any]] | None = None, *, stop_price: Decimal | None = None) -> dict[str, Any]:
        """The Alpaca Order object: every field Alpaca sends (numbers as strings, RFC 3339
        ``Z`` timestamps with up to nine fraction digits, see :func:`simulator.wire.ts`).

        Built once per state of the order (every field is compared, so any change, however
        made, rebuilds it); each call returns a fresh dict.
        """
        state = _order_state(self)
        memo = self.__dict__.get("_json_memo")
        if memo is None or memo[0] != state:
            memo = (state, self._json_body())
            self.__dict__["_json_memo"] = memo
        body = dict(memo[1])
        body["legs"] = legs
        if stop_price is not None:
            body["stop_price"] = num(stop_price)
        return body

    def _json_body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": ts(self.created_at),
            "updated_at": ts(self.updated_at or self.created_at),
            "submitted_at": ts(self.submitted_at or self.created_at),
            "filled_at": ts(self.filled_at),
            "expired_at": ts(self.expired_at),
            "canceled_at": ts(self.canceled_at),
            "cancel_requested_at": ts(self.cancel_requested_at),
            "failed_at": ts(self.failed_at),
            "replaced_at": ts(self.replaced_at),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": self.asset_id,
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": num(self.notional),
            "qty": num(self.qty) if self.qty is not None else (num(self.filled_qty) if self.filled_qty else None),
            "filled_qty": num(self.filled_qty),
            "filled_avg_price": num(self.filled_avg_price),
            "order_class": self.order_class,
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": self.position_intent,
            "time_in_force": self.time_in_force,
            "limit_price": num(self.limit_price),
            "stop_price": num(self.stop_price),
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": None,
            "trail_percent": num(self.trail_percent),
            "trail_price": num(self.trail_price),
            "hwm": num(self.hwm),
            "expires_at": ts(self.expires_at),
            "subtag": None,
            "source": None,
            # Alpaca charges no commission on US equities (a backtest's CommissionModel
            # charges the ledger, not this field).
            "commission": "0",
        }


# Every field of an order, read at once: the state its JSON is remembered for.
_order_state = attrgetter(*(f.name for f in fields(SimOrder)))
