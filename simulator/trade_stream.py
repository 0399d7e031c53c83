"""Alpaca's trading stream (``trade_updates``) at ``/stream``, as alpaca-py's TradingStream speaks it.

The upgrade carries no ``APCA-*`` headers (alpaca-py authenticates in-band), so the REST auth
middleware lets ``/stream`` through and this handler checks the key pair itself:

1. The server sends nothing until the client authenticates with
   ``{"action":"authenticate","data":{"key_id":K,"secret_key":S}}`` (``"action":"auth"`` with
   ``key``/``secret`` is taken too). The one reply is
   ``{"stream":"authorization","data":{"action":"authenticate","status":"authorized"}}``, or
   ``{"stream":"authorization","data":{"action":"authenticate","message":"access key
   verification failed","status":"unauthorized"}}`` after which the server closes the socket
   (a wrong pair is not retried on the same connection; alpaca-py reconnects).
2. ``{"action":"listen","data":{"streams":["trade_updates"]}}`` is acknowledged with
   ``{"stream":"listening","data":{"streams":["trade_updates"]}}``; the list is the whole
   desired set (``[]`` stops the updates) and unknown streams are left out of the reply.
   A listen before authorization gets ``{"stream":"authorization","data":{"action":"listen",
   "status":"unauthorized"}}``.
3. Every order state change of the simulated broker (:attr:`simulator.engine.SimBroker.on_event`)
   is pushed to each listening connection as ``{"stream":"trade_updates","data":{"event":...,
   "order":{...},"timestamp":...}}``, fills with ``price``, ``qty``, ``position_qty`` (signed)
   and ``execution_id`` (a UUID, the same as in the FILL activity's id). Fields that do not
   apply are omitted, as Alpaca does.

Frames: the client may send text or binary JSON. The server answers JSON in **binary** frames
(Alpaca's paper stream does; alpaca-py's ``json.loads`` reads bytes), or MessagePack when the
upgrade asked for ``Content-Type: application/msgpack``. A message that is not a JSON object
is answered ``{"stream":"error","data":{"error_message":"invalid syntax"}}`` (Alpaca's
data-stream wording, code 400, for lack of a documented trading-stream one).

While at least one connection listens, :class:`TradeStreams` keeps the broker moving with the
clock (``core.sync()`` a few times a second), so fills happen and are pushed without anybody
polling over REST, as at a real broker. It also draws the ``stream_drop`` fault.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from simulator.core import SimulatorCore
from simulator.stream_hub import StreamHub

log = structlog.get_logger(__name__)

__all__ = ["TRADE_STREAM_PATH", "TradeStreams"]

TRADE_STREAM_PATH = "/stream"
TRADE_UPDATES = "trade_updates"
MSGPACK_TYPE = "application/msgpack"
#: Wall seconds between the background syncs and ``stream_drop`` draws.
TICK_SECONDS = 0.25
#: How long a closing handshake may take before aiohttp drops the socket.
CLOSE_TIMEOUT_SECONDS = 2.0
#: Events queued for one slow client before it is disconnected (Alpaca drops slow readers).
MAX_QUEUED = 10_000
_FILL_FIELDS = ("price", "qty", "position_qty", "execution_id")


def _authorization(action: str, *, ok: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"action": action, "status": "authorized" if ok else "unauthorized"}
    if not ok and action == "authenticate":
        data["message"] = "access key verification failed"
    return {"stream": "authorization", "data": data}


def wire_event(event: dict[str, Any]) -> dict[str, Any]:
    """The ``trade_updates`` message for one broker event (fields that do not apply omitted)."""
    data = {key: value for key, value in event.items() if not (key in _FILL_FIELDS and value is None)}
    return {"stream": TRADE_UPDATES, "data": data}


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    msgpack: bool
    authorized: bool = False
    listening: bool = False
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


class TradeStreams:
    """The ``/stream`` endpoint of one simulator app: connections, event fan-out, the ticker."""

    def __init__(self, core: SimulatorCore, hub: StreamHub, *, key: str | None, secret: str | None) -> None:
        self.core = core
        self.hub = hub
        self.key = key
        self.secret = secret
        self._connections: set[_Connection] = set()
        self._ticker: asyncio.Task[None] | None = None
        core.broker.on_event = self._on_event

    def routes(self) -> list[tuple[str, str, Any]]:
        """(method, path, handler) for the app's router."""
        return [("GET", TRADE_STREAM_PATH, self.handle)]

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every listening connection (called inside the broker)."""
        if not self._connections:
            return
        message = wire_event(event)
        for conn in self._connections:
            if conn.listening and not conn.ws.closed:
                if conn.queue.qsize() >= MAX_QUEUED:
                    log.warning("sim_stream_slow_client", queued=conn.queue.qsize())
                    asyncio.ensure_future(conn.ws.close())
                    continue
                conn.queue.put_nowait(message)

    # -- the websocket ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One trading-stream connection, from upgrade to close."""
        ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT_SECONDS, autoping=True)
        await ws.prepare(request)
        wants_msgpack = MSGPACK_TYPE in request.headers.get("Content-Type", "") and _msgpack() is not None
        conn = _Connection(ws, msgpack=wants_msgpack)
        self.hub.add(ws)
        self._connections.add(conn)
        sender = asyncio.ensure_future(self._send_loop(conn))
        log.info("sim_stream_connected", path=TRADE_STREAM_PATH, streams=len(self._connections))
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if not await self._on_message(conn, msg.data):
                        break
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._connections.discard(conn)
            self.hub.discard(ws)
            sender.cancel()
            if not ws.closed:
                await ws.close()
            log.info("sim_stream_disconnected", path=TRADE_STREAM_PATH, streams=len(self._connections))
        return ws

    async def _on_message(self, conn: _Connection, raw: str | bytes) -> bool:
        """Answer one client message; False when the connection is to be closed."""
        message = self._decode(conn, raw)
        if not isinstance(message, dict):
            await self._send(conn, {"stream": "error", "data": {"error_message": "invalid syntax"}})
            return True
        action = message.get("action")
        data = message.get("data") if isinstance(message.get("data"), dict) else {}
        if action in ("authenticate", "auth"):
            key = data.get("key_id", message.get("key"))
            secret = data.get("secret_key", message.get("secret"))
            ok = self._accepts(key, secret)
            await self._send(conn, _authorization("authenticate", ok=ok))
            if not ok:
                return False
            conn.authorized = True
            return True
        if action == "listen":
            if not conn.authorized:
                await self._send(conn, _authorization("listen", ok=False))
                return True
            streams = data.get("streams")
            wanted = [s for s in streams if s == TRADE_UPDATES] if isinstance(streams, list) else []
            conn.listening = bool(wanted)
            await self._send(conn, {"stream": "listening", "data": {"streams": wanted}})
            return True
        await self._send(conn, {"stream": "error", "data": {"error_message": "invalid syntax"}})
        return True

    def _accepts(self, key: Any, secret: Any) -> bool:
        if not isinstance(key, str) or not isinstance(secret, str) or not key or not secret:
            return False
        return self.key is None or (key == self.key and secret == self.secret)

    @staticmethod
    def _decode(conn: _Connection, raw: str | bytes) -> Any:
        if isinstance(raw, bytes) and conn.msgpack:
            packer = _msgpack()
            try:
                return packer.unpackb(raw) if packer is not None else None
            except Exception:  # noqa: BLE001 - any undecodable frame is "invalid syntax"
                pass
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return None

    async def _send(self, conn: _Connection, message: dict[str, Any]) -> None:
        if conn.ws.closed:
            return
        if conn.msgpack:
            packer = _msgpack()
            assert packer is not None
            await conn.ws.send_bytes(packer.packb(message, use_bin_type=True))
        else:
            await conn.ws.send_bytes(json.dumps(message, separators=(",", ":"), default=str).encode())

    async def _send_loop(self, conn: _Connection) -> None:
        """Deliver the connection's queued events in order."""
        try:
            while True:
                message = await conn.queue.get()
                await self._send(conn, message)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, RuntimeError):
            return  # the socket went away: the reader ends the connection

    # -- keeping time moving, and the stream_drop fault ------------------------------------

    async def start(self, _app: web.Application | None = None) -> None:
        """Start the ticker (the app's ``on_startup``)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        """For the app's life: while a trade stream listens, sync the broker to the clock;
        while any stream (trading or market data) is open, draw ``stream_drop``."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            try:
                if any(c.listening for c in self._connections):
                    self.core.sync()
                if len(self.hub) and self.core.faults.draw_stream_drop(now - last):
                    log.info("sim_fault_injected", fault="stream_drop", connections=len(self.hub))
                    await self.hub.drop_all()
            except Exception:  # noqa: BLE001 - the ticker must outlive one bad step
                log.exception("sim_stream_tick_failed")
            last = now

    async def close(self, _app: web.Application | None = None) -> None:
        """Stop the ticker and close the streams (the app's ``on_shutdown``)."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await self.hub.drop_all()


def _msgpack() -> Any:
    """The msgpack module when installed (alpaca-py depends on it), else None."""
    try:
        import msgpack
    except ImportError:  # pragma: no cover - JSON only then
        return None
    return msgpack
