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
