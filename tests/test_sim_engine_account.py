"""Account, positions, activities, portfolio history and wire types of SimBroker.

Shapes are checked against the official SDK's models (alpaca-py, a dev dependency), which
reject numbers where Alpaca sends strings and enum values Alpaca does not use.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from alpaca.trading.models import (
    AccountConfiguration,
    Asset,
    Calendar,
    ClosePositionResponse,
    Order,
    PortfolioHistory,
    Position,
    TradeAccount,
    TradeUpdate,
)
from alpaca.trading.models import Clock as AlpacaClock

from simulator.clock import SimClock
from simulator.engine import SimBroker
from simulator.errors import SimApiError
from simulator.market import Market
from tests.test_sim_engine_support import CALENDAR, et, go, make_broker, order_body, closed, placed

MON = (2025, 3, 3)
MONEY_FIELDS = (
    "cash", "portfolio_value", "equity", "last_equity", "long_market_value", "short_market_value",
    "buying_power", "regt_buying_power", "non_marginable_buying_power", "initial_margin", "maintenance_margin",
    "multiplier",
)


def at(hour: int, minute: int = 0, day: tuple[int, int, int] = MON):
    return et(*day, hour, minute)


def test_account_fields_are_strings_and_parse_with_the_sdk() -> None:
    broker, _, _ = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    account = broker.get_account()
    for field in MONEY_FIELDS:
        assert isinstance(account[field], str), field
    assert account["status"] == "ACTIVE" and account["trading_blocked"] is False
    assert account["equity"] == "99999.9"
    assert account["cash"] == "98999.9" and account["long_market_value"] == "1000"
    assert account["initial_margin"] == "500" and account["buying_power"] == "198999.8"
    assert account["multiplier"] == "2" and account["shorting_enabled"] is True
    TradeAccount(**account)
    AccountConfiguration(**broker.get_account_configurations())
    json.dumps(broker.state())


def test_small_accounts_are_cash_accounts_without_shorting() -> None:
    broker, _, _ = make_broker(at(10), cash="1500")
    account = broker.get_account()
    assert account["multiplier"] == "1" and account["buying_power"] == "1500"
    assert account["shorting_enabled"] is False
    with pytest.raises(SimApiError):
        placed(broker, order_body("AAPL", 1, "sell"))


def test_last_equity_is_the_previous_sessions_closing_equity() -> None:
    broker, market, clock = make_broker(at(15, 0))
    placed(broker, order_body("AAPL", 100, "buy"))  # at 100.01
    market.bar("AAPL", at(15, 59), 101, 101, 101, 102)
    market.flat("AAPL", at(9, 30, (2025, 3, 4)), 5, 104)
    go(clock, at(17, 0))
    assert broker.get_account()["last_equity"] == "100000"  # still Monday: Friday's close
    go(clock, at(9, 35, (2025, 3, 4)))
    account = broker.get_account()
    assert account["last_equity"] == "100199"  # cash 89999 + 100 x 102 close
    assert account["equity"] == "100399" and account["balance_asof"] == "2025-03-03"
    position = broker.get_position("AAPL")
    assert position["lastday_price"] == "102" and position["change_today"] == "0.0196078431"
    assert position["unrealized_intraday_pl"] == "200" and position["unrealized_pl"] == "399"


def test_position_has_every_field_as_strings_and_parses_with_the_sdk() -> None:
    broker, _, _ = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    placed(broker, order_body("AAPL", 4, "sell", "limit", limit_price=120))
    position = broker.get_position("AAPL")
    expected = {
        "asset_id", "symbol", "exchange", "asset_class", "asset_marginable", "qty", "qty_available",
        "avg_entry_price", "side", "market_value", "cost_basis", "unrealized_pl", "unrealized_plpc",
        "unrealized_intraday_pl", "unrealized_intraday_plpc", "current_price", "lastday_price", "change_today",
    }
    assert expected <= set(position)
    assert position["qty_available"] == "6" and position["cost_basis"] == "1000.1"
    assert position["unrealized_plpc"] == "-0.00009999"
    Position(**position)
    assert [p["symbol"] for p in broker.list_positions()] == ["AAPL"]
    with pytest.raises(SimApiError) as missing:
        broker.get_position("SPY")
    assert missing.value.body == {"code": 40410000, "message": "position does not exist"}


def test_close_position_by_qty_and_percentage() -> None:
    broker, _, _ = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    partial = broker.close_position("AAPL", {"qty": "4"})
    assert partial["side"] == "sell" and partial["qty"] == "4" and partial["order_class"] == ""
    half = broker.close_position("AAPL", {"percentage": "50"})
    assert half["qty"] == "3"
    assert broker.get_position("AAPL")["qty"] == "3"
    with pytest.raises(SimApiError):
        broker.close_position("AAPL", {"qty": "1", "percentage": "10"})
    with pytest.raises(SimApiError) as too_many:
        broker.close_position("AAPL", {"qty": "5"})
    assert too_many.value.status == 403
    with pytest.raises(SimApiError) as none:
        broker.close_position("SPY")
    assert none.value.status == 404


def test_close_all_answers_207_items_with_a_body_each() -> None:
    broker, _, _ = make_broker(at(10))
    placed(broker, order_body("AAPL", 5, "buy"))
    placed(broker, order_body("SPY", 2, "sell"))
    items = broker.close_all({"cancel_orders": "true"})
    assert [(i["symbol"], i["status"]) for i in items] == [("AAPL", 200), ("SPY", 200)]
    for item in items:
        ClosePositionResponse(**item)
        assert item["body"]["side"] == ("sell" if item["symbol"] == "AAPL" else "buy")
    assert broker.list_positions() == [] and broker.close_all({}) == []


def test_activities_are_fills_paginated_by_the_last_id() -> None:
    broker, _, clock = make_broker(at(10))
    for minute in range(5):
        go(clock, at(10, minute))
        placed(broker, order_body("AAPL", 1, "buy"))
    page = broker.activities({"page_size": "2"})
    assert len(page) == 2 and page[0]["transaction_time"] > page[1]["transaction_time"]
    item = page[0]
    assert item["activity_type"] == "FILL" and item["type"] == "fill" and item["side"] == "buy"
    assert item["id"].startswith("20250303100400000::")  # New York time, milliseconds
    assert all(isinstance(item[k], str) for k in ("price", "qty", "leaves_qty", "cum_qty"))
    seen = [a["id"] for a in page]
    while page:
        page = broker.activities({"page_size": "2", "page_token": page[-1]["id"]})
        seen += [a["id"] for a in page]
    assert len(seen) == 5 and len(set(seen)) == 5
    ascending = broker.activities({"direction": "asc", "after": "2025-03-03T15:01:30Z"})
    assert len(ascending) == 3
    assert broker.activities({"activity_types": "DIV"}) == []
    with pytest.raises(SimApiError):
        broker.activities({"page_token": "nope"})


def test_short_sale_fills_are_sell_short_activities() -> None:
    broker, _, _ = make_broker(at(10))
    placed(broker, order_body("AAPL", 3, "sell"))
    assert broker.activities()[0]["side"] == "sell_short"


def test_portfolio_history_is_numbers_and_parses_with_the_sdk() -> None:
    broker, market, clock = make_broker(at(10))
    placed(broker, order_body("AAPL", 100, "buy"))
    market.bar("AAPL", at(15, 59), 101, 101, 101, 101)
    market.flat("AAPL", at(9, 30, (2025, 3, 4)), 60, 103)
    go(clock, at(10, 30, (2025, 3, 4)))
    daily = broker.portfolio_history({"period": "1W", "timeframe": "1D"})
    PortfolioHistory(**daily)
    assert all(isinstance(v, (int, float)) for v in daily["equity"] + daily["profit_loss"])
    assert daily["equity"][-2:] == [100099.0, 100299.0]  # Monday's close, Tuesday so far
    intraday = broker.portfolio_history({"period": "1D", "timeframe": "15Min"})
    PortfolioHistory(**intraday)
    assert intraday["timestamp"][0] == int(at(9, 30, (2025, 3, 4)).timestamp())
    assert intraday["base_value"] == 100099.0 and intraday["profit_loss"][-1] == 200.0
    with pytest.raises(SimApiError):
        broker.portfolio_history({"timeframe": "2H"})


def test_orders_clock_calendar_assets_and_events_parse_with_the_sdk() -> None:
    broker, _, clock = make_broker(at(10))
    bracket = placed(broker, order_body("AAPL", 2, "buy", "limit", limit_price=99, order_class="bracket",
                                             take_profit={"limit_price": 105}, stop_loss={"stop_price": 95, "limit_price": 94.5}))
    trailing = placed(broker, order_body("SPY", 1, "buy", "trailing_stop", trail_price=2))
    for order in (bracket, trailing, *broker.list_orders({"status": "all", "nested": "true"})):
        parsed = Order(**order)
        assert parsed.id and parsed.updated_at and parsed.submitted_at
    assert bracket["legs"][1]["type"] == "stop_limit"
    for event in broker.events:
        TradeUpdate(**event)
        json.dumps(event)
    clock_json = broker.clock_json()
    AlpacaClock(**clock_json)
    assert clock_json["is_open"] is True and clock_json["next_close"] == "2025-03-03T16:00:00-05:00"
    assert clock_json["next_open"] == "2025-03-04T09:30:00-05:00"
    days = broker.calendar({"start": "2025-07-01", "end": "2025-07-07"})
    assert [d["date"] for d in days] == ["2025-07-01", "2025-07-02", "2025-07-03", "2025-07-07"]
    assert days[2]["close"] == "13:00"
    for day in days:
        Calendar(**day)
    assets = broker.assets({"status": "active"})
    assert [a["symbol"] for a in assets] == ["AAPL", "SPY"]
    for asset in assets:
        Asset(**asset)
    assert broker.asset(assets[0]["id"])["symbol"] == "AAPL"
    with pytest.raises(SimApiError) as unknown:
        broker.asset("NOPE")
    assert unknown.value.status == 404
    go(clock, at(17, 0))
    assert broker.clock_json()["is_open"] is False


def test_everything_is_json_and_money_is_never_a_float() -> None:
    broker, _, _ = make_broker(at(10))
    placed(broker, order_body("AAPL", 3, "buy"))
    payloads: list[Any] = [broker.get_account(), broker.list_positions(), broker.list_orders({"status": "all"}),
                           broker.activities(), broker.state()]

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                walk(item, path)
        else:
            assert not isinstance(value, (float, D)), path

    for payload in payloads:
        walk(payload, "")
        json.dumps(payload)


def test_advancing_without_open_orders_reads_no_bars_and_is_idempotent() -> None:
    broker, market, clock = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    before = market.bar_requests
    go(clock, at(10, 0, (2025, 4, 3)))
    broker.advance_to(clock.now())
    assert market.bar_requests - before < 40  # closes only, no minute scans
    cursor_state = broker.state()["processed_until"]
    broker.advance_to(at(10, 0))
    assert broker.state()["processed_until"] == cursor_state


def test_a_jump_without_open_orders_books_every_close_as_steps_do() -> None:
    """With no open order the book jumps session to session (``SimBroker._advance_idle``):
    each close passed still records its equity, exactly as advancing minute by minute does."""
    jumped, stepped = make_broker(at(10)), make_broker(at(10))
    days = CALENDAR.sessions(date(*MON), date(2025, 4, 25))  # weekends and Good Friday inside
    for broker, market, clock in (jumped, stepped):
        placed(broker, order_body("AAPL", 10, "buy"))
        for k, day in enumerate(days[1:], start=1):  # a different close every session
            opened, closed = CALENDAR.open_close(day)
            market.flat("AAPL", opened, 2, 100 + k)
            market.flat("AAPL", closed - timedelta(minutes=1), 1, 100 + 2 * k)
    last = CALENDAR.open_close(days[-1])[1] + timedelta(hours=2)
    go(jumped[2], last)
    jumped[0].advance_to(last)
    moment = at(10)
    while moment < last:
        moment = min(last, moment + timedelta(hours=5))
        go(stepped[2], moment)
        stepped[0].advance_to(moment)
    history = {"period": "3M", "timeframe": "1D"}
    assert jumped[0].portfolio_history(history) == stepped[0].portfolio_history(history)
    assert jumped[0].get_account() == stepped[0].get_account()
    assert len(jumped[0].portfolio_history(history)["equity"]) >= len(days) - 1


def test_minutes_are_scanned_only_for_symbols_with_working_orders() -> None:
    broker, market, clock = make_broker(at(10))
    placed(broker, order_body("AAPL", 1, "buy", "limit", limit_price=90))
    go(clock, at(10, 30))
    broker.advance_to(clock.now())
    assert market.bar_requests_by_symbol["AAPL"] == 30
    assert market.bar_requests_by_symbol["SPY"] == 0


def test_events_are_bounded_but_counted() -> None:
    broker, _, _ = make_broker(at(10), max_events=3)
    for _ in range(3):
        placed(broker, order_body("AAPL", 1, "buy"))
    assert len(broker.events) == 3 and broker.event_count == 6


def test_bracket_on_the_real_synthetic_market_exits_at_the_first_bar_that_reaches_a_leg() -> None:
    market = Market.synthetic(["SPY", "AAPL"], seed=7, calendar=CALENDAR)
    start = et(2025, 3, 3, 9, 45)
    clock = SimClock(start, None, CALENDAR)
    market.attach_clock(clock)
    broker = SimBroker(market, clock, CALENDAR, slippage_bps=1.0)
    price = D(str(market.price_at("SPY", start)))
    tp, sl = (price * D("1.004")).quantize(D("0.01")), (price * D("0.996")).quantize(D("0.01"))
    parent = placed(broker, order_body("SPY", 10, "buy", tif="gtc", order_class="bracket",
                                            take_profit={"limit_price": str(tp)}, stop_loss={"stop_price": str(sl)}))
    quote = market.quote_at("SPY", start)
    assert parent["status"] == "filled"
    assert D(parent["filled_avg_price"]) == (D(str(quote.ask)) * D("1.0001")).quantize(D("0.01"))
    moment = start
    while moment < et(2025, 3, 3, 16, 0):
        moment += timedelta(minutes=7)
        clock.set_time(moment)
        broker.list_orders()
    bars = market.minute_bars("SPY", start + timedelta(minutes=1), et(2025, 3, 3, 16, 0))
    first = next(b for b in bars if D(str(b.h)) >= tp or D(str(b.l)) <= sl)
    take_profit, stop = broker.get_order(parent["id"], {"nested": "true"})["legs"]
    # With this seed the market rises to the take-profit first.
    assert D(str(first.h)) >= tp and not D(str(first.l)) <= sl
    assert take_profit["status"] == "filled" and stop["status"] == "canceled"
    assert D(take_profit["filled_avg_price"]) == max(tp, D(str(first.o)))
    assert take_profit["filled_at"][:16] == first.t.strftime("%Y-%m-%dT%H:%M")
    assert broker.list_positions() == []
    for order in broker.list_orders({"status": "all", "nested": "true"}):
        Order(**order)
