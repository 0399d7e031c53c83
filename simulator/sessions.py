"""Trading-session boundaries the broker works with, derived from the injected calendar.

Uses only ``calendar.is_session(d)`` and ``calendar.open_close(d)`` (early closes
included), plus the fixed extended-hours frame: pre-market from 04:00 and after-hours until
20:00 New York time. Results are cached: the broker asks for the same days over and over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from simulator.wire import et_date, et_datetime

PRE_MARKET_START = time(4, 0)
AFTER_HOURS_END = time(20, 0)
MAX_SCAN_DAYS = 30  # the longest run of non-session days searched for a neighbour session


@dataclass(frozen=True)
class SessionDay:
    """One trading day: pre-market start, regular open and close, after-hours end (UTC)."""

    date: date
    pre_start: datetime
    open: datetime
    close: datetime
    post_end: datetime

    def phase(self, moment: datetime) -> str:
        """``pre``, ``regular``, ``post`` or ``closed`` at ``moment`` (which must be on this day)."""
        if self.open <= moment < self.close:
            return "regular"
        if self.pre_start <= moment < self.open:
            return "pre"
        if self.close <= moment < self.post_end:
            return "post"
        return "closed"


class Sessions:
    """Cached session lookups over a ``TradingCalendar``."""

    def __init__(self, calendar: Any) -> None:
        self._calendar = calendar
        self._days: dict[date, SessionDay | None] = {}
        self._next: dict[date, SessionDay] = {}
        self._previous: dict[date, SessionDay] = {}

    def day(self, d: date) -> SessionDay | None:
        """The session on ``d``, or ``None`` on weekends and holidays."""
        if d not in self._days:
            if self._calendar.is_session(d):
                open_utc, close_utc = self._calendar.open_close(d)
                self._days[d] = SessionDay(
                    d, et_datetime(d, PRE_MARKET_START), open_utc, close_utc, et_datetime(d, AFTER_HOURS_END)
                )
            else:
                self._days[d] = None
        return self._days[d]

    def next_after(self, d: date) -> SessionDay:
        """The first session strictly after ``d``."""
        known = self._next.get(d)
        if known is not None:
            return known
        for offset in range(1, MAX_SCAN_DAYS + 1):
            found = self.day(d + timedelta(days=offset))
            if found:
                self._next[d] = found
                return found
        raise LookupError(f"no trading session within {MAX_SCAN_DAYS} days after {d}")

    def previous_before(self, d: date) -> SessionDay:
        """The last session strictly before ``d``."""
        known = self._previous.get(d)
        if known is not None:
            return known
        for offset in range(1, MAX_SCAN_DAYS + 1):
            found = self.day(d - timedelta(days=offset))
            if found:
                self._previous[d] = found
                return found
        raise LookupError(f"no trading session within {MAX_SCAN_DAYS} days before {d}")

    def between(self, first: date, last: date) -> list[SessionDay]:
        """Sessions from ``first`` to ``last`` inclusive."""
        days: list[SessionDay] = []
        current = first
        while current <= last:
            found = self.day(current)
            if found:
                days.append(found)
            current += timedelta(days=1)
        return days

    def phase(self, moment: datetime) -> str:
        """Session phase at ``moment``: pre, regular, post or closed."""
        today = self.day(et_date(moment))
        return today.phase(moment) if today else "closed"

    def trading_session_for(self, moment: datetime, *, extended: bool) -> SessionDay:
        """The session an order placed at ``moment`` works in.

        Regular orders: today's session until its close, else the next one. Extended-hours
        orders: today's session until 20:00, else the next one.
        """
        today = self.day(et_date(moment))
        if today is not None:
            end = today.post_end if extended else today.close
            if moment < end:
                return today
        return self.next_after(et_date(moment))
