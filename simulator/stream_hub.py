"""Every open stream connection of one simulator app, so the control API can drop them all.

The trading stream (``/stream``) and the market-data streams (``/v2/iex``, ``/v2/sip``,
``/v2/test``) register each websocket here for as long as it is open; ``POST
/_sim/v1/streams/drop`` calls :meth:`StreamHub.drop_all` to rehearse a broker-side
disconnect: the clients see the socket close and must reconnect, re-authenticate and
re-subscribe, as they must at Alpaca.
"""

from __future__ import annotations

import asyncio

from aiohttp import WSCloseCode, web

__all__ = ["STREAM_HUB", "StreamHub"]

#: How long :meth:`StreamHub.drop_all` waits for the clients' close replies.
DROP_WAIT_SECONDS = 2.0


class StreamHub:
    """The set of open stream websockets (trading and market data alike)."""

    def __init__(self) -> None:
        self._open: set[web.WebSocketResponse] = set()

    def add(self, ws: web.WebSocketResponse) -> None:
        """Register an open connection."""
        self._open.add(ws)

    def __len__(self) -> int:
        return len(self._open)

    def discard(self, ws: web.WebSocketResponse) -> None:
        """Forget a connection (closed by either side); unknown ones are ignored."""
        self._open.discard(ws)

    async def drop_all(self) -> int:
        """Close every registered connection at once; returns how many were open."""
        victims = [ws for ws in self._open if not ws.closed]
        self._open.clear()
        # Bounded: a client that never answers the close frame must not hold the caller
        # (aiohttp then drops the socket itself after the connection's close timeout).
        closing = [asyncio.ensure_future(ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped"))
                   for ws in victims]
        if closing:
            await asyncio.wait(closing, timeout=DROP_WAIT_SECONDS)
        return len(victims)


STREAM_HUB: web.AppKey[StreamHub] = web.AppKey("sim_stream_hub", StreamHub)
