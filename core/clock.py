"""The time seam: every component asks an injected clock for the time and for sleeps.

Live and paper use :class:`WallClock`; the simulator and the backtester provide their own
clock (``simulator.clock.SimClock``) so that ``--speed max`` never waits on wall time.
All datetimes are timezone-aware UTC; convert with :data:`EXCHANGE_TZ` for session logic.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

EXCHANGE_TZ = ZoneInfo("America/New_York")
UTC = timezone.utc


@runtime_checkable
class Clock(Protocol):
    """What components need of time: the current instant and a way to wait."""

    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (market time, not necessarily wall time)."""
        ...


class WallClock:
    """The real clock, for paper and live trading."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def pause_clock(clock: Clock) -> Clock:
    """The clock for backoffs and failure pauses: ``clock`` itself, unless its sleeps read
    the broker (``follows_broker``), in which case the wall clock.

    A backoff exists because the broker is in trouble; waiting for it on a clock whose every
    tick is a request to that broker nested retries inside retries and turned a 0.96 s
    backoff into 16 market hours. An in-process simulator's clock (``SimClock``) is kept: it
    asks nobody, is bounded in wall time at any speed, and costs nothing at ``--speed max``.
    """
    return WallClock() if getattr(clock, "follows_broker", False) else clock


def to_exchange_time(moment: datetime) -> datetime:
    """``moment`` seen on the exchange's wall clock (America/New_York)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every timestamp in this system must be timezone-aware")
    return moment.astimezone(EXCHANGE_TZ)


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; refuses naive datetimes instead of guessing their zone."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every timestamp in this system must be timezone-aware")
    return moment.astimezone(UTC)


async def sleep_or_stop(clock: Clock, seconds: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``seconds`` on ``clock`` unless ``stop`` is set first.

    Returns True when the full sleep happened, False when ``stop`` cut it short (a shutdown
    request must never wait for a long market-time sleep to end).
    """
    if stop is None:
        await clock.sleep(seconds)
        return True
    if stop.is_set():
        return False
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    done, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in pending:
        try:
            await task
        except asyncio.CancelledError:
            pass
    return sleeper in done
