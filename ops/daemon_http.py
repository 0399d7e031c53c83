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

from ops.http_server import HttpServer
from ops.telemetry import Telemetry, install_log_tap

__all__ = ["DaemonHttp"]

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
