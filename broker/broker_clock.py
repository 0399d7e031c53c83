"""A clock that follows the broker's own clock (``GET /v2/clock``).

For an Alpaca-compatible server whose time is not the wall clock — a simulator on loopback
running at 60x, or replaying 2021 — the daemon must see the broker's time, or its sessions,
day-trade windows and journal timestamps would disagree with the fills it receives. The
clock reads the broker's timestamp, then extrapolates with the wall clock at the rate it
measured (1x for Alpaca itself).

Such a broker's time is not a straight line: the simulator crosses a night in about one wall
second (tens of thousands of x), can be told to ``advance`` days at once, or change speed.
So:

* every reading is one attempt (``read``: the gateway's single-attempt clock read; a retry
  inside a clock read is how backoffs once nested 45 levels deep) stamped at the wall-clock
  midpoint of the request;
* a reading farther from the extrapolation than the measurement noise allows is a
  *discontinuity*: the clock re-anchors on it at once (``broker_clock_jump``), so it never
  races ahead of the broker after a jump;
* the rate is not the last slope but a robust one over a window of recent slopes (the median
  of the last five, and never more than the faster of the last two): a night crossed in a
  second is an outlier, not a speed, while a real speed change is adopted within two or
  three readings (``broker_clock_rate_changed``);
* :meth:`sleep` waits in wall-time chunks of at most ``resync_seconds``, re-reads the
  broker's clock after each chunk, recomputes the remaining market time from that reading,
  and returns early after a discontinuity so that the caller re-plans (a long market-time
  sleep can never sleep through a session that the broker reached sooner than planned).

``main.py`` uses it when the base URL is a loopback address (a local simulator);
``api.clock`` forces ``wall`` or ``broker``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from core.clock import UTC

log = structlog.get_logger(__name__)

MIN_RATE, MAX_RATE = 0.001, 1_000_000.0
RATE_WINDOW = 5  # slopes kept for the robust rate
MIN_SLOPE_WALL = 0.05  # wall seconds between readings below which no slope is measured
RATE_CHANGE_RATIO = 0.1  # a rate that moved by more than this is logged as a speed change


class BrokerClock:
    """``now()`` in the broker's time; call :meth:`sync` once before use (``start``)."""

    follows_broker = True  # its sleeps read the broker: backoffs must not use it (core/clock.py)

    def __init__(self, broker: Any, *, resync_seconds: float = 1.0,
                 wall: Callable[[], float] = time.monotonic,
                 read: Callable[[], Awaitable[Any]] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._broker = broker
        self._read = read or getattr(broker, "read_clock_once", None) or broker.get_clock
        self._resync = max(0.01, float(resync_seconds))
        self._wall = wall
        self._wall_sleep = sleep
        self._anchor: datetime | None = None
        self._anchor_wall = 0.0
        self._rate = 1.0
        self._last_sample: tuple[float, datetime] | None = None
        self._slopes: deque[float] = deque(maxlen=RATE_WINDOW)
        self._synced_wall = float("-inf")
        self.discontinuities = 0

    @property
    def rate(self) -> float:
        """Broker seconds per wall second, as last measured."""
        return self._rate

    @property
    def rate_measured(self) -> bool:
        """Whether the rate comes from readings (False: still the 1x guess)."""
        return bool(self._slopes)

    async def sync(self) -> datetime:
        """Read the broker's clock once; re-anchor, detect a jump, update the rate."""
        before = self._wall()
        reading = await self._read()
        wall = (before + self._wall()) / 2  # the broker stamped it about mid-request
        broker_now = reading.timestamp.astimezone(UTC)
        self._synced_wall = wall
        if self._anchor is not None:
            if self._slopes:  # before the first slope the rate is a guess, not a prediction
                self._check_continuity(broker_now, wall)
            self._measure_rate(broker_now, wall)
        self._last_sample = (wall, broker_now)
        self._anchor, self._anchor_wall = broker_now, wall
        return broker_now

    def _check_continuity(self, broker_now: datetime, wall: float) -> None:
        """Log and count a reading that the extrapolation cannot explain (a jump, or the
        first reading after a speed change)."""
        assert self._anchor is not None
        elapsed_wall = max(0.0, wall - self._anchor_wall)
        expected = self._anchor + timedelta(seconds=elapsed_wall * self._rate)
        offset = (broker_now - expected).total_seconds()
        tolerance = max(1.0, 0.1 * elapsed_wall * self._rate, 0.1 * self._rate)
        if abs(offset) > tolerance:
            self.discontinuities += 1
            log.info("broker_clock_jump", offset_seconds=round(offset, 3),
                     broker_time=broker_now.isoformat(), rate=round(self._rate, 3))

    def _measure_rate(self, broker_now: datetime, wall: float) -> None:
        if self._last_sample is None:
            return
        last_wall, last_broker = self._last_sample
        span = wall - last_wall
        if span < MIN_SLOPE_WALL:
            return
        slope = (broker_now - last_broker).total_seconds() / span
        if slope <= 0:
            return  # the broker stood still or went back: re-anchored, no speed measured
        self._slopes.append(min(max(slope, MIN_RATE), MAX_RATE))
        rate = self._robust_rate()
        if abs(rate - self._rate) > RATE_CHANGE_RATIO * self._rate:
            log.info("broker_clock_rate_changed", old_rate=round(self._rate, 3),
                     new_rate=round(rate, 3), broker_time=broker_now.isoformat())
            self.discontinuities += 1
        self._rate = rate

    def _robust_rate(self) -> float:
        """The median of the recent slopes, capped by the faster of the last two: one or two
        outliers (a night crossed in a second) never become the speed, while a slow-down is
        believed after two readings (running ahead of the broker is the costly error)."""
        slopes = list(self._slopes)
        median = statistics.median_low(slopes)
        return min(median, max(slopes[-2:]))

    def now(self) -> datetime:
        if self._anchor is None:
            raise RuntimeError("BrokerClock.now() before sync(): call await clock.sync() first")
        return self._anchor + timedelta(seconds=(self._wall() - self._anchor_wall) * self._rate)

    async def try_sync(self) -> bool:
        """:meth:`sync`, logging instead of raising when the broker cannot be read."""
        try:
            await self.sync()
            return True
        except Exception as exc:  # the loop handles a broker outage; keep extrapolating
            log.debug("broker_clock_sync_failed", error=repr(exc))
            return False

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of broker time, in wall chunks of at most ``resync_seconds``.

        The broker's clock is re-read before planning (when the last reading is older than a
        chunk) and after every chunk; the remaining time is recomputed from each reading.
        Returns early after a jump or a speed change, so that the caller re-plans.
        """
        if self._wall() - self._synced_wall >= self._resync:
            await self.try_sync()
        seen = self.discontinuities
        target = self.now() + timedelta(seconds=max(0.0, seconds))
        while True:
            remaining = (target - self.now()).total_seconds()
            if remaining <= 0:
                return
            await self._wall_sleep(min(remaining / self._rate, self._resync))
            await self.try_sync()
            if self.discontinuities != seen:
                return
