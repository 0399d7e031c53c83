"""The simulator's trading stream (``/stream``): alpaca-py's ``TradingStream`` works against
``python -m simulator`` unchanged, and the stream speaks Alpaca's handshake and errors.

The SDK runs in a thread (its ``run()`` owns an event loop); the simulator is a subprocess
on 127.0.0.1 at ``--speed max`` (time moves only through the control API).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
import requests
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from alpaca.trading.stream import TradingStream

from simulator.faults import FaultConfig, FaultInjector
from tests.e2e_helpers import Simulator

pytestmark = pytest.mark.e2e

KEY, SECRET = "stream-key", "stream-secret"
KEYS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
START = "2025-03-04T10:00:00-05:00"  # a Tuesday, regular hours


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with Simulator(tmp_path_factory.mktemp("sim-stream"),
                   ["--key", KEY, "--secret", SECRET, "--speed", "max", "--start", START,
                    "--symbols", "SPY,AAPL", "--no-rate-limit"]) as simulator:
        yield simulator


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/stream"


class SdkStream:
    """alpaca-py's TradingStream in a background thread, collecting what its handler gets."""

    def __init__(self, url: str) -> None:
        self.stream = TradingStream(KEY, SECRET, paper=True, url_override=ws_url(url))
        self.updates: list[TradeUpdate] = []
        self.stream.subscribe_trade_updates(self._on_update)
        self.thread = threading.Thread(target=self.stream.run, daemon=True)

    async def _on_update(self, update: TradeUpdate) -> None:
        self.updates.append(update)

    def __enter__(self) -> "SdkStream":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.stop()
        self.thread.join(timeout=10)

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> list[TradeUpdate]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [u for u in list(self.updates) if predicate(u)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no matching update within {timeout}s; got {[u.event for u in self.updates]}")


def _connections(sim: Simulator) -> int:
    return sim.stderr().count("sim_stream_connected")


def _connected(sim: Simulator, before: int, timeout: float = 10.0) -> None:
    """Wait until the SDK has opened a connection (then give its listen a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _connections(sim) > before:
            time.sleep(0.3)  # the listen message follows the authorization reply
            return
        time.sleep(0.05)
    raise AssertionError("the SDK never connected")


def test_sdk_trading_stream_receives_new_and_fill_with_alpaca_fields(sim: Simulator) -> None:
    client = TradingClient(KEY, SECRET, paper=True, url_override=sim.url)
    before = _connections(sim)
    with SdkStream(sim.url) as sdk:
        _connected(sim, before)
        order = client.submit_order(MarketOrderRequest(symbol="SPY", qty=3, side=OrderSide.BUY,
                                                       time_in_force=TimeInForce.DAY))
        fills = sdk.wait_for(lambda u: u.event == "fill" and str(u.order.id) == str(order.id))
        news = sdk.wait_for(lambda u: u.event == "new" and str(u.order.id) == str(order.id))
    fill = fills[0]
    assert news and fill.order.symbol == "SPY" and fill.order.status == "filled"
    assert fill.qty == 3 and fill.position_qty == 3 and fill.price and fill.price > 0
    assert isinstance(fill.execution_id, uuid.UUID)
    assert fill.timestamp.tzinfo is not None
    # the execution id is the one inside the FILL activity's id
    activities = requests.get(sim.url + "/v2/account/activities/FILL", headers=KEYS, timeout=10).json()
    assert any(a["id"].endswith(str(fill.execution_id)) and a["order_id"] == str(order.id) for a in activities)


def test_sdk_reconnects_after_streams_drop_and_keeps_receiving(sim: Simulator) -> None:
    client = TradingClient(KEY, SECRET, paper=True, url_override=sim.url)
    before = _connections(sim)
    with SdkStream(sim.url) as sdk:
        _connected(sim, before)
        dropped = requests.post(sim.url + "/_sim/v1/streams/drop", headers=KEYS, timeout=10).json()
        assert dropped["dropped"] >= 1
        _connected(sim, before + 1, timeout=15)  # alpaca-py backs off ~1 s, then reconnects
        order = client.submit_order(LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY,
                                                      limit_price=1.00, time_in_force=TimeInForce.DAY))
        client.cancel_order_by_id(order.id)
        sdk.wait_for(lambda u: u.event == "canceled" and str(u.order.id) == str(order.id))


def test_drop_endpoint_needs_the_control_keys(sim: Simulator) -> None:
    response = requests.post(sim.url + "/_sim/v1/streams/drop", timeout=10)
    assert response.status_code == 401
    assert response.json() == {"code": 40110000, "message": "request is not authorized"}


async def _raw_session(url: str, messages: list[Any], *, replies: int) -> tuple[list[Any], list[aiohttp.WSMsgType]]:
    out: list[Any] = []
    kinds: list[aiohttp.WSMsgType] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(url)) as ws:
            for message in messages:
                await ws.send_str(message if isinstance(message, str) else json.dumps(message))
            while len(out) < replies:
                msg = await ws.receive(timeout=5)
                kinds.append(msg.type)
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    out.append(json.loads(msg.data))
                else:
                    break
    return out, kinds


def test_handshake_replies_as_alpaca_in_binary_frames(sim: Simulator) -> None:
    auth = {"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}
    listen = {"action": "listen", "data": {"streams": ["trade_updates", "account_updates"]}}
    replies, kinds = asyncio.run(_raw_session(sim.url, [listen, auth, listen], replies=3))
    assert replies == [
        {"stream": "authorization", "data": {"action": "listen", "status": "unauthorized"}},
        {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}},
        {"stream": "listening", "data": {"streams": ["trade_updates"]}},
    ]
    assert set(kinds) == {aiohttp.WSMsgType.BINARY}


def test_wrong_keys_are_refused_with_alpacas_message_and_the_socket_closed(sim: Simulator) -> None:
    auth = {"action": "authenticate", "data": {"key_id": KEY, "secret_key": "wrong"}}
    replies, kinds = asyncio.run(_raw_session(sim.url, [auth], replies=2))
    assert replies[0] == {"stream": "authorization", "data": {
        "action": "authenticate", "message": "access key verification failed", "status": "unauthorized"}}
    assert kinds[-1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


def test_invalid_syntax_is_answered_not_fatal(sim: Simulator) -> None:
    auth = {"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}
    replies, _ = asyncio.run(_raw_session(sim.url, ["{not json", auth], replies=2))
    assert replies[0] == {"stream": "error", "data": {"error_message": "invalid syntax"}}
    assert replies[1]["data"]["status"] == "authorized"


def test_stream_drop_fault_is_a_probability_per_second_on_its_own_rng() -> None:
    config = FaultConfig.parse("stream_drop=0.5,seed=7")
    assert config.stream_drop == 0.5 and not config.active  # no request faults
    assert FaultConfig.parse(config.to_spec()) == config
    injector = FaultInjector(config)
    draws = [injector.draw_stream_drop(1.0) for _ in range(400)]
    assert 120 < sum(draws) < 280 and injector.counts["stream_drop"] == sum(draws)
    assert not FaultInjector(FaultConfig()).draw_stream_drop(10.0)
    assert FaultInjector(FaultConfig.parse("stream_drop=1")).draw_stream_drop(0.25)
    with pytest.raises(ValueError, match="stream_drop"):
        FaultConfig.parse("stream_drop=2")


def test_stream_drop_fault_drops_live_connections(tmp_path: Path) -> None:
    with Simulator(tmp_path, ["--key", KEY, "--secret", SECRET, "--speed", "max", "--start", START,
                              "--symbols", "SPY", "--faults", "stream_drop=1"]) as simulator:
        auth = {"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}
        replies, kinds = asyncio.run(_raw_session(simulator.url, [auth], replies=2))
        # dropped within a tick (a quarter second): before or after the authorization reply
        assert all(r["data"]["status"] == "authorized" for r in replies)
        assert kinds[-1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert '"fault": "stream_drop"' in simulator.stderr()
        state = requests.get(simulator.url + "/_sim/v1/state", headers=KEYS, timeout=10).json()
        assert state["faults"]["stream_drop"] >= 1


def test_msgpack_is_spoken_when_the_upgrade_asks_for_it(sim: Simulator) -> None:
    import msgpack

    async def session() -> list[Any]:
        out: list[Any] = []
        async with aiohttp.ClientSession() as client:
            async with client.ws_connect(ws_url(sim.url), headers={"Content-Type": "application/msgpack"}) as ws:
                await ws.send_bytes(msgpack.packb({"action": "authenticate",
                                                   "data": {"key_id": KEY, "secret_key": SECRET}}))
                await ws.send_bytes(msgpack.packb({"action": "listen", "data": {"streams": ["trade_updates"]}}))
                for _ in range(2):
                    msg = await ws.receive(timeout=5)
                    assert msg.type == aiohttp.WSMsgType.BINARY
                    out.append(msgpack.unpackb(msg.data))
        return out

    assert asyncio.run(session()) == [
        {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}},
        {"stream": "listening", "data": {"streams": ["trade_updates"]}},
    ]
