"""Benchmark: one trading-loop cycle for 6, 100 and 500 symbols against an external simulator.

What is measured, per universe size, one cycle at a time during the regular session:

* **wall latency** of a cycle (p50, p95, max): ``TradingSystem.refresh_market_status`` +
  ``TradingSystem.run_cycle``, i.e. what one iteration of the daemon's loop does before it
  sleeps;
* **HTTP requests per cycle** (the gateway's ``request_count``); batched multi-symbol
  endpoints should keep this flat as the universe grows;
* the **daemon's own CPU time per cycle** (``time.process_time`` of this process). The
  simulator runs in a separate process (``python -m simulator --speed max``), so its work is
  not in that figure; its CPU per cycle is printed beside it (psutil) for reference.
  Target: under 100 ms at 500 symbols.

The first cycle of a session also loads a year of daily history for the whole universe (one
paginated, batched ``/v2/stocks/bars`` walk); it is printed on its own line and left out of
the steady-state figures.

How: the simulator serves the synthetic market (unknown tickers get generated profiles; the
universe is SPY, QQQ, AAPL, MSFT, NVDA, TSLA, then S0006, S0007, ...) with time standing still
(``--speed max``, rate limit off). The daemon runs in this process in ``paper`` mode with fake
keys over loopback HTTP: the real ``ResilientAlpacaGateway``, ``Journal`` (a temporary
SQLite file), ``Alerter`` and ``TradingSystem``, logging JSON lines to a temporary file (console
output goes to /dev/null). Between cycles the bench moves simulated time one minute ahead
with ``POST /_sim/v1/clock {"advance_minutes": 1}``; that call is outside the measurement.

Usage::

    .venv/bin/python bench/bench_cycle.py [--sizes 6,100,500] [--cycles 40] [--seed 7]
        [--start 2025-03-04T09:31:00] [--profile 500] [--breakdown 500] [--no-gc-freeze]

The garbage collector's CPU inside the measured cycles is printed too (``gc.callbacks``): a
full collection walks every tracked object of the process, most of them the imported
libraries' (about 100k), and lands on whichever cycle triggers it. ``main.py`` therefore calls
``gc.freeze()`` before the loop runs, and so does this bench after the daemon's startup;
``--no-gc-freeze`` measures the cycle without it.

``--profile N`` runs the steady-state cycles of size N under cProfile (CPU-time timer) and
prints the functions with the most own and cumulative time (daemon process only); cProfile
inflates cheap, frequent calls, so ``--breakdown N`` is the better guide to shares: it wraps
the cycle's steps (and the per-symbol calls inside them) with ``process_time`` timers and
prints CPU ms per step. Rows of a profiled or broken-down size are marked ``*``.
Nothing here asserts a speed; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import inspect
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BASE_SYMBOLS = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"]
CPU_TARGET_MS = 100.0
FAKE_KEY, FAKE_SECRET = "BENCHKEYID000000", "bench-secret-not-a-real-key"


def universe(size: int) -> list[str]:
    """``size`` tickers: the six defaults, then generated names S0006, S0007, ..."""
    if size <= len(BASE_SYMBOLS):
        return BASE_SYMBOLS[:size]
    return BASE_SYMBOLS + [f"S{i:04d}" for i in range(len(BASE_SYMBOLS), size)]


class ExternalSimClock:
    """The daemon's clock: simulated time of the external simulator.

    ``now()`` is the simulator's time as last read; ``sleep(s)`` (used by retries, order
    polling, the rate limiter) moves the simulator's clock ``s`` seconds ahead, so waiting
    costs no wall time, just as the embedded simulator's clock does at ``--speed max``.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, now: datetime) -> None:
        self._session = session
        self._url = url
        self._now = now

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await self.advance(seconds / 60.0)

    async def advance(self, minutes: float) -> None:
        async with self._session.post(f"{self._url}/_sim/v1/clock", json={"advance_minutes": minutes}) as r:
            body = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"simulator refused to advance the clock: {r.status} {body}")
        self._now = datetime.fromisoformat(body["now"])


class StepTimer:
    """CPU time (``time.process_time``) spent in wrapped methods, per label.

    Wrapping replaces the attribute on the instance (or module) in this process only; each
    wrapped call costs about a microsecond more, so the breakdown run is a little slower than
    the measured one. Async methods are timed across their awaits: that includes the
    event loop's work for their HTTP exchange (this process has no other tasks).
    """

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.order: list[str] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)
        self.order.append(label)
        if inspect.iscoroutinefunction(original):
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = time.process_time()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self.cpu[label] += time.process_time() - started
                    self.calls[label] += 1

            setattr(owner, name, timed_async)
        else:
            def timed(*args: Any, **kwargs: Any) -> Any:
                started = time.process_time()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.cpu[label] += time.process_time() - started
                    self.calls[label] += 1

            setattr(owner, name, timed)

    def reset(self) -> None:
        self.cpu.clear()
        self.calls.clear()

    def render(self, cycles: int, total_ms: float) -> str:
        lines = [f"{'step (nested steps indented; CPU ms per cycle)':<58} {'ms':>8} {'share':>6} {'calls/cycle':>11}"]
        for label in self.order:
            ms = self.cpu.get(label, 0.0) * 1000 / cycles
            share = ms / total_ms * 100 if total_ms else 0.0
            lines.append(f"{label:<58} {ms:>8.1f} {share:>5.0f}% {self.calls.get(label, 0) / cycles:>11.0f}")
        return "\n".join(lines)


def instrument(system: Any, gateway: Any, timer: StepTimer) -> None:
    """Wrap the cycle's steps and the calls inside them that grow with the universe."""
    import strategies.base as strategy_base

    timer.wrap(system, "refresh_market_status", "refresh_market_status")
    timer.wrap(system, "refresh_account", "refresh_account (account, positions, orders, fills)")
    timer.wrap(system, "enforce_safety", "enforce_safety")
    timer.wrap(system, "refresh_market_data", "refresh_market_data")
    timer.wrap(gateway, "get_snapshots", "  gateway.get_snapshots (HTTP + JSON + models)")
    timer.wrap(system, "_with_today", "  TradingSystem._with_today (history + today's bar)")
    timer.wrap(system, "exit_positions", "exit_positions")
    timer.wrap(system, "enter_positions", "enter_positions")
    for strategy in system.strategies:
        timer.wrap(strategy, "evaluate_opportunity", f"  {type(strategy).__name__}.evaluate_opportunity")
    timer.wrap(strategy_base, "compute_snapshot", "    indicators.compute_snapshot (first strategy pays)")
    timer.wrap(system.analyzer, "analyze", "  AIAnalyzer.analyze")
    timer.wrap(system, "record_cycle", "record_cycle (journal, cycle_complete)")


class GcTimer:
    """CPU time the garbage collector spends during measured cycles (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.cpu_ms = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        self.active = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if not self.active:
            return
        if phase == "start":
            self._started = time.process_time()
        else:
            self.cpu_ms += (time.process_time() - self._started) * 1000
            self.collections[info["generation"]] += 1


@dataclass
class SizeResult:
    """Figures of one universe size."""

    size: int
    first_wall_ms: float = 0.0
    first_cpu_ms: float = 0.0
    first_requests: int = 0
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    sim_cpu_ms: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    orders: int = 0
    gc_ms: list[float] = field(default_factory=list)
    gc_collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    gc_frozen: bool = False
    profile: str = ""
    breakdown: str = ""


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def start_simulator(symbols: list[str], seed: int, start: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m simulator`` on a free loopback port; returns (process, base URL)."""
    cmd = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", "0", "--speed", "max",
           "--symbols", ",".join(symbols), "--seed", str(seed), "--start", start, "--no-rate-limit"]
    # no APCA_* keys from the caller: the simulator would require them (control API included)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r} (exit {proc.wait()})")
    return proc, line.strip().rsplit(" ", 1)[-1]


def load_settings(symbols: list[str], url: str, workdir: Path) -> Any:
    import config

    environ = {
        "APCA_API_KEY_ID": FAKE_KEY, "APCA_API_SECRET_KEY": FAKE_SECRET,
        "APCA_API_BASE_URL": url, "APCA_API_DATA_URL": url,
    }
    overrides = {
        "mode": "paper", "scanning.symbols": symbols,
        "storage.state_db": str(workdir / "state.db"), "storage.log_file": str(workdir / "trading.jsonl"),
    }
    return config.load_settings(overrides=overrides, environ=environ, env_file=None)


async def measure_size(size: int, cycles: int, seed: int, start: str, profile: bool,
                       breakdown: bool = False, gc_freeze: bool = True) -> SizeResult:
    """Run ``cycles`` + 1 cycles of a ``size``-symbol universe against a fresh simulator."""
    from core import logging_setup
    from alerter import Alerter
    from api_gateway import ResilientAlpacaGateway
    from journal.journal import Journal
    from broker.rate_limit import RateLimiter
    from engine.trading_system import TradingSystem

    symbols = universe(size)
    result = SizeResult(size=size, gc_frozen=gc_freeze)
    proc, url = start_simulator(symbols, seed, start)
    sim_process = psutil.Process(proc.pid)
    devnull = open(os.devnull, "w")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_cycle_") as tmp:
            workdir = Path(tmp)
            settings = load_settings(symbols, url, workdir)
            logging_setup.configure(log_file=settings.storage.log_file, level="INFO",
                                    secrets=settings.secret_values(), stream=devnull, json_console=True)
            async with aiohttp.ClientSession() as control:
                async with control.get(f"{url}/_sim/v1/state") as r:
                    state = await r.json(content_type=None)
                clock = ExternalSimClock(control, url, datetime.fromisoformat(state["now"]))
                rl = settings.rate_limit
                limiter = RateLimiter(max_per_minute=rl.max_requests_per_minute, buffer=rl.rate_limit_buffer,
                                      burst_allowance=rl.burst_allowance, cooldown_seconds=rl.cooldown_seconds,
                                      monotonic=lambda: clock.now().timestamp(), sleep=clock.sleep)
                gateway = ResilientAlpacaGateway(
                    base_url=settings.api.base_url, data_url=settings.api.data_url,
                    key_id=settings.api.key_id, secret_key=settings.api.secret_key, mode="paper",
                    timeout=settings.api.timeout_seconds, max_retries=settings.api.max_retries,
                    backoff_base=settings.api.backoff_base_seconds, backoff_max=settings.api.backoff_max_seconds,
                    rate_limiter=limiter, max_quote_age=settings.data_quality.max_quote_age_seconds,
                    data_feed=settings.api.data_feed, clock=clock, sleep=clock.sleep)
                journal = Journal(settings.storage.state_db)
                try:
                    async with gateway:
                        alerter = Alerter(settings.alerts, clock, secrets=settings.secret_values())
                        alerter.attach_journal(journal)
                        system = TradingSystem(settings, gateway, clock, journal=journal, alerter=alerter,
                                               run_id=f"bench-{size}")
                        evaluated: list[int] = []
                        refresh = system.refresh_market_data

                        async def counted_refresh(status: Any) -> Any:
                            data = await refresh(status)
                            evaluated.append(len(data))
                            return data

                        system.refresh_market_data = counted_refresh  # type: ignore[method-assign]
                        timer = StepTimer() if breakdown else None
                        if timer is not None:
                            instrument(system, gateway, timer)
                        await system.startup()
                        if gc_freeze:  # what main.py does before the loop runs
                            gc.collect()
                            gc.freeze()
                        profiler = cProfile.Profile(time.process_time) if profile else None
                        gc_timer = GcTimer()
                        gc.callbacks.append(gc_timer)
                        for index in range(cycles + 1):
                            evaluated.clear()
                            requests_before = gateway.request_count
                            sim_cpu_before = sum(sim_process.cpu_times()[:2])
                            if profiler is not None and index > 0:
                                profiler.enable()
                            gc_timer.cpu_ms = 0.0
                            gc_timer.active = index > 0
                            cpu_before = time.process_time()
                            wall_before = time.perf_counter()
                            status = await system.refresh_market_status()
                            if not status.is_regular:
                                raise RuntimeError(f"cycle {index} is not in the regular session: {status.phase}")
                            await system.run_cycle(status)
                            wall = (time.perf_counter() - wall_before) * 1000
                            cpu = (time.process_time() - cpu_before) * 1000
                            gc_timer.active = False
                            if profiler is not None:
                                profiler.disable()
                            sim_cpu = (sum(sim_process.cpu_times()[:2]) - sim_cpu_before) * 1000
                            requests = gateway.request_count - requests_before
                            if index == 0:
                                result.first_wall_ms, result.first_cpu_ms = wall, cpu
                                result.first_requests = requests
                                if timer is not None:
                                    timer.reset()
                            else:
                                result.wall_ms.append(wall)
                                result.cpu_ms.append(cpu)
                                result.gc_ms.append(gc_timer.cpu_ms)
                                result.sim_cpu_ms.append(sim_cpu)
                                result.requests.append(requests)
                                result.evaluated.append(evaluated[0] if evaluated else 0)
                            await clock.advance(1)
                        result.orders = system.summary.orders_submitted
                        gc.callbacks.remove(gc_timer)
                        result.gc_collections = list(gc_timer.collections)
                        if profiler is not None:
                            result.profile = render_profile(profiler)
                        if timer is not None:
                            result.breakdown = timer.render(cycles, statistics.fmean(result.cpu_ms))
                        system.stop_event.set()
                finally:
                    if gc_freeze:
                        gc.unfreeze()
                    journal.close()
                    logging_setup.shutdown()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        devnull.close()
    return result


PROFILE_FOCUS = r"refresh_market_data|enter_positions|get_snapshots|_with_today|evaluate_opportunity"


def render_profile(profiler: cProfile.Profile, top: int = 25) -> str:
    """Own time, cumulative time, and what the main steps of a cycle spend their time in."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    stats.print_callees(PROFILE_FOCUS)
    return out.getvalue()


def report(results: list[SizeResult], cycles: int) -> None:
    print()
    print(f"Steady-state cycles per size: {cycles} (one simulated minute apart, regular session)")
    header = (f"{'symbols':>7} {'evaluated':>9} {'wall p50':>9} {'wall p95':>9} {'wall max':>9} "
              f"{'cpu p50':>8} {'cpu p95':>8} {'cpu mean':>8} {'sim cpu':>8} {'req/cycle':>10}")
    print(header)
    print("-" * len(header))
    for r in results:
        req = sorted(set(r.requests))
        req_text = str(req[0]) if len(req) == 1 else f"{min(req)}-{max(req)}"
        mark = "*" if r.profile or r.breakdown else " "
        print(f"{r.size:>6}{mark} {statistics.median(r.evaluated):>9.0f} {percentile(r.wall_ms, 50):>7.1f}ms "
              f"{percentile(r.wall_ms, 95):>7.1f}ms {max(r.wall_ms):>7.1f}ms "
              f"{percentile(r.cpu_ms, 50):>6.1f}ms {percentile(r.cpu_ms, 95):>6.1f}ms "
              f"{statistics.fmean(r.cpu_ms):>6.1f}ms {statistics.median(r.sim_cpu_ms):>6.1f}ms {req_text:>10}")
    print()
    print("First cycle of the session (daily history loaded for the whole universe):")
    for r in results:
        print(f"  {r.size:>4} symbols: wall {r.first_wall_ms:8.1f} ms, daemon cpu {r.first_cpu_ms:8.1f} ms, "
              f"{r.first_requests} requests")
    print()
    print("Requests per steady-state cycle by size: "
          + ", ".join(f"{r.size}: {statistics.median(r.requests):g}" for r in results))
    if len(results) > 1:
        flat = len({statistics.median(r.requests) for r in results}) == 1
        print("  -> " + ("flat: requests per cycle do not grow with the universe"
                         if flat else "NOT flat: requests per cycle grow with the universe"))
    largest = max(results, key=lambda r: r.size)
    p95 = percentile(largest.cpu_ms, 95)
    verdict = "meets" if p95 < CPU_TARGET_MS else "MISSES"
    print(f"Daemon CPU per cycle at {largest.size} symbols: p50 {percentile(largest.cpu_ms, 50):.1f} ms, "
          f"p95 {p95:.1f} ms -> {verdict} the {CPU_TARGET_MS:.0f} ms target")
    if not all(r.gc_frozen for r in results):
        print("gc.freeze() was NOT called after startup (--no-gc-freeze): main.py calls it before the loop")
    print("Garbage collector inside the measured cycles (CPU ms per cycle mean / max; "
          "collections of generation 0/1/2 over all cycles): "
          + ", ".join(f"{r.size}: {statistics.fmean(r.gc_ms):.1f} / {max(r.gc_ms):.1f} ms, "
                      f"{'/'.join(map(str, r.gc_collections))}" for r in results))
    print("Orders submitted during the runs: " + ", ".join(f"{r.size}: {r.orders}" for r in results))
    for r in results:
        if r.breakdown:
            print()
            print(f"CPU by step at {r.size} symbols (mean per steady-state cycle; the cycle's own "
                  f"CPU was {statistics.fmean(r.cpu_ms):.1f} ms with the timers on):")
            print(r.breakdown)
        if r.profile:
            print()
            print(f"cProfile (CPU time) of the {r.size}-symbol steady-state cycles (daemon process); "
                  "the figures above for this size are inflated by the profiler:")
            print(r.profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="6,100,500", help="comma-separated universe sizes")
    parser.add_argument("--cycles", type=int, default=40, help="steady-state cycles per size (default 40)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed")
    parser.add_argument("--start", default="2025-03-04T09:31:00",
                        help="simulated start in New York time, inside a regular session")
    parser.add_argument("--profile", type=int, default=None, metavar="SIZE",
                        help="profile the steady-state cycles of this size with cProfile")
    parser.add_argument("--breakdown", type=int, default=None, metavar="SIZE",
                        help="time the cycle's steps of this size (CPU ms per step, light instrumentation)")
    parser.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                        help="skip the gc.freeze() that main.py calls before the loop (then full "
                             "collections walk the ~100k objects of the imported libraries)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(s < 1 for s in sizes) or args.cycles < 1:
        parser.error("--sizes needs positive integers and --cycles at least 1")
    results = []
    for size in sizes:
        started = time.perf_counter()
        results.append(asyncio.run(measure_size(size, args.cycles, args.seed, args.start,
                                                 args.profile == size, args.breakdown == size,
                                                 args.gc_freeze)))
        print(f"measured {size} symbols in {time.perf_counter() - started:.1f} s wall", flush=True)
    report(results, args.cycles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
