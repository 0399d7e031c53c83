"""The simulator's fast paths give exactly the answers of the plain ones.

The matching engine jumps over minutes in which no working order can execute
(``Market.first_bar_reaching``); these tests run the same trading on the same market with
the jump and with a minute-by-minute scan and require identical events, fills and account.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from core.clock import EXCHANGE_TZ
from simulator.core import SimulatorCore
from simulator.errors import SimApiError
from simulator.market import Market
from market.trading_calendar import TradingCalendar

UTC = timezone.utc
CALENDAR = TradingCalendar()


def et(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=EXCHANGE_TZ).astimezone(UTC)


class ScanningMarket:
    """The same market without ``first_bar_reaching``: the engine scans every minute."""

    def __init__(self, market: Market) -> None:
        self._market = market

    def __getattr__(self, name: str) -> Any:
        if name == "first_bar_reaching":
            raise AttributeError(name)
        return getattr(self._market, name)


def _body(rng: random.Random, symbol: str, price: float) -> dict[str, Any]:
    side = rng.choice(["buy", "sell"])
    kind = rng.choice(["market", "limit", "stop", "stop_limit", "trailing_stop", "bracket", "oco"])
    away = 1 + rng.uniform(0.0005, 0.008)
    body: dict[str, Any] = {"symbol": symbol, "qty": str(rng.randint(1, 40)), "side": side,
                            "time_in_force": rng.choice(["day", "gtc"])}
    if kind == "market":
        body["type"] = "market"
    elif kind == "limit":
        body.update(type="limit", limit_price=f"{price / away if side == 'buy' else price * away:.2f}")
    elif kind == "stop":
        body.update(type="stop", stop_price=f"{price * away if side == 'buy' else price / away:.2f}")
    elif kind == "stop_limit":
        stop = price * away if side == "buy" else price / away
        limit = stop * 1.002 if side == "buy" else stop * 0.998
        body.update(type="stop_limit", stop_price=f"{stop:.2f}", limit_price=f"{limit:.2f}")
    elif kind == "trailing_stop":
        body.update(type="trailing_stop", trail_percent=str(round(rng.uniform(0.1, 0.8), 2)))
    elif kind == "bracket":
        body.update(side="buy", type="market", order_class="bracket",
                    take_profit={"limit_price": f"{price * away:.2f}"},
                    stop_loss={"stop_price": f"{price / away:.2f}"})
    else:
        body.update(side="sell", type="limit", order_class="oco",
                    take_profit={"limit_price": f"{price * away:.2f}"},
                    stop_loss={"stop_price": f"{price / away:.2f}"})
    return body


def _trade(core: SimulatorCore, seed: int, steps: int) -> list[Any]:
    """Random orders and clock steps (1 minute to several hours); every answer recorded."""
    rng = random.Random(seed)
    broker = core.broker
    record: list[Any] = []
    for _ in range(steps):
        core.advance(rng.choice((1, 4, 30, 120, 600)) + rng.random())
        now = core.clock.now()
        for _ in range(rng.randint(0, 3)):
            symbol = rng.choice(core.market.symbols)
            price = core.market.price_at(symbol, now)
            if price is None:
                continue
            try:
                record.append(broker.submit_order(_body(rng, symbol, price)))
            except SimApiError as exc:
                record.append(exc.body)
        if broker._open and rng.random() < 0.15:
            broker.cancel_order(sorted(broker._open)[0])
        record.append(broker.get_account())
        record.append(broker.list_positions())
    record.append(list(broker.events))
    record.append(broker.list_orders({"status": "all", "nested": "true", "limit": "500"}))
    return record


@pytest.mark.parametrize("seed,partial", [(11, False), (12, True)])
def test_jumping_over_quiet_minutes_trades_exactly_like_scanning_every_minute(seed: int, partial: bool) -> None:
    fast = SimulatorCore.create(symbols=["SPY", "AAPL", "TSLA"], seed=seed, start="2025-03-03T09:00:00-05:00",
                                speed=None, cash=1_000_000, partial_fills=partial)
    slow = SimulatorCore.create(symbols=["SPY", "AAPL", "TSLA"], seed=seed, start="2025-03-03T09:00:00-05:00",
                                speed=None, cash=1_000_000, partial_fills=partial)
    slow.broker.market = ScanningMarket(slow.market)
    fast_record = _trade(fast, seed, 60)
    slow_record = _trade(slow, seed, 60)
    fills = [e for e in fast_record[-2] if e["event"] == "fill"]
    assert len(fills) >= 10  # the scenario really trades
    assert fast_record == slow_record


def _market() -> tuple[Market, datetime]:
    market = Market.synthetic(["SPY"], seed=3, calendar=CALENDAR)
    return market, et(2025, 3, 4, 9, 30)


def _bars(market: Market, start: datetime, minutes: int) -> list[Any]:
    return market.minute_bars("SPY", start, start + timedelta(minutes=minutes))


@pytest.mark.parametrize("minutes", [3, 120])  # a short window (looped) and a long one (arrays)
def test_first_bar_reaching_finds_the_first_bar_touching_a_level(minutes: int) -> None:
    market, opened = _market()
    bars = _bars(market, opened, minutes)
    target = bars[-1]
    above = max(target.o, target.h, target.l, target.c)
    below = min(target.o, target.h, target.l, target.c)
    expect_high = next(b.t for b in bars if max(b.o, b.h, b.l, b.c) >= above)
    expect_low = next(b.t for b in bars if min(b.o, b.h, b.l, b.c) <= below)
    end = opened + timedelta(minutes=minutes)
    assert market.first_bar_reaching("SPY", opened, end, [(0.0, -math.inf, above)]) == expect_high
    assert market.first_bar_reaching("SPY", opened, end, [(0.0, below, math.inf)]) == expect_low
    both = market.first_bar_reaching("SPY", opened, end, [(0.0, -math.inf, above), (0.0, below, math.inf)])
    assert both == min(expect_high, expect_low)


def test_first_bar_reaching_respects_each_tests_start_and_the_window_end() -> None:
    market, opened = _market()
    end = opened + timedelta(minutes=60)
    later = opened + timedelta(minutes=17, seconds=30)
    # "Any bar" from a mid-minute start: the next whole minute.
    assert market.first_bar_reaching("SPY", opened, end, [(later.timestamp(), math.inf, -math.inf)]) == (
        opened + timedelta(minutes=18)
    )
    # An unreachable level finds nothing; the end is exclusive.
    assert market.first_bar_reaching("SPY", opened, end, [(0.0, -math.inf, 1e9)]) is None
    assert market.first_bar_reaching("SPY", end, end, [(0.0, math.inf, -math.inf)]) is None
    # A closed day has no bars.
    sunday = et(2025, 3, 2, 10)
    assert market.first_bar_reaching("SPY", sunday, sunday + timedelta(hours=1), [(0.0, math.inf, 0.0)]) is None


def test_a_shock_moves_prices_already_asked_for_at_the_same_instant() -> None:
    market, opened = _market()
    now = opened + timedelta(minutes=42, seconds=10)
    before_trade = market.price_at("SPY", now)
    before_quote = market.quote_at("SPY", now)
    assert before_trade is not None and before_quote is not None
    market.shock("SPY", -10.0, now)
    after_trade = market.price_at("SPY", now)
    after_quote = market.quote_at("SPY", now)
    assert after_trade is not None and after_quote is not None
    assert after_trade == pytest.approx(before_trade * 0.9, abs=0.0001)
    assert after_quote.bid < before_quote.bid * 0.91


def test_remembered_timestamps_are_written_exactly_as_before_whatever_the_zone() -> None:
    from simulator import market_data_api, wire

    utc = datetime(2025, 3, 4, 15, 0, 12, 345678, tzinfo=UTC)
    eastern = utc.astimezone(EXCHANGE_TZ)
    for _ in range(2):  # the second round reads the memo
        # Go's RFC3339Nano as Alpaca prints it: nine digits, trailing zeros dropped.
        assert wire.ts(utc) == wire.ts(eastern) == "2025-03-04T15:00:12.34567883Z"
        assert wire.ts(utc.replace(microsecond=0)) == "2025-03-04T15:00:12Z"
        assert market_data_api.rfc3339(eastern) == "2025-03-04T15:00:12.345678Z"
        assert market_data_api.rfc3339(utc.replace(microsecond=0)) == "2025-03-04T15:00:12Z"
    for i in range(wire.TS_MEMO_SIZE + 10):  # the memo stays bounded
        wire.ts(utc + timedelta(seconds=i))
    assert len(wire._TS_MEMO) <= wire.TS_MEMO_SIZE


def test_an_orders_json_follows_every_change_and_each_answer_is_a_fresh_dict() -> None:
    core = SimulatorCore.create(symbols=["SPY"], start="2025-03-04T10:00:00-05:00", speed=None)
    placed = core.broker.submit_order({"symbol": "SPY", "qty": "1", "side": "buy", "type": "limit",
                                       "limit_price": "1.00", "time_in_force": "gtc"})
    order = core.broker.orders[placed["id"]]
    first = order.to_json()
    first["status"] = "scribbled"
    assert order.to_json()["status"] == "new"  # the caller's copy is its own
    order.client_order_id = "renamed"  # any field, however changed
    assert order.to_json()["client_order_id"] == "renamed"
    core.broker.cancel_order(placed["id"])
    again = core.broker.get_order(placed["id"])
    assert again["status"] == "canceled" and again["canceled_at"] is not None
    assert order.to_json(stop_price=None)["stop_price"] is None


def test_news_written_after_a_shock_reports_the_shocked_close() -> None:
    core = SimulatorCore.create(symbols=["SPY"], start="2025-03-04T12:00:00-05:00", speed=None)
    core.data.news({"symbols": "SPY"})  # today's articles are prepared (not yet published)
    core.advance(30)
    core.shock("SPY", -10.0)
    core.clock.set_time(et(2025, 3, 4, 17, 0))
    core.sync()
    latest = core.data.news({"symbols": "SPY", "limit": "1"})["news"][0]
    close = core.market.daily_bar("SPY", et(2025, 3, 4, 12).astimezone(EXCHANGE_TZ).date())
    assert close is not None
    assert f"closed at {close.c:.2f} on 2025-03-04" in latest["summary"]
    latest["symbols"].append("XYZ")  # the caller's copy is its own
    assert core.data.news({"symbols": "SPY", "limit": "1"})["news"][0]["symbols"] == ["SPY"]
