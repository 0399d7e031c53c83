"""Client-side rate limiting that keeps a reserve for emergency calls.

Alpaca allows about 200 requests per minute per key. :class:`RateLimiter` is a token bucket
refilled at ``buffer x max_per_minute`` per minute. Its capacity is the headroom left by the
buffer (``max_per_minute x (1 - buffer)``, at least ``burst_allowance + 1``), so no 60-second
window can exceed the broker's limit, and ``burst_allowance`` of those tokens are reserved:
normal calls (account, market data, new orders) never take the bucket below the reserve,
so a flood of data requests can never starve a cancel, a close or an emergency exit.

After a 429 the limiter cools down: normal calls wait ``cooldown_seconds`` (or the broker's
``Retry-After`` if longer) while emergency calls still go, using the reserve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

_EPSILON = 1e-9  # float slack so a refill that lands exactly on a whole token counts


class RateLimiter:
    """Token bucket with an emergency reserve and a cooldown after 429s.

    ``monotonic`` (seconds) and ``sleep`` are injectable so tests run on a fake time source.
    """

    def __init__(
        self,
        max_per_minute: int = 200,
        buffer: float = 0.8,
        burst_allowance: int = 10,
        cooldown_seconds: float = 60.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        problems = []
        if max_per_minute <= 0:
            problems.append(f"max_per_minute must be positive, got {max_per_minute}")
        if not 0 < buffer <= 1:
            problems.append(f"buffer must be in (0, 1], got {buffer}")
        if burst_allowance < 0:
            problems.append(f"burst_allowance must be >= 0, got {burst_allowance}")
        if cooldown_seconds < 0:
            problems.append(f"cooldown_seconds must be >= 0, got {cooldown_seconds}")
        if problems:
            raise ValueError("; ".join(problems))
        self.max_per_minute = max_per_minute
        self.buffer = buffer
        self.reserve = float(burst_allowance)
        self.cooldown_seconds = float(cooldown_seconds)
        self.rate_per_second = max_per_minute * buffer / 60.0
        self.capacity = max(max_per_minute * (1.0 - buffer), self.reserve + 1.0)
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = monotonic()
        self._cooldown_until = float("-inf")

    def __repr__(self) -> str:
        return (
            f"RateLimiter(max_per_minute={self.max_per_minute}, buffer={self.buffer}, "
            f"reserve={self.reserve:g}, tokens={self.tokens:.2f})"
        )

    @property
    def tokens(self) -> float:
        """Tokens in the bucket now (normal calls may use those above the reserve)."""
        self._refill()
        return self._tokens

    @property
    def cooldown_remaining(self) -> float:
        """Seconds until normal calls may go again after a 429 (0 when not cooling down)."""
        return max(0.0, self._cooldown_until - self._monotonic())

    async def acquire(self, emergency: bool = False) -> float:
        """Wait for a token and take it; returns the seconds spent waiting.

        Normal calls wait during a cooldown and never dip into the reserve; emergency
        calls ignore the cooldown and may use the reserve.
        """
        waited = 0.0
        while True:
            self._refill()
            now = self._monotonic()
            if not emergency and now < self._cooldown_until:
                delay = self._cooldown_until - now
            else:
                floor = 0.0 if emergency else self.reserve
                if self._tokens >= floor + 1.0 - _EPSILON:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return waited
                delay = (floor + 1.0 - self._tokens) / self.rate_per_second
            await self._sleep(delay)
            waited += delay

    def note_rate_limited(self, retry_after: float | None = None) -> None:
        """The broker answered 429: cool down and forget the burst we thought we had."""
        seconds = max(self.cooldown_seconds, retry_after or 0.0)
        self._refill()
        self._cooldown_until = max(self._cooldown_until, self._monotonic() + seconds)
        self._tokens = min(self._tokens, self.reserve)
        log.warning("rate_limit_cooldown", seconds=round(seconds, 3))

    def _refill(self) -> None:
        now = self._monotonic()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_second)
