"""Daily-data fast paths of the simulator core give exactly the answers of the expanding path.

A CSV daily bar is expanded into minute bars whenever a price is asked for. The fast paths
answer without that expansion where the answer is known from the daily row itself:

* ``Market.session_range`` (the row's low/high) lets the engine skip symbols whose resting
  orders no bar of the day can reach (``advance_to``) and answers ``SimBroker.book_can_change``;
* ``Market.price_at`` at/after a daily session's close (and before the next session's first
  bar) or in its first minute, ``Market.known_bar_close`` for the closing price.

Each test runs the same thing on a market with the fast paths and on one forced to the slow
path (``market.fast_paths = False``) over real daily bars of ``shared/data`` and requires
identical answers.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.clock import EXCHANGE_TZ
from simulator.core import SimulatorCore
from simulator.errors import SimApiError
from tests.conftest import SHARED_DATA
from tests.test_sim_engine_support import placed

UTC = timezone.utc
SYMBOLS = ["SPY", "AAPL"]
pytestmark = pytest.mark.skipif(not (SHARED_DATA / "daily").is_dir(), reason="shared/data/daily is not present")


FILES = {"SPY": "SPY-1d-1993-01-29-2026-08-07.csv", "AAPL": "AAPL-1d-2013-01-02-2023-12-29.csv"}
MINUTE_FILES = ("SPY-1m-2013-10-04-2013-10-11.csv", "AAPL-1m-2014-06-05-2014-06-09.csv")
_DATA: dict[str, Path] = {}


def _data_dir(tmp_path_factory: pytest.TempPathFactory, kind: str) -> Path:
    """Real daily SPY and AAPL bars (AAPL split-adjusted, many decimals): ``daily`` holds
    2014-06..2019, ``mixed`` 2013-06..2014-12 with the minute files of those years beside."""
    if kind not in _DATA:
        folder = tmp_path_factory.mktemp(kind)
        first, last = (date(2014, 6, 1), date(2019, 12, 31)) if kind == "daily" else (date(2013, 6, 1), date(2014, 12, 31))
        for symbol, name in FILES.items():
            lines = (SHARED_DATA / "daily" / name).read_text().splitlines()
            kept = [line for line in lines[1:] if line and first <= date.fromisoformat(line[:10]) <= last]
            (folder / f"{symbol}-1d-{kept[0][:10]}-{kept[-1][:10]}.csv").write_text("\n".join([lines[0], *kept]) + "\n")
        if kind == "mixed":
            for name in MINUTE_FILES:
                (folder / name).write_bytes((SHARED_DATA / "intraday" / name).read_bytes())
        _DATA[kind] = folder
    return _DATA[kind]


@pytest.fixture()
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _data_dir(tmp_path_factory, "daily")


@pytest.fixture()
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not all((SHARED_DATA / "intraday" / name).is_file() for name in MINUTE_FILES):
        pytest.skip("the minute files of shared/data/intraday are not present")
    return _data_dir(tmp_path_factory, "mixed")


def _core(data: Path, start: str, *, fast: bool, partial: bool = False) -> SimulatorCore:
    core = SimulatorCore.create(data_dir=data, symbols=SYMBOLS, start=start, speed=None,
                                cash=1_000_000, partial_fills=partial)
    core.market.fast_paths = fast
    return core


class Reads:
    """Counts every read of minute bars (day arrays built or taken from the cache)."""

    def __init__(self, core: SimulatorCore) -> None:
        self.count = 0
        market = core.market
        minute_arrays, load = market.minute_arrays, market._load

        def counted_arrays(*args: Any) -> Any:
            self.count += 1
            return minute_arrays(*args)

        def counted_load(*args: Any) -> Any:
            self.count += 1
            return load(*args)

        market.minute_arrays = counted_arrays  # type: ignore[method-assign]
        market._load = counted_load  # type: ignore[method-assign]


def _book(core: SimulatorCore) -> tuple[Any, ...]:
    """Everything advancing may change: each order's state (trigger flag and trailing mark
    included), positions and cash."""
    broker = core.broker
    orders = tuple(
        (o.id, o.status, o.qty, o.filled_qty, o.filled_value, o.triggered, o.hwm, o.updated_at)
        for o in sorted(broker.orders.values(), key=lambda o: o.seq)
    )
    positions = tuple((s, p.qty, p.avg_entry_price) for s, p in sorted(broker.ledger.positions.items()))
    return orders, positions, broker.ledger.cash, broker.event_count


def _order(rng: random.Random, symbol: str, price: float, held: Decimal) -> dict[str, Any]:
    away = rng.choice((0.004, 0.01, 0.02, 0.04, 0.09))
    tif = rng.choice(("day", "gtc", "gtc"))
    qty = str(rng.randint(1, 20))
    kind = rng.choice(("bracket",) * 4 + ("buy_limit", "buy_limit", "sell_limit", "buy_stop", "stop_limit",
                                          "market", "trailing"))
    if kind == "sell_limit" and held <= 0:
        kind = "buy_limit"
    body: dict[str, Any] = {"symbol": symbol, "qty": qty, "side": "buy", "time_in_force": tif}
    if kind == "bracket":
        down = rng.choice((0.004, 0.01, 0.03, 0.08))
        body.update(type="market", order_class="bracket",
                    take_profit={"limit_price": f"{price * (1 + away):.2f}"},
                    stop_loss={"stop_price": f"{price * (1 - down):.2f}"})
    elif kind == "buy_limit":
        body.update(type="limit", limit_price=f"{price * (1 - away):.2f}")
    elif kind == "sell_limit":
        body.update(side="sell", qty=str(min(int(held), int(qty))) or "1", type="limit",
                    limit_price=f"{price * (1 + away):.2f}")
    elif kind == "buy_stop":
        body.update(type="stop", stop_price=f"{price * (1 + away):.2f}")
    elif kind == "stop_limit":
        stop = price * (1 + away)
        body.update(type="stop_limit", stop_price=f"{stop:.2f}", limit_price=f"{stop * 1.003:.2f}")
    elif kind == "market":
        body.update(type="market", time_in_force="day")
    else:
        body.update(side="sell", type="trailing_stop", trail_percent=str(rng.choice((0.3, 1))),
                    qty=str(max(1, min(int(held), int(qty)))))
    return body


def _moments(core: SimulatorCore, sessions: int) -> list[tuple[str, datetime]]:
    """A daily backtest's moments per session (the open, a minute before the close, the
    close), with a pre-market look now and then."""
    first = core.clock.now().astimezone(EXCHANGE_TZ).date()
    days = core.calendar.sessions(first, first + timedelta(days=2 * sessions))[:sessions]
    out: list[tuple[str, datetime]] = []
    for i, day in enumerate(days):
        opened, closed = core.calendar.open_close(day)
        if i % 7 == 3:
            out.append(("pre", opened - timedelta(minutes=40)))
        out += [("open", opened), ("late", closed - timedelta(minutes=1)), ("close", closed)]
        if i % 11 == 5:
            out.append(("night", closed + timedelta(hours=6)))
    return out


def _act(core: SimulatorCore, rng: random.Random, kind: str, record: list[Any]) -> None:
    broker = core.broker
    now = core.clock.now()
    if kind == "open":
        for symbol in SYMBOLS:
            if rng.random() < 0.55:
                price = core.market.price_at(symbol, now)
                assert price is not None
                held = broker.ledger.positions[symbol].qty if symbol in broker.ledger.positions else Decimal(0)
                try:
                    record.append(broker.submit_order(_order(rng, symbol, price, held)))
                except SimApiError as exc:
                    record.append(exc.body)
    elif kind == "late":
        if broker._open and rng.random() < 0.2:
            victim = sorted(broker._open.values(), key=lambda o: o.seq)[0]
            if victim.is_open and victim.status != "held":
                broker.cancel_order(victim.id)
        if broker.ledger.positions and rng.random() < 0.1:
            symbol = sorted(broker.ledger.positions)[0]
            try:
                record.append(broker.close_position(symbol, {}))
            except SimApiError as exc:
                record.append(exc.body)


@pytest.mark.parametrize("start,sessions,seed,partial", [
    ("2015-01-02T09:00:00-05:00", 320, 1, False),
    ("2018-06-01T09:00:00-04:00", 260, 2, True),
])
def test_a_daily_backtest_trades_exactly_like_the_expanding_path(data: Path, start: str, sessions: int, seed: int,
                                                                 partial: bool) -> None:
    fills, quiet, changed, cheap = _compare(data, start, sessions, seed, partial, daily_only=True)
    assert fills >= 150  # the scenario really trades
    assert quiet >= 300 and changed >= 80 and cheap >= 300  # quiet spans, spans that changed the book


def test_daily_and_minute_sessions_mixed_trade_exactly_like_the_expanding_path(mixed: Path) -> None:
    """Minute files inside the daily range (SPY 2013-10-04..11, AAPL 2014-06-05..09, with
    extended-hours bars): those sessions and the ones around them take the bars' path."""
    fills, quiet, changed, _ = _compare(mixed, "2013-09-03T09:00:00-04:00", 230, 3, False, daily_only=False)
    assert fills >= 100 and quiet >= 200 and changed >= 50


def _compare(data: Path, start: str, sessions: int, seed: int, partial: bool, *,
             daily_only: bool) -> tuple[int, int, int, int]:
    """The same daily backtest on a market with the fast paths and one without; every answer
    compared; (fills, quiet spans, spans that changed the book, cheap account reads)."""
    fast, slow = _core(data, start, fast=True, partial=partial), _core(data, start, fast=False, partial=partial)
    reads = Reads(fast)
    rng_fast, rng_slow = random.Random(seed), random.Random(seed)
    quiet = changed = cheap = seen = 0
    moments = _moments(fast, sessions)
    shock_step = len(moments) * 3 // 4
    for step, (kind, moment) in enumerate(moments):
        if step == shock_step:  # from here on AAPL has a shock: its answers come from the bars again
            for core in (fast, slow):
                core.shock(["AAPL"], -3.0)
        can_change = fast.broker.book_can_change(moment)
        before = _book(slow) if not can_change else None
        events_before = slow.broker.event_count
        reads.count = 0
        for core in (fast, slow):
            core.clock.set_time(moment)
            core.sync()
        if not can_change:
            quiet += 1
            assert _book(slow) == before, f"book_can_change said no at {moment} but the book changed"
            if daily_only and step < shock_step:
                assert reads.count == 0, f"advancing a book that cannot change read minute bars at {moment}"
        elif slow.broker.event_count != events_before:
            changed += 1
        records: list[list[Any]] = []
        for core, rng in ((fast, rng_fast), (slow, rng_slow)):
            record: list[Any] = []
            reads.count = 0
            record.append(core.broker.get_account())
            record.append(core.broker.list_positions())
            if core is fast and daily_only and kind in ("pre", "open", "close", "night") and step < shock_step:
                assert reads.count == 0, f"account and positions at {kind} {moment} read minute bars"
                cheap += 1
            _act(core, rng, kind, record)
            record.append(core.broker.list_orders({"status": "open", "nested": "true", "limit": "500"}))
            if kind == "close":
                record.append(core.broker.list_orders({"status": "closed", "limit": "50"}))
            record.append(list(core.broker.events)[seen:])
            records.append(record)
        seen = len(fast.broker.events)
        assert records[0] == records[1], f"fast and slow paths differ at {kind} {moment}"
    fills = [e for e in fast.broker.events if e["event"] in ("fill", "partial_fill")]
    assert fast.broker.list_orders({"status": "all", "nested": "true", "limit": "500"}) == slow.broker.list_orders(
        {"status": "all", "nested": "true", "limit": "500"})
    assert fast.broker.activities() == slow.broker.activities()
    assert fast.broker.portfolio_history({"period": "1A", "timeframe": "1D"}) == slow.broker.portfolio_history(
        {"period": "1A", "timeframe": "1D"})
    return len(fills), quiet, changed, cheap


def test_prices_quotes_and_closes_without_expansion_equal_the_expanded_ones(data: Path) -> None:
    fast = _core(data, "2016-03-01T09:00:00-05:00", fast=True)
    slow = _core(data, "2016-03-01T09:00:00-05:00", fast=False)
    days = fast.calendar.sessions(date(2016, 3, 1), date(2017, 6, 30))
    assert any(fast.calendar.open_close(d)[1].astimezone(EXCHANGE_TZ).hour == 13 for d in days)  # early closes
    _compare_prices(fast, slow, days, daily_only=True)
    saturday = date(2016, 3, 5)
    assert fast.market.session_range("SPY", saturday) == (math.inf, -math.inf)
    assert fast.market.price_at("SPY", datetime(2016, 3, 5, 12, tzinfo=UTC)) == slow.market.price_at(
        "SPY", datetime(2016, 3, 5, 12, tzinfo=UTC))


def test_prices_around_minute_sessions_equal_the_bars_ones(mixed: Path) -> None:
    fast = _core(mixed, "2013-09-03T09:00:00-04:00", fast=True)
    slow = _core(mixed, "2013-09-03T09:00:00-04:00", fast=False)
    days = fast.calendar.sessions(date(2013, 9, 25), date(2013, 10, 22)) + fast.calendar.sessions(
        date(2014, 5, 28), date(2014, 6, 16))
    _compare_prices(fast, slow, days, daily_only=False)


def _compare_prices(fast: SimulatorCore, slow: SimulatorCore, days: list[date], *, daily_only: bool) -> None:
    for day in days:
        opened, closed = fast.calendar.open_close(day)
        moments = [opened - timedelta(hours=6), opened - timedelta(seconds=1), opened, opened + timedelta(seconds=59),
                   opened + timedelta(minutes=1), opened + timedelta(minutes=137, seconds=12),
                   closed - timedelta(seconds=61), closed - timedelta(seconds=60), closed - timedelta(seconds=1),
                   closed, closed + timedelta(microseconds=1), closed + timedelta(hours=5),
                   datetime.combine(day + timedelta(days=1), datetime.min.time(), EXCHANGE_TZ)]
        for symbol in SYMBOLS:
            for moment in moments:
                assert fast.market.price_at(symbol, moment) == slow.market.price_at(symbol, moment), (symbol, moment)
                assert fast.market.last_trade(symbol, moment) == slow.market.last_trade(symbol, moment), (symbol, moment)
                assert fast.market.quote_at(symbol, moment) == slow.market.quote_at(symbol, moment), (symbol, moment)
            last = closed - timedelta(minutes=1)
            bar = slow.market.bar_at(symbol, last)
            known = fast.market.known_bar_close(symbol, last)
            if bar is None:  # a minute file's partial day
                assert known is None and not daily_only
            else:
                assert known == bar.c or (known is None and not daily_only)
            assert fast.market.known_bar_close(symbol, last - timedelta(minutes=1)) is None
            assert slow.market.known_bar_close(symbol, last) is None
            bars = slow.market.minute_arrays(symbol, day)
            assert bars is not None
            low = float(min(bars.l.min(), bars.o.min(), bars.c.min()))
            high = float(max(bars.h.max(), bars.o.max(), bars.c.max()))
            assert fast.market.session_range(symbol, day) == (low, high)  # attained: the row's low/high
            assert slow.market.session_range(symbol, day) is None
            daily = slow.market.daily_bar(symbol, day)
            assert daily is not None and fast.market.daily_close_volume(symbol, day) == (daily.c, daily.v)
    for moment in (days[len(days) // 2], days[-1]):  # the news built from those daily bars
        for core in (fast, slow):
            core.clock.set_time(datetime.combine(moment, datetime.min.time(), EXCHANGE_TZ) + timedelta(hours=18))
        params = {"symbols": ",".join(SYMBOLS), "limit": "50", "include_content": "true"}
        assert fast.data.news(params) == slow.data.news(params)


def test_book_can_change_is_conservative(data: Path) -> None:
    core = _core(data, "2016-03-01T10:00:00-05:00", fast=True)
    broker = core.broker
    now = core.clock.now()
    closed = core.calendar.open_close(date(2016, 3, 1))[1]
    tomorrow = core.calendar.open_close(date(2016, 3, 2))[1]
    assert not broker.book_can_change(tomorrow)  # nothing open: nothing can happen
    assert not broker.book_can_change(now - timedelta(hours=1))  # the past
    price = core.market.price_at("SPY", now)
    assert price is not None
    far = broker.submit_order({"symbol": "SPY", "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc",
                               "limit_price": f"{price * 0.5:.2f}"})
    assert not broker.book_can_change(tomorrow)
    near = broker.submit_order({"symbol": "SPY", "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc",
                                "limit_price": f"{price * 0.999:.2f}"})
    day_range = core.market.session_range("SPY", date(2016, 3, 1))
    assert day_range is not None
    assert broker.book_can_change(closed) == (day_range[0] <= float(near["limit_price"]))
    broker.cancel_order(near["id"])
    day = broker.submit_order({"symbol": "SPY", "qty": "1", "side": "buy", "type": "limit", "time_in_force": "day",
                               "limit_price": f"{price * 0.5:.2f}"})
    assert not broker.book_can_change(closed - timedelta(minutes=1))
    assert broker.book_can_change(closed)  # it expires at the close
    broker.cancel_order(day["id"])
    broker.cancel_order(far["id"])
    trailing_ok = placed(broker, {"symbol": "SPY", "qty": "1", "side": "buy", "type": "market",
                                       "time_in_force": "day"})
    assert trailing_ok["status"] == "filled"
    broker.submit_order({"symbol": "SPY", "qty": "1", "side": "sell", "type": "trailing_stop",
                         "time_in_force": "gtc", "trail_percent": "50"})
    assert broker.book_can_change(closed - timedelta(minutes=5))  # its mark may move
    broker.cancel_all()
    assert not broker.book_can_change(tomorrow)
    core.clock.set_time(closed + timedelta(hours=1))
    core.sync()
    broker.submit_order({"symbol": "SPY", "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc",
                         "limit_price": f"{price * 0.5:.2f}"})  # accepted: activates at the next open
    assert broker.book_can_change(tomorrow)
    broker.cancel_all()
    # A shocked symbol's range is not known without the bars: conservative again.
    broker.submit_order({"symbol": "SPY", "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc",
                         "limit_price": f"{price * 0.5:.2f}"})
    core.clock.set_time(tomorrow + timedelta(hours=2))
    core.sync()
    after = core.calendar.open_close(date(2016, 3, 4))[1]
    assert not broker.book_can_change(after)
    core.shock(["SPY"], -1.0)
    assert core.market.session_range("SPY", date(2016, 3, 3)) is None
    assert broker.book_can_change(after)


def test_the_synthetic_market_has_no_daily_fast_path_and_stays_conservative() -> None:
    core = SimulatorCore.create(symbols=["SPY"], start="2025-03-04T10:00:00-05:00", speed=None)
    assert core.market.session_range("SPY", date(2025, 3, 4)) is None
    assert core.market.known_bar_close("SPY", datetime(2025, 3, 4, 20, 59, tzinfo=UTC)) is None
    closed = core.calendar.open_close(date(2025, 3, 4))[1]
    assert not core.broker.book_can_change(closed)
    price = core.market.price_at("SPY", core.clock.now())
    assert price is not None
    core.broker.submit_order({"symbol": "SPY", "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc",
                              "limit_price": f"{price * 0.5:.2f}"})
    assert core.broker.book_can_change(closed)


def test_a_daily_rows_expanded_volumes_sum_to_its_volume() -> None:
    """``CsvSource.daily_volume`` answers the row's volume without allocating it over the
    minutes: the allocation hands out exactly the total below ``EXACT_ALLOCATION``."""
    import numpy as np

    from simulator.csv_source import EXACT_ALLOCATION, _allocate, _frame

    rng = np.random.default_rng(7)
    totals = [0, 1, 2, 389, 390, 391, 10**9 + 7, EXACT_ALLOCATION - 1] + [int(v) for v in rng.integers(0, 10**13, 3000)]
    for minutes in (390, 210, 2, 1):
        frame = _frame(minutes)
        for total in totals:
            assert int(_allocate(total, frame.weights, frame.shares).sum()) == total, (minutes, total)
