"""The NYSE trading calendar: sessions, holidays, early closes and the phase of the day.

Built once per process from the maintained ``exchange_calendars`` "XNYS" calendar, offline,
for 1990-01-01 .. 2035-12-31 (both the product and the simulator use it). Every datetime
taken or returned is timezone-aware; ``open_close`` and ``next_open``/``next_close`` answer
in UTC, and session logic looks at the exchange's wall clock (America/New_York).

Phases of a moment (``session_phase``), on session days only:

* ``"pre"``: 04:00 ET up to the regular open;
* ``"regular"``: open (09:30 ET) up to the close (16:00 ET, or the early close, e.g. 13:00);
* ``"post"``: the close up to 20:00 ET;
* ``"closed"``: everything else, including whole weekends and holidays.
"""

from __future__ import annotations

import bisect
import functools
from datetime import date, datetime, time, timezone
from typing import Literal

import exchange_calendars

from core.clock import EXCHANGE_TZ

UTC = timezone.utc
Phase = Literal["pre", "regular", "post", "closed"]

FIRST_DATE = date(1990, 1, 1)
LAST_DATE = date(2035, 12, 31)
PRE_MARKET_START = time(4, 0)
POST_MARKET_END = time(20, 0)

# US equity settlement cycle changes (SEC): T+3 until 2017-09-04, T+2 until 2024-05-27, then T+1.
_T_PLUS_2_FROM = date(2017, 9, 5)
_T_PLUS_1_FROM = date(2024, 5, 28)


@functools.lru_cache(maxsize=1)
def _schedule() -> tuple[
    tuple[date, ...], tuple[datetime, ...], tuple[datetime, ...], dict[date, int]
]:
    """(session dates, opens UTC, closes UTC, date -> index) of XNYS, once per process."""
    calendar = exchange_calendars.get_calendar(
        "XNYS", start=FIRST_DATE.isoformat(), end=LAST_DATE.isoformat()
    )
    schedule = calendar.schedule
    days = tuple(ts.date() for ts in schedule.index)
    opens = tuple(ts.to_pydatetime().astimezone(UTC) for ts in schedule["open"])
    closes = tuple(ts.to_pydatetime().astimezone(UTC) for ts in schedule["close"])
    return days, opens, closes, {day: i for i, day in enumerate(days)}


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every timestamp in this system must be timezone-aware")
    return moment


class TradingCalendar:
    """NYSE sessions with their regular open and close (holidays and early closes included).

    Answers for dates in 1990-01-01 .. 2035-12-31; outside that range it raises ValueError
    rather than guessing.
    """

    def __init__(self) -> None:
        self._days, self._opens, self._closes, self._index = _schedule()

    # -- sessions ------------------------------------------------------------------------

    def _check(self, day: date) -> None:
        if not FIRST_DATE <= day <= LAST_DATE:
            raise ValueError(
                f"date {day.isoformat()} is outside the trading calendar's range "
                f"{FIRST_DATE.isoformat()}..{LAST_DATE.isoformat()}"
            )

    def is_session(self, day: date) -> bool:
        """True when the exchange holds a regular session on ``day``."""
        self._check(day)
        return day in self._index

    def sessions(self, start: date, end: date) -> list[date]:
        """Session dates from ``start`` to ``end``, both inclusive, oldest first."""
        self._check(start)
        self._check(end)
        lo = bisect.bisect_left(self._days, start)
        hi = bisect.bisect_right(self._days, end)
        return list(self._days[lo:hi])

    def open_close(self, day: date) -> tuple[datetime, datetime]:
        """Regular open and close of session ``day`` in UTC (early closes are real closes)."""
        self._check(day)
        i = self._index.get(day)
        if i is None:
            raise ValueError(f"{day.isoformat()} is not a trading session")
        return self._opens[i], self._closes[i]

    def extended_hours(self, day: date) -> tuple[datetime, datetime]:
        """Start of pre-market (04:00 ET) and end of after-hours (20:00 ET) of session ``day``."""
        if not self.is_session(day):
            raise ValueError(f"{day.isoformat()} is not a trading session")
        start = datetime.combine(day, PRE_MARKET_START, EXCHANGE_TZ).astimezone(UTC)
        end = datetime.combine(day, POST_MARKET_END, EXCHANGE_TZ).astimezone(UTC)
        return start, end

    def previous_session(self, day: date) -> date:
        """The last session strictly before ``day``."""
        self._check(day)
        i = bisect.bisect_left(self._days, day)
        if i == 0:
            raise ValueError(f"no session before {day.isoformat()} in the calendar")
        return self._days[i - 1]

    def next_session(self, day: date) -> date:
        """The first session strictly after ``day``."""
        self._check(day)
        i = bisect.bisect_right(self._days, day)
        if i >= len(self._days):
            raise ValueError(f"no session after {day.isoformat()} in the calendar")
        return self._days[i]

    def session_on_or_before(self, day: date) -> date:
        """``day`` when it is a session, else the last session before it."""
        return day if self.is_session(day) else self.previous_session(day)

    def session_on_or_after(self, day: date) -> date:
        """``day`` when it is a session, else the first session after it."""
        return day if self.is_session(day) else self.next_session(day)

    def business_days_back(self, day: date, n: int) -> date:
        """The session ``n`` sessions before ``day``.

        Counting runs over sessions strictly before ``day``: ``n=1`` is the previous session,
        whatever ``day`` is. ``n=0`` is ``day`` itself when it is a session, otherwise the
        last session before it. So a PDT window of the last 5 business days ending on session
        ``d`` starts at ``business_days_back(d, 4)``.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self._check(day)
        if n == 0:
            return self.session_on_or_before(day)
        i = bisect.bisect_left(self._days, day) - n
        if i < 0:
            raise ValueError(f"fewer than {n} sessions before {day.isoformat()} in the calendar")
        return self._days[i]

    # -- moments -------------------------------------------------------------------------

    def session_phase(self, moment: datetime) -> Phase:
        """Which part of the trading day ``moment`` falls in (see the module docstring)."""
        local = _aware(moment).astimezone(EXCHANGE_TZ)
        day = local.date()
        i = self._index.get(day)
        if i is None:
            self._check(day)
            return "closed"
        wall = local.time()
        if wall < PRE_MARKET_START or wall >= POST_MARKET_END:
            return "closed"
        instant = moment.astimezone(UTC)
        if instant < self._opens[i]:
            return "pre"
        if instant < self._closes[i]:
            return "regular"
        return "post"

    def is_open(self, moment: datetime) -> bool:
        """True during the regular session."""
        return self.session_phase(moment) == "regular"

    def next_open(self, moment: datetime) -> datetime:
        """The first regular open strictly after ``moment`` (UTC), like Alpaca's clock."""
        instant = _aware(moment).astimezone(UTC)
        i = bisect.bisect_right(self._opens, instant)
        if i >= len(self._opens):
            raise ValueError(f"no open after {instant.isoformat()} in the calendar")
        return self._opens[i]

    def next_close(self, moment: datetime) -> datetime:
        """The first regular close strictly after ``moment`` (UTC): today's while open."""
        instant = _aware(moment).astimezone(UTC)
        i = bisect.bisect_right(self._closes, instant)
        if i >= len(self._closes):
            raise ValueError(f"no close after {instant.isoformat()} in the calendar")
        return self._closes[i]

    def closed_period(self, moment: datetime) -> tuple[datetime, datetime] | None:
        """When ``moment`` is in a closed period, that period as (start, end) in UTC.

        A closed period runs from 20:00 ET of one session to 04:00 ET of the next session,
        so it spans whole nights, weekends and holidays. ``None`` when ``moment`` is in a
        pre, regular or post phase.
        """
        if self.session_phase(moment) != "closed":
            return None
        local = moment.astimezone(EXCHANGE_TZ)
        day = local.date()
        if self.is_session(day) and local.time() >= POST_MARKET_END:
            before = day
        else:
            before = self.previous_session(day)
        after = self.next_session(before)
        return self.extended_hours(before)[1], self.extended_hours(after)[0]

    def session_of(self, moment: datetime) -> date | None:
        """The session whose 04:00-20:00 ET trading day contains ``moment``, if any."""
        local = _aware(moment).astimezone(EXCHANGE_TZ)
        day = local.date()
        if day in self._index and PRE_MARKET_START <= local.time() < POST_MARKET_END:
            return day
        return None

    # -- Alpaca shapes -------------------------------------------------------------------

    def settlement_date(self, day: date) -> date:
        """The settlement date of a trade on session ``day`` (T+1 since 2024-05-28)."""
        lag = 1 if day >= _T_PLUS_1_FROM else 2 if day >= _T_PLUS_2_FROM else 3
        settled = day
        for _ in range(lag):
            settled = self.next_session(settled)
        return settled

    def calendar_json(self, start: date, end: date) -> list[dict[str, str]]:
        """Sessions from ``start`` to ``end`` in the shape of Alpaca's ``GET /v2/calendar``.

        ``open``/``close`` are exactly ``HH:MM`` exchange time (alpaca-py parses them with
        ``%H:%M``), ``session_open``/``session_close`` are ``HHMM``.
        """
        items: list[dict[str, str]] = []
        for day in self.sessions(start, end):
            opened, closed = self.open_close(day)
            items.append(
                {
                    "date": day.isoformat(),
                    "open": opened.astimezone(EXCHANGE_TZ).strftime("%H:%M"),
                    "close": closed.astimezone(EXCHANGE_TZ).strftime("%H:%M"),
                    "session_open": "0400",
                    "session_close": "2000",
                    "settlement_date": self.settlement_date(day).isoformat(),
                }
            )
        return items

