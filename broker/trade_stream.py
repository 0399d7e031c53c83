"""The daemon's client of Alpaca's trading stream (``trade_updates``), over aiohttp websockets.

What it does, and what it leaves to its owner (``engine.stream_feed``):

* **Connect, authenticate, listen** exactly as Alpaca expects: ``{"action":"authenticate",
  "data":{"key_id":..,"secret_key":..}}`` (in-band: the upgrade carries no keys), one
  authorization reply, then ``{"action":"listen","data":{"streams":["trade_updates"]}}`` and
  its ``listening`` acknowledgement. Text and binary frames are both read (Alpaca's paper
  stream sends JSON in binary frames).
* **Events** are parsed at the edge (:func:`broker.trade_updates.parse_trade_update`) and
  handed, in order, to ``on_update``. Each connection that reaches ``listening`` is reported
  to ``on_connected(n)`` (n = 1 for the first, more after a reconnect): the owner's REST
  catch-up starts there.
* **Watchdog**: the client pings every ``heartbeat_s`` (wall seconds: this is the network,
  not market time); no frame and no pong for ``stale_after_s`` while ``is_active()`` (market
  hours) counts as a dead stream (``stream_stale``) and the socket is dropped.
* **Reconnect** with exponential backoff (``backoff_min_s`` .. ``backoff_max_s``, jittered)
  after any drop; a connection that comes back logs ``stream_reconnected``. Keys refused
  (``stream_auth_refused``) back off at the maximum: the REST side reports bad keys.

The secret is sent only inside the authenticate message; it never appears in a log line or
an exception message.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog

from broker.trade_updates import TradeUpdate, parse_trade_update

log = structlog.get_logger(__name__)

__all__ = ["StreamAuthRefused", "StreamProtocolError", "TradeStreamClient", "trading_stream_url"]

STREAM_PATH = "/stream"


class StreamProtocolError(Exception):
    """The server answered the handshake with something Alpaca never sends."""


class StreamAuthRefused(StreamProtocolError):
    """The stream refused the key pair (``"status": "unauthorized"``)."""


def trading_stream_url(base_url: str, configured: str | None = None) -> str:
    """The trading stream's URL: ``configured`` when given, else ``base_url`` (Alpaca's
    ``APCA_API_BASE_URL``) with http -> ws, https -> wss and the path ``/stream``
    (``https://paper-api.alpaca.markets`` -> ``wss://paper-api.alpaca.markets/stream``)."""
    if configured:
        return configured
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"cannot derive a stream URL from base URL scheme {parts.scheme!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v2"):
        path = path[: -len("/v2")]
    return urlunsplit((scheme, parts.netloc, path + STREAM_PATH, "", ""))


UpdateHandler = Callable[[TradeUpdate], Awaitable[None]]
ConnectHandler = Callable[[int], Awaitable[None]]


class TradeStreamClient:
    """One trading-stream connection at a time, reconnected until ``stop`` is set."""

    def __init__(
        self,
        url: str,
        key_id: str,
        secret_key: str,
        *,
        on_update: UpdateHandler,
        on_connected: ConnectHandler,
        heartbeat_s: float = 10.0,
        stale_after_s: float = 30.0,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        is_active: Callable[[], bool] = lambda: True,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self._key_id = key_id
        self._secret_key = secret_key
        self._on_update = on_update
        self._on_connected = on_connected
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self.is_active = is_active
        self._rng = rng or random.Random()
        self.listening = False
        self.connections = 0  # connections that reached "listening"
        self.failures_in_a_row = 0
        self.last_frame_at: float | None = None  # monotonic
        self.down_since: float | None = time.monotonic()
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Listening, and heard from (a frame or a pong) within ``stale_after_s``."""
        if not self.listening or self.last_frame_at is None:
            return False
        return time.monotonic() - self.last_frame_at <= self.stale_after_s

    async def drop(self) -> None:
        """Close the current connection (the run loop reconnects)."""
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, listen and deliver events until ``stop``; reconnect after every drop."""
        timeout = aiohttp.ClientWSTimeout(ws_close=2.0)
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                delay = await self._one_connection(session, stop, timeout)
                if stop.is_set():
                    break
                await _wait(stop, delay)

    async def _one_connection(self, session: aiohttp.ClientSession, stop: asyncio.Event,
                              timeout: aiohttp.ClientWSTimeout) -> float:
        """One connection's life; returns how long to wait before the next attempt."""
        try:
            async with session.ws_connect(self.url, autoping=False, timeout=timeout,
                                          max_msg_size=16 * 1024 * 1024) as ws:
                self._ws = ws
                await asyncio.wait_for(self._handshake(ws), self.connect_timeout_s)
                await self._listening()
                await self._read(ws, stop)
            reason = "closed by the server"
        except StreamAuthRefused:
            self._down()
            self.failures_in_a_row += 1
            log.error("stream_auth_refused", url=self.url, attempts=self.failures_in_a_row)
            return self.backoff_max_s
        except asyncio.CancelledError:
            self._down()
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, StreamProtocolError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # anything else the server sends or we trip on: reconnect, never end the stream
            log.error("stream_connection_failed", url=self.url, error=repr(exc))
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._ws = None
        was_listening = self.listening
        self._down()
        if not was_listening:
            self.failures_in_a_row += 1
        if not stop.is_set():
            log.warning("stream_disconnected", url=self.url, reason=reason, failures_in_a_row=self.failures_in_a_row)
        return self._backoff()

    def _down(self) -> None:
        if self.listening:
            self.down_since = time.monotonic()
        self.listening = False

    def _backoff(self) -> float:
        """Exponential in the failures in a row, with jitter (50-100 %); at least the minimum."""
        exponent = max(0, self.failures_in_a_row - 1)
        ceiling = min(self.backoff_max_s, self.backoff_min_s * 2 ** min(exponent, 16))
        return max(self.backoff_min_s * 0.5, ceiling * (0.5 + 0.5 * self._rng.random()))

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(json.dumps({"action": "authenticate",
                                      "data": {"key_id": self._key_id, "secret_key": self._secret_key}}))
        reply = await self._control_reply(ws)
        data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
        if reply.get("stream") != "authorization" or data.get("status") != "authorized":
            if reply.get("stream") == "authorization":
                raise StreamAuthRefused(str(data.get("message") or "unauthorized"))
            raise StreamProtocolError(f"unexpected reply to authenticate: stream={reply.get('stream')!r}")
        await ws.send_str(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        reply = await self._control_reply(ws)
        streams = (reply.get("data") or {}).get("streams") if reply.get("stream") == "listening" else None
        if not isinstance(streams, list) or "trade_updates" not in streams:
            raise StreamProtocolError(f"trade_updates not granted: {reply!r}"[:300])

    @staticmethod
    async def _control_reply(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        """The next JSON object from the server (pings answered on the way)."""
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
                continue
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise StreamProtocolError(f"connection ended during the handshake ({msg.type.name})")
            try:
                decoded = json.loads(msg.data)
            except ValueError:
                raise StreamProtocolError("the server sent a frame that is not JSON") from None
            if isinstance(decoded, dict):
                return decoded
            raise StreamProtocolError("the server sent JSON that is not an object")

    async def _listening(self) -> None:
        now = time.monotonic()
        self.last_frame_at = now
        self.listening = True
        self.connections += 1
        down_for = round(now - self.down_since, 3) if self.down_since is not None else None
        attempts = self.failures_in_a_row + 1
        self.failures_in_a_row = 0
        if self.connections == 1:
            log.info("stream_connected", url=self.url)
        else:
            log.info("stream_reconnected", url=self.url, connection=self.connections, attempts=attempts,
                     down_seconds=down_for)
        self.down_since = None
        await self._on_connected(self.connections)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event) -> None:
        """Deliver events until the socket ends, ``stop`` is set, or the stream goes stale."""
        last_ping = time.monotonic()
        while not stop.is_set():
            try:
                msg = await ws.receive(timeout=min(self.heartbeat_s, 1.0))
            except asyncio.TimeoutError:
                now = time.monotonic()
                if self.last_frame_at is not None and now - self.last_frame_at > self.stale_after_s \
                        and self.is_active():
                    log.warning("stream_stale", url=self.url, silent_seconds=round(now - self.last_frame_at, 1))
                    return
                if now - last_ping >= self.heartbeat_s:
                    await ws.ping()
                    last_ping = now
                continue
            kind = msg.type
            if kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR):
                return
            self.last_frame_at = time.monotonic()
            if kind == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif kind in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                await self._dispatch(msg.data)

    async def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("stream_message_unreadable", size=len(raw))
            return
        update = parse_trade_update(message)
        if update is not None:
            await self._on_update(update)
        elif isinstance(message, dict) and message.get("stream") not in ("listening", "authorization"):
            log.info("stream_message_ignored", stream=message.get("stream"))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` of wall time unless ``stop`` is set first."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except asyncio.TimeoutError:
        pass
