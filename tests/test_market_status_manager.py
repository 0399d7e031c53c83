"""Market status: phases at their boundaries (holidays and early closes included), the next
session event, a countdown that costs nothing while closed, and the broker's clock winning
when it disagrees with the calendar."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from structlog.testing import capture_logs

from core.clock import EXCHANGE_TZ
from core.errors import BrokerUnavailable
from market_status_manager import MarketStatusManager, countdown_interval
from broker.models import Clock as BrokerClock
from simulator.clock import SimClock
from market.trading_calendar import TradingCalendar

UTC = timezone.utc
CALENDAR = TradingCalendar()


def et(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=EXCHANGE_TZ).astimezone(UTC)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment

    async def sleep(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


class NoBroker:
    """A broker that fails the test if anyone asks it anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"broker.{name} called while the market is closed")


class ClockBroker:
    """Answers GET /v2/clock from a script: a models.Clock, or an exception to raise."""

    def __init__(self, *answers: BrokerClock | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def get_clock(self) -> BrokerClock:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def broker_clock(at: datetime, is_open: bool, next_open: datetime, next_close: datetime) -> BrokerClock:
    return BrokerClock.model_validate({
        "timestamp": at.isoformat(), "is_open": is_open,
        "next_open": next_open.isoformat(), "next_close": next_close.isoformat(),
    })


# -- phases ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("moment", "phase"), [
    (et(2025, 3, 3, 3, 59, 59), "closed"),
    (et(2025, 3, 3, 4, 0), "pre"),
    (et(2025, 3, 3, 9, 29, 59), "pre"),
    (et(2025, 3, 3, 9, 30), "regular"),
    (et(2025, 3, 3, 15, 59, 59), "regular"),
    (et(2025, 3, 3, 16, 0), "post"),
    (et(2025, 3, 3, 19, 59, 59), "post"),
    (et(2025, 3, 3, 20, 0), "closed"),
    (et(2025, 11, 28, 12, 59, 59), "regular"),  # the day after Thanksgiving closes at 13:00
    (et(2025, 11, 28, 13, 0), "post"),
    (et(2025, 3, 8, 11, 0), "closed"),  # a Saturday
    (et(2025, 7, 4, 11, 0), "closed"),  # Independence Day
    (et(2025, 7, 4, 5, 0), "closed"),
])
def test_phase_at_the_boundaries(moment: datetime, phase: str) -> None:
    status = MarketStatusManager(FixedClock(moment)).status_at(moment)
    assert status.phase == phase
    assert status.is_regular == (phase == "regular")
    assert status.is_extended == (phase in ("pre", "post"))
    assert status.is_closed == (phase == "closed")


def test_an_early_close_is_flagged_and_ends_the_regular_session_at_13_00() -> None:
    manager = MarketStatusManager(FixedClock(et(2025, 11, 28, 10, 0)))
    status = manager.status_at(et(2025, 11, 28, 10, 0))
    assert status.early_close is True and status.session == date(2025, 11, 28)
    assert status.next_event == et(2025, 11, 28, 13, 0) and status.next_event_phase == "post"
    assert status.next_close == et(2025, 11, 28, 13, 0)
    assert manager.status_at(et(2025, 11, 26, 10, 0)).early_close is False


@pytest.mark.parametrize(("moment", "event", "event_phase"), [
    (et(2025, 3, 3, 2, 0), et(2025, 3, 3, 4, 0), "pre"),
    (et(2025, 3, 3, 8, 0), et(2025, 3, 3, 9, 30), "regular"),
    (et(2025, 3, 3, 10, 0), et(2025, 3, 3, 16, 0), "post"),
    (et(2025, 3, 3, 17, 0), et(2025, 3, 3, 20, 0), "closed"),
    (et(2025, 3, 3, 21, 0), et(2025, 3, 4, 4, 0), "pre"),
    (et(2025, 3, 7, 20, 0), et(2025, 3, 10, 4, 0), "pre"),  # Friday night -> Monday
    (et(2025, 7, 3, 21, 0), et(2025, 7, 7, 4, 0), "pre"),  # over the July 4th holiday
    (et(2025, 7, 4, 9, 30), et(2025, 7, 7, 4, 0), "pre"),
])
def test_the_next_session_event(moment: datetime, event: datetime, event_phase: str) -> None:
    status = MarketStatusManager(FixedClock(moment)).status_at(moment)
    assert status.next_event == event and status.next_event_phase == event_phase
    assert status.next_event > moment


def test_a_holiday_has_no_session_and_opens_next_on_the_following_session() -> None:
    status = MarketStatusManager(FixedClock(et(2025, 7, 4, 11, 0))).status_at(et(2025, 7, 4, 11, 0))
    assert status.session is None
    assert status.next_open == et(2025, 7, 7, 9, 30)


@pytest.mark.parametrize(("remaining", "interval"), [
    (timedelta(hours=30), timedelta(hours=1)),
    (timedelta(hours=2, seconds=1), timedelta(hours=1)),
    (timedelta(hours=2), timedelta(minutes=15)),
    (timedelta(minutes=31), timedelta(minutes=15)),
    (timedelta(minutes=30), timedelta(minutes=5)),
    (timedelta(minutes=5, seconds=1), timedelta(minutes=5)),
    (timedelta(minutes=5), timedelta(minutes=1)),
    (timedelta(seconds=20), timedelta(minutes=1)),
])
def test_countdown_intervals_shrink_as_the_event_nears(remaining: timedelta, interval: timedelta) -> None:
    assert countdown_interval(remaining) == interval


# -- waiting while closed ---------------------------------------------------------------------


async def test_waiting_over_a_weekend_reaches_the_event_with_no_broker_call() -> None:
    clock = SimClock(et(2025, 3, 8, 12, 0), speed=None, calendar=CALENDAR)  # Saturday noon, max speed
    manager = MarketStatusManager(clock, CALENDAR, NoBroker())
    with capture_logs() as logs:
        status = await manager.refresh()  # far from the open: the broker is not asked
        assert status.phase == "closed" and status.source == "calendar"
        reached = await manager.wait_until(status.next_event, label=status.next_event_phase)
    assert reached is True
    assert clock.now() == et(2025, 3, 10, 4, 0)
    countdown = events(logs, "market_countdown")
    remaining = [entry["remaining_minutes"] for entry in countdown]
    steps = [round(a - b, 1) for a, b in zip(remaining, remaining[1:])]
    assert remaining[0] == 39 * 60  # 40 wall-clock hours, but clocks spring forward on 2025-03-09
    assert set(steps[:10]) == {60.0}  # hourly while far away ...
    assert steps[-15:] == [15.0] * 6 + [5.0] * 5 + [1.0] * 4  # ... then 15, 5 and 1 minute
    assert remaining[-1] == 1.0
    assert all(entry["waiting_for"] == "pre" for entry in countdown)
    assert events(logs, "market_status")[0]["phase"] == "closed"


async def test_a_stop_request_interrupts_the_wait() -> None:
    clock = SimClock(et(2025, 3, 8, 12, 0), speed=None, calendar=CALENDAR)
    manager = MarketStatusManager(clock, CALENDAR, NoBroker())
    stop = asyncio.Event()
    target = et(2025, 3, 10, 4, 0)

    async def operator() -> None:  # asks to stop once Sunday morning comes
        while clock.now() < et(2025, 3, 9, 8, 0):
            await asyncio.sleep(0)
        stop.set()

    task = asyncio.create_task(operator())
    reached = await asyncio.wait_for(manager.wait_until(target, stop=stop), timeout=10)
    await task
    assert reached is False
    assert et(2025, 3, 9, 8, 0) <= clock.now() < et(2025, 3, 9, 10, 0)


async def test_a_stop_already_requested_returns_at_once() -> None:
    clock = FixedClock(et(2025, 3, 8, 12, 0))
    stop = asyncio.Event()
    stop.set()
    assert await MarketStatusManager(clock).wait_until(et(2025, 3, 10, 4, 0), stop=stop) is False
    assert clock.now() == et(2025, 3, 8, 12, 0)


async def test_waiting_for_a_moment_already_past_returns_at_once() -> None:
    clock = FixedClock(et(2025, 3, 3, 10, 0))
    with capture_logs() as logs:
        assert await MarketStatusManager(clock).wait_until(et(2025, 3, 3, 9, 30)) is True
    assert not events(logs, "market_countdown")


# -- the broker's clock ---------------------------------------------------------------------


async def test_when_the_broker_says_closed_during_the_session_the_broker_wins_until_it_says_otherwise() -> None:
    now = et(2025, 3, 3, 10, 0)
    clock = FixedClock(now)
    closed = broker_clock(now, False, et(2025, 3, 4, 9, 30), et(2025, 3, 4, 16, 0))
    reopened = broker_clock(now, True, et(2025, 3, 4, 9, 30), et(2025, 3, 3, 16, 0))
    broker = ClockBroker(closed, closed, reopened)
    manager = MarketStatusManager(clock, CALENDAR, broker, broker_check_interval=timedelta(minutes=15))
    with capture_logs() as logs:
        first = await manager.refresh()
        clock.moment += timedelta(minutes=1)
        second = await manager.refresh()  # not yet time to ask again: the broker's word holds
    assert first.phase == "closed" and first.source == "broker"
    assert first.next_open == et(2025, 3, 4, 9, 30)
    mismatch = events(logs, "market_status_mismatch")
    assert len(mismatch) == 1
    assert mismatch[0]["calendar_phase"] == "regular" and mismatch[0]["broker_is_open"] is False
    assert second.phase == "closed" and second.source == "broker"
    assert broker.calls == 1

    clock.moment += timedelta(minutes=15)
    assert (await manager.refresh()).phase == "closed" and broker.calls == 2
    clock.moment += timedelta(minutes=15)
    back = await manager.refresh()
    assert back.phase == "regular" and back.source == "calendar" and broker.calls == 3


async def test_when_the_broker_says_open_before_the_calendar_does_the_broker_wins() -> None:
    now = et(2025, 3, 3, 9, 29, 50)
    broker = ClockBroker(broker_clock(now, True, et(2025, 3, 4, 9, 30), et(2025, 3, 3, 16, 0)))
    with capture_logs() as logs:
        status = await MarketStatusManager(FixedClock(now), CALENDAR, broker).refresh()
    assert status.phase == "regular" and status.source == "broker"
    assert status.next_event == et(2025, 3, 3, 16, 0)
    assert events(logs, "market_status_mismatch")[0]["calendar_phase"] == "pre"


async def test_agreement_keeps_the_calendar_view_and_asks_the_broker_only_when_due() -> None:
    now = et(2025, 3, 3, 10, 0)
    clock = FixedClock(now)
    broker = ClockBroker(broker_clock(now, True, et(2025, 3, 4, 9, 30), et(2025, 3, 3, 16, 0)))
    manager = MarketStatusManager(clock, CALENDAR, broker, broker_check_interval=timedelta(minutes=15))
    with capture_logs() as logs:
        for _ in range(10):
            status = await manager.refresh()
            clock.moment += timedelta(minutes=1)
    assert status.phase == "regular" and status.source == "calendar"
    assert broker.calls == 1
    assert not events(logs, "market_status_mismatch")
    assert len(events(logs, "market_status")) == 1  # logged on change only


async def test_a_failing_broker_clock_falls_back_to_the_calendar() -> None:
    now = et(2025, 3, 3, 10, 0)
    clock = FixedClock(now)
    broker = ClockBroker(BrokerUnavailable("GET /v2/clock: connection refused"))
    manager = MarketStatusManager(clock, CALENDAR, broker)
    with capture_logs() as logs:
        status = await manager.refresh()
    assert status.phase == "regular" and status.source == "calendar"
    assert "connection refused" in events(logs, "market_clock_unavailable")[0]["error"]
    clock.moment += timedelta(minutes=1)
    await manager.refresh()
    assert broker.calls == 2  # no answer yet: asked again on the next refresh


async def test_the_broker_is_asked_within_an_hour_of_the_open_but_not_before() -> None:
    clock = FixedClock(et(2025, 3, 3, 2, 0))
    broker = ClockBroker(broker_clock(clock.moment, False, et(2025, 3, 3, 9, 30), et(2025, 3, 3, 16, 0)))
    manager = MarketStatusManager(clock, CALENDAR, broker)
    await manager.refresh()
    assert broker.calls == 0
    clock.moment = et(2025, 3, 3, 8, 45)  # pre-market, near the open
    await manager.refresh()
    assert broker.calls == 1


async def test_a_delayed_open_announced_by_the_broker_is_checked_again_when_it_is_due() -> None:
    clock = FixedClock(et(2025, 3, 3, 9, 35))
    delayed = broker_clock(clock.moment, False, et(2025, 3, 3, 10, 0), et(2025, 3, 3, 16, 0))
    opened = broker_clock(et(2025, 3, 3, 10, 0), True, et(2025, 3, 4, 9, 30), et(2025, 3, 3, 16, 0))
    broker = ClockBroker(delayed, opened)
    manager = MarketStatusManager(clock, CALENDAR, broker, broker_check_interval=timedelta(hours=1))
    status = await manager.refresh()
    assert status.phase == "closed" and status.next_event == et(2025, 3, 3, 10, 0)
    clock.moment = et(2025, 3, 3, 9, 50)
    assert (await manager.refresh()).phase == "closed" and broker.calls == 1
    clock.moment = et(2025, 3, 3, 10, 0)  # the announced open: asked again, well before the hour
    assert (await manager.refresh()).phase == "regular" and broker.calls == 2


async def test_an_old_broker_reading_never_outlives_the_event_it_announced() -> None:
    clock = FixedClock(et(2025, 3, 3, 15, 55))
    broker = ClockBroker(broker_clock(clock.moment, True, et(2025, 3, 4, 9, 30), et(2025, 3, 3, 16, 0)))
    manager = MarketStatusManager(clock, CALENDAR, broker)
    assert (await manager.refresh()).phase == "regular"
    clock.moment = et(2025, 3, 3, 21, 0)  # night: far from the open, so the broker is not asked
    status = await manager.refresh()
    assert status.phase == "closed" and status.source == "calendar" and broker.calls == 1
