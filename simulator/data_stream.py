"""Alpaca's real-time stock data websocket (``/v2/iex``, ``/v2/sip``, ``/v2/test``).

Spoken as ``wss://stream.data.alpaca.markets/v2/{feed}`` speaks it and as alpaca-py's
``StockDataStream`` expects it:

* Every server message is an array; control messages come alone. On connect:
  ``[{"T":"success","msg":"connected"}]``. Auth is in-band,
  ``{"action":"auth","key":..,"secret":..}`` -> ``[{"T":"success","msg":"authenticated"}]``,
  within 10 s (or the ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` headers on the upgrade).
  The upgrade itself needs no key, so the server's REST auth middleware lets these paths
  through.
* ``{"action":"subscribe"|"unsubscribe", "trades":[..], "quotes":[..], "bars":[..],
  "updatedBars":[..], "dailyBars":[..], "statuses":[..], "lulds":[..]}`` -> the full
  ``subscription`` message.
* Codec: MessagePack binary frames when the upgrade carries ``Content-Type:
  application/msgpack`` (alpaca-py always sends it), with ``t`` as a msgpack Timestamp;
  otherwise JSON text with RFC 3339 times. Client frames are read in either form.
* Errors, with Alpaca's codes and words: 400 invalid syntax, 401 not authenticated, 402
  auth failed, 403 already authenticated, 404 auth timeout (then closed), 405 symbol limit
  exceeded (the plan's limit on trades and quotes symbols: 30 on iex and test, none on a
  SIP plan; the subscription stays as it was), 406 connection limit exceeded (one
  authenticated connection per key and endpoint; then closed), 409 insufficient
  subscription (``/v2/sip`` when the simulator's data plan has no SIP, as the REST
  ``feed=sip`` answers 403; then closed), 500 internal error (a simulator bug, logged as
  ``sim_data_stream_failed``; then closed).
* Data comes from the simulator's market on its clock (see :mod:`simulator.data_feed`);
  ``/v2/test`` serves the made-up symbol FAKEPACA from its own synthetic market, on the
  same clock (so it moves when the simulated trading day does, not 24/7 as Alpaca's).

Every connection is registered in the app's :class:`simulator.stream_hub.StreamHub`, so
``POST /_sim/v1/streams/drop`` closes it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable

import msgpack
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from simulator.core import SimulatorCore
from simulator.data_feed import CHANNELS, MarketFeed, Subscription
from simulator.market import Market
from simulator.market_data_api import MarketDataApi, rfc3339
from simulator.stream_hub import STREAM_HUB

log = structlog.get_logger(__name__)

__all__ = ["DATA_STREAMS", "DataStreams", "FeedPlan", "PLANS", "STREAM_PATHS", "TEST_SYMBOL"]

Json = dict[str, Any]
MSGPACK = "application/msgpack"
TEST_SYMBOL = "FAKEPACA"
AUTH_TIMEOUT_S = 10.0
TICK_S = 0.25
MAX_BATCH = 1000

ERRORS = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    409: "insufficient subscription",
    500: "internal error",
}
_CLOSING = {404, 406, 409, 500}


@dataclass(frozen=True)
class FeedPlan:
    """What one endpoint offers: its feed name, the symbol limit of trades and quotes
    (``None``: unlimited) and whether it needs a SIP data plan."""

    feed: str
    symbol_limit: int | None
    needs_sip: bool = False


PLANS = {
    "/v2/iex": FeedPlan("iex", 30),
    "/v2/sip": FeedPlan("sip", None, needs_sip=True),
    "/v2/test": FeedPlan("test", 30),
}
STREAM_PATHS = tuple(PLANS)


class BadMessage(Exception):
    """A client frame that is not an action Alpaca understands (400 invalid syntax)."""


def _plain(value: Any, *, packed: bool) -> Any:
    if isinstance(value, datetime):
        return msgpack.Timestamp.from_datetime(value) if packed else rfc3339(value)
    return value


def encode(messages: list[Json], *, packed: bool) -> bytes | str:
    """One frame: a msgpack or JSON array of ``messages`` with their times converted."""
    items = [{k: _plain(v, packed=packed) for k, v in m.items()} for m in messages]
    if packed:
        return msgpack.packb(items, use_bin_type=True)
    return json.dumps(items, separators=(",", ":"))


def decode(kind: WSMsgType, data: Any) -> Json:
    """A client frame as an action object; :class:`BadMessage` when it is none."""
    try:
        if kind == WSMsgType.BINARY:
            try:
                obj = msgpack.unpackb(data, raw=False)
            except (ValueError, msgpack.UnpackException):
                obj = json.loads(data)
        else:
            obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, TypeError):
        raise BadMessage("not msgpack or JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("action"), str):
        raise BadMessage("not an action object")
    return obj


def channel_request(obj: Json) -> dict[str, list[str]]:
    """The channel lists of a (un)subscribe action; every named channel must be a list of
    non-empty strings (unknown keys, such as alpaca-py's never-sent extras, are ignored)."""
    request: dict[str, list[str]] = {}
    for name in CHANNELS:
        if name not in obj or obj[name] is None:
            continue
        symbols = obj[name]
        if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
            raise BadMessage(f"{name} is not a list of symbols")
        request[name] = symbols
    return request


class DataStreams:
    """The market-data websocket endpoints of one simulator app (see the module docstring)."""

    def __init__(
        self,
        core: SimulatorCore,
        *,
        key: str | None = None,
        secret: str | None = None,
        connection_limit: int = 1,
        auth_timeout_s: float = AUTH_TIMEOUT_S,
        tick_s: float = TICK_S,
    ) -> None:
        self.core = core
        self.key = key
        self.secret = secret
        self.connection_limit = connection_limit
        self.auth_timeout_s = auth_timeout_s
        self.tick_s = tick_s
        self._users: dict[tuple[str, str], set[web.WebSocketResponse]] = {}
        self._test_data: MarketDataApi | None = None
        self._sessions: set[_Session] = set()

    def routes(self) -> list[tuple[str, str, Any]]:
        """``(method, path, handler)`` for every endpoint."""
        return [("GET", path, self.handle) for path in STREAM_PATHS]

    def data_for(self, plan: FeedPlan) -> MarketDataApi:
        """The market a feed reads: the simulator's, or the test stream's FAKEPACA market."""
        if plan.feed != "test":
            return self.core.data
        if self._test_data is None:
            market = Market.synthetic([TEST_SYMBOL], seed=self.core.seed,
                                      calendar=self.core.calendar)
            self._test_data = MarketDataApi(market, self.core.clock)
        return self._test_data

    def subscribed_connections(self) -> int:
        """Open, authenticated connections with a subscription (for tests and state)."""
        return sum(1 for s in self._sessions
                   if not s.ws.closed and s.key is not None and not s.sub.empty())

    def credentials_ok(self, key: Any, secret: Any) -> bool:
        if not isinstance(key, str) or not isinstance(secret, str) or not key or not secret:
            return False
        return self.key is None or (key == self.key and secret == self.secret)

    def admit(self, path: str, key: str, ws: web.WebSocketResponse) -> bool:
        """Count an authenticated connection of ``key`` on ``path``; False over the limit."""
        users = self._users.setdefault((path, key), set())
        live = {w for w in users if not w.closed}
        if len(live) >= self.connection_limit:
            return False
        live.add(ws)
        self._users[(path, key)] = live
        return True

    def release(self, path: str, key: str | None, ws: web.WebSocketResponse) -> None:
        if key is not None:
            self._users.get((path, key), set()).discard(ws)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The websocket upgrade of ``/v2/{feed}``; a plain GET gets a 400 JSON answer."""
        ws = web.WebSocketResponse(autoping=True, max_msg_size=4 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            return web.json_response({"message": "websocket upgrade expected"}, status=400)
        await ws.prepare(request)
        session = _Session(self, request, ws)
        hub = request.app[STREAM_HUB]
        hub.add(ws)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            hub.discard(ws)
            self.release(request.path, session.key, ws)
        return ws


DATA_STREAMS: web.AppKey[DataStreams] = web.AppKey("sim_data_streams", DataStreams)


class _Session:
    """One connection: auth, subscriptions, and the data pump."""

    def __init__(self, streams: DataStreams, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.streams = streams
        self.path = request.path
        self.plan = PLANS[self.path]
        self.ws = ws
        self.headers = request.headers
        self.packed = MSGPACK in request.headers.get("Content-Type", "").lower()
        self.key: str | None = None
        self.sub = Subscription()
        self.feed: MarketFeed | None = None
        self._send_lock = asyncio.Lock()

    async def send(self, messages: list[Json]) -> None:
        frame = encode(messages, packed=self.packed)
        async with self._send_lock:
            if self.ws.closed:
                return
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
            except ConnectionResetError:  # the client went away mid-send
                return

    async def error(self, code: int) -> None:
        await self.send([{"T": "error", "code": code, "msg": ERRORS[code]}])
        if code in _CLOSING:
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=ERRORS[code].encode())

    async def run(self) -> None:
        await self.send([{"T": "success", "msg": "connected"}])
        header_key = self.headers.get("APCA-API-KEY-ID")
        if header_key is not None:
            await self.authenticate(header_key, self.headers.get("APCA-API-SECRET-KEY"))
        log.info("sim_data_stream_connected", path=self.path, codec="msgpack" if self.packed else "json")
        pump = asyncio.create_task(self.guarded(self.pump()))
        try:
            await self.guarded(self.receive())
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            log.info("sim_data_stream_closed", path=self.path)

    async def guarded(self, work: Awaitable[None]) -> None:
        """Run ``work``; a simulator bug ends the connection with Alpaca's 500, logged,
        rather than leaving a socket that is open but mute."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sim_data_stream_failed", path=self.path)
            await self.error(500)

    async def receive(self) -> None:
        async for frame in self.ws:
            if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            await self.on_frame(frame.type, frame.data)

    async def on_frame(self, kind: WSMsgType, data: Any) -> None:
        try:
            obj = decode(kind, data)
            action = obj["action"]
            if action == "auth":
                await self.authenticate(obj.get("key"), obj.get("secret"))
            elif action in ("subscribe", "unsubscribe"):
                request = channel_request(obj)
                if self.key is None:
                    await self.error(401)
                else:
                    await self.change(action, request)
            else:
                raise BadMessage(f"unknown action {action!r}")
        except BadMessage:
            await self.error(400)

    async def authenticate(self, key: Any, secret: Any) -> None:
        if self.key is not None:
            await self.error(403)
        elif not self.streams.credentials_ok(key, secret):
            log.info("sim_data_stream_auth_failed", path=self.path)
            await self.error(402)
        elif self.plan.needs_sip and not self.streams.core.data.sip_enabled:
            await self.error(409)
        elif not self.streams.admit(self.path, key, self.ws):
            await self.error(406)
        else:
            self.key = key
            await self.send([{"T": "success", "msg": "authenticated"}])

    async def change(self, action: str, request: dict[str, list[str]]) -> None:
        wanted = self.sub.changed(action, request)
        limit = self.plan.symbol_limit
        if limit is not None and wanted.limited_symbols() > limit:
            await self.error(405)
            return
        self.sub = wanted
        now = self.streams.core.clock.now()
        if self.feed is None:
            self.feed = MarketFeed(self.streams.data_for(self.plan), now)
        self.feed.prime(wanted, now)
        await self.send([wanted.reply()])

    async def pump(self) -> None:
        """Send what the market owes the subscription every tick; enforce the auth timeout."""
        streams = self.streams
        clock = streams.core.clock
        loop = asyncio.get_running_loop()
        deadline = loop.time() + streams.auth_timeout_s
        while not self.ws.closed:
            await asyncio.sleep(streams.tick_s)
            if self.key is None:
                if loop.time() >= deadline:
                    await self.error(404)
                    return
                continue
            if self.feed is None or self.sub.empty():
                continue
            messages = self.feed.step(self.sub, clock.now())
            for i in range(0, len(messages), MAX_BATCH):
                await self.send(messages[i:i + MAX_BATCH])
