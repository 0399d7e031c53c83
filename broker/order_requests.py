"""The order requests the daemon sends (POST /v2/orders): :class:`OrderRequest` with its
``TakeProfit``/``StopLoss`` legs and constructors per order class. A request that Alpaca
would refuse for its shape is refused here, before it is sent, with every reason at once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from broker.wire import Num, OptionalNum, decimal_text

# -- order requests ------------------------------------------------------------------------

ORDER_SIDES = frozenset({"buy", "sell"})
ORDER_TYPES = frozenset({"market", "limit", "stop", "stop_limit", "trailing_stop"})
TIMES_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
ORDER_CLASSES = frozenset({"simple", "bracket", "oco", "oto"})
MAX_CLIENT_ORDER_ID = 128


class TakeProfit(BaseModel):
    """The take-profit leg of a bracket, OCO or OTO order."""

    model_config = ConfigDict(extra="forbid")

    limit_price: Num

    def to_payload(self) -> dict[str, str]:
        return {"limit_price": decimal_text(self.limit_price)}


class StopLoss(BaseModel):
    """The stop-loss leg; with ``limit_price`` the leg is a stop-limit order."""

    model_config = ConfigDict(extra="forbid")

    stop_price: Num
    limit_price: OptionalNum = None

    def to_payload(self) -> dict[str, str]:
        payload = {"stop_price": decimal_text(self.stop_price)}
        if self.limit_price is not None:
            payload["limit_price"] = decimal_text(self.limit_price)
        return payload


class OrderRequest(BaseModel):
    """An order to submit (POST /v2/orders), validated before anything is sent.

    Build one with the constructors :meth:`simple`, :meth:`bracket`, :meth:`oco`,
    :meth:`oto` and :meth:`trailing_stop`, or directly. ``to_payload()`` is the JSON body.
    """

    model_config = ConfigDict(extra="forbid")

    symbol: str
    side: str
    type: str = "market"
    time_in_force: str = "day"
    qty: OptionalNum = None
    notional: OptionalNum = None
    limit_price: OptionalNum = None
    stop_price: OptionalNum = None
    trail_price: OptionalNum = None
    trail_percent: OptionalNum = None
    extended_hours: bool | None = None
    client_order_id: str | None = None
    order_class: str | None = None
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None
    position_intent: str | None = None

    @model_validator(mode="after")
    def _check(self) -> OrderRequest:
        problems = _order_request_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_payload(self) -> dict[str, Any]:
        """The JSON body: decimals as strings, unset fields omitted, booleans as booleans."""
        payload: dict[str, Any] = {}
        for name in (
            "symbol", "qty", "notional", "side", "type", "time_in_force", "limit_price",
            "stop_price", "trail_price", "trail_percent", "extended_hours", "client_order_id",
            "order_class", "position_intent",
        ):
            value = getattr(self, name)
            if value is None:
                continue
            payload[name] = decimal_text(value) if isinstance(value, Decimal) else value
        if self.take_profit is not None:
            payload["take_profit"] = self.take_profit.to_payload()
        if self.stop_loss is not None:
            payload["stop_loss"] = self.stop_loss.to_payload()
        return payload

    # -- constructors -----------------------------------------------------------------

    @classmethod
    def simple(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        type: str = "market",  # noqa: A002 - Alpaca's field name
        time_in_force: str = "day",
        limit_price: Decimal | str | None = None,
        stop_price: Decimal | str | None = None,
        extended_hours: bool | None = None,
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """A market, limit, stop or stop-limit order with no legs."""
        return cls(
            symbol=symbol, qty=qty, side=side, type=type, time_in_force=time_in_force,
            limit_price=limit_price, stop_price=stop_price, extended_hours=extended_hours,
            client_order_id=client_order_id,
        )

    @classmethod
    def bracket(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        take_profit_price: Decimal | str,
        stop_loss_price: Decimal | str,
        stop_loss_limit_price: Decimal | str | None = None,
        limit_price: Decimal | str | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """An entry (market, or limit when ``limit_price`` is given) with take-profit and stop."""
        return cls(
            symbol=symbol, qty=qty, side=side,
            type="limit" if limit_price is not None else "market",
            limit_price=limit_price, time_in_force=time_in_force, order_class="bracket",
            take_profit=TakeProfit(limit_price=take_profit_price),
            stop_loss=StopLoss(stop_price=stop_loss_price, limit_price=stop_loss_limit_price),
            client_order_id=client_order_id,
        )

    @classmethod
    def oco(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        take_profit_price: Decimal | str,
        stop_loss_price: Decimal | str,
        stop_loss_limit_price: Decimal | str | None = None,
        time_in_force: str = "gtc",
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """An exit for an existing position: take-profit limit and stop, one cancels the other."""
        return cls(
            symbol=symbol, qty=qty, side=side, type="limit",
            limit_price=take_profit_price, time_in_force=time_in_force, order_class="oco",
            take_profit=TakeProfit(limit_price=take_profit_price),
            stop_loss=StopLoss(stop_price=stop_loss_price, limit_price=stop_loss_limit_price),
            client_order_id=client_order_id,
        )

    @classmethod
    def oto(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        take_profit_price: Decimal | str | None = None,
        stop_loss_price: Decimal | str | None = None,
        stop_loss_limit_price: Decimal | str | None = None,
        limit_price: Decimal | str | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """An entry with exactly one exit leg (take-profit or stop-loss)."""
        return cls(
            symbol=symbol, qty=qty, side=side,
            type="limit" if limit_price is not None else "market",
            limit_price=limit_price, time_in_force=time_in_force, order_class="oto",
            take_profit=None if take_profit_price is None else TakeProfit(limit_price=take_profit_price),
            stop_loss=None if stop_loss_price is None else StopLoss(
                stop_price=stop_loss_price, limit_price=stop_loss_limit_price),
            client_order_id=client_order_id,
        )

    @classmethod
    def trailing_stop(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        trail_price: Decimal | str | None = None,
        trail_percent: Decimal | str | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """A trailing stop by a price offset or a percent (exactly one of the two)."""
        return cls(
            symbol=symbol, qty=qty, side=side, type="trailing_stop",
            trail_price=trail_price, trail_percent=trail_percent,
            time_in_force=time_in_force, client_order_id=client_order_id,
        )


def _order_request_problems(req: OrderRequest) -> list[str]:
    """Every reason the broker would refuse this request's shape, one line each."""
    problems: list[str] = []
    if not req.symbol.strip():
        problems.append("symbol is empty")
    if req.side not in ORDER_SIDES:
        problems.append(f"side {req.side!r} is not one of {sorted(ORDER_SIDES)}")
    if req.type not in ORDER_TYPES:
        problems.append(f"type {req.type!r} is not one of {sorted(ORDER_TYPES)}")
    if req.time_in_force not in TIMES_IN_FORCE:
        problems.append(f"time_in_force {req.time_in_force!r} is not one of {sorted(TIMES_IN_FORCE)}")
    if (req.qty is None) == (req.notional is None):
        problems.append("exactly one of qty and notional is required")
    for name in ("qty", "notional", "limit_price", "stop_price", "trail_price", "trail_percent"):
        value = getattr(req, name)
        if value is not None and value <= 0:
            problems.append(f"{name} must be positive, got {value}")
    if req.notional is not None and (req.type != "market" or req.time_in_force != "day"):
        problems.append("notional orders must be market orders with time_in_force day")
    # An OCO's parent is its take-profit: Alpaca takes the limit from take_profit.limit_price
    # when the top-level limit_price is absent (its documented OCO example sends only that).
    oco_limit_in_leg = req.order_class == "oco" and req.take_profit is not None
    if req.type in ("limit", "stop_limit") and req.limit_price is None and not oco_limit_in_leg:
        problems.append(f"{req.type} orders need limit_price")
    if req.type in ("stop", "stop_limit") and req.stop_price is None:
        problems.append(f"{req.type} orders need stop_price")
    if req.type == "trailing_stop" and (req.trail_price is None) == (req.trail_percent is None):
        problems.append("trailing_stop orders need exactly one of trail_price and trail_percent")
    if req.client_order_id is not None and not 0 < len(req.client_order_id) <= MAX_CLIENT_ORDER_ID:
        problems.append(f"client_order_id must be 1-{MAX_CLIENT_ORDER_ID} characters")
    order_class = req.order_class or "simple"
    if order_class not in ORDER_CLASSES:
        problems.append(f"order_class {order_class!r} is not one of {sorted(ORDER_CLASSES)}")
    legs = (req.take_profit is not None) + (req.stop_loss is not None)
    if order_class in ("bracket", "oco") and legs != 2:
        problems.append(f"{order_class} orders need both take_profit and stop_loss")
    if order_class == "oto" and legs != 1:
        problems.append("oto orders need exactly one of take_profit and stop_loss")
    if order_class == "simple" and legs:
        problems.append("take_profit/stop_loss need order_class bracket, oco or oto")
    if order_class == "bracket":
        if req.type not in ("market", "limit"):
            problems.append("bracket orders must be market or limit orders")
        if req.time_in_force not in ("day", "gtc"):
            problems.append("bracket orders need time_in_force day or gtc")
        if req.extended_hours:
            problems.append("bracket orders cannot trade in extended hours")
    if order_class == "oco" and req.type != "limit":
        problems.append("oco orders must be limit orders")
    if req.take_profit is not None and req.stop_loss is not None and not problems:
        take, stop = req.take_profit.limit_price, req.stop_loss.stop_price
        exit_sells = (req.side == "buy") != (order_class == "oco")
        if exit_sells and take <= stop:
            problems.append(f"take_profit {take} must be above stop_loss {stop} for a long position")
        if not exit_sells and take >= stop:
            problems.append(f"take_profit {take} must be below stop_loss {stop} for a short position")
    if req.extended_hours and (req.type != "limit" or req.time_in_force not in ("day", "gtc")):
        problems.append("extended_hours orders must be limit orders with time_in_force day or gtc")
    return problems
