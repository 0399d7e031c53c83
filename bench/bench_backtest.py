"""Backtest speed: daily bars per second through the daemon's full loop, next to backtrader.

Run: ``.venv/bin/python bench/bench_backtest.py [--start 2017-01-03] [--end 2019-12-31]
[--symbols 1,10,50] [--profile] [--skip-default] [--repeat 3]``.

Three engines over the same daily bars of ``shared/data``, each in a fresh subprocess (so the
peak resident memory reported is that run's alone):

* ``backtrader``: SMA(10)/SMA(30) crossover; on a cross up a bracket (market entry at the next
  open, 3% stop, 6% target) of about 10% of the portfolio value; on a cross down the position
  is closed and its bracket canceled.
* ``ours-sma``: the same rule as a strategy (``strategies/sma_crossover.py``) through
  ``backtest.run_backtest``: the daemon's loop with the AI analyzer (thresholds set to 0 so it
  does not veto the reference signals, but it scores every one), risk manager, PDT manager,
  safety state machine, order executor, journal, and the simulator's matching engine
  (brackets expanded to minute paths). The maximum holding time and the scanner's price and
  volume screens are opened up so that the two engines trade the same rule.
* ``ours-default``: the default configuration (four strategies, AI analyzer, risk).

Bars: one daily bar per symbol per session of ``--start..--end`` (symbol-sessions). Our
figure counts those; backtrader's counts every bar it was fed (the range plus ~40 sessions of
warm-up for the 30-bar average). "loop" times exclude loading the CSV files (ours: building
the simulator; backtrader: reading the CSVs into pandas); "total" includes it.

Symbols: the daily files that cover 2013-2020 (SPY, QQQ, TSLA, AAPL, MSFT, NVDA, AMZN, GOOGL,
IWM) are reused under distinct names ``B00``..``B49`` (``B09`` is SPY's bars again, and so on)
to reach 10 and 50 symbols; SPY itself is also loaded as the benchmark for the regime.

``--profile`` runs ``ours-sma`` on 10 symbols under cProfile and prints where the time goes,
per function and per source file. Nothing here asserts a speed: the figures are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import json
import logging
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "daily"

BASE_FILES = (
    "SPY-1d-1993-01-29-2026-08-07.csv", "QQQ-1d-1999-03-10-2026-08-07.csv", "TSLA-1d-2010-06-29-2026-08-07.csv",
    "AAPL-1d-2013-01-02-2023-12-29.csv", "MSFT-1d-2013-01-02-2023-12-29.csv", "NVDA-1d-2013-01-02-2023-12-29.csv",
    "AMZN-1d-2013-01-02-2023-12-29.csv", "GOOGL-1d-2013-01-02-2023-12-29.csv", "IWM-1d-2000-05-26-2021-03-31.csv",
)
WARMUP_DAYS = 420  # calendar days of history before --start for our loop (250+ sessions)
BT_WARMUP_DAYS = 60  # backtrader needs 30 bars for SMA(30)


def symbol_name(i: int) -> str:
    return f"B{i:02d}"


def build_data(root: Path, count: int, first: date, last: date) -> None:
    """``root/daily``: SPY (benchmark) and ``count`` renamed copies, rows ``first..last``."""
    folder = root / "daily"
    folder.mkdir(parents=True, exist_ok=True)
    sources = [(("SPY", BASE_FILES[0]))] + [(symbol_name(i), BASE_FILES[i % len(BASE_FILES)]) for i in range(count)]
    for symbol, name in sources:
        with (SHARED / name).open(newline="") as handle:
            rows = list(csv.reader(handle))
        kept = [r for r in rows[1:] if r and first <= date.fromisoformat(r[0][:10]) <= last]
        target = folder / f"{symbol}-1d-{kept[0][0][:10]}-{kept[-1][0][:10]}.csv"
        with target.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(rows[0][:6])
            writer.writerows(r[:6] for r in kept)


# -- children --------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_backtrader(data: Path, count: int, start: date, end: date) -> dict[str, Any]:
    import backtrader as bt
    import pandas as pd

    t0 = time.perf_counter()
    frames = []
    for i in range(count):
        (path,) = (data / "daily").glob(f"{symbol_name(i)}-1d-*.csv")
        frame = pd.read_csv(path, parse_dates=["timestamp"], index_col="timestamp")
        frame = frame.loc[str(start - timedelta(days=BT_WARMUP_DAYS)):str(end)]
        frames.append(frame)
    t1 = time.perf_counter()

    class SmaBracket(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.cross = {d: bt.ind.CrossOver(bt.ind.SMA(d.close, period=10), bt.ind.SMA(d.close, period=30))
                          for d in self.datas}
            self.brackets: dict[Any, list[Any]] = {}
            self.trades = 0

        def notify_trade(self, trade: Any) -> None:
            if trade.isclosed:
                self.trades += 1

        def next(self) -> None:
            value = self.broker.getvalue()
            for d in self.datas:
                cross = self.cross[d][0]
                position = self.getposition(d).size
                if cross > 0 and not position and d not in self.brackets:
                    price = d.close[0]
                    size = int(0.10 * value / price)
                    if size > 0:
                        self.brackets[d] = self.buy_bracket(data=d, size=size, exectype=bt.Order.Market,
                                                            stopprice=price * 0.97, limitprice=price * 1.06)
                elif cross < 0 and position:
                    for order in self.brackets.pop(d, []):
                        self.cancel(order)
                    self.close(data=d)
                elif not position and d in self.brackets and not any(o.alive() for o in self.brackets[d]):
                    del self.brackets[d]

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(100000.0)
    for i, frame in enumerate(frames):
        cerebro.adddata(bt.feeds.PandasData(dataname=frame), name=symbol_name(i))
    cerebro.addstrategy(SmaBracket)
    cpu_started = time.process_time()
    (strategy,) = cerebro.run()
    t2 = time.perf_counter()
    cpu = time.process_time() - cpu_started
    bars = sum(len(f) for f in frames)
    return {"bars": bars, "loop_seconds": t2 - t1, "loop_cpu_seconds": cpu, "total_seconds": t2 - t0,
            "trades": strategy.trades,
            "final_value": cerebro.broker.getvalue(), "peak_rss_mb": peak_rss_mb()}


def our_settings(count: int, reference: bool) -> Any:
    import config

    overrides: dict[str, Any] = {"scanning.symbols": [symbol_name(i) for i in range(count)]}
    if reference:
        overrides.update({
            "strategy.enabled": ["sma_crossover"],
            "ai.min_confidence": 0.0, "ai.calibrated_min_confidence": 0.0, "ai.gate_mode": "flat",
            "trading.position_sizing": "fixed",
            "mean_reversion.max_hold_days": 100_000,
            "scanning.min_price": 0.01, "scanning.max_price": 1_000_000.0, "scanning.min_volume": 0,
        })
    return config.load_settings(env_file=None, overrides=overrides)


def run_ours(data: Path, count: int, start: date, end: date, reference: bool) -> dict[str, Any]:
    from core import logging_setup
    from backtest.options import BacktestOptions
    from backtest.runner import run_backtest

    logging_setup.configure(log_file=None, level="WARNING", stream=io.StringIO())
    settings = our_settings(count, reference)
    options = BacktestOptions(data_dir=data, symbols=tuple(settings.scanning.symbols), start=start, end=end,
                              progress=False)
    result = run_backtest(settings, options)
    return {"bars": result.bars, "loop_seconds": result.loop_seconds, "loop_cpu_seconds": result.loop_cpu_seconds,
            "total_seconds": result.elapsed_seconds,
            "trades": len(result.trades), "orders": len(result.orders), "requests": result.requests,
            "final_value": float(result.equity_curve[-1][1]), "peak_rss_mb": peak_rss_mb(),
            "sessions": len(result.sessions), "fast_forwarded": result.fast_forwarded,
            "safety_cycles_skipped": result.safety_cycles_skipped,
            "run_sessions_seconds": result.run_sessions_seconds}


def child(args: argparse.Namespace) -> None:
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    if args.engine == "backtrader":
        out = run_backtrader(Path(args.data), args.count, start, end)
    else:
        out = run_ours(Path(args.data), args.count, start, end, reference=args.engine == "ours-sma")
    print("RESULT " + json.dumps(out))


# -- parent ----------------------------------------------------------------------------------


def spawn(engine: str, data: Path, count: int, start: str, end: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", engine, "--data", str(data), "--count", str(count),
               "--start", start, "--end", end]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    raise RuntimeError(f"{engine} x{count} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def profile(data: Path, start: date, end: date) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_ours(data, 10, start, end, reference=True)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    by_file: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = filename.replace(str(ROOT) + "/", "")
        if "site-packages" in key:
            key = "site-packages/" + key.split("site-packages/", 1)[1].split("/", 1)[0]
        elif key.startswith("/") or key.startswith("<"):
            key = "python stdlib / builtins"
        by_file[key] = by_file.get(key, 0.0) + tottime
    print(f"\nProfile: ours-sma, 10 symbols, {start}..{end}; total {total:.2f} s of own time")
    print("  share  seconds  file")
    for key, seconds in sorted(by_file.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {seconds / total:5.1%}  {seconds:7.2f}  {key}")
    print("\nTop functions by own time:")
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-4000:])
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    print("\nTop functions by cumulative time:")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-6000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", default="2017-01-03")
    parser.add_argument("--end", default="2019-12-31")
    parser.add_argument("--symbols", default="1,10,50", help="comma-separated symbol counts")
    parser.add_argument("--profile", action="store_true", help="cProfile ours-sma on 10 symbols")
    parser.add_argument("--skip-default", action="store_true", help="skip the default-pipeline runs")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per engine and size; the fastest loop is reported (default 3)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.engine = args.child
        child(args)
        return
    logging.disable(logging.CRITICAL)
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    counts = [int(c) for c in args.symbols.split(",")]
    engines = ["backtrader", "ours-sma"] + ([] if args.skip_default else ["ours-default"])
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        data = Path(tmp)
        build_data(data, max(counts + ([10] if args.profile else [])), start - timedelta(days=WARMUP_DAYS), end)
        print(f"Daily bars {start}..{end}; engines run one at a time, each in a fresh process.")
        print(f"Each engine runs {max(1, args.repeat)} time(s), the engines in turn; the fastest loop is shown, "
              "'spread' is how much slower the slowest was.")
        print(f"{'symbols':>7}  {'engine':<13}{'bars':>9}{'loop s':>9}{'bars/s':>10}{'total s':>9}"
              f"{'total bars/s':>13}{'peak RSS MB':>12}{'trades':>8}{'spread':>8}")
        results: dict[tuple[int, str], dict[str, Any]] = {}
        for count in counts:
            # Round-robin (one run of each engine, then again): a slow spell of this shared
            # machine then falls on every engine, not on one.
            runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
            for _ in range(max(1, args.repeat)):
                for engine in engines:
                    runs[engine].append(spawn(engine, data, count, args.start, args.end))
            for engine in engines:
                r = min(runs[engine], key=lambda run: run["loop_seconds"])  # the least disturbed run
                r["loop_spread"] = max(run["loop_seconds"] for run in runs[engine]) / r["loop_seconds"] - 1.0
                r["best_cpu_seconds"] = min(run["loop_cpu_seconds"] for run in runs[engine])
                results[(count, engine)] = r
                rate = r["bars"] / r["loop_seconds"]
                total_rate = r["bars"] / r["total_seconds"]
                print(f"{count:>7}  {engine:<13}{r['bars']:>9,}{r['loop_seconds']:>9.2f}{rate:>10,.0f}"
                      f"{r['total_seconds']:>9.2f}{total_rate:>13,.0f}{r['peak_rss_mb']:>12.0f}{r['trades']:>8}"
                      f"{r['loop_spread']:>8.0%}", flush=True)
        print("\nRatios (ours / backtrader, bars per second in the loop; target >= 10x for the reference "
              "strategy, >= 3x for the default pipeline), by wall time and, in brackets, by CPU time of "
              "the loop (less disturbed by other work on the machine):")
        for count in counts:
            bt = results[(count, "backtrader")]
            bt_rate, bt_cpu_rate = bt["bars"] / bt["loop_seconds"], bt["bars"] / bt["best_cpu_seconds"]
            parts = []
            for engine in engines[1:]:
                r = results[(count, engine)]
                parts.append(f"{engine} {r['bars'] / r['loop_seconds'] / bt_rate:.2f}x "
                             f"({r['bars'] / r['best_cpu_seconds'] / bt_cpu_rate:.2f}x)")
            print(f"  {count:>3} symbols: " + ", ".join(parts))
        print("\nWhere our loop's time goes (the fastest run): the sessions run in full (an entry or exit "
              "possible, a fill to record), their cost each, and what each could cost at most for the "
              "target if nothing else in the loop cost anything:")
        for count in counts:
            bt_rate = results[(count, "backtrader")]["bars"] / results[(count, "backtrader")]["loop_seconds"]
            for engine, target in (("ours-sma", 10.0), ("ours-default", 3.0)):
                r = results.get((count, engine))
                if r is None:
                    continue
                run = r["sessions"] - r["fast_forwarded"]
                budget = r["bars"] / (target * bt_rate)
                each = r["run_sessions_seconds"] / run * 1000 if run else 0.0
                print(f"  {count:>3} {engine:<13} run {run:>4} of {r['sessions']} sessions "
                      f"({r['safety_cycles_skipped']} idle safety cycles skipped), {each:5.2f} ms each, "
                      f"{r['run_sessions_seconds'] / r['loop_seconds']:4.0%} of the loop; {target:g}x allows "
                      f"{budget * 1000:6.1f} ms for the whole loop = {budget / run * 1000 if run else 0:5.2f} ms "
                      "per session run")
        if args.profile:
            profile(data, start, end)


if __name__ == "__main__":
    main()
