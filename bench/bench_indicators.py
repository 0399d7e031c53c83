"""Indicator speed on real bars: microseconds per 1,000 bars, per incremental update, per snapshot.

Run: ``.venv/bin/python bench/bench_indicators.py`` (or ``make bench``). Prints figures only;
nothing here asserts a speed.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
import indicators as ind  # noqa: E402
from market_data import BarSeries, load_csv_bars, session_start_mask  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv"


def microseconds(action: Callable[[], Any], repeat: int) -> float:
    """Best-of-5 mean time of ``action`` in microseconds."""
    best = min(timeit.repeat(action, number=repeat, repeat=5))
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

    print("\ncompute_snapshot, microseconds per symbol:")
    for size in (60, 250, 500):
        recent = bars.tail(size)
        per_call = microseconds(lambda: ind.compute_snapshot(recent, settings), 500)
        print(f"  {size:>4} daily bars: {per_call:8.1f} us  (x500 symbols: {per_call * 500 / 1000:.1f} ms)")


if __name__ == "__main__":
    main()
