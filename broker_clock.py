"""A clock that follows the broker's own clock (``GET /v2/clock``).

For an Alpaca-compatible server whose time is not the wall clock — a simulator on loopback
running at 60x, or replaying 2021 — the daemon must see the broker's time, or its sessions,
day-trade windows and journal timestamps would disagree with the fills it receives. The
clock reads the broker's timestamp, then extrapolates with the wall clock at the rate it
measured between two readings (1x for Alpaca itself), re-reading every ``resync_seconds``
of wall time. Sleeping ``s`` market seconds waits ``s / rate`` wall seconds.

``main.py`` uses it when the base URL is a loopback address (a local simulator);
``api.clock`` forces ``wall`` or ``broker``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any, Callable

import structlog

from clock import UTC

log = structlog.get_logger(__name__)

MIN_RATE, MAX_RATE = 0.5, 100_000.0


class BrokerClock:
    """``now()`` in the broker's time; call :meth:`sync` once before use (``start``)."""

    def __init__(self, broker: Any, *, resync_seconds: float = 30.0,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self._broker = broker
        self._resync = resync_seconds
        self._wall = wall
        self._anchor: datetime | None = None
        self._anchor_wall = 0.0
        self._rate = 1.0

    @property
    def rate(self) -> float:
        """Broker seconds per wall second, as last measured."""
        return self._rate

    async def sync(self) -> datetime:
        """Read the broker's clock; update the anchor and the measured rate."""
        reading = await self._broker.get_clock()
        wall = self._wall()
        broker_now = reading.timestamp.astimezone(UTC)
        if self._anchor is not None and wall - self._anchor_wall > 0.05:
            measured = (broker_now - self._anchor).total_seconds() / (wall - self._anchor_wall)
            if measured > 0:
                self._rate = min(max(measured, MIN_RATE), MAX_RATE)
        self._anchor, self._anchor_wall = broker_now, wall
        return broker_now

    def now(self) -> datetime:
        if self._anchor is None:
            raise RuntimeError("BrokerClock.now() before sync(): call await clock.sync() first")
        return self._anchor + timedelta(seconds=(self._wall() - self._anchor_wall) * self._rate)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of broker time, re-reading the broker's clock now and then."""
        target = self.now() + timedelta(seconds=max(0.0, seconds))
        while True:
            remaining = (target - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining / self._rate, self._resync))
            try:
                await self.sync()
            except Exception as exc:  # the loop handles a broker outage; keep extrapolating
                log.debug("broker_clock_sync_failed", error=repr(exc))
