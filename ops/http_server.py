"""The daemon's HTTP endpoint: ``/health``, ``/metrics`` and a live, read-only dashboard.

Served by aiohttp inside the daemon's event loop (it only reads :class:`ops.telemetry.Telemetry`;
nothing it serves can change the daemon). Routes, all GET:

* ``/health``: JSON for a watchdog (:mod:`ops.health`), 200 ok/degraded, 503 stale;
* ``/metrics``: Prometheus text (:mod:`ops.metrics`);
* ``/``: the dashboard page; ``/static/...`` its script and style (files in
  ``ops/dashboard/``, no CDN: it works offline); ``/api/snapshot``: the picture as JSON;
  ``/events``: the same picture as server-sent events, pushed when it changes.

Loopback by default (``127.0.0.1:8686``). Any other bind address needs a token
(``http.token`` / ``TRADING_HTTP_TOKEN``; config refuses to start without one): every request
must then carry ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (the dashboard passes the
one it was opened with on to its own requests); only the page's own files, which hold no
data, are served without it. On loopback, requests whose ``Host`` is not a
loopback name are refused, so a web page cannot reach the dashboard by DNS rebinding.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ops.health import health
from ops.metrics import CONTENT_TYPE
from ops.telemetry import Telemetry

__all__ = ["HttpServer", "HttpStartError", "snapshot"]

DASHBOARD = Path(__file__).resolve().parent / "dashboard"
_STATIC = {"dashboard.js": "application/javascript", "dashboard.css": "text/css", "favicon.svg": "image/svg+xml"}
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: How often an open event stream looks for a change (wall seconds), and the longest it goes
#: without sending the picture (the market clock and the cycle's age move on their own).
SSE_POLL_SECONDS = 0.25
SSE_REFRESH_SECONDS = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_public(path: str) -> bool:
    """The dashboard's shell (page, script, style, icon) holds no data: served without the
    token, so the page can load and pass the token it was opened with to the data routes."""
    return path in ("/", "/favicon.ico") or path.startswith("/static/")


class HttpStartError(Exception):
    """The endpoint could not listen (port taken, address not on this host); one line."""


def snapshot(telemetry: Telemetry, *, stale_after_seconds: float) -> dict[str, Any]:
    """Everything the dashboard shows, JSON-friendly (money as strings, as the journal keeps it)."""
    code, body = health(telemetry, stale_after_seconds=stale_after_seconds)  # refreshes too
    t = telemetry
    day_pnl = str(t.equity - t.session_start_equity) if t.equity is not None and t.session_start_equity else None
    return {
        "version": t.version,
        "equity": str(t.equity) if t.equity is not None else None,
        "session_start_equity": str(t.session_start_equity) if t.session_start_equity is not None else None,
        "day_pnl": day_pnl,
        "curve": list(t.curve),
        "positions": t.cycle.get("position_details") or [],
        "orders": t.cycle.get("order_details") or [],
        "as_of": t.cycle.get("at") or t.cycle.get("market_time"),
        "decisions": list(t.decisions),
        "alerts": list(t.alerts),
        "safety": t.safety,
        "market": t.market,
        "health": body,
        "counts": t.counts,
    }


class HttpServer:
    """The endpoint on ``host:port`` (``port`` 0: any free port, see :attr:`port`)."""

    def __init__(self, telemetry: Telemetry, *, host: str = "127.0.0.1", port: int = 8686,
                 token: str | None = None, stale_after_seconds: float = 30.0) -> None:
        self.telemetry = telemetry
        self.host = host
        self.port = port
        self._token = token
        self._loopback = host in _LOOPBACK_NAMES
        self.stale_after_seconds = stale_after_seconds
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def requires_token(self) -> bool:
        return self._token is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/favicon.ico", self._favicon)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/events", self._events)
        return app

    async def start(self) -> None:
        """Listen; :class:`HttpStartError` (one line) when the address cannot be used."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = exc.strerror or str(exc)
            raise HttpStartError(f"http: cannot listen on {self.host}:{self.port} ({reason}); give "
                                 "--http another port, or --http off") from None
        self._runner = runner
        if runner.addresses:  # the port actually bound (port 0 asks the kernel for a free one)
            self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- access ----------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        if self._loopback and request.host.rsplit(":", 1)[0] not in _LOOPBACK_NAMES:
            return web.Response(status=403, text="forbidden: not a loopback host name\n")
        if self._token is not None and not _is_public(request.path) and not self._authorized(request):
            return web.Response(status=401, text="unauthorized: give the token (Authorization: Bearer ...)\n",
                                headers={"WWW-Authenticate": "Bearer"})
        response = await handler(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def _authorized(self, request: web.Request) -> bool:
        given = request.query.get("token", "")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        expected = self._token or ""
        return hmac.compare_digest(given.encode(), expected.encode())

    # -- routes ----------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=(DASHBOARD / "index.html").read_bytes(), content_type="text/html", charset="utf-8")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=(DASHBOARD / name).read_bytes(), content_type=_STATIC[name], charset="utf-8")

    async def _favicon(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/static/favicon.svg")

    async def _health(self, request: web.Request) -> web.StreamResponse:
        code, body = health(self.telemetry, stale_after_seconds=self.stale_after_seconds)
        return web.json_response(body, status=code)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        self.telemetry.refresh()
        response = web.Response(body=self.telemetry.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(snapshot(self.telemetry, stale_after_seconds=self.stale_after_seconds))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the snapshot now, then whenever it changed (at most 4 a second),
        and at least every ``SSE_REFRESH_SECONDS``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        sent_version: int | None = None
        last_write = loop.time()
        try:
            while not self._closing.is_set():
                if self.telemetry.version != sent_version or loop.time() - last_write > SSE_REFRESH_SECONDS:
                    sent_version = self.telemetry.version
                    data = json.dumps(snapshot(self.telemetry, stale_after_seconds=self.stale_after_seconds),
                                      default=str)
                    await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
                    last_write = loop.time()
                try:
                    await asyncio.wait_for(self._closing.wait(), SSE_POLL_SECONDS)
                except TimeoutError:
                    pass
        except ConnectionResetError:  # the browser went away
            pass
        return response
