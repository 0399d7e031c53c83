"""Indicator speed on real bars: microseconds per 1,000 bars, per incremental update, per snapshot.

Run: ``.venv/bin/python bench/bench_indicators.py`` (or ``make bench``). Prints figures only;
nothing here asserts a speed.
"""

from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncio  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import config  # noqa: E402
from market import indicators as ind  # noqa: E402
import strategies  # noqa: E402
from market.market_data import BarSeries, MarketData, load_csv_bars, session_start_mask  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv"


def microseconds(action: Callable[[], Any], repeat: int) -> float:
    """Best-of-5 mean CPU time of ``action`` in microseconds (process time, so that other
    programs sharing the machine do not inflate the figure)."""
    timer = timeit.Timer(action, timer=time.process_time)
    best = min(timer.repeat(number=repeat, repeat=5))
    return best / repeat * 1e6


def main() -> None:
    bars = load_csv_bars(DATA)
    settings = config.load_settings(environ={}, env_file=None)
    print(f"data: {DATA.name}, {len(bars)} bars")

    print("\nvectorized, microseconds per 1,000 bars (series of 1,000 and of 8,000 bars):")
    mask = session_start_mask(bars.ts)
    for size in (1000, 8000):
        s: BarSeries = bars.tail(size)
        m = mask[-size:]
        cases: dict[str, Callable[[], Any]] = {
            "sma(20)": lambda: ind.sma(s.close, 20),
            "ema(12)": lambda: ind.ema(s.close, 12),
            "rsi(14)": lambda: ind.rsi(s.close, 14),
            "macd(12,26,9)": lambda: ind.macd(s.close),
            "bollinger(20,2)": lambda: ind.bollinger(s.close),
            "atr(14)": lambda: ind.atr(s.high, s.low, s.close),
            "vwap(sessions)": lambda: ind.vwap(s.high, s.low, s.close, s.volume, m),
            "volume_ratio(20)": lambda: ind.volume_ratio(s.volume),
            "support_resistance(20)": lambda: ind.support_resistance(s.high, s.low, s.close),
        }
        print(f"  {size} bars:")
        for name, action in cases.items():
            print(f"    {name:<24} {microseconds(action, 50) * 1000 / size:9.1f} us")

    print("\nincremental, microseconds per update:")
    closes = bars.close[-2000:].tolist()
    rows = list(zip(bars.high[-2000:].tolist(), bars.low[-2000:].tolist(), closes))
    updaters: dict[str, Callable[[], Any]] = {
        "IncrementalEMA": lambda: [u.update(c) for u in [ind.IncrementalEMA(12)] for c in closes],
        "IncrementalRSI": lambda: [u.update(c) for u in [ind.IncrementalRSI(14)] for c in closes],
        "IncrementalMACD": lambda: [u.update(c) for u in [ind.IncrementalMACD()] for c in closes],
        "IncrementalATR": lambda: [u.update(*r) for u in [ind.IncrementalATR(14)] for r in rows],
        "IncrementalBollinger": lambda: [u.update(c) for u in [ind.IncrementalBollinger()] for c in closes],
    }
    for name, action in updaters.items():
        print(f"  {name:<24} {microseconds(action, 3) / len(closes):9.2f} us")

    print("\ncompute_snapshot, microseconds per symbol (first look at a history / a later cycle,")
    print("where only today's partial bar changed and the history's recursion states are cached):")

    def cold(series: BarSeries) -> None:
        ind._PREFIX_CACHE.clear()
        ind.compute_snapshot(series, settings)

    for size in (60, 250, 500):
        recent = bars.tail(size)
        first = microseconds(lambda: cold(recent), 200)
        later = microseconds(lambda: ind.compute_snapshot(recent, settings), 500)
        print(
            f"  {size:>4} daily bars: first {first:7.1f} us, later {later:7.1f} us"
            f"  (x500 symbols: {first * 0.5:.1f} ms / {later * 0.5:.1f} ms)"
        )

    print("\nthe four built-in strategies, per symbol (60 daily bars, snapshot included,")
    print("evaluated for 100 symbols inside one coroutine as the loop does):")
    enabled = strategies.load_enabled(settings)
    loop = asyncio.new_event_loop()
    now = datetime.fromtimestamp(int(bars.ts[-1]) + 86_400, timezone.utc)
    recent = bars.tail(60)

    async def evaluate_all(universe: list[MarketData]) -> None:
        for data in universe:
            for strategy in enabled:
                await strategy.evaluate_opportunity(data.symbol, data)

    for label, defensive in (("normal mode", False), ("defensive mode", True)):
        def hundred_symbols(active: bool = defensive) -> None:
            universe = [
                MarketData("SPY", now, recent, last_price=float(recent.close[-1]), defensive=active)
                for _ in range(100)
            ]
            loop.run_until_complete(evaluate_all(universe))

        per_symbol = microseconds(hundred_symbols, 5) / 100
        print(f"  {label:<15} {per_symbol:8.1f} us per symbol  (x500 symbols: {per_symbol * 0.5:.1f} ms)")
    loop.close()


if __name__ == "__main__":
    main()
