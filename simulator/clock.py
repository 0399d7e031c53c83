"""The simulator's clock: market time at a chosen speed, with closed periods skipped quickly.

``SimClock`` implements :class:`core.clock.Clock` (``now()``, ``async sleep(seconds)``).

* ``speed=None`` ("max"): time moves only when someone sleeps or calls ``advance``.
  ``sleep(s)`` moves simulated time forward by exactly ``s`` at once, then yields to the
  event loop once, so a backtest never waits on wall time.
* ``speed=X``: simulated time runs X times as fast as the wall clock (1 = real time,
  60 = one market minute per wall second), except in closed periods.

Closed-period rule: a closed period (20:00 ET of one session to 04:00 ET of the next
session: nights, weekends, holidays) is crossed at whatever rate makes it last at most
:data:`CLOSED_PERIOD_WALL_SECONDS` (one wall second), or at ``speed`` if that is faster.
Time keeps flowing forward continuously (no instant jump), so a night passes in about a
second and the clock then runs on from 04:00 ET pre-market of the next session. A sleeper
that asks for a time inside or beyond a closed period wakes correspondingly early in wall
time.

``advance(minutes)`` and ``set_speed(speed)`` take effect at once and wake sleepers so they
re-check their deadline.
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone

from core.clock import EXCHANGE_TZ
from market.trading_calendar import TradingCalendar

UTC = timezone.utc
CLOSED_PERIOD_WALL_SECONDS = 1.0
PRE_MARKET_OPEN = time(4, 0)


def parse_start(text: str) -> datetime:
    """Parse a ``--start`` value into an aware UTC datetime.

    A date alone (``2025-03-03``) means that day's pre-market, 04:00 America/New_York.
    A datetime with an offset or ``Z`` is taken as given; a datetime without an offset is
    read as America/New_York exchange time.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("start time is empty: give YYYY-MM-DD or an ISO-8601 datetime")
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime.combine(day, PRE_MARKET_OPEN, EXCHANGE_TZ).astimezone(UTC)
        moment = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"invalid start time {raw!r}: give YYYY-MM-DD or an ISO-8601 datetime "
            "such as 2025-03-03T09:30:00-05:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=EXCHANGE_TZ)
    return moment.astimezone(UTC)


def _check_speed(speed: float | None) -> float | None:
    if speed is None:
        return None
    value = float(speed)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"speed must be a positive number or None (max), got {speed!r}")
    return value


class SimClock:
    """Simulated market time; see the module docstring for the rules."""

    def __init__(
        self,
        start: datetime,
        speed: float | None = 60.0,
        calendar: TradingCalendar | None = None,
        wall: Callable[[], float] = _time.monotonic,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock start must be timezone-aware")
        self._calendar = calendar or TradingCalendar()
        self._wall = wall
        self._speed = _check_speed(speed)
        self._anchor_sim = start.astimezone(UTC)
        self._anchor_wall = wall()
        self._changed: asyncio.Event | None = None

    # -- reading time --------------------------------------------------------------------

    @property
    def speed(self) -> float | None:
        """Simulated seconds per wall second; ``None`` means max (event-driven)."""
        return self._speed

    @property
    def calendar(self) -> TradingCalendar:
        return self._calendar

    def now(self) -> datetime:
        """The current simulated instant, aware UTC."""
        if self._speed is None:
            return self._anchor_sim
        wall_now = self._wall()
        moment = self._run(self._anchor_sim, wall_now - self._anchor_wall, self._speed)
        # Re-anchor so later calls walk at most a few segments.
        self._anchor_sim, self._anchor_wall = moment, wall_now
        return moment

    # -- waiting -------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time (see the module docstring for wall time)."""
        seconds = max(0.0, float(seconds))
        if self._speed is None:
            self._anchor_sim += timedelta(seconds=seconds)
            await asyncio.sleep(0)
            return
        target = self.now() + timedelta(seconds=seconds)
        while True:
            current = self.now()
            if current >= target or self._speed is None:
                if self._speed is None and current < target:
                    self._anchor_sim = target
                await asyncio.sleep(0)
                return
            wait = self._wall_needed(current, target, self._speed)
            changed = self._change_event()
            try:
                await asyncio.wait_for(changed.wait(), timeout=max(wait, 0.0005))
            except asyncio.TimeoutError:
                pass

    # -- control -------------------------------------------------------------------------

    def advance(self, minutes: float) -> datetime:
        """Move simulated time forward by ``minutes`` at once; returns the new time."""
        if minutes < 0:
            raise ValueError(f"the clock only moves forward: advance({minutes}) refused")
        moment = self.now() + timedelta(minutes=minutes)
        self._anchor_sim, self._anchor_wall = moment, self._wall()
        self._notify()
        return moment

    def set_speed(self, speed: float | None) -> None:
        """Change the speed from now on (``None`` = max)."""
        checked = _check_speed(speed)
        moment = self.now()
        self._anchor_sim, self._anchor_wall = moment, self._wall()
        self._speed = checked
        self._notify()

    def set_time(self, moment: datetime) -> None:
        """Move to ``moment`` if it is later than now (the clock never runs backwards)."""
        if moment.tzinfo is None:
            raise ValueError("SimClock.set_time needs a timezone-aware datetime")
        current = self.now()
        if moment.astimezone(UTC) < current:
            raise ValueError(
                f"the clock only moves forward: {moment.isoformat()} is before {current.isoformat()}"
            )
        self._anchor_sim, self._anchor_wall = moment.astimezone(UTC), self._wall()
        self._notify()

    # -- internals -----------------------------------------------------------------------

    def _change_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _closed_rate(self, period: tuple[datetime, datetime], speed: float) -> float:
        length = (period[1] - period[0]).total_seconds()
        return max(speed, length / CLOSED_PERIOD_WALL_SECONDS)

    def _trading_day_end(self, moment: datetime) -> datetime:
        """20:00 ET of the session whose trading day (04:00-20:00 ET) contains ``moment``."""
        session = self._calendar.session_of(moment)
        if session is None:
            raise RuntimeError(f"{moment.isoformat()} is neither closed nor in a trading day")
        return self._calendar.extended_hours(session)[1]

    def _run(self, moment: datetime, wall_seconds: float, speed: float) -> datetime:
        """Where simulated time is after ``wall_seconds`` of wall time from ``moment``."""
        budget = max(0.0, wall_seconds)
        while True:
            period = self._calendar.closed_period(moment)
            if period is not None:
                rate = self._closed_rate(period, speed)
                needed = (period[1] - moment).total_seconds() / rate
                if budget < needed:
                    return moment + timedelta(seconds=budget * rate)
                moment, budget = period[1], budget - needed
                continue
            day_end = self._trading_day_end(moment)
            needed = (day_end - moment).total_seconds() / speed
            if budget < needed:
                return moment + timedelta(seconds=budget * speed)
            moment, budget = day_end, budget - needed

    def _wall_needed(self, moment: datetime, target: datetime, speed: float) -> float:
        """Wall seconds for simulated time to get from ``moment`` to ``target``."""
        total = 0.0
        while moment < target:
            period = self._calendar.closed_period(moment)
            if period is not None:
                end = min(period[1], target)
                total += (end - moment).total_seconds() / self._closed_rate(period, speed)
                moment = period[1]
                continue
            day_end = self._trading_day_end(moment)
            total += (min(day_end, target) - moment).total_seconds() / speed
            moment = day_end
        return total
