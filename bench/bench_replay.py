"""Replayed minute bars per second, in-process, with no strategy attached.

Run: ``.venv/bin/python bench/bench_replay.py [--symbols N] [--sessions M]``.

A replay pass walks sessions in order and, for each session and symbol, takes the day's
bar arrays from the market (generating them when not cached) and visits every bar in
Python, reading its timestamp, OHLC and volume, which is what an engine does before it
applies orders. Figures are printed for the synthetic market (cold: generation included;
warm: from the cache) and, when ``shared/data`` is present, for the CSV replay of
``intraday/SPY-1m-2021-07-01-2021-08-13.csv``. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator.market import Market  # noqa: E402
from market.trading_calendar import TradingCalendar  # noqa: E402

CSV_FILE = ROOT.parent / "shared" / "data" / "intraday" / "SPY-1m-2021-07-01-2021-08-13.csv"


def replay(market: Market, sessions: list[date]) -> int:
    """Visit every bar of every symbol over ``sessions``; returns the number of bars."""
    count = 0
    checksum = 0.0
    for session in sessions:
        for symbol in market.symbols:
            day = market.minute_arrays(symbol, session)
            if day is None:
                continue
            for _t, _o, h, lo, c, v in zip(
                day.ts.tolist(), day.o.tolist(), day.h.tolist(), day.l.tolist(),
                day.c.tolist(), day.v.tolist(),
            ):
                checksum += c if h >= lo else v
                count += 1
    if checksum < 0:
        raise RuntimeError("impossible checksum")
    return count


def measure(label: str, market: Market, sessions: list[date]) -> None:
    started = time.perf_counter()
    bars = replay(market, sessions)
    elapsed = time.perf_counter() - started
    rate = bars / elapsed if elapsed > 0 else float("inf")
    print(f"{label:<46} {bars:>10,} bars {elapsed:8.3f} s {rate:>14,.0f} bars/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=6, help="number of synthetic symbols")
    parser.add_argument("--sessions", type=int, default=60, help="number of sessions")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    calendar = TradingCalendar()
    base = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"]
    symbols = (base + [f"SYM{i}" for i in range(max(0, args.symbols - len(base)))])[: args.symbols]
    sessions = calendar.sessions(date(2024, 1, 2), date(2026, 12, 31))[: args.sessions]
    market = Market.synthetic(symbols, seed=42, calendar=calendar)
    market.cache_days = max(market.cache_days, len(symbols) * len(sessions))  # keep all warm
    print(f"synthetic market: {len(symbols)} symbols x {len(sessions)} sessions")
    measure("synthetic, cold (generation + replay)", market, sessions)
    measure("synthetic, warm (cached day arrays)", market, sessions)

    if CSV_FILE.is_file():
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy(CSV_FILE, Path(folder) / CSV_FILE.name)
            started = time.perf_counter()
            replayed = Market.from_csv_dir(folder, calendar=calendar)
            load = time.perf_counter() - started
            days = replayed.trading_days(date(2021, 7, 1), date(2021, 8, 13))
            print(f"CSV replay: {CSV_FILE.name}, {len(days)} sessions (load {load:.3f} s)")
            measure("CSV, first pass", replayed, days)
            measure("CSV, second pass", replayed, days)
    else:
        print(f"CSV replay skipped: {CSV_FILE} not found")


if __name__ == "__main__":
    main()
