"""The simulator's market-data websocket, spoken to by a raw aiohttp client (JSON and msgpack).

Checks Alpaca's handshake, the subscription reply, the data the market owes a subscriber as
the clock moves, and every documented error code with Alpaca's own words. The clock runs at
"max" and moves only by ``core.advance``, so every message is deterministic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import msgpack
import pytest
from structlog.testing import capture_logs

from simulator.core import SimulatorCore
from simulator.data_feed import MarketFeed, Subscription
from simulator.data_stream import DATA_STREAMS
from simulator.server import RunningServer, start_server
from simulator.stream_hub import STREAM_HUB

pytestmark = pytest.mark.e2e

START = "2025-03-04T10:00:00-05:00"  # a Tuesday, regular hours
KEY, SECRET = "ws-key", "ws-secret"
AUTH = {"action": "auth", "key": KEY, "secret": SECRET}
MSGPACK_HEADERS = {"Content-Type": "application/msgpack"}


def make_core(**kw: Any) -> SimulatorCore:
    options: dict[str, Any] = {"symbols": ["SPY", "AAPL"], "start": START, "speed": None, "seed": 7}
    options.update(kw)
    return SimulatorCore.create(**options)


class Client:
    """One websocket connection; ``packed`` picks the msgpack codec as alpaca-py does."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, packed: bool) -> None:
        self.ws = ws
        self.packed = packed

    async def send(self, obj: Any) -> None:
        if self.packed:
            await self.ws.send_bytes(msgpack.packb(obj))
        else:
            await self.ws.send_str(json.dumps(obj))

    async def recv(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        frame = await self.ws.receive(timeout=timeout)
        if frame.type == aiohttp.WSMsgType.BINARY:
            assert self.packed, "a JSON client got a binary frame"
            return msgpack.unpackb(frame.data, timestamp=3)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        assert not self.packed, "a msgpack client got a text frame"
        return json.loads(frame.data)

    async def ask(self, obj: Any) -> list[dict[str, Any]]:
        await self.send(obj)
        return await self.recv()


class Sim:
    def __init__(self, server: RunningServer, core: SimulatorCore, session: aiohttp.ClientSession) -> None:
        self.server, self.core, self.session = server, core, session
        self.ws_url = server.base_url.replace("http://", "ws://")

    async def connect(self, path: str = "/v2/iex", *, packed: bool = False, auth: bool = False,
                      headers: dict[str, str] | None = None) -> Client:
        all_headers = dict(MSGPACK_HEADERS if packed else {})
        all_headers.update(headers or {})
        ws = await self.session.ws_connect(self.ws_url + path, headers=all_headers)
        client = Client(ws, packed)
        assert await client.recv() == [{"T": "success", "msg": "connected"}]
        if auth:
            assert await client.ask(AUTH) == [{"T": "success", "msg": "authenticated"}]
        return client

    async def collect(self, client: Client, minutes: float) -> list[dict[str, Any]]:
        """Advance the clock and gather every data message sent for it (one step of the
        feed sends them together; a short quiet spell after the first frame ends it)."""
        self.core.advance(minutes)
        got = await client.recv(timeout=10.0)
        while True:
            try:
                got.extend(await client.recv(timeout=0.5))
            except asyncio.TimeoutError:
                return got


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Any]]:
    running: list[tuple[RunningServer, aiohttp.ClientSession]] = []

    async def factory(core: SimulatorCore | None = None, **server_kw: Any) -> Sim:
        core = core or make_core()
        server_kw.setdefault("rate_limit_per_minute", None)
        server_kw.setdefault("key", KEY)
        server_kw.setdefault("secret", SECRET)
        server = await start_server(core, **server_kw)
        session = aiohttp.ClientSession()
        running.append((server, session))
        return Sim(server, core, session)

    yield factory
    for server, session in running:
        await session.close()
        await server.stop()


@pytest.fixture
async def sim(sim_factory: Callable[..., Any]) -> Sim:
    return await sim_factory()


def error(code: int, msg: str) -> list[dict[str, Any]]:
    return [{"T": "error", "code": code, "msg": msg}]


# -- handshake, subscription, JSON data --------------------------------------------------


async def test_json_client_gets_alpacas_handshake_subscription_and_data(sim: Sim) -> None:
    client = await sim.connect(auth=True)
    reply = await client.ask({"action": "subscribe", "trades": ["SPY"], "quotes": ["SPY"],
                              "bars": ["SPY", "AAPL"], "dailyBars": ["SPY"]})
    assert reply == [{"T": "subscription", "trades": ["SPY"], "quotes": ["SPY"],
                      "bars": ["SPY", "AAPL"], "updatedBars": [], "dailyBars": ["SPY"],
                      "statuses": [], "lulds": [], "corrections": ["SPY"], "cancelErrors": ["SPY"]}]

    got = await sim.collect(client, 1)
    kinds = {(m["T"], m["S"]) for m in got}
    assert kinds == {("b", "SPY"), ("b", "AAPL"), ("d", "SPY"), ("t", "SPY"), ("q", "SPY")}
    bar = next(m for m in got if m["T"] == "b" and m["S"] == "SPY")
    assert bar["t"] == "2025-03-04T15:00:00Z"  # the minute that just completed
    assert set(bar) == {"T", "S", "o", "h", "l", "c", "v", "t", "n", "vw"}
    trade = next(m for m in got if m["T"] == "t")
    assert trade["t"] == "2025-03-04T15:01:00Z" and isinstance(trade["p"], float)
    assert set(trade) == {"T", "S", "t", "x", "p", "s", "i", "c", "z"}
    quote = next(m for m in got if m["T"] == "q")
    assert quote["bp"] < quote["ap"] and set(quote) >= {"ax", "ap", "as", "bx", "bp", "bs", "t"}

    # The stream agrees with the REST API about the same instant.
    async with sim.session.get(sim.server.base_url + "/v2/stocks/trades/latest",
                               params={"symbols": "SPY", "feed": "iex"},
                               headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}) as r:
        rest = (await r.json())["trades"]["SPY"]
    assert {k: trade[k] for k in rest} == rest


async def test_msgpack_client_gets_binary_frames_with_timestamp_t(sim: Sim) -> None:
    client = await sim.connect(packed=True, auth=True)
    await client.ask({"action": "subscribe", "bars": ["AAPL"]})
    got = await sim.collect(client, 2)
    assert [m["T"] for m in got] == ["b", "b"]
    assert all(isinstance(m["t"], datetime) for m in got)  # msgpack Timestamp, decoded
    assert [m["t"] for m in got] == [datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc),
                                     datetime(2025, 3, 4, 15, 1, tzinfo=timezone.utc)]


async def test_unsubscribe_answers_the_remaining_set_and_stops_that_data(sim: Sim) -> None:
    client = await sim.connect(auth=True)
    await client.ask({"action": "subscribe", "bars": ["SPY", "AAPL"], "trades": ["SPY"]})
    reply = await client.ask({"action": "unsubscribe", "bars": ["SPY"], "trades": ["SPY"]})
    assert reply[0]["bars"] == ["AAPL"] and reply[0]["trades"] == [] and reply[0]["corrections"] == []
    got = await sim.collect(client, 1)
    assert {(m["T"], m["S"]) for m in got} == {("b", "AAPL")}


async def test_a_new_subscriber_sees_the_next_change_not_the_current_state(sim: Sim) -> None:
    client = await sim.connect(auth=True)
    await client.ask({"action": "subscribe", "trades": ["SPY"], "quotes": ["SPY"]})
    with pytest.raises(asyncio.TimeoutError):
        await client.recv(timeout=0.8)  # time stands still: nothing is owed


async def test_a_clock_jump_is_caught_up_bar_by_bar(sim: Sim) -> None:
    client = await sim.connect(auth=True)
    await client.ask({"action": "subscribe", "bars": ["SPY"]})
    got = await sim.collect(client, 15)
    assert [m["t"] for m in got] == [
        f"2025-03-04T15:{minute:02d}:00Z" for minute in range(15)]


async def test_a_shock_reaches_subscribers_at_once_on_a_frozen_clock(sim: Sim) -> None:
    client = await sim.connect(auth=True)
    await client.ask({"action": "subscribe", "trades": ["SPY"], "quotes": ["SPY"]})
    before = sim.core.market.price_at("SPY", sim.core.clock.now())
    async with sim.session.post(sim.server.base_url + "/_sim/v1/shock", json={"symbols": ["SPY"], "pct": -6},
                                headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}) as r:
        assert r.status == 200
    got = await client.recv()
    trade = next(m for m in got if m["T"] == "t")
    quote = next(m for m in got if m["T"] == "q")
    assert trade["p"] == pytest.approx(before * 0.94, abs=0.01)
    assert quote["bp"] < trade["p"] < quote["ap"]


async def test_header_auth_on_the_upgrade_authenticates_at_once(sim: Sim) -> None:
    client = await sim.connect(headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET})
    assert await client.recv() == [{"T": "success", "msg": "authenticated"}]
    assert (await client.ask({"action": "subscribe", "bars": ["SPY"]}))[0]["T"] == "subscription"


async def test_test_stream_serves_fakepaca(sim: Sim) -> None:
    client = await sim.connect("/v2/test", auth=True)
    await client.ask({"action": "subscribe", "trades": ["FAKEPACA"], "bars": ["FAKEPACA"]})
    got = await sim.collect(client, 1)
    assert {(m["T"], m["S"]) for m in got} == {("b", "FAKEPACA"), ("t", "FAKEPACA")}


async def test_plain_get_without_upgrade_answers_400(sim: Sim) -> None:
    async with sim.session.get(sim.server.base_url + "/v2/iex") as response:
        assert response.status == 400


async def test_drop_all_closes_data_stream_connections(sim: Sim) -> None:
    client = await sim.connect(auth=True)
    assert await sim.server.app[STREAM_HUB].drop_all() == 1
    frame = await client.ws.receive(timeout=5)
    assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    # The connection slot is free again: a reconnect authenticates.
    await sim.connect(auth=True)


# -- errors, with Alpaca's codes and words -------------------------------------------------


async def test_auth_failed_402_and_the_connection_may_retry(sim: Sim) -> None:
    client = await sim.connect()
    assert await client.ask({"action": "auth", "key": KEY, "secret": "wrong"}) == error(402, "auth failed")
    assert await client.ask({"action": "auth", "key": "", "secret": ""}) == error(402, "auth failed")
    assert await client.ask(AUTH) == [{"T": "success", "msg": "authenticated"}]


async def test_already_authenticated_403(sim: Sim) -> None:
    client = await sim.connect(packed=True, auth=True)
    assert await client.ask(AUTH) == error(403, "already authenticated")


async def test_not_authenticated_401_before_auth(sim: Sim) -> None:
    client = await sim.connect()
    assert await client.ask({"action": "subscribe", "trades": ["SPY"]}) == error(401, "not authenticated")


@pytest.mark.parametrize("frame", [
    "not json", json.dumps(["auth"]), json.dumps({"action": "listen"}), json.dumps({"key": KEY}),
    json.dumps({"action": "subscribe", "trades": "SPY"}),
    json.dumps({"action": "subscribe", "bars": [1]}),
])
async def test_invalid_syntax_400(sim: Sim, frame: str) -> None:
    client = await sim.connect(auth=True)
    await client.ws.send_str(frame)
    assert await client.recv() == error(400, "invalid syntax")


async def test_auth_timeout_404_closes(sim: Sim) -> None:
    sim.server.app[DATA_STREAMS].auth_timeout_s = 0.3
    client = await sim.connect()
    assert await client.recv() == error(404, "auth timeout")
    assert (await client.ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_symbol_limit_405_leaves_the_subscription_unchanged(sim: Sim) -> None:
    client = await sim.connect(auth=True)
    first = [f"S{i}" for i in range(20)]
    assert (await client.ask({"action": "subscribe", "trades": first}))[0]["trades"] == first
    more = [f"Q{i}" for i in range(11)]  # 31 symbols across trades and quotes
    assert await client.ask({"action": "subscribe", "quotes": more}) == error(405, "symbol limit exceeded")
    assert await client.ask({"action": "subscribe", "trades": ["*"]}) == error(405, "symbol limit exceeded")
    reply = await client.ask({"action": "subscribe", "quotes": more[:10], "bars": ["*"]})
    assert reply[0]["trades"] == first and reply[0]["quotes"] == more[:10]  # 30: allowed
    assert reply[0]["bars"] == ["*"]  # minute bars are not limited


async def test_connection_limit_406_per_key_and_endpoint(sim: Sim) -> None:
    first = await sim.connect(auth=True)
    second = await sim.connect()
    assert await second.ask(AUTH) == error(406, "connection limit exceeded")
    assert (await second.ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await sim.connect("/v2/test", auth=True)  # another endpoint has its own slot
    await first.ws.close()
    await asyncio.sleep(0.1)
    await sim.connect(auth=True)  # the slot is free once the first one left


async def test_sip_needs_a_sip_plan_409_else_unlimited(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory()
    client = await sim.connect("/v2/sip")
    assert await client.ask(AUTH) == error(409, "insufficient subscription")
    core = make_core()
    core.data.sip_enabled = True
    paid = await sim_factory(core)
    client = await paid.connect("/v2/sip", auth=True)
    symbols = [f"S{i}" for i in range(40)]
    assert (await client.ask({"action": "subscribe", "trades": symbols}))[0]["trades"] == symbols


async def test_any_key_is_accepted_without_a_configured_pair(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(key=None, secret=None)
    client = await sim.connect()
    assert await client.ask({"action": "auth", "key": "x", "secret": "y"}) == [
        {"T": "success", "msg": "authenticated"}]


# -- the feed without sockets ------------------------------------------------------------


def test_daily_bars_only_after_regular_session_minutes_and_quotes_not_when_closed() -> None:
    core = make_core(start="2025-03-04T19:58:00-05:00")  # post-market, two minutes to close
    feed = MarketFeed(core.data, core.clock.now())
    sub = Subscription({"dailyBars": ["SPY"], "quotes": ["SPY"], "bars": ["SPY"]})
    feed.prime(sub, core.clock.now())
    core.advance(1)
    out = feed.step(sub, core.clock.now())
    assert "d" not in {m["T"] for m in out}  # an after-hours minute: no daily bar
    core.advance(10)  # 20:09 ET: the trading day is over
    out = feed.step(sub, core.clock.now())
    assert {m["T"] for m in out} == {"b"}  # the last post-market bars, no quote when closed


def test_updated_bar_is_sent_when_the_market_revises_a_sent_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    core = make_core()
    feed = MarketFeed(core.data, core.clock.now())
    sub = Subscription({"bars": ["SPY"], "updatedBars": ["SPY"]})
    core.advance(1)
    sent = feed.step(sub, core.clock.now())
    assert [m["T"] for m in sent] == ["b"]
    original = core.market.bar_at
    revised = original("SPY", sent[0]["t"])._replace(v=sent[0]["v"] + 100)
    monkeypatch.setattr(core.market, "bar_at", lambda s, t: revised if s == "SPY" else original(s, t))
    core.advance(timedelta(seconds=1).total_seconds() / 60)
    out = feed.step(sub, core.clock.now())
    assert [(m["T"], m["v"]) for m in out] == [("u", sent[0]["v"] + 100)]


def test_cli_refuses_a_stream_connection_limit_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    from simulator.__main__ import parse_serve_args

    with pytest.raises(SystemExit) as exit_info:
        parse_serve_args(["--stream-connections", "0"])
    assert exit_info.value.code == 2
    assert "--stream-connections must be an integer >= 1" in capsys.readouterr().err
    assert parse_serve_args(["--sip"]).sip is True


async def test_a_simulator_bug_ends_the_connection_with_500_and_is_logged(
        sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await sim.connect(auth=True)
    await client.ask({"action": "subscribe", "bars": ["SPY"]})

    def explode(*_args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sim.core.market, "minute_bars", explode)
    with capture_logs() as logs:
        sim.core.advance(1)
        assert await client.recv() == error(500, "internal error")
        assert (await client.ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert any(entry["event"] == "sim_data_stream_failed" for entry in logs)
