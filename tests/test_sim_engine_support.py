"""Shared fixtures for the matching-engine tests (no tests here).

``ScriptedMarket`` has the simulator Market's interface (``symbols``, ``bar_at``,
``price_at``, ``quote_at``) over bars the test writes minute by minute, so each test
controls the exact price path; the integration tests use the real synthetic market.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from core.clock import EXCHANGE_TZ
from simulator.clock import SimClock
from simulator.engine import SimBroker
from simulator.market import MinuteBar, SimQuote
from market.trading_calendar import TradingCalendar

UTC = timezone.utc
CALENDAR = TradingCalendar()


def et(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A New York wall-clock time as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=EXCHANGE_TZ).astimezone(UTC)


class ScriptedMarket:
    """Minute bars written by the test; price = open of the current bar, else last close."""

    def __init__(self, prices: dict[str, float], half_spread: float = 0.01) -> None:
        self.symbols = list(prices)
        self.base = dict(prices)
        self.half_spread = half_spread
        self._bars: dict[str, dict[datetime, MinuteBar]] = {s: {} for s in prices}
        self._starts: dict[str, list[datetime]] = {s: [] for s in prices}
        self.bar_requests = 0
        self.bar_requests_by_symbol: dict[str, int] = {s: 0 for s in prices}

    def bar(self, symbol: str, minute: datetime, o: float, h: float, low: float, c: float, v: int = 100_000) -> None:
        start = minute.astimezone(UTC).replace(second=0, microsecond=0)
        self._bars[symbol][start] = MinuteBar(start, o, h, low, c, v, 100, (h + low) / 2)
        starts = self._starts[symbol]
        if start not in starts:
            bisect.insort(starts, start)

    def flat(self, symbol: str, start: datetime, minutes: int, price: float, v: int = 100_000) -> None:
        for i in range(minutes):
            self.bar(symbol, start + timedelta(minutes=i), price, price, price, price, v)

    def bar_at(self, symbol: str, minute_start: datetime) -> MinuteBar | None:
        self.bar_requests += 1
        self.bar_requests_by_symbol[symbol] = self.bar_requests_by_symbol.get(symbol, 0) + 1
        return self._bars.get(symbol, {}).get(minute_start.astimezone(UTC).replace(second=0, microsecond=0))

    def price_at(self, symbol: str, t: datetime) -> float | None:
        if symbol not in self.base:
            return None
        minute = t.astimezone(UTC).replace(second=0, microsecond=0)
        bars = self._bars[symbol]
        if minute in bars:
            return bars[minute].o
        starts = self._starts[symbol]
        i = bisect.bisect_left(starts, minute) - 1
        return bars[starts[i]].c if i >= 0 else self.base[symbol]

    def quote_at(self, symbol: str, t: datetime) -> SimQuote | None:
        price = self.price_at(symbol, t)
        if price is None:
            return None
        return SimQuote(round(price - self.half_spread, 4), round(price + self.half_spread, 4), 300, 300, t)


def make_broker(
    start: datetime, prices: dict[str, float] | None = None, **kwargs: Any
) -> tuple[SimBroker, ScriptedMarket, SimClock]:
    """A broker over a scripted market at ``start`` with a max-speed clock (no slippage by default)."""
    market = ScriptedMarket(prices or {"AAPL": 100.0, "SPY": 500.0})
    clock = SimClock(start, None, CALENDAR)
    kwargs.setdefault("slippage_bps", 0.0)
    broker = SimBroker(market, clock, CALENDAR, **kwargs)
    return broker, market, clock


def go(clock: SimClock, moment: datetime) -> None:
    """Move the simulated clock to ``moment`` (the broker catches up on its next call)."""
    clock.set_time(moment)


def dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def order_body(symbol: str, qty: int | float | str, side: str, kind: str = "market", tif: str = "day", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"symbol": symbol, "qty": qty, "side": side, "type": kind, "time_in_force": tif}
    body.update(extra)
    return body


def placed(broker: SimBroker, body: Any) -> dict[str, Any]:
    """Submit, then read the order back (legs nested): Alpaca's POST answer is the order as
    accepted, before any fill, so what it became in the same instant is read with a GET."""
    answer = broker.submit_order(body)
    return broker.get_order(answer["id"], {"nested": True})


def closed(broker: SimBroker, symbol: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``DELETE /v2/positions/{symbol}``, then the closing order read back (see :func:`placed`)."""
    answer = broker.close_position(symbol, params)
    return broker.get_order(answer["id"])
