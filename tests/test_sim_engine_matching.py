"""The OHLC path rule, gaps, slippage and trailing stops of simulator/matching.py."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from simulator.core import SimulatorCore
from simulator.matching import (
    OrderTerms,
    bar_path,
    match_bar,
    match_jump,
    match_quote,
    round_price,
    trailing_stop_price,
    with_slippage,
)


def path(o: str, h: str, low: str, c: str) -> tuple[D, D, D, D]:
    return bar_path(D(o), D(h), D(low), D(c))


def test_up_bar_visits_low_before_high_and_down_bar_high_before_low() -> None:
    assert path("100", "102", "99", "101") == (D("100"), D("99"), D("102"), D("101"))
    assert path("100", "102", "99", "99.5") == (D("100"), D("102"), D("99"), D("99.5"))


def test_limit_fills_at_its_price_when_crossed_and_at_the_open_when_gapped_through() -> None:
    crossed = match_bar(OrderTerms("buy", "limit", limit_price=D("99.5")), path("100", "101", "99", "100.5"))
    assert crossed is not None and crossed.price == D("99.5") and not crossed.at_market
    gapped = match_bar(OrderTerms("buy", "limit", limit_price=D("100")), path("98", "99", "97", "98.5"))
    assert gapped is not None and gapped.price == D("98") and gapped.position == 0.0
    assert match_bar(OrderTerms("sell", "limit", limit_price=D("103")), path("100", "102", "99", "101")) is None


def test_stop_triggers_at_its_price_or_at_a_worse_open_after_a_gap() -> None:
    crossed = match_bar(OrderTerms("sell", "stop", stop_price=D("99.5")), path("100", "101", "99", "100.5"))
    assert crossed is not None and crossed.price == D("99.5") and crossed.at_market
    gapped = match_bar(OrderTerms("sell", "stop", stop_price=D("95")), path("92", "93", "91", "92.5"))
    assert gapped is not None and gapped.price == D("92") and gapped.position == 0.0


def test_first_trigger_along_the_path_decides_between_take_profit_and_stop() -> None:
    take_profit = OrderTerms("sell", "limit", limit_price=D("102"))
    stop = OrderTerms("sell", "stop", stop_price=D("98"))
    up_bar = path("100", "103", "97", "102.5")  # low first: the stop comes first
    assert match_bar(stop, up_bar).position < match_bar(take_profit, up_bar).position  # type: ignore[union-attr]
    down_bar = path("100", "103", "97", "97.5")  # high first: the take-profit comes first
    assert match_bar(take_profit, down_bar).position < match_bar(stop, down_bar).position  # type: ignore[union-attr]


def test_stop_limit_triggers_then_rests_as_a_limit() -> None:
    terms = OrderTerms("sell", "stop_limit", stop_price=D("99"), limit_price=D("98.5"))
    # Gaps below the limit: triggered at the open, cannot fill at 97, never comes back.
    assert match_bar(terms, path("97", "98", "96", "97.5")) is None
    assert terms.triggered
    # Next bar comes back up through the limit: fills at the limit.
    hit = match_bar(terms, path("98", "99", "97.9", "98.9"))
    assert hit is not None and hit.price == D("98.5")


def test_trailing_stop_follows_the_high_water_mark_then_fires() -> None:
    terms = OrderTerms("sell", "trailing_stop", trail_price=D("1"), mark=D("100"))
    assert match_bar(terms, path("100", "103", "99.5", "102.5")) is None  # low first, then high
    assert terms.mark == D("103") and trailing_stop_price(terms) == D("102")
    hit = match_bar(terms, path("102.5", "102.8", "101", "101.2"))
    assert hit is not None and hit.price == D("102") and hit.at_market


def test_trailing_percent_buy_uses_a_low_water_mark_and_gaps_fill_at_the_open() -> None:
    terms = OrderTerms("buy", "trailing_stop", trail_percent=D("2"), mark=D("100"))
    assert match_bar(terms, path("99", "99.5", "95", "95.5")) is None
    assert terms.mark == D("95") and trailing_stop_price(terms) == D("96.90")
    hit = match_bar(terms, path("98", "98.5", "97.5", "98.2"))
    assert hit is not None and hit.price == D("98") and hit.position == 0.0


def test_quote_execution_takes_the_touch() -> None:
    assert match_quote(OrderTerms("buy", "market"), D("99.99"), D("100.01"), D("100")).price == D("100.01")  # type: ignore[union-attr]
    limit = OrderTerms("buy", "limit", limit_price=D("101"))
    assert match_quote(limit, D("99.99"), D("100.01"), D("100")).price == D("100.01")  # type: ignore[union-attr]
    assert match_quote(OrderTerms("buy", "limit", limit_price=D("99")), D("99.99"), D("100.01"), D("100")) is None
    trailing = OrderTerms("sell", "trailing_stop", trail_price=D("1"))
    assert match_quote(trailing, D("99.99"), D("100.01"), D("100")) is None and trailing.mark == D("100")


def test_slippage_is_adverse_and_on_the_tick() -> None:
    assert with_slippage(D("100.01"), "buy", D("1")) == D("100.02")
    assert with_slippage(D("100.00"), "sell", D("5")) == D("99.95")
    assert round_price(D("0.123456")) == D("0.1235")


# -- a shock is a gap: nothing trades between the old price and the new one ---------------


def test_a_jump_through_a_stop_fills_at_the_price_after_the_jump_not_at_the_stop() -> None:
    hit = match_jump(OrderTerms("sell", "stop", stop_price=D("97")), D("89.99"), D("90.01"), D("90"))
    assert hit is not None and hit.price == D("89.99") and hit.at_market
    assert match_jump(OrderTerms("sell", "stop", stop_price=D("85")), D("89.99"), D("90.01"), D("90")) is None


def test_a_jump_through_a_stop_limits_limit_triggers_it_but_leaves_it_resting() -> None:
    terms = OrderTerms("sell", "stop_limit", stop_price=D("97"), limit_price=D("96"))
    assert match_jump(terms, D("89.99"), D("90.01"), D("90")) is None
    assert terms.triggered  # now a resting sell limit at 96: it fills if the price comes back
    hit = match_bar(terms, path("95", "96.5", "94.8", "96.2"))
    assert hit is not None and hit.price == D("96") and not hit.at_market


def test_a_jump_triggers_a_trailing_stop_past_its_mark_or_moves_the_mark() -> None:
    terms = OrderTerms("sell", "trailing_stop", trail_percent=D("3"), mark=D("100"))
    assert match_jump(terms, D("104.99"), D("105.01"), D("105")) is None and terms.mark == D("105")
    hit = match_jump(terms, D("89.99"), D("90.01"), D("90"))
    assert hit is not None and hit.price == D("89.99") and hit.at_market


def shocked_core() -> SimulatorCore:
    return SimulatorCore.create(symbols=["SPY"], start="2025-03-04T10:00:00-05:00", speed=None, seed=5,
                                slippage_bps=0)


def test_spy_shocked_10_percent_through_a_3_percent_stop_is_stopped_out_near_minus_10() -> None:
    core = shocked_core()
    broker = core.broker
    buy = broker.submit_order({"symbol": "SPY", "qty": "10", "side": "buy", "type": "market", "time_in_force": "day"})
    entry = D(broker.get_order(buy["id"])["filled_avg_price"])
    stop_price = round_price(entry * D("0.97"))
    stop = broker.submit_order({"symbol": "SPY", "qty": "10", "side": "sell", "type": "stop",
                                "time_in_force": "gtc", "stop_price": str(stop_price)})
    core.advance(3.5)  # mid-minute: the shock falls inside a minute bar, not at its open
    assert broker.get_order(stop["id"])["status"] == "new"
    before = D(repr(core.market.price_at("SPY", core.clock.now())))
    core.shock(["SPY"], -10)
    core.advance(2)
    filled = broker.get_order(stop["id"])
    assert filled["status"] == "filled"
    fill = D(filled["filled_avg_price"])
    assert fill < stop_price * D("0.95")  # well below the stop: the gap's price
    assert float(fill / before - 1) == pytest.approx(-0.10, abs=0.005)
    assert broker.list_positions() == []


def test_a_stop_limit_gapped_through_its_limit_does_not_fill_and_keeps_the_position() -> None:
    core = shocked_core()
    broker = core.broker
    buy = broker.submit_order({"symbol": "SPY", "qty": "10", "side": "buy", "type": "market", "time_in_force": "day"})
    entry = D(broker.get_order(buy["id"])["filled_avg_price"])
    stop = broker.submit_order({"symbol": "SPY", "qty": "10", "side": "sell", "type": "stop_limit",
                                "time_in_force": "gtc", "stop_price": str(round_price(entry * D("0.97"))),
                                "limit_price": str(round_price(entry * D("0.965")))})
    core.advance(0.5)
    core.shock(["SPY"], -10)
    core.advance(30)  # the synthetic market wanders about -10%: far from the limit
    resting = broker.get_order(stop["id"])
    assert resting["status"] == "new" and resting["filled_qty"] == "0"
    assert [p["qty"] for p in broker.list_positions()] == ["10"]
