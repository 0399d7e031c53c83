"""The simulator clock: max mode, speed mode on a fake wall clock, closed periods skipped."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from core.clock import EXCHANGE_TZ, Clock
from simulator.clock import CLOSED_PERIOD_WALL_SECONDS, SimClock, parse_start
from market.trading_calendar import TradingCalendar

UTC = timezone.utc


@pytest.fixture(scope="module")
def cal() -> TradingCalendar:
    return TradingCalendar()


class FakeWall:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


def et(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=EXCHANGE_TZ).astimezone(UTC)


def test_parse_start_date_means_pre_market_and_offsets_are_kept() -> None:
    assert parse_start("2025-03-03") == et(2025, 3, 3, 4, 0)
    assert parse_start("2025-07-01") == datetime(2025, 7, 1, 8, 0, tzinfo=UTC)  # EDT
    assert parse_start("2025-03-03T14:30:00Z") == datetime(2025, 3, 3, 14, 30, tzinfo=UTC)
    assert parse_start("2025-03-03T09:30:00") == et(2025, 3, 3, 9, 30)
    with pytest.raises(ValueError, match="invalid start time 'yesterday'"):
        parse_start("yesterday")


async def test_max_mode_sleep_advances_exactly_and_yields(cal: TradingCalendar) -> None:
    start = et(2025, 3, 4, 9, 30)
    clock = SimClock(start, speed=None, calendar=cal)
    assert isinstance(clock, Clock)
    other_ran = []

    async def other() -> None:
        other_ran.append(clock.now())

    task = asyncio.create_task(other())
    await clock.sleep(90.5)
    assert clock.now() == start + timedelta(seconds=90.5)
    assert other_ran, "sleep must yield to the event loop"
    await task
    await clock.sleep(0)
    assert clock.now() == start + timedelta(seconds=90.5)
    clock.advance(30)
    assert clock.now() == start + timedelta(seconds=90.5, minutes=30)


async def test_max_mode_time_stands_still_without_sleepers(cal: TradingCalendar) -> None:
    start = et(2025, 3, 4, 9, 30)
    clock = SimClock(start, speed=None, calendar=cal)
    await asyncio.sleep(0.01)
    assert clock.now() == start


def test_speed_mode_follows_the_wall_clock_times_speed(cal: TradingCalendar) -> None:
    wall = FakeWall()
    start = et(2025, 3, 4, 10, 0)
    clock = SimClock(start, speed=60.0, calendar=cal, wall=wall)
    assert clock.speed == 60.0
    wall.value += 2.5
    assert clock.now() == start + timedelta(minutes=2.5)
    clock.set_speed(1.0)
    wall.value += 10
    assert clock.now() == start + timedelta(minutes=2.5, seconds=10)
    clock.advance(5)
    assert clock.now() == start + timedelta(minutes=7.5, seconds=10)


def test_a_night_passes_in_about_one_wall_second(cal: TradingCalendar) -> None:
    wall = FakeWall()
    clock = SimClock(et(2025, 3, 4, 19, 59), speed=60.0, calendar=cal, wall=wall)
    wall.value += 1.0  # one market minute: 20:00, the night begins
    assert clock.now() == et(2025, 3, 4, 20, 0)
    wall.value += CLOSED_PERIOD_WALL_SECONDS / 2
    middle = clock.now()
    assert et(2025, 3, 4, 20, 0) < middle < et(2025, 3, 5, 4, 0)
    wall.value += CLOSED_PERIOD_WALL_SECONDS / 2
    assert clock.now() == et(2025, 3, 5, 4, 0)
    wall.value += 1.0
    assert clock.now() == et(2025, 3, 5, 4, 1)
    assert cal.session_phase(clock.now()) == "pre"


def test_weekend_and_holiday_are_skipped_too(cal: TradingCalendar) -> None:
    wall = FakeWall()
    # Thursday before Good Friday 2025, after-hours ends at 20:00; next pre-market Monday.
    clock = SimClock(et(2025, 4, 17, 20, 0), speed=60.0, calendar=cal, wall=wall)
    wall.value += CLOSED_PERIOD_WALL_SECONDS + 0.5
    assert clock.now() == et(2025, 4, 21, 4, 0) + timedelta(seconds=30)


def test_start_inside_a_closed_period_reaches_the_next_pre_market(cal: TradingCalendar) -> None:
    wall = FakeWall()
    clock = SimClock(et(2025, 3, 8, 12, 0), speed=1.0, calendar=cal, wall=wall)  # Saturday
    wall.value += CLOSED_PERIOD_WALL_SECONDS  # the rest of the weekend takes under a second
    assert et(2025, 3, 10, 4, 0) <= clock.now() <= et(2025, 3, 10, 4, 0) + timedelta(seconds=1)


async def test_speed_mode_sleep_waits_speed_times_less_wall_time(cal: TradingCalendar) -> None:
    clock = SimClock(et(2025, 3, 4, 10, 0), speed=6000.0, calendar=cal)
    before = clock.now()
    await clock.sleep(30.0)  # 5 ms of wall time
    assert clock.now() >= before + timedelta(seconds=30)


async def test_sleep_across_a_night_wakes_after_about_a_wall_second(cal: TradingCalendar) -> None:
    clock = SimClock(et(2025, 3, 4, 19, 59), speed=6000.0, calendar=cal)
    # 19:59 -> 04:01 next day: 10 ms + about one second for the night + 10 ms.
    await asyncio.wait_for(clock.sleep(8 * 3600 + 120), timeout=5)
    assert clock.now() >= et(2025, 3, 5, 4, 1)


async def test_advance_wakes_a_sleeper(cal: TradingCalendar) -> None:
    clock = SimClock(et(2025, 3, 4, 10, 0), speed=1.0, calendar=cal)
    sleeper = asyncio.create_task(clock.sleep(3600))
    await asyncio.sleep(0.01)
    clock.advance(61)
    await asyncio.wait_for(sleeper, timeout=2)
    assert clock.now() >= et(2025, 3, 4, 11, 1)


def test_bad_speed_and_backwards_moves_are_refused(cal: TradingCalendar) -> None:
    with pytest.raises(ValueError, match="speed must be a positive number"):
        SimClock(et(2025, 3, 4, 10, 0), speed=0, calendar=cal)
    clock = SimClock(et(2025, 3, 4, 10, 0), speed=None, calendar=cal)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        SimClock(datetime(2025, 3, 4, 10, 0), speed=None, calendar=cal)
