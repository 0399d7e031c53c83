"""In-process speed of the simulator core (no HTTP): what a backtest pays per call.

Run: ``.venv/bin/python bench/bench_sim_core.py [--symbols 10] [--sessions 250] [--quick]``.

Times are this process's CPU seconds (``time.process_time``), so figures stay comparable
on a busy machine. Figures printed (nothing asserts a speed):

* ``submit+fill``: 1-share market orders through ``SimBroker.submit_order`` at 10:00 ET on a
  synthetic SPY market, clock at max (each fills at submission); buys and sells alternate.
  Also bracket cycles: a bracket entry (filled at once, two legs working), cancel of the
  legs, a market exit: three calls per cycle.
* ``advance_to``: a CSV market of ``--symbols`` symbols whose year of daily bars
  (``shared/data/daily``, 2014) is expanded to minute paths. Every symbol holds a GTC
  bracket (entry filled, take-profit +6 % and stop -6 % working); a bracket that exits is
  re-entered at the next step. Two cadences: a daily backtest's (the clock stops at the
  open + 1 min, 12:00, the close - 5 min, then the next session) and an intraday one
  (1-minute steps through ``--intraday-sessions`` sessions). Only ``core.advance``/``sync``
  is timed (re-entries are not); minutes/s counts regular-session minutes walked.
* ``daily backtest cadence``: the same brackets, the clock stopping where a daily backtest
  stops it (the open, a minute before the close, the close); at each stop
  ``book_can_change`` then ``sync``, and at the close ``get_account`` + ``list_positions``
  (all timed). Also printed: how many spans ``book_can_change`` called quiet, and how many
  daily rows were expanded into minute bars (``CsvSource._expand`` calls) per session.
* ``account cycle``: ``get_account`` + ``list_positions`` + ``list_orders(status=open,
  nested)`` with those positions and brackets open, the clock moving one minute between
  cycles (the move is not timed).
* ``market data``: ``snapshots`` and 300 daily ``bars`` for every symbol, the clock moving
  one minute between calls (not timed); the first bars call (cold caches) on its own line.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.clock import EXCHANGE_TZ  # noqa: E402
from simulator.core import SimulatorCore  # noqa: E402
from simulator.errors import SimApiError  # noqa: E402

UTC = timezone.utc
DAILY = ROOT.parent / "shared" / "data" / "daily"
# Daily files covering 2014 (one symbol may have several; all of a symbol's files are copied).
SYMBOLS_2014 = ("SPY", "QQQ", "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "IWM", "TSLA", "ORCL", "YHOO")
YEAR_START = "2014-01-02T09:00:00-05:00"
BRACKET_PCT = 0.06


def _rate(label: str, count: float, unit: str, elapsed: float, extra: str = "") -> None:
    rate = count / elapsed if elapsed > 0 else float("inf")
    print(f"  {label:<52} {count:>9,.0f} {unit:<8} {elapsed:7.3f} s {rate:>12,.0f} {unit}/s{extra}")


# -- submit + fill -------------------------------------------------------------------------


def bench_submit(seconds: float) -> None:
    core = SimulatorCore.create(symbols=["SPY"], start="2025-03-04T10:00:00-05:00", speed=None,
                                cash=10_000_000)
    broker = core.broker
    side = "buy"
    n = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        core.sync()
        order = broker.submit_order({"symbol": "SPY", "qty": "1", "side": side, "type": "market",
                                     "time_in_force": "day"})
        if order["status"] != "filled":
            raise RuntimeError(f"market order not filled at submission: {order['status']}")
        side = "sell" if side == "buy" else "buy"
        n += 1
    _rate("market order submit+fill", n, "orders", time.process_time() - started)

    n = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        core.sync()
        price = float(core.market.price_at("SPY", core.clock.now()) or 0)
        entry = broker.submit_order({
            "symbol": "SPY", "qty": "10", "side": "buy", "type": "market", "time_in_force": "gtc",
            "order_class": "bracket", "take_profit": {"limit_price": f"{price * 1.1:.2f}"},
            "stop_loss": {"stop_price": f"{price * 0.9:.2f}"},
        })
        broker.cancel_order(entry["legs"][0]["id"])
        broker.submit_order({"symbol": "SPY", "qty": "10", "side": "sell", "type": "market",
                             "time_in_force": "day"})
        n += 1
    _rate("bracket entry + cancel legs + exit", n, "cycles", time.process_time() - started)


# -- advance_to with brackets open ----------------------------------------------------------


def _copy_daily(folder: Path, symbols: list[str]) -> None:
    for symbol in symbols:
        files = sorted(DAILY.glob(f"{symbol}-1d-*.csv"))
        if not files:
            raise SystemExit(f"no daily file for {symbol} in {DAILY}")
        for file in files:
            shutil.copy(file, folder / file.name)


class Book:
    """Keeps one GTC bracket per symbol open (re-entering after an exit)."""

    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self.entries = 0
        self.reentry_seconds = 0.0

    def refill(self) -> None:
        started = time.process_time()
        core = self.core
        now = core.clock.now()
        if core.calendar.session_phase(now) != "regular":
            return
        held = set(core.broker.ledger.positions)
        for symbol in core.market.symbols:
            if symbol in held:
                continue
            price = core.market.price_at(symbol, now)
            if price is None:
                continue
            qty = max(1, int(20_000 // price))
            try:
                core.broker.submit_order({
                    "symbol": symbol, "qty": str(qty), "side": "buy", "type": "market",
                    "time_in_force": "gtc", "order_class": "bracket",
                    "take_profit": {"limit_price": f"{price * (1 + BRACKET_PCT):.2f}"},
                    "stop_loss": {"stop_price": f"{price * (1 - BRACKET_PCT):.2f}"},
                })
            except SimApiError as exc:
                raise RuntimeError(f"bracket refused for {symbol}: {exc.body}") from None
            self.entries += 1
        self.reentry_seconds += time.process_time() - started


def _csv_core(folder: Path, symbols: list[str]) -> SimulatorCore:
    return SimulatorCore.create(data_dir=folder, symbols=symbols, start=YEAR_START, speed=None,
                                cash=10_000_000)


def _stops(core: SimulatorCore, sessions: int) -> list[datetime]:
    start = core.clock.now().astimezone(EXCHANGE_TZ).date()
    days = core.calendar.sessions(start, start + timedelta(days=sessions * 2))[:sessions]
    out: list[datetime] = []
    for day in days:
        opened, closed = core.calendar.open_close(day)
        noon = datetime.combine(day, datetime.min.time().replace(hour=12), EXCHANGE_TZ).astimezone(UTC)
        out += [opened + timedelta(minutes=1), noon, closed - timedelta(minutes=5)]
    return out


class Expansions:
    """Counts the daily rows a CSV market expands into minute bars."""

    def __init__(self, core: SimulatorCore) -> None:
        self.count = 0
        source = core.market._source
        expand = source._expand  # type: ignore[attr-defined]

        def counted(*args: Any) -> Any:
            self.count += 1
            return expand(*args)

        source._expand = counted  # type: ignore[attr-defined]


def _timed_walk(core: SimulatorCore, book: Book, stops: list[datetime]) -> tuple[float, int]:
    """Walk the clock through ``stops``, re-entering brackets; (seconds in sync, regular minutes)."""
    spent = 0.0
    minutes = 0
    previous = core.clock.now()
    for stop in stops:
        if stop <= previous:
            continue
        core.clock.set_time(stop)
        started = time.process_time()
        core.sync()
        spent += time.process_time() - started
        minutes += _regular_minutes(core, previous, stop)
        previous = stop
        book.refill()
    return spent, minutes


def _regular_minutes(core: SimulatorCore, lo: datetime, hi: datetime) -> int:
    total = 0
    for day in core.calendar.sessions(lo.astimezone(EXCHANGE_TZ).date(), hi.astimezone(EXCHANGE_TZ).date()):
        opened, closed = core.calendar.open_close(day)
        a, b = max(lo, opened), min(hi, closed)
        if b > a:
            total += int((b - a).total_seconds() // 60)
    return total


def _booked_core(folder: Path, symbols: list[str]) -> tuple[SimulatorCore, Book, Expansions]:
    """A CSV core at 09:31 ET of its first session with a bracket on every symbol."""
    core = _csv_core(folder, symbols)
    book = Book(core)
    core.clock.set_time(core.clock.now() + timedelta(minutes=31))  # 09:31 ET
    core.sync()
    book.refill()
    return core, book, Expansions(core)


def bench_advance(folder: Path, symbols: list[str], sessions: int, intraday_sessions: int) -> SimulatorCore:
    core, book, expansions = _booked_core(folder, symbols)
    spent, minutes = _timed_walk(core, book, _stops(core, sessions))
    open_orders = len(core.broker._open)
    _rate(f"advance_to, daily cadence, {len(symbols)} brackets, {sessions} sessions", minutes, "minutes",
          spent, f"  ({sessions / spent:,.0f} sessions/s, {book.entries} entries, {open_orders} open legs, "
          f"{expansions.count / sessions:.1f} expansions/session)")
    bench_backtest_cadence(folder, symbols, sessions)

    intraday = _csv_core(folder, symbols)
    ibook = Book(intraday)
    intraday.clock.set_time(intraday.clock.now() + timedelta(minutes=31))
    intraday.sync()
    ibook.refill()
    stops: list[datetime] = []
    for stop in _stops(intraday, intraday_sessions)[::3]:  # each session's open + 1 min
        day = stop.astimezone(EXCHANGE_TZ).date()
        closed = intraday.calendar.open_close(day)[1]
        moment = stop
        while moment < closed:
            stops.append(moment)
            moment += timedelta(minutes=1)
    spent, minutes = _timed_walk(intraday, ibook, stops)
    _rate(f"advance_to, 1-minute steps, {len(symbols)} brackets, {intraday_sessions} sessions", minutes,
          "minutes", spent, f"  ({len(stops) / spent:,.0f} steps/s)")
    return core


def bench_backtest_cadence(folder: Path, symbols: list[str], sessions: int) -> None:
    core, book, expansions = _booked_core(folder, symbols)
    broker = core.broker
    can_change = getattr(broker, "book_can_change", None)
    start = core.clock.now().astimezone(EXCHANGE_TZ).date() + timedelta(days=1)
    days = core.calendar.sessions(start, start + timedelta(days=sessions * 2))[:sessions]
    spent = reads = 0.0
    quiet = 0
    for day in days:
        opened, closed = core.calendar.open_close(day)
        for stop in (opened, closed - timedelta(minutes=1), closed):
            core.clock.set_time(stop)
            started = time.process_time()
            if can_change is not None and not can_change(stop):
                quiet += 1
            core.sync()
            spent += time.process_time() - started
            if stop == closed:
                started = time.process_time()
                broker.get_account()
                broker.list_positions()
                reads += time.process_time() - started
            elif stop == opened:
                book.refill()
    total = spent + reads
    label = f"backtest cadence (open, close-1, close), {len(symbols)} brackets"
    extra = (f"  (sync {spent:.3f} s, account+positions at close {reads:.3f} s, "
             f"{quiet}/{3 * len(days)} spans quiet, {expansions.count / len(days):.1f} expansions/session)")
    _rate(label, len(days), "sessions", total, extra)


# -- account / positions / orders and market data ------------------------------------------


def _cycles(core: SimulatorCore, seconds: float, call: Callable[[], Any]) -> tuple[int, float]:
    """Run ``call`` with the clock one minute further each time (the move is not timed),
    after one untimed warm-up call."""
    call()
    n = 0
    spent = 0.0
    while spent < seconds:
        now = core.clock.now()
        day = now.astimezone(EXCHANGE_TZ).date()
        closed = core.calendar.open_close(day)[1] if core.calendar.is_session(day) else now
        if now + timedelta(minutes=1) < closed:
            core.clock.set_time(now + timedelta(minutes=1))
        core.sync()
        started = time.process_time()
        call()
        spent += time.process_time() - started
        n += 1
    return n, spent


def bench_reads(core: SimulatorCore, seconds: float) -> None:
    broker = core.broker
    # Back to a fresh morning with every bracket open.
    day = core.clock.now().astimezone(EXCHANGE_TZ).date()
    following = core.calendar.next_session(day)
    core.clock.set_time(core.calendar.open_close(following)[0] + timedelta(minutes=1))
    core.sync()
    Book(core).refill()
    core.sync()
    positions = len(broker.ledger.positions)
    legs = len(broker._open)

    def account_cycle() -> None:
        broker.get_account()
        broker.list_positions()
        broker.list_orders({"status": "open", "nested": "true"})

    n, spent = _cycles(core, seconds, account_cycle)
    _rate(f"get_account+list_positions+list_orders ({positions} pos, {legs} legs)", n, "cycles", spent)
    for label, call in (
        ("get_account", broker.get_account),
        ("list_positions", broker.list_positions),
        ("list_orders open nested", lambda: broker.list_orders({"status": "open", "nested": "true"})),
    ):
        n, spent = _cycles(core, seconds / 3, call)
        _rate(f"  {label}", n, "calls", spent)

    symbols = ",".join(core.market.symbols)
    n, spent = _cycles(core, seconds, lambda: core.data.snapshots({"symbols": symbols}))
    _rate(f"snapshots ({len(core.market.symbols)} symbols)", n, "calls", spent)

    def daily_bars() -> None:
        now = core.clock.now()
        start = (now - timedelta(days=440)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        core.data.bars({"symbols": symbols, "timeframe": "1Day", "start": start, "limit": "10000"})

    started = time.process_time()
    daily_bars()
    _rate("  first call (day arrays expanded, daily bars built)", 1, "calls", time.process_time() - started)
    n, spent = _cycles(core, seconds, daily_bars)
    _rate(f"daily bars, ~300 per symbol ({len(core.market.symbols)} symbols)", n, "calls", spent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10, help=f"1..{len(SYMBOLS_2014)}")
    parser.add_argument("--sessions", type=int, default=250, help="sessions of the daily cadence")
    parser.add_argument("--intraday-sessions", type=int, default=10, help="sessions of 1-minute steps")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per call-rate figure")
    parser.add_argument("--quick", action="store_true", help="shorter runs (60 sessions, 1 s per figure)")
    args = parser.parse_args()
    if not 1 <= args.symbols <= len(SYMBOLS_2014):
        parser.error(f"--symbols must be 1..{len(SYMBOLS_2014)}")
    if args.quick:
        args.sessions, args.intraday_sessions, args.seconds = 60, 3, 1.0
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"simulator core, in-process, clock at max, CPU seconds of this process, {os.cpu_count()} CPUs")
    bench_submit(args.seconds)
    symbols = list(SYMBOLS_2014[: args.symbols])
    with tempfile.TemporaryDirectory() as folder:
        _copy_daily(Path(folder), symbols)
        core = bench_advance(Path(folder), symbols, args.sessions, args.intraday_sessions)
        bench_reads(core, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
