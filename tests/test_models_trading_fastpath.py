"""The trading fast path (models.parse_account / parse_position / parse_order / parse_activity /
parse_clock) builds exactly what ``Model.model_validate`` builds, and hands anything unusual
to it so errors stay identical.

Identity is checked on a few thousand payloads the simulator itself produced over several
sessions (brackets, OCO/OTO, market, limit, stop, stop-limit and trailing orders, partial
fills, replaces, cancels, shorts, closes), on the reference's Alpaca examples, and on
malformed or unusual payloads.
"""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import api_gateway
import models
from models import (
    Account,
    Activity,
    Clock,
    Order,
    Position,
    parse_account,
    parse_activity,
    parse_clock,
    parse_order,
    parse_position,
)
from simulator.core import SimulatorCore
from simulator.errors import SimApiError

PARSERS = {Account: parse_account, Position: parse_position, Order: parse_order,
           Activity: parse_activity, Clock: parse_clock}


def assert_same(fast: Any, slow: Any) -> None:
    """Identical instances: type, every value and its type (recursively, in field order),
    fields set, extra and private, ``==``, ``model_dump()`` and repr."""
    assert type(fast) is type(slow)
    if isinstance(slow, BaseModel):
        assert list(fast.__dict__) == list(slow.__dict__)
        for name, value in slow.__dict__.items():
            assert_same(fast.__dict__[name], value)
        assert fast.model_fields_set == slow.model_fields_set
        assert fast.__pydantic_extra__ == slow.__pydantic_extra__
        assert fast.__pydantic_private__ == slow.__pydantic_private__
        assert fast == slow
        assert fast.model_dump() == slow.model_dump()
        # (pydantic warns that the Decimal fields' PlainValidator hides their type from the
        # JSON serializer, for validated instances as much as for fast-built ones)
        assert fast.model_dump_json(warnings=False) == slow.model_dump_json(warnings=False)
        assert repr(fast) == repr(slow)
    elif isinstance(slow, list):
        assert len(fast) == len(slow)
        for a, b in zip(fast, slow):
            assert_same(a, b)
    else:
        if isinstance(slow, datetime):
            assert slow.tzinfo is not None and fast.tzinfo == slow.tzinfo
        assert fast == slow and repr(fast) == repr(slow)


def assert_fast_and_same(model: type[BaseModel], raw: Any) -> None:
    """The payload takes the fast path (no fallback) and gives what validation gives."""
    fast = models._fast_build(models._SPECS[model], raw)
    assert_same(fast, model.model_validate(raw))
    assert_same(PARSERS[model](raw), model.model_validate(raw))


def test_every_trading_model_has_a_fast_path_and_the_gateway_uses_it() -> None:
    for model, parse in PARSERS.items():
        assert models._SPECS[model] is not None, model
        assert api_gateway._FAST_PARSERS[model] is parse
        # the builder covers every field, in the model's order
        assert [name for name, *_ in models._SPECS[model].fields] == list(model.model_fields)


def test_models_beyond_the_fast_path_are_left_to_validation() -> None:
    from pydantic import ConfigDict, Field, field_validator

    class Stripped(models.BrokerModel):
        model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
        name: str

    class Wrapped(models.BrokerModel):
        name: str

        @field_validator("name", mode="wrap")
        @classmethod
        def _upper(cls, value: Any, handler: Any) -> Any:
            return handler(value).upper()

    class Aliased(models.BrokerModel):
        kind: str = Field(alias="class")

    class Listed(models.BrokerModel):
        names: list[str] = Field(default_factory=list)

    for model in (Stripped, Wrapped, Aliased, Listed, models.Asset, models.CalendarDay):
        assert models._make_spec(model) is None, model


# -- payloads from the simulator ---------------------------------------------------------------

SYMBOLS = ["SPY", "AAPL", "MSFT", "TSLA"]


def _wire(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _price(core: SimulatorCore, symbol: str) -> float:
    return float(core.market.price_at(symbol, core.clock.now()))


def _random_order(rng: random.Random, core: SimulatorCore, held: dict[str, Decimal]) -> dict[str, Any]:
    symbol = rng.choice(SYMBOLS)
    price = _price(core, symbol)
    qty = rng.choice([1, 2, 3, 5, 10, 25, 60, 150, 400])
    side = rng.choice(["buy", "sell"])
    tif = rng.choice(["day", "gtc"])
    base = {"symbol": symbol, "qty": str(qty), "side": side, "time_in_force": tif}
    kind = rng.choice(["market", "limit", "limit", "stop", "stop_limit", "trailing", "trailing",
                       "bracket", "bracket", "oto", "oco", "notional", "ioc"])
    away = 1 + rng.uniform(-0.01, 0.01)
    if kind == "market":
        return {**base, "type": "market"}
    if kind == "ioc":
        return {**base, "type": "market", "time_in_force": "ioc"}
    if kind == "notional":
        return {"symbol": symbol, "notional": f"{rng.uniform(50, 2000):.2f}", "side": "buy",
                "type": "market", "time_in_force": "day"}
    if kind == "limit":
        return {**base, "type": "limit", "limit_price": f"{price * away:.2f}"}
    if kind == "stop":
        stop = price * (1.004 if side == "buy" else 0.996)
        return {**base, "type": "stop", "stop_price": f"{stop:.2f}"}
    if kind == "stop_limit":
        stop = price * (1.003 if side == "buy" else 0.997)
        limit = stop * (1.002 if side == "buy" else 0.998)
        return {**base, "type": "stop_limit", "stop_price": f"{stop:.2f}", "limit_price": f"{limit:.2f}"}
    if kind == "trailing":
        trail = ({"trail_percent": rng.choice(["0.5", "1", "2.5"])} if rng.random() < 0.5
                 else {"trail_price": f"{price * 0.006:.2f}"})
        return {**base, "type": "trailing_stop", **trail}
    up, down = (1.006, 0.994) if side == "buy" else (0.994, 1.006)
    exits = {"take_profit": {"limit_price": f"{price * up:.2f}"},
             "stop_loss": {"stop_price": f"{price * down:.2f}"}}
    if rng.random() < 0.3:
        exits["stop_loss"]["limit_price"] = f"{price * down * (0.998 if side == 'buy' else 1.002):.2f}"
    if kind == "bracket":
        entry = ({"type": "limit", "limit_price": f"{price * away:.2f}"} if rng.random() < 0.4
                 else {"type": "market"})
        return {**base, **entry, "order_class": "bracket", **exits}
    if kind == "oto":
        leg = rng.choice(["take_profit", "stop_loss"])
        return {**base, "type": "market", "order_class": "oto", leg: exits[leg]}
    # oco: an exit for what is held
    have = held.get(symbol, Decimal(0))
    exit_side = "sell" if have >= 0 else "buy"
    up, down = (1.006, 0.994) if exit_side == "sell" else (0.994, 1.006)
    return {"symbol": symbol, "qty": str(max(abs(int(have)), 1)), "side": exit_side, "type": "limit",
            "time_in_force": "gtc", "order_class": "oco", "limit_price": f"{price * up:.2f}",
            "take_profit": {"limit_price": f"{price * up:.2f}"},
            "stop_loss": {"stop_price": f"{price * down:.2f}"}}


def _simulated_payloads() -> dict[type[BaseModel], list[Any]]:
    """JSON of account, positions, orders (nested), activities and clock at many moments."""
    rng = random.Random(20251202)
    core = SimulatorCore.create(symbols=SYMBOLS, start="2025-03-04T09:35:00-05:00", speed=None,
                                seed=5, partial_fills=True, cash=1_000_000)
    broker = core.broker
    broker.volume_participation = Decimal("0.0005")  # thin minutes: larger orders fill in parts
    out: dict[type[BaseModel], list[Any]] = {model: [] for model in PARSERS}
    seen: set[str] = set()

    def keep(model: type[BaseModel], raw: Any) -> None:
        text = json.dumps(raw, sort_keys=True)
        if text not in seen:
            seen.add(text)
            out[model].append(_wire(raw))

    def collect() -> None:
        keep(Account, broker.get_account())
        keep(Clock, broker.clock_json())
        for raw in broker.list_positions():
            keep(Position, raw)
            keep(Position, broker.get_position(raw["symbol"]))
        for raw in broker.list_orders({"status": "all", "nested": "true", "limit": "500"}):
            keep(Order, raw)
        for raw in broker.list_orders({"status": "open", "nested": "false"}):
            keep(Order, raw)
        for raw in broker.activities({"direction": "desc", "page_size": "100"}):
            keep(Activity, raw)

    def attempt(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except SimApiError:
            return None

    for step in range(260):
        held = {p["symbol"]: Decimal(p["qty"]) for p in broker.list_positions()}
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            answer = attempt(broker.submit_order, _random_order(rng, core, held))
            if answer is not None:
                keep(Order, answer)
        open_orders = broker.list_orders({"status": "open", "nested": "false"})
        if open_orders and rng.random() < 0.25:
            attempt(broker.cancel_order, rng.choice(open_orders)["id"])
        if open_orders and rng.random() < 0.15:
            target = rng.choice(open_orders)
            change: dict[str, Any] = {"qty": str(max(int(Decimal(target["qty"] or "1")) - 1, 1))}
            if target.get("limit_price"):
                change["limit_price"] = f"{float(target['limit_price']) * 0.999:.2f}"
            answer = attempt(broker.replace_order, target["id"], change)
            if answer is not None:
                keep(Order, answer)
        if held and rng.random() < 0.08:
            answer = attempt(broker.close_position, rng.choice(sorted(held)), {})
            if answer is not None:
                keep(Order, answer)
        collect()
        # mostly minutes apart, now and then past the close into the next sessions
        core.advance(rng.choice([1, 2, 5, 15, 30]) if rng.random() < 0.93 else 60 * rng.choice([6, 14, 18]))
    collect()
    return out


@pytest.fixture(scope="module")
def simulated() -> dict[type[BaseModel], list[Any]]:
    return _simulated_payloads()


def test_the_simulated_payloads_cover_what_a_loop_sees(simulated: dict[type[BaseModel], list[Any]]) -> None:
    orders = simulated[Order]
    types = {o["type"] for o in orders} | {leg["type"] for o in orders for leg in o.get("legs") or []}
    assert {"market", "limit", "stop", "stop_limit", "trailing_stop"} <= types
    assert {"bracket", "oco", "oto", ""} <= {o["order_class"] for o in orders}  # "" = simple
    statuses = {o["status"] for o in orders} | {leg["status"] for o in orders for leg in o.get("legs") or []}
    assert {"accepted", "new", "held", "partially_filled", "filled", "canceled", "replaced", "expired"} <= statuses
    assert any(o.get("notional") for o in orders)
    assert {"fill", "partial_fill"} <= {a["type"] for a in simulated[Activity]}
    assert {"long", "short"} <= {p["side"] for p in simulated[Position]}
    assert len({c["timestamp"][:10] for c in simulated[Clock]}) >= 3  # several sessions
    assert sum(len(v) for v in simulated.values()) > 2000


@pytest.mark.parametrize("model", list(PARSERS), ids=lambda m: m.__name__)
def test_fast_path_equals_validation_on_simulated_payloads(
    simulated: dict[type[BaseModel], list[Any]], model: type[BaseModel]
) -> None:
    assert simulated[model]
    for raw in simulated[model]:
        assert_fast_and_same(model, raw)


# -- the reference's Alpaca examples ----------------------------------------------------------

REF_ORDER = {
    "id": "7b08df51-c1ac-453c-99f9-323a5f075f0d", "client_order_id": "5680c4bc-9ac1-4a12-a44c-df427ba53032",
    "created_at": "2023-12-12T22:31:24.668464435Z", "updated_at": "2023-12-12T22:31:24.668464435Z",
    "submitted_at": "2023-12-12T22:31:24.577215743Z", "filled_at": None, "expired_at": None,
    "canceled_at": None, "failed_at": None, "replaced_at": None, "replaced_by": None, "replaces": None,
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": "AAPL", "asset_class": "us_equity",
    "notional": None, "qty": "2", "filled_qty": "0", "filled_avg_price": None, "order_class": "",
    "order_type": "limit", "type": "limit", "side": "buy", "time_in_force": "gtc", "limit_price": "150",
    "stop_price": None, "status": "accepted", "extended_hours": False, "legs": None,
    "trail_percent": None, "trail_price": None, "hwm": None,
}
REF_LEG = {**REF_ORDER, "id": "leg-1", "client_order_id": "leg-1", "order_type": "stop", "type": "stop",
           "side": "sell", "status": "held", "limit_price": None, "stop_price": "140.5", "order_class": "bracket"}
REF_ACCOUNT = {
    "id": "904837e3-3b76-47ec-b432-046db621571b", "account_number": "PA3XXXXXXX", "status": "ACTIVE",
    "crypto_status": "ACTIVE", "currency": "USD", "cash": "-23140.2", "portfolio_value": "103820.56",
    "equity": "103820.56", "last_equity": "103529.24", "long_market_value": "126960.76",
    "short_market_value": "0", "position_market_value": "126960.76", "buying_power": "262113.632",
    "regt_buying_power": "80680.36", "daytrading_buying_power": "262113.632",
    "non_marginable_buying_power": "0", "options_buying_power": "40340.18", "effective_buying_power": "80680.36",
    "initial_margin": "63480.38", "maintenance_margin": "38088.228", "last_maintenance_margin": "38000.832",
    "sma": "0", "multiplier": "4", "daytrade_count": 0, "last_daytrade_count": 0,
    "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
    "account_blocked": False, "trade_suspended_by_user": False, "shorting_enabled": True,
    "created_at": "2019-06-12T22:47:07.99658Z", "balance_asof": "2023-09-27", "accrued_fees": "0",
    "pending_transfer_in": "0", "pending_transfer_out": None, "crypto_tier": 1,
    "admin_configurations": {}, "user_configurations": None,
}
REF_POSITION = {
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": "AAPL", "exchange": "NASDAQ",
    "asset_class": "us_equity", "asset_marginable": True, "qty": "2", "qty_available": "2",
    "avg_entry_price": "174.78", "side": "long", "market_value": "349.9", "cost_basis": "349.56",
    "unrealized_pl": "0.34", "unrealized_plpc": "0.0009726513", "unrealized_intraday_pl": "0.34",
    "unrealized_intraday_plpc": "0.0009726513", "current_price": "174.95", "lastday_price": "173.93",
    "change_today": "0.0058644282",
}
REF_FILL = {
    "id": "20220202135509981::2d7be4ff-d1f3-43e9-856a-0f5cf5c5088e", "activity_type": "FILL",
    "transaction_time": "2022-02-02T18:55:09.981482Z", "type": "fill", "price": "174.78", "qty": "2",
    "side": "buy", "symbol": "AAPL", "leaves_qty": "0", "order_id": "b5abe576-6a8a-49f3-a353-46b72c1ccae9",
    "cum_qty": "2", "order_status": "filled",
}
REF_DIV = {
    "id": "20190801011955195::5f596936-6f23-4cef-bdf1-3806aae57dbf", "activity_type": "DIV",
    "activity_sub_type": "CDIV", "date": "2019-08-01", "net_amount": "1.02", "symbol": "T",
    "cusip": "00206R102", "qty": "2", "per_share_amount": "0.51", "group_id": "x", "status": "executed",
    "created_at": "2019-08-01T01:19:55.195123Z",
}
REF_CLOCK = {"timestamp": "2025-06-24T14:15:22.123456789-04:00", "is_open": True,
             "next_open": "2025-06-25T09:30:00-04:00", "next_close": "2025-06-24T16:00:00-04:00"}

REFERENCE_EXAMPLES = [
    (Order, REF_ORDER),
    (Order, {**REF_ORDER, "order_class": "bracket", "status": "filled", "filled_qty": "2",
             "filled_avg_price": "149.98", "filled_at": "2023-12-12T22:31:25Z",
             "legs": [REF_LEG, {**REF_LEG, "id": "leg-2", "type": "limit", "order_type": "limit",
                                "limit_price": "160", "stop_price": None, "status": "new"}]}),
    (Order, {**REF_ORDER, "type": "trailing_stop", "order_type": "trailing_stop", "side": "sell",
             "limit_price": None, "trail_percent": "1.5", "hwm": "151.2", "stop_price": "148.932"}),
    (Order, {**REF_ORDER, "qty": None, "notional": "500.25", "type": "market", "order_type": "market",
             "limit_price": None, "time_in_force": "day"}),
    (Order, {**REF_ORDER, "type": "", "order_type": "stop_limit"}),  # order_type stands in
    (Order, {k: v for k, v in REF_ORDER.items() if k != "type"}),
    (Order, {**REF_ORDER, "order_class": None, "filled_qty": None, "asset_id": ""}),
    (Order, {k: v for k, v in REF_ORDER.items() if k not in ("order_class", "filled_qty")}),
    (Order, {**REF_ORDER, "legs": [], "subtag": None, "source": "access_key", "commission": "0",
             "cancel_requested_at": None, "ratio_qty": None}),
    (Order, {**REF_ORDER, "expires_at": "2023-12-13T21:00:00Z", "position_intent": "buy_to_open",
             "extended_hours": True}),
    (Account, REF_ACCOUNT),
    (Account, {k: v for k, v in REF_ACCOUNT.items()
               if k not in ("daytrade_count", "last_daytrade_count", "pattern_day_trader",
                            "daytrading_buying_power")}),
    (Account, {"id": "a", "account_number": "PA1", "status": "ACCOUNT_UPDATED", "cash": "0",
               "equity": "0", "buying_power": "0"}),
    (Position, REF_POSITION),
    (Position, {**REF_POSITION, "side": "short", "qty": "-3", "qty_available": "-3", "cost_basis": "-524.34"}),
    (Position, {**REF_POSITION, "side": "short", "qty": "3"}),  # sign normalised from side
    (Position, {k: v for k, v in REF_POSITION.items() if k != "side"}),
    (Position, {**{k: v for k, v in REF_POSITION.items() if k != "side"}, "qty": "-4"}),
    (Position, {**REF_POSITION, "side": "", "asset_marginable": None}),
    (Activity, REF_FILL),
    (Activity, {**REF_FILL, "type": "partial_fill", "leaves_qty": "1", "cum_qty": "1",
                "order_status": "partially_filled", "qty": "1"}),
    (Activity, REF_DIV),
    (Activity, {**REF_DIV, "date": "2019-08-01T04:00:00-04:00"}),  # a timestamp where a date goes
    (Activity, {"id": "x", "activity_type": "FEE", "net_amount": "-0.01", "date": None}),
    (Clock, REF_CLOCK),
    (Clock, {**REF_CLOCK, "is_open": False, "timestamp": "2025-06-24T20:15:22Z"}),
]


@pytest.mark.parametrize(("model", "raw"), REFERENCE_EXAMPLES)
def test_fast_path_equals_validation_on_reference_examples(model: type[BaseModel], raw: Any) -> None:
    assert_fast_and_same(model, raw)


def test_the_fast_path_keeps_decimal_text_exact_and_timestamps_aware() -> None:
    order = parse_order({**REF_ORDER, "limit_price": "150.10", "qty": "2.000000001"})
    assert repr(order.limit_price) == "Decimal('150.10')" and order.qty == Decimal("2.000000001")
    assert order.created_at == datetime(2023, 12, 12, 22, 31, 24, 668464, tzinfo=timezone.utc)
    clock = parse_clock(REF_CLOCK)
    assert clock.timestamp.utcoffset() == timedelta(hours=-4)
    position = parse_position({**REF_POSITION, "side": "short", "qty": "3"})
    assert position.qty == Decimal("-3") and position.is_short
    assert parse_activity(REF_DIV).date == date(2019, 8, 1)


# -- unusual and malformed payloads: the same result or the same error ------------------------

NAN, INF = float("nan"), float("inf")


def _without(raw: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in keys}


class _Dict(dict):  # type: ignore[type-arg]
    pass


UNUSUAL = [
    # refused by validation: the fast path must give the very same error
    (Account, _without(REF_ACCOUNT, "equity")),
    (Account, {**REF_ACCOUNT, "cash": True}),
    (Account, {**REF_ACCOUNT, "cash": "NaN"}),
    (Account, {**REF_ACCOUNT, "buying_power": "Infinity"}),
    (Account, {**REF_ACCOUNT, "equity": "12,5"}),
    (Account, {**REF_ACCOUNT, "equity": None}),
    (Account, {**REF_ACCOUNT, "last_equity": "sNaN"}),
    (Account, {**REF_ACCOUNT, "multiplier": [4]}),
    (Account, {**REF_ACCOUNT, "id": 904837}),
    (Account, {**REF_ACCOUNT, "created_at": "2019-06-12T22:47:07"}),
    (Account, {**REF_ACCOUNT, "balance_asof": "2023-02-30"}),
    (Account, {**REF_ACCOUNT, "daytrade_count": 1.5}),
    (Account, {**REF_ACCOUNT, "trading_blocked": "maybe"}),
    (Account, "account"),
    (Account, None),
    (Order, _without(REF_ORDER, "client_order_id")),
    (Order, _without(REF_ORDER, "type", "order_type")),
    (Order, {**REF_ORDER, "created_at": "yesterday"}),
    (Order, {**REF_ORDER, "created_at": "2023-12-12T22:31:24"}),
    (Order, {**REF_ORDER, "updated_at": 1702420284}),
    (Order, {**REF_ORDER, "qty": False}),
    (Order, {**REF_ORDER, "limit_price": INF}),
    (Order, {**REF_ORDER, "filled_avg_price": NAN}),
    (Order, {**REF_ORDER, "status": None}),
    (Order, {**REF_ORDER, "legs": {"id": "x"}}),
    (Order, {**REF_ORDER, "legs": [_without(REF_LEG, "id")]}),
    (Order, {**REF_ORDER, "legs": [{**REF_LEG, "stop_price": "-inf"}]}),
    (Order, {**REF_ORDER, "legs": ["leg"]}),
    (Position, _without(REF_POSITION, "avg_entry_price")),
    (Position, {**REF_POSITION, "qty": True}),
    (Position, {**REF_POSITION, "qty": "two"}),
    (Position, {**REF_POSITION, "current_price": NAN}),
    (Position, {**REF_POSITION, "symbol": None}),
    (Activity, _without(REF_FILL, "activity_type")),
    (Activity, {**REF_FILL, "transaction_time": "2022-02-02 18:55"}),
    (Activity, {**REF_FILL, "price": True}),
    (Activity, {**REF_DIV, "date": "2019-13-01"}),
    (Activity, {**REF_DIV, "date": "2019-08-01T04:00:00"}),
    (Activity, {**REF_DIV, "date": ""}),
    (Clock, _without(REF_CLOCK, "next_close")),
    (Clock, {**REF_CLOCK, "timestamp": "2025-06-24T14:15:22"}),
    (Clock, {**REF_CLOCK, "is_open": "yes-ish"}),
    (Clock, [REF_CLOCK]),
    # accepted by validation in shapes the fast path leaves to it: the same result
    (Account, {**REF_ACCOUNT, "cash": 100.5, "equity": 100, "buying_power": Decimal("3.10")}),
    (Account, {**REF_ACCOUNT, "cash": " 12.50 ", "sma": ""}),
    (Account, {**REF_ACCOUNT, "trading_blocked": "false", "shorting_enabled": 1, "daytrade_count": 2.0}),
    (Account, {**REF_ACCOUNT, "daytrade_count": "3", "balance_asof": date(2023, 9, 27)}),
    (Account, {**REF_ACCOUNT, "created_at": datetime(2019, 6, 12, 22, 47, tzinfo=timezone.utc)}),
    (Account, _Dict(REF_ACCOUNT)),
    (Order, {**REF_ORDER, "qty": 2, "limit_price": 150.25, "filled_qty": ""}),
    (Order, {**REF_ORDER, "extended_hours": "true"}),
    (Order, {**REF_ORDER, "legs": (REF_LEG,)}),
    (Order, {**REF_ORDER, "legs": [Order.model_validate(REF_LEG)]}),
    (Order, {**REF_ORDER, "created_at": "2023-12-12t22:31:24+0100"}),
    (Order, {**REF_ORDER, "qty": "1E+2", "notional": "-0", "hwm": "0.000"}),
    (Position, {**REF_POSITION, "qty": "-0", "side": "short"}),
    (Position, {**REF_POSITION, "asset_marginable": "yes"}),
    (Activity, {**REF_FILL, "qty": 2, "price": 174.78}),
    (Clock, {**REF_CLOCK, "is_open": 1}),
    (Clock, {**REF_CLOCK, "timestamp": "2025-06-24T18:15:22.1+00"}),
]


def _what(error: ValidationError) -> list[tuple[Any, ...]]:
    return [(e["type"], e["loc"], e["msg"]) for e in error.errors()]


@pytest.mark.parametrize(("model", "raw"), UNUSUAL)
def test_fast_path_hands_unusual_payloads_to_validation(model: type[BaseModel], raw: Any) -> None:
    parse = PARSERS[model]
    try:
        slow = model.model_validate(raw)
    except ValidationError as slow_error:
        with pytest.raises(ValidationError) as fast_error:
            parse(raw)
        assert _what(fast_error.value) == _what(slow_error)
        assert str(fast_error.value) == str(slow_error)
    else:
        assert_same(parse(raw), slow)


def test_bad_money_and_naive_timestamps_give_clear_errors_through_the_fast_path() -> None:
    with pytest.raises(ValidationError, match="boolean"):
        parse_position({**REF_POSITION, "qty": True})
    with pytest.raises(ValidationError, match="finite"):
        parse_account({**REF_ACCOUNT, "cash": "NaN"})
    with pytest.raises(ValidationError, match="no time zone"):
        parse_order({**REF_ORDER, "legs": [{**REF_LEG, "created_at": "2023-12-12T22:31:24"}]})
    with pytest.raises(ValidationError, match="equity"):
        parse_account(_without(REF_ACCOUNT, "equity"))


def test_parsed_instances_are_independent() -> None:
    # a caller changing one parsed position (or the list of legs) changes nothing else
    first, second = parse_position(REF_POSITION), parse_position(REF_POSITION)
    first.qty = Decimal(7)
    assert second.qty == Decimal(2)
    raw = {**REF_ORDER, "legs": [REF_LEG]}
    order = parse_order(raw)
    order.legs.append(order)  # type: ignore[union-attr]
    assert len(raw["legs"]) == 1 and len(parse_order(raw).legs or []) == 1


@pytest.mark.parametrize(("model", "raw"), [(Account, {**REF_ACCOUNT, "cash": "NaN"}),
                                            (Order, _without(REF_ORDER, "client_order_id")),
                                            (Position, {**REF_POSITION, "qty": True})])
def test_the_gateway_reports_malformed_answers_as_before(model: type[BaseModel], raw: Any) -> None:
    import errors

    with pytest.raises(ValidationError) as slow:
        model.model_validate(raw)
    gateway = api_gateway.ResilientAlpacaGateway.__new__(api_gateway.ResilientAlpacaGateway)
    with pytest.raises(errors.MalformedResponse) as info:
        gateway._parse(model, raw, "GET /v2/x")
    assert str(info.value) == f"GET /v2/x: unexpected {model.__name__}: {api_gateway._summarise(slow.value)}"
