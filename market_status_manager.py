"""Where the market is in its day: pre-market, regular, after-hours or closed.

The phase comes from the NYSE calendar (holidays and early closes, offline, via
``trading_calendar``). When a broker is attached, its ``/v2/clock`` is consulted at most
once per ``broker_check_interval`` while the market is near or in session, and it wins if it
disagrees about whether the market is open (a surprise closure, a halt of the whole market):
its word holds until the next check, or until the open or close it announced has passed.

Waiting for the next session event costs nothing: no broker request is made while closed;
the manager sleeps on the injected clock in chunks and logs a countdown whose interval
shrinks as the event approaches (hourly, then every 15 minutes, 5 minutes, 1 minute).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

import structlog

from core.clock import Clock, sleep_or_stop, to_exchange_time
from core.errors import BrokerError, TemporaryError
from broker.models import Clock as BrokerClock
from market.trading_calendar import TradingCalendar

log = structlog.get_logger(__name__)

Phase = Literal["pre", "regular", "post", "closed"]

_PHASE_START_ET = {"pre": (4, 0), "post_end": (20, 0)}


@dataclass(frozen=True)
class MarketStatus:
    """A reading of the market's state at ``now``."""

    now: datetime
    phase: Phase
    session: date | None
    next_open: datetime
    next_close: datetime
    next_event: datetime
    next_event_phase: Phase
    early_close: bool
    source: Literal["calendar", "broker"]

    @property
    def is_regular(self) -> bool:
        return self.phase == "regular"

    @property
    def is_extended(self) -> bool:
        return self.phase in ("pre", "post")

    @property
    def is_closed(self) -> bool:
        return self.phase == "closed"

    def to_log(self) -> dict[str, object]:
        return {
            "phase": self.phase,
            "session": self.session.isoformat() if self.session else None,
            "next_open": self.next_open.isoformat(),
            "next_close": self.next_close.isoformat(),
            "next_event": self.next_event.isoformat(),
            "next_event_phase": self.next_event_phase,
            "early_close": self.early_close,
            "source": self.source,
        }


def countdown_interval(remaining: timedelta) -> timedelta:
    """How long to sleep before logging the countdown again, given the time left."""
    seconds = remaining.total_seconds()
    if seconds > 2 * 3600:
        return timedelta(hours=1)
    if seconds > 30 * 60:
        return timedelta(minutes=15)
    if seconds > 5 * 60:
        return timedelta(minutes=5)
    return timedelta(minutes=1)


class MarketStatusManager:
    """Session phase from the calendar, confirmed by the broker's clock when available."""

    def __init__(
        self,
        clock: Clock,
        calendar: TradingCalendar | None = None,
        broker: object | None = None,
        *,
        broker_check_interval: timedelta = timedelta(minutes=15),
    ) -> None:
        self._clock = clock
        self._calendar = calendar or TradingCalendar()
        self._broker = broker
        self._broker_check_interval = broker_check_interval
        self._last_broker_check: datetime | None = None
        self._broker_reading: BrokerClock | None = None
        self._last_logged_phase: Phase | None = None
        self.current: MarketStatus | None = None

    @property
    def calendar(self) -> TradingCalendar:
        return self._calendar

    def status_at(self, moment: datetime) -> MarketStatus:
        """The calendar's view of ``moment`` (pure: no I/O)."""
        phase: Phase = self._calendar.session_phase(moment)
        session = self._calendar.session_of(moment)
        next_open = self._calendar.next_open(moment)
        next_close = self._calendar.next_close(moment)
        next_event, next_phase = self._next_event(moment, phase)
        early = False
        if session is not None:
            _, close = self._calendar.open_close(session)
            early = to_exchange_time(close).hour < 16
        return MarketStatus(
            now=moment,
            phase=phase,
            session=session,
            next_open=next_open,
            next_close=next_close,
            next_event=next_event,
            next_event_phase=next_phase,
            early_close=early,
            source="calendar",
        )

    def _next_event(self, moment: datetime, phase: Phase) -> tuple[datetime, Phase]:
        cal = self._calendar
        if phase == "pre":
            return cal.next_open(moment), "regular"
        if phase == "regular":
            return cal.next_close(moment), "post"
        if phase == "post":
            session = cal.session_of(moment)
            assert session is not None
            _, post_end = cal.extended_hours(session)
            return post_end, "closed"
        # closed: the next pre-market start
        day = to_exchange_time(moment).date()
        if cal.is_session(day):
            pre_start, _ = cal.extended_hours(day)
            if pre_start > moment:
                return pre_start, "pre"
        nxt = cal.next_session(day)
        pre_start, _ = cal.extended_hours(nxt)
        return pre_start, "pre"

    async def refresh(self) -> MarketStatus:
        """Read the phase now; consult the broker's clock when due; log phase changes."""
        now = self._clock.now()
        status = self.status_at(now)
        if self._broker is not None and self._broker_due(now, status):
            status = await self._confirm_with_broker(now, status)
        else:
            reading = self._current_reading(now)
            if reading is not None:
                status = self._broker_view(now, status, reading)
        if status.phase != self._last_logged_phase:
            log.info("market_status", **status.to_log())
            self._last_logged_phase = status.phase
        self.current = status
        return status

    def _broker_due(self, now: datetime, status: MarketStatus) -> bool:
        near_session = status.phase != "closed" or (status.next_open - now) <= timedelta(hours=1)
        if not near_session:
            return False
        if self._last_broker_check is None or self._current_reading(now) is None:
            return True  # never asked, or what the broker announced last time has happened
        return now - self._last_broker_check >= self._broker_check_interval

    def _current_reading(self, now: datetime) -> BrokerClock | None:
        """The broker's last clock reading, while the open or close it announced is ahead."""
        reading = self._broker_reading
        if reading is None:
            return None
        announced = reading.next_close if reading.is_open else reading.next_open
        return reading if now < announced else None

    async def _confirm_with_broker(self, now: datetime, status: MarketStatus) -> MarketStatus:
        try:
            broker_clock = await self._broker.get_clock()  # type: ignore[union-attr]
        except TemporaryError as exc:
            log.warning("market_clock_unavailable", error=str(exc))
            return status
        except BrokerError as exc:
            # an answer nobody classified: the calendar still knows the session, and a broken
            # clock endpoint must not keep the loop (and the protection it runs) from cycling
            log.error("market_clock_unavailable", error=str(exc), error_type=type(exc).__name__,
                      status=exc.status, code=exc.code, message=exc.message)
            return status
        self._last_broker_check = now
        self._broker_reading = broker_clock
        if bool(broker_clock.is_open) != status.is_regular:
            log.warning(
                "market_status_mismatch",
                calendar_phase=status.phase,
                broker_is_open=bool(broker_clock.is_open),
                broker_next_open=broker_clock.next_open.isoformat(),
            )
        return self._broker_view(now, status, broker_clock)

    @staticmethod
    def _broker_view(now: datetime, status: MarketStatus, reading: BrokerClock) -> MarketStatus:
        """``status`` corrected by the broker's clock where they disagree (the broker wins)."""
        is_open = bool(reading.is_open)
        if is_open == status.is_regular:
            return status
        phase: Phase = "regular" if is_open else ("closed" if status.is_regular else status.phase)
        return MarketStatus(
            now=now,
            phase=phase,
            session=status.session,
            next_open=reading.next_open,
            next_close=reading.next_close,
            next_event=reading.next_close if is_open else reading.next_open,
            next_event_phase="post" if is_open else "regular",
            early_close=status.early_close,
            source="broker",
        )

    async def wait_until(
        self, target: datetime, *, stop: asyncio.Event | None = None, label: str = "next_event"
    ) -> bool:
        """Sleep on the injected clock until ``target``, logging a countdown.

        Returns False if ``stop`` was set first (a shutdown request), True otherwise.
        No broker request is made while waiting.
        """
        while True:
            if stop is not None and stop.is_set():
                return False
            now = self._clock.now()
            remaining = target - now
            if remaining <= timedelta(0):
                return True
            log.info(
                "market_countdown",
                waiting_for=label,
                target=target.isoformat(),
                remaining_minutes=round(remaining.total_seconds() / 60, 1),
            )
            chunk = min(remaining, countdown_interval(remaining))
            if not await sleep_or_stop(self._clock, chunk.total_seconds(), stop):
                return False
