"""The token bucket on a fake time source: normal calls pace, emergency calls always go."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from broker.rate_limit import RateLimiter


class FakeTime:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(fake: FakeTime, **kw: float) -> RateLimiter:
    return RateLimiter(monotonic=fake.monotonic, sleep=fake.sleep, **kw)  # type: ignore[arg-type]


async def test_no_sixty_second_window_exceeds_the_broker_limit() -> None:
    fake = FakeTime()
    bucket = limiter(fake)  # 200/min, buffer 0.8, reserve 10
    start = fake.now
    stamps = []
    for _ in range(400):
        await bucket.acquire()
        stamps.append(fake.now - start)
    # Sliding 60 s windows never exceed 200 requests, and the long-run pace is 160/min.
    for i, t in enumerate(stamps):
        in_window = sum(1 for u in stamps[i:] if u < t + 60)
        assert in_window <= 200
    assert stamps[-1] == pytest.approx((400 - 30) / (160 / 60), rel=0.01)


async def test_normal_calls_leave_the_reserve_for_emergency_calls() -> None:
    fake = FakeTime()
    bucket = limiter(fake, burst_allowance=10)
    for _ in range(30):  # capacity 40 - reserve 10
        await bucket.acquire()
    assert fake.sleeps == []

    waiting = asyncio.create_task(bucket.acquire())  # a data request now has to wait...
    await asyncio.sleep(0)
    emergency_waits = [await bucket.acquire(emergency=True) for _ in range(10)]
    assert emergency_waits == [0.0] * 10  # ...while ten emergency calls go at once
    assert fake.sleeps  # the normal call slept
    await waiting


async def test_a_429_pauses_normal_calls_for_exactly_its_retry_after_not_the_cooldown() -> None:
    """Issue 12: a single 429 with ``Retry-After: 1`` froze the daemon for 60 s."""
    fake = FakeTime()
    bucket = limiter(fake, cooldown_seconds=60)
    with capture_logs() as logs:
        bucket.note_rate_limited(retry_after=1)
    assert logs[0]["event"] == "rate_limit_cooldown" and logs[0]["seconds"] == 1
    assert bucket.cooldown_remaining == pytest.approx(1)

    assert await bucket.acquire(emergency=True) == 0.0  # emergency calls never wait
    waited = await bucket.acquire()
    assert waited == pytest.approx(1.0)  # no more than the broker asked...
    assert bucket.cooldown_remaining == 0


async def test_a_429_without_a_time_falls_back_to_the_cooldown() -> None:
    fake = FakeTime()
    bucket = limiter(fake, cooldown_seconds=60)
    bucket.note_rate_limited(retry_after=None)
    assert await bucket.acquire() == pytest.approx(60)


async def test_retry_after_longer_than_the_cooldown_wins() -> None:
    fake = FakeTime()
    bucket = limiter(fake, cooldown_seconds=10)
    bucket.note_rate_limited(retry_after=45)
    assert await bucket.acquire() == pytest.approx(45)  # ...and no less


async def test_no_request_left_waits_until_the_brokers_reset_and_no_longer() -> None:
    fake = FakeTime()
    bucket = limiter(fake)
    bucket.note_budget(remaining=0, reset_in=7.5, api="trading")
    assert await bucket.acquire(api="data") == 0.0  # market data has its own budget
    assert await bucket.acquire(emergency=True) == 0.0  # a cancel or an exit goes anyway
    assert await bucket.acquire() == pytest.approx(7.5)
    assert await bucket.acquire() == 0.0  # after the reset the window is fresh


async def test_requests_left_are_spent_then_the_rest_waits_for_the_reset() -> None:
    fake = FakeTime()
    bucket = limiter(fake)
    bucket.note_budget(remaining=2, reset_in=20.0)
    assert [await bucket.acquire() for _ in range(2)] == [0.0, 0.0]
    assert await bucket.acquire() == pytest.approx(20.0)


async def test_a_broker_announced_pause_is_bounded() -> None:
    fake = FakeTime()
    bucket = limiter(fake)
    bucket.note_rate_limited(retry_after=1e9)
    assert await bucket.acquire() <= 120.0


async def test_emergency_calls_are_paced_once_the_reserve_is_spent() -> None:
    fake = FakeTime()
    bucket = limiter(fake, max_per_minute=60, buffer=0.5, burst_allowance=2)  # 30/min
    for _ in range(30):
        await bucket.acquire(emergency=True)
    # Capacity 30 went at once; the rest follows at 0.5 tokens per second.
    assert fake.now - 1000.0 == pytest.approx(0.0)
    await bucket.acquire(emergency=True)
    assert fake.now - 1000.0 == pytest.approx(2.0)


def test_bad_settings_are_refused_with_every_problem_named() -> None:
    with pytest.raises(ValueError) as info:
        RateLimiter(max_per_minute=0, buffer=1.5, burst_allowance=-1, cooldown_seconds=-1)
    for name in ("max_per_minute", "buffer", "burst_allowance", "cooldown_seconds"):
        assert name in str(info.value)
