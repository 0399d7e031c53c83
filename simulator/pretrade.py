"""Pre-trade checks of the simulated broker: what Alpaca refuses before an order exists.

Pure functions of the request, the quote and the open orders (the account's own checks,
buying power, held quantity and the PDT rule, are :class:`simulator.sim_account.SimAccount`'s):

* opg/cls orders are refused from 09:28 / 15:50 ET until 19:00 ET on a trading day;
* a simple order facing a resting opposite-side order of the same symbol is a wash trade
  unless both are limit orders whose prices cannot cross;
* bracket/oco/oto exit legs must sit at least 0.01 away from the base price;
* a notional order is sized at the quote it would take;
* ``PATCH /v2/orders/{id}`` accepts only the fields Alpaca lets a replace change
  (:func:`parse_replacement`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from core.clock import EXCHANGE_TZ
from simulator.errors import already_final, unprocessable, validation_error
from simulator.matching import Touch
from simulator.orders import TIFS, OrderRequest, SimOrder, check_sub_penny
from simulator.sessions import Sessions
from simulator.wire import et_date, parse_decimal, parse_positive

QTY_PLACES = Decimal("1e-9")
PRICE_GAP = Decimal("0.01")
OPG_CUTOFF = (9, 28)  # opg orders are refused from 09:28 ...
CLS_CUTOFF = (15, 50)  # ... cls orders from 15:50 ...
AUCTION_QUEUE_FROM = (19, 0)  # ... until 19:00 ET, when they queue for the next session.


def opposite(side: str) -> str:
    """The other side of the book."""
    return "sell" if side == "buy" else "buy"


def requested_qty(req: OrderRequest, touch: Touch | None) -> Decimal:
    """The shares an order asks for (a notional order: at the bid or ask it would take)."""
    if req.qty is not None:
        return req.qty
    assert req.notional is not None
    reference = (touch.bid if req.side == "sell" else touch.ask) if touch is not None else None
    if not reference:
        raise unprocessable("no market price is available to size a notional order")
    return (req.notional / reference).quantize(QTY_PLACES, rounding=ROUND_DOWN)


def check_auction_window(req: OrderRequest, now: datetime, sessions: Sessions) -> None:
    """422 for an opg/cls order sent while its auction no longer takes orders."""
    if req.time_in_force not in ("opg", "cls"):
        return
    local = now.astimezone(EXCHANGE_TZ).time()
    cutoff = OPG_CUTOFF if req.time_in_force == "opg" else CLS_CUTOFF
    start = local.replace(hour=cutoff[0], minute=cutoff[1], second=0, microsecond=0)
    end = local.replace(hour=AUCTION_QUEUE_FROM[0], minute=AUCTION_QUEUE_FROM[1], second=0, microsecond=0)
    if sessions.day(et_date(now)) is not None and start <= local < end:
        when = "9:28am" if req.time_in_force == "opg" else "3:50pm"
        raise unprocessable(f"{req.time_in_force} orders are not accepted between {when} and 7:00pm ET")


def wash_conflict(
    open_orders: Iterable[SimOrder], symbol: str, side: str, kind: str, limit_price: Decimal | None,
    *, exclude: str | None = None,
) -> bool:
    """Whether a ``side`` order would face an opposite resting order it could trade with."""
    mine = limit_price if kind in ("limit", "stop_limit") else None
    for order in open_orders:
        if order.symbol != symbol or order.side == side or order.status == "held" or order.id == exclude:
            continue
        theirs = order.limit_price if order.type in ("limit", "stop_limit") else None
        if mine is None or theirs is None:
            return True
        buy_price, sell_price = (mine, theirs) if side == "buy" else (theirs, mine)
        if buy_price >= sell_price:
            return True
    return False


def check_leg_prices(req: OrderRequest, touch: Touch | None) -> None:
    """Alpaca's base-price rules for bracket/oco/oto exits (0.01 away from the base)."""
    exit_side = req.side if req.order_class == "oco" else opposite(req.side)
    market = touch.last if touch is not None else None
    if req.order_class == "oco":
        base = req.take_profit_limit
    elif req.type == "limit":
        base = req.limit_price
    else:
        base = market
    if base is None:
        raise unprocessable("no market price is available to check the order's legs")
    stop_bases = [b for b in (base, market) if b is not None]
    if req.stop_loss_stop is not None:
        if exit_side == "sell" and not req.stop_loss_stop <= min(stop_bases) - PRICE_GAP:
            raise unprocessable("stop price must be less than base_price - 0.01")
        if exit_side == "buy" and not req.stop_loss_stop >= max(stop_bases) + PRICE_GAP:
            raise unprocessable("stop price must be greater than base_price + 0.01")
    if req.take_profit_limit is not None and req.order_class != "oco":
        if exit_side == "sell" and not req.take_profit_limit >= base + PRICE_GAP:
            raise unprocessable("take_profit.limit_price must be >= base_price + 0.01")
        if exit_side == "buy" and not req.take_profit_limit <= base - PRICE_GAP:
            raise unprocessable("take_profit.limit_price must be <= base_price - 0.01")


@dataclass(frozen=True)
class Replacement:
    """What a replace asks for, every field filled in from the old order when not given."""

    qty: Decimal
    time_in_force: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    trail_price: Decimal | None
    trail_percent: Decimal | None
    client_order_id: str | None


def parse_replacement(old: SimOrder, body: Any, taken_client_ids: Container[str]) -> Replacement:
    """Validate a ``PATCH /v2/orders/{id}`` body against the order it replaces (Alpaca's
    refusals, in Alpaca's order); ``taken_client_ids``: client order ids already in use."""
    if not isinstance(body, dict):
        raise validation_error("request body must be a JSON object")
    allowed = {"qty", "time_in_force", "limit_price", "stop_price", "trail", "client_order_id"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise validation_error(f"unknown field(s) for replace: {', '.join(unknown)}")
    if not old.is_open:
        raise already_final(old.status)
    if old.status in ("accepted", "pending_new", "pending_cancel", "pending_replace"):
        raise unprocessable("unable to replace order, order isn't sent to exchange yet")
    if old.notional is not None:
        raise unprocessable("notional orders cannot be replaced")
    values = {k: v for k, v in body.items() if v is not None}
    if not values:
        raise validation_error("nothing to replace: give qty, time_in_force, limit_price, stop_price or trail")
    cid = values.get("client_order_id")
    if cid is not None:
        if not isinstance(cid, str) or not cid or len(cid) > 128:
            raise validation_error("client_order_id must be a string of 1 to 128 characters")
        if cid in taken_client_ids:
            raise validation_error("client_order_id must be unique")
    qty = old.remaining
    if "qty" in values:
        if old.order_class:
            raise unprocessable(f"qty cannot be replaced for {old.order_class} orders")
        qty = parse_positive(values["qty"], "qty")
        if qty != qty.to_integral_value():
            raise unprocessable("qty must be a whole number of shares")
    tif = old.time_in_force
    if "time_in_force" in values:
        tif = str(values["time_in_force"])
        if tif not in TIFS:
            raise validation_error(f"invalid time_in_force: {tif!r}")
        if (old.order_class or old.type == "trailing_stop") and tif not in ("day", "gtc"):
            raise unprocessable("time_in_force must be day or gtc for this order")
    limit_price = _replaced_price(values, "limit_price", old.limit_price, old.type in ("limit", "stop_limit"))
    stop_price = _replaced_price(values, "stop_price", old.stop_price, old.type in ("stop", "stop_limit"))
    trail_price, trail_percent = old.trail_price, old.trail_percent
    if "trail" in values:
        if old.type != "trailing_stop":
            raise validation_error("trail is only allowed for trailing_stop orders")
        trail = parse_decimal(values["trail"], "trail")
        if trail <= 0 or (trail_percent is not None and trail >= 100):
            raise validation_error("trail must be > 0 (and < 100 for trail_percent orders)")
        if trail_price is not None:
            trail_price = trail
        else:
            trail_percent = trail
    return Replacement(qty, tif, limit_price, stop_price, trail_price, trail_percent, cid)


def _replaced_price(values: dict[str, Any], key: str, current: Decimal | None, applies: bool) -> Decimal | None:
    """The replaced ``key`` price, validated, or ``current`` when the body does not change it."""
    if key not in values:
        return current
    if not applies:
        raise validation_error(f"{key} is not allowed for this order type")
    price = parse_decimal(values[key], key)
    if price <= 0:
        raise validation_error(f"{key} must be > 0")
    check_sub_penny(price, key)
    return price
