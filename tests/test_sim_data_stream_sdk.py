"""alpaca-py's ``StockDataStream``, unchanged (msgpack, in-band auth), against the simulator.

The simulator serves on 127.0.0.1 from its own thread and loop; the SDK's ``run()`` runs in
another thread, as a user's script would run it. The clock is at "max" and moves only via
the control API, so what the stream delivers is deterministic and can be compared with the
REST answers for the same minute.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.models import Bar, Quote, Trade
from alpaca.data.requests import StockBarsRequest, StockLatestTradeRequest
from alpaca.data.timeframe import TimeFrame

from simulator.core import SimulatorCore
from simulator.server import RunningServer, start_server
from simulator.stream_hub import STREAM_HUB

pytestmark = pytest.mark.e2e

KEY, SECRET = "sdk-key", "sdk-secret"
START = "2025-03-04T10:00:00-05:00"  # a Tuesday, regular hours
WAIT_S = 20.0
ROOT = Path(__file__).resolve().parents[1]


class ThreadedSimulator:
    """The simulator server on its own event loop in a daemon thread."""

    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_server(core, key=KEY, secret=SECRET, rate_limit_per_minute=None), self.loop)
        self.server: RunningServer = future.result(timeout=30)
        self.url = self.server.base_url
        self.ws_url = self.url.replace("http://", "ws://")

    def advance(self, minutes: float) -> None:
        response = requests.post(self.url + "/_sim/v1/clock", json={"advance_minutes": minutes},
                                 headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET},
                                 timeout=30)
        response.raise_for_status()

    def drop_streams(self) -> int:
        hub = self.server.app[STREAM_HUB]
        return asyncio.run_coroutine_threadsafe(hub.drop_all(), self.loop).result(timeout=30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class RunningStream:
    """A StockDataStream run by ``run()`` in a thread, collecting what its handlers get."""

    def __init__(self, stream: StockDataStream) -> None:
        self.stream = stream
        self.got: list[Any] = []
        self.thread = threading.Thread(target=stream.run, daemon=True)

    async def handler(self, item: Any) -> None:
        self.got.append(item)

    def start(self) -> None:
        self.thread.start()

    def wait_for(self, predicate: Callable[[list[Any]], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if predicate(list(self.got)):
                return
            time.sleep(0.05)
        raise AssertionError(f"the stream never delivered what was expected; got {self.got!r}")

    def stop(self) -> None:
        if self.thread.is_alive():
            self.stream.stop()
            self.thread.join(timeout=10)


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    core = SimulatorCore.create(symbols=["SPY", "AAPL"], start=START, speed=None, seed=11)
    simulator = ThreadedSimulator(core)
    try:
        yield simulator
    finally:
        simulator.close()


def started(sim: ThreadedSimulator, feed: str = "iex", **kw: Any) -> RunningStream:
    stream = StockDataStream(KEY, SECRET, url_override=f"{sim.ws_url}/v2/{feed}", **kw)
    running = RunningStream(stream)
    stream.subscribe_trades(running.handler, "SPY")
    stream.subscribe_quotes(running.handler, "SPY")
    stream.subscribe_bars(running.handler, "SPY", "AAPL")
    stream.subscribe_daily_bars(running.handler, "SPY")
    running.start()
    return running


def wait_subscribed(sim: ThreadedSimulator) -> None:
    """Until the server has the SDK's subscription (its connection is authenticated)."""
    from simulator.data_stream import DATA_STREAMS

    streams = sim.server.app[DATA_STREAMS]
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if streams.subscribed_connections() > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the SDK never subscribed")


def test_sdk_receives_trades_quotes_bars_and_daily_bars_matching_rest(sim: ThreadedSimulator) -> None:
    running = started(sim)
    try:
        wait_subscribed(sim)
        sim.advance(1)
        running.wait_for(lambda got: {type(g).__name__ for g in got} >= {"Trade", "Quote", "Bar"}
                         and len([g for g in got if isinstance(g, Bar)]) >= 3)
    finally:
        running.stop()

    trade = next(g for g in running.got if isinstance(g, Trade))
    quote = next(g for g in running.got if isinstance(g, Quote))
    bars = [g for g in running.got if isinstance(g, Bar)]
    minute = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)
    spy_minute = next(b for b in bars if b.symbol == "SPY" and b.timestamp == minute)
    daily = next(b for b in bars if b.symbol == "SPY" and b.timestamp != minute)

    rest = StockHistoricalDataClient(KEY, SECRET, url_override=sim.url)
    latest = rest.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols="SPY", feed=DataFeed.IEX))["SPY"]
    assert (trade.symbol, trade.price, trade.size, trade.timestamp, trade.id) == (
        "SPY", latest.price, latest.size, latest.timestamp, latest.id)
    assert trade.timestamp.tzinfo is not None and isinstance(trade.price, float)
    assert quote.symbol == "SPY" and 0 < quote.bid_price < quote.ask_price
    assert quote.bid_size > 0 and quote.ask_size > 0

    rest_bars = rest.get_stock_bars(StockBarsRequest(symbol_or_symbols="SPY", timeframe=TimeFrame.Minute,
                                                     start=minute, end=minute, feed=DataFeed.IEX))["SPY"]
    assert [(b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count) for b in rest_bars] == [
        (spy_minute.open, spy_minute.high, spy_minute.low, spy_minute.close, spy_minute.volume,
         spy_minute.vwap, spy_minute.trade_count)]
    assert {b.symbol for b in bars} == {"SPY", "AAPL"}
    day = rest.get_stock_bars(StockBarsRequest(symbol_or_symbols="SPY", timeframe=TimeFrame.Day,
                                               start=datetime(2025, 3, 4, tzinfo=timezone.utc),
                                               feed=DataFeed.IEX))["SPY"][-1]
    assert (daily.timestamp, daily.open, daily.close, daily.volume) == (day.timestamp, day.open, day.close, day.volume)


def test_sdk_reconnects_and_resubscribes_after_the_streams_are_dropped(sim: ThreadedSimulator) -> None:
    running = started(sim)
    try:
        wait_subscribed(sim)
        assert sim.drop_streams() == 1
        wait_subscribed(sim)  # the SDK came back on its own: connect, auth, subscribe
        sim.advance(1)
        running.wait_for(lambda got: any(isinstance(g, Bar) for g in got))
    finally:
        running.stop()


def test_sdk_stops_on_insufficient_subscription_for_sip(sim: ThreadedSimulator) -> None:
    running = started(sim, feed="sip")
    running.thread.join(timeout=WAIT_S)  # alpaca-py gives up on 409 by itself
    assert not running.thread.is_alive()
    assert running.got == []


# -- python -m simulator, its clock running on its own -------------------------------------


@pytest.fixture
def cli_url(tmp_path: Path) -> Iterator[str]:
    """``python -m simulator`` with a SIP plan, two stream connections per key, at 120x."""
    log_file = (tmp_path / "simulator.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--speed", "120", "--symbols", "SPY",
         "--start", START, "--key", KEY, "--secret", SECRET, "--sip", "--stream-connections", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log_file, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    try:
        assert line.startswith("simulator listening on http://127.0.0.1:"), line
        yield line.rsplit(" ", 1)[1].replace("http://", "ws://")
    finally:
        process.terminate()
        process.wait(timeout=20)
        log_file.close()


def test_cli_streams_sip_to_two_sdk_clients_as_its_clock_runs(cli_url: str) -> None:
    runs = []
    for feed in (DataFeed.SIP, DataFeed.SIP):  # --stream-connections 2: both are admitted
        stream = StockDataStream(KEY, SECRET, feed=feed, url_override=f"{cli_url}/v2/sip")
        running = RunningStream(stream)
        stream.subscribe_bars(running.handler, "SPY")
        stream.subscribe_trades(running.handler, "SPY")
        running.start()
        runs.append(running)
    try:
        for running in runs:
            running.wait_for(lambda got: any(isinstance(g, Bar) for g in got)
                             and any(isinstance(g, Trade) for g in got))
    finally:
        for running in runs:
            running.stop()
    bar = next(g for g in runs[0].got if isinstance(g, Bar))
    assert bar.symbol == "SPY" and bar.timestamp.tzinfo is not None and bar.volume > 0
