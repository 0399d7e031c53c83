"""The NYSE calendar: holidays, early closes, phases at their boundaries, business days."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from core.clock import EXCHANGE_TZ
from market.trading_calendar import TradingCalendar

UTC = timezone.utc


@pytest.fixture(scope="module")
def cal() -> TradingCalendar:
    return TradingCalendar()


def et(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=EXCHANGE_TZ)


NYSE_HOLIDAYS_2025 = [
    date(2025, 1, 1),  # New Year's Day
    date(2025, 1, 9),  # National day of mourning, President Carter
    date(2025, 1, 20),  # Martin Luther King Jr. Day
    date(2025, 2, 17),  # Washington's Birthday
    date(2025, 4, 18),  # Good Friday
    date(2025, 5, 26),  # Memorial Day
    date(2025, 6, 19),  # Juneteenth
    date(2025, 7, 4),  # Independence Day
    date(2025, 9, 1),  # Labor Day
    date(2025, 11, 27),  # Thanksgiving
    date(2025, 12, 25),  # Christmas
]


def test_2025_holidays_are_not_sessions_and_the_year_has_250(cal: TradingCalendar) -> None:
    for holiday in NYSE_HOLIDAYS_2025:
        assert not cal.is_session(holiday), holiday
    sessions = cal.sessions(date(2025, 1, 1), date(2025, 12, 31))
    assert len(sessions) == 250
    assert all(d.weekday() < 5 for d in sessions)
    assert date(2025, 1, 2) == sessions[0]


def test_early_close_after_thanksgiving_is_13_00_eastern(cal: TradingCalendar) -> None:
    opened, closed = cal.open_close(date(2025, 11, 28))
    assert opened.tzinfo is not None and closed.utcoffset() == timedelta(0)
    assert opened.astimezone(EXCHANGE_TZ).strftime("%H:%M") == "09:30"
    assert closed.astimezone(EXCHANGE_TZ).strftime("%H:%M") == "13:00"
    assert closed == datetime(2025, 11, 28, 18, 0, tzinfo=UTC)
    # A normal day closes at 16:00, in summer time too.
    assert cal.open_close(date(2025, 7, 1))[1] == datetime(2025, 7, 1, 20, 0, tzinfo=UTC)


def test_open_close_refuses_a_holiday(cal: TradingCalendar) -> None:
    with pytest.raises(ValueError, match="2025-12-25 is not a trading session"):
        cal.open_close(date(2025, 12, 25))


@pytest.mark.parametrize(
    ("moment", "phase"),
    [
        (et(2025, 3, 4, 3, 59), "closed"),
        (et(2025, 3, 4, 4, 0), "pre"),
        (et(2025, 3, 4, 9, 29), "pre"),
        (et(2025, 3, 4, 9, 30), "regular"),
        (et(2025, 3, 4, 15, 59), "regular"),
        (et(2025, 3, 4, 16, 0), "post"),
        (et(2025, 3, 4, 19, 59), "post"),
        (et(2025, 3, 4, 20, 0), "closed"),
        (et(2025, 11, 28, 12, 59), "regular"),
        (et(2025, 11, 28, 13, 0), "post"),
        (et(2025, 3, 8, 12, 0), "closed"),  # Saturday
        (et(2025, 12, 25, 12, 0), "closed"),  # Christmas
    ],
)
def test_session_phase_at_boundaries(cal: TradingCalendar, moment: datetime, phase: str) -> None:
    assert cal.session_phase(moment) == phase
    assert cal.session_phase(moment.astimezone(UTC)) == phase


def test_naive_datetimes_are_refused(cal: TradingCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        cal.session_phase(datetime(2025, 3, 4, 12, 0))


def test_next_open_and_close_like_alpacas_clock(cal: TradingCalendar) -> None:
    friday_evening = et(2025, 4, 17, 17, 0)  # Good Friday follows
    assert cal.next_open(friday_evening) == et(2025, 4, 21, 9, 30).astimezone(UTC)
    during = et(2025, 3, 4, 11, 0)
    assert cal.next_close(during) == et(2025, 3, 4, 16, 0).astimezone(UTC)
    assert cal.next_open(during) == et(2025, 3, 5, 9, 30).astimezone(UTC)
    assert cal.next_open(et(2025, 3, 4, 9, 30)) == et(2025, 3, 5, 9, 30).astimezone(UTC)


def test_previous_next_session_and_business_days_back_over_a_holiday(
    cal: TradingCalendar,
) -> None:
    assert cal.previous_session(date(2025, 7, 7)) == date(2025, 7, 3)  # July 4th closed
    assert cal.next_session(date(2025, 7, 3)) == date(2025, 7, 7)
    # Five business days ending Tuesday 2025-07-08: Jul 1, 2, 3, 7, 8.
    assert cal.business_days_back(date(2025, 7, 8), 4) == date(2025, 7, 1)
    assert cal.business_days_back(date(2025, 7, 8), 0) == date(2025, 7, 8)
    assert cal.business_days_back(date(2025, 7, 7), 1) == date(2025, 7, 3)
    # From a Saturday, one back is Friday; zero back is the last session too.
    assert cal.business_days_back(date(2025, 7, 12), 1) == date(2025, 7, 11)
    assert cal.business_days_back(date(2025, 7, 12), 0) == date(2025, 7, 11)
    with pytest.raises(ValueError):
        cal.business_days_back(date(2025, 7, 8), -1)


def test_calendar_json_has_alpacas_exact_shape(cal: TradingCalendar) -> None:
    items = cal.calendar_json(date(2025, 11, 26), date(2025, 12, 1))
    assert [i["date"] for i in items] == ["2025-11-26", "2025-11-28", "2025-12-01"]
    assert items[1] == {
        "date": "2025-11-28",
        "open": "09:30",
        "close": "13:00",
        "session_open": "0400",
        "session_close": "2000",
        "settlement_date": "2025-12-01",
    }
    for item in items:
        datetime.strptime(item["date"] + " " + item["open"], "%Y-%m-%d %H:%M")
        datetime.strptime(item["date"] + " " + item["close"], "%Y-%m-%d %H:%M")


def test_covers_2000_to_2030_and_refuses_outside_its_range(cal: TradingCalendar) -> None:
    assert cal.is_session(date(2000, 1, 3))
    assert not cal.is_session(date(2001, 9, 11))  # markets closed after 9/11
    assert cal.is_session(date(2030, 12, 31))
    with pytest.raises(ValueError, match="outside the trading calendar's range"):
        cal.is_session(date(1980, 1, 2))


def test_closed_period_spans_a_long_weekend(cal: TradingCalendar) -> None:
    period = cal.closed_period(et(2025, 4, 19, 12, 0))  # Saturday after Good Friday
    assert period == (et(2025, 4, 17, 20, 0).astimezone(UTC), et(2025, 4, 21, 4, 0).astimezone(UTC))
    assert cal.closed_period(et(2025, 4, 21, 4, 0)) is None
