"""The daemon's HTTP endpoint as one object for ``main.py``: telemetry, log tap and server.

``main.py`` starts it before the broker (so a taken port ends the run before anything
trades), attaches the TradingSystem once it exists, and closes it on the way out::

    http = DaemonHttp(settings.http)
    await http.start()              # HttpStartError: the port is taken
    http.telemetry.attach(system)   # reads state, counts the gateway's requests
    ...
    await http.close()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from core.errors import ConfigError
from ops.http_server import HttpServer, HttpStartError
from ops.telemetry import Telemetry, install_log_tap

__all__ = ["DaemonHttp", "start_endpoint"]

log = structlog.get_logger(__name__)


class DaemonHttp:
    """Telemetry fed from the log and the gateway, served by :class:`HttpServer`."""

    def __init__(self, http_settings: Any, telemetry: Telemetry | None = None) -> None:
        self.telemetry = telemetry or Telemetry()
        token = http_settings.token.get_secret_value() if http_settings.token is not None else None
        self.server = HttpServer(self.telemetry, host=http_settings.host, port=http_settings.port,
                                 token=token, stale_after_seconds=http_settings.stale_after_seconds)
        self._remove_tap: Callable[[], None] | None = None

    async def start(self) -> None:
        await self.server.start()
        self._remove_tap = install_log_tap(self.telemetry)
        # the token is deliberately not part of this line (nor of any other)
        log.info("http_server_started", url=self.server.url, host=self.server.host, port=self.server.port,
                 token_required=self.server.requires_token)

    async def close(self) -> None:
        if self._remove_tap is not None:
            self._remove_tap()
            self._remove_tap = None
        await self.server.stop()


async def start_endpoint(http_settings: Any) -> DaemonHttp | None:
    """The endpoint as configured, listening; None when ``--http off``.

    A port or address the user chose that cannot be used is a start-up configuration error
    (:class:`ConfigError`, one line; ``main.py`` exits 2 before touching the broker). The
    *default* port being taken (a second daemon on this machine) only costs this daemon its
    endpoint: it trades on and logs ``http_unavailable``.
    """
    if not http_settings.enabled:
        return None
    http = DaemonHttp(http_settings)
    try:
        await http.start()
    except HttpStartError as exc:
        if {"port", "host"} & set(http_settings.model_fields_set):
            raise ConfigError([str(exc)]) from None
        log.warning("http_unavailable", reason=str(exc), hint="give each daemon its own --http PORT")
        return None
    url = http.server.url
    print(f"Dashboard: {url}   health: {url}health   metrics: {url}metrics", flush=True)
    return http
