"""The embedded simulator behind a gateway built with no arguments (the seed's snippet).

``ResilientAlpacaGateway()`` with no keys configured must work "as written": construct, then
``await initialize()``, then ``await shutdown()``. Without keys the daemon trades the
embedded simulator, so the no-argument gateway does too: this module builds the simulator
core at construction (synchronously, so the gateway knows its clock and its URL at once),
serves it on a loopback port chosen then, from ``initialize()`` on, and stops it at
``shutdown()``. The port is reserved by binding it and letting go just before the server
binds it again; another process grabbing it in between makes ``start`` fail loudly.

Plain values only (no settings object): the gateway reads the configuration and hands over
what the simulator needs.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Sequence
from typing import Any

import structlog

from core import logging_setup

log = structlog.get_logger(__name__)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedSimulator:
    """A simulator core and the loopback server that will serve it, with a fresh key pair."""

    def __init__(self, *, symbols: Sequence[str], seed: int, start: str | None, speed: float | None,
                 cash: float, data_dir: str | None = None, faults: str | None = None) -> None:
        from simulator.core import SimulatorCore

        self.core = SimulatorCore.create(data_dir=data_dir, symbols=list(symbols), seed=seed, start=start,
                                         speed=speed, cash=cash, faults=faults)
        # The keys exist only for this process; the redactor learns them before any log line.
        self.key_id = "SIM" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        logging_setup.add_secret(self.key_id)
        logging_setup.add_secret(self.secret_key)
        self.port = _free_loopback_port()
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def clock(self) -> Any:
        return self.core.clock

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Serve the simulator (idempotent)."""
        if self._server is not None:
            return
        from simulator.server import start_server

        self._server = await start_server(self.core, host="127.0.0.1", port=self.port,
                                          rate_limit_per_minute=None, key=self.key_id, secret=self.secret_key)
        log.info("embedded_simulator_started", base_url=self.url)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()


def gateway_arguments(settings: Any) -> tuple[dict[str, Any], EmbeddedSimulator | None]:
    """The gateway's keyword arguments for ``settings`` (a :class:`config.Settings`), as
    ``main.open_broker`` wires them, and the embedded simulator in sim mode (not started)."""
    from broker.rate_limit import RateLimiter

    api, rl = settings.api, settings.rate_limit
    embedded: EmbeddedSimulator | None = None
    limiter_kw: dict[str, Any] = {}
    kw: dict[str, Any] = {}
    if settings.mode == "sim":
        sim = settings.sim
        embedded = EmbeddedSimulator(symbols=settings.scanning.symbols, seed=sim.seed, start=sim.start,
                                     speed=sim.speed, cash=sim.cash, data_dir=sim.data_dir, faults=sim.faults)
        clock = embedded.clock
        limiter_kw = {"monotonic": lambda: clock.now().timestamp(), "sleep": clock.sleep}
        kw.update(base_url=embedded.url, data_url=embedded.url, key_id=embedded.key_id,
                  secret_key=embedded.secret_key, clock=clock, sleep=clock.sleep)
    else:
        kw.update(base_url=api.base_url, data_url=api.data_url, key_id=api.key_id, secret_key=api.secret_key)
    kw.update(
        mode=settings.mode, live_enabled=settings.live_trading_enabled, timeout=api.timeout_seconds,
        max_retries=api.max_retries, backoff_base=api.backoff_base_seconds, backoff_max=api.backoff_max_seconds,
        rate_limiter=RateLimiter(max_per_minute=rl.max_requests_per_minute, buffer=rl.rate_limit_buffer,
                                 burst_allowance=rl.burst_allowance, cooldown_seconds=rl.cooldown_seconds,
                                 **limiter_kw),
        max_quote_age=settings.data_quality.max_quote_age_seconds, data_feed=api.data_feed,
    )
    return kw, embedded
