"""Benchmark: order round trips per second against the simulator over HTTP on loopback.

One round trip = ``POST /v2/orders`` of a 1-share market order in regular hours, answered
``filled`` (the simulator fills market orders in regular hours at submission; if an answer
were not yet filled, the worker polls ``GET /v2/orders/{id}`` until it is, and that counts
in the same round trip). Each worker alternates buy and sell, so the position stays small
and buying power never runs out. The client is included in the measurement: an aiohttp
``ClientSession`` with keep-alive connections, ``--concurrency`` workers (default 12).
The clock is at "max" (simulated time stands still at 10:00 ET), the rate limit is off,
logging is at INFO (no per-order log lines).

Two layouts are measured (``--mode`` picks one; default both):

* ``process``: ``python -m simulator`` in its own process, the client in this one (the
  two processes can use both cores), like a user running the simulator beside the daemon;
* ``embedded``: the server and the client in one event loop, like ``main.py`` in sim mode.

Target: at least 1,000 round trips per second on a 2-core machine.

Usage: ``python bench/bench_sim_http.py [--seconds 5] [--concurrency 12] [--mode process|embedded|both]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import structlog

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

START = "2025-03-04T10:00:00-05:00"  # a Tuesday, regular hours
SYMBOL = "SPY"


async def _worker(session: aiohttp.ClientSession, url: str, stop_at: float, counts: list[int]) -> None:
    side = "buy"
    while time.perf_counter() < stop_at:
        body = {"symbol": SYMBOL, "qty": "1", "side": side, "type": "market", "time_in_force": "day"}
        async with session.post(url + "/v2/orders", json=body) as response:
            order = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"order refused: {response.status} {order}")
        while order["status"] != "filled":
            async with session.get(f"{url}/v2/orders/{order['id']}") as response:
                order = await response.json(content_type=None)
        counts[0] += 1
        side = "sell" if side == "buy" else "buy"


async def measure(url: str, seconds: float, concurrency: int) -> tuple[int, float]:
    """(round trips, elapsed seconds) after a one-second warm-up."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm = [0]
        await asyncio.gather(*(_worker(session, url, time.perf_counter() + 1.0, warm) for _ in range(concurrency)))
        counts = [0]
        started = time.perf_counter()
        await asyncio.gather(
            *(_worker(session, url, started + seconds, counts) for _ in range(concurrency))
        )
        return counts[0], time.perf_counter() - started


async def run_embedded(seconds: float, concurrency: int) -> tuple[int, float]:
    from simulator.core import SimulatorCore
    from simulator.server import start_server

    core = SimulatorCore.create(symbols=[SYMBOL], start=START, speed=None)
    server = await start_server(core, rate_limit_per_minute=None)
    try:
        return await measure(server.base_url, seconds, concurrency)
    finally:
        await server.stop()


def run_process(seconds: float, concurrency: int) -> tuple[int, float]:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--speed", "max", "--symbols", SYMBOL,
         "--start", START, "--no-rate-limit"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # no APCA_* keys: the simulator would then require them of every request
        env={**{k: v for k, v in os.environ.items() if not k.startswith("APCA_")}, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("simulator listening on "):
            raise RuntimeError(f"simulator did not start: {line!r}")
        return asyncio.run(measure(line.rsplit(" ", 1)[1], seconds, concurrency))
    finally:
        process.terminate()
        process.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--mode", choices=("process", "embedded", "both"), default="both")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"simulator HTTP order round trips: 1-share market orders in regular hours, clock at max,"
          f" rate limit off, aiohttp client keep-alive, concurrency {args.concurrency},"
          f" {args.seconds:g} s after a 1 s warm-up, {os.cpu_count()} CPUs")
    results = {}
    if args.mode in ("process", "both"):
        n, elapsed = run_process(args.seconds, args.concurrency)
        results["process"] = n / elapsed
        print(f"  server in its own process: {n} round trips in {elapsed:.2f} s = {n / elapsed:,.0f}/s")
    if args.mode in ("embedded", "both"):
        n, elapsed = asyncio.run(run_embedded(args.seconds, args.concurrency))
        results["embedded"] = n / elapsed
        print(f"  server and client in one event loop: {n} round trips in {elapsed:.2f} s = {n / elapsed:,.0f}/s")
    best = max(results.values())
    print(f"target >= 1,000/s: {'met' if best >= 1000 else 'NOT met'} (best {best:,.0f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
