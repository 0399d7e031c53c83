"""Client-side rate limiting that keeps a reserve for emergency calls.

Alpaca allows about 200 requests per minute per key. :class:`RateLimiter` is a token bucket
refilled at ``buffer x max_per_minute`` per minute. Its capacity is the headroom left by the
buffer (``max_per_minute x (1 - buffer)``, at least ``burst_allowance + 1``), so no 60-second
window can exceed the broker's limit, and ``burst_allowance`` of those tokens are reserved:
normal calls (account, market data, new orders) never take the bucket below the reserve,
so a flood of data requests can never starve a cancel, a close or an emergency exit.

After a 429 the limiter cools down for exactly as long as the broker said (``Retry-After``,
or ``X-RateLimit-Reset`` when that is all it sent); ``cooldown_seconds`` is only the fallback
for a 429 that names no time. The ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` headers of
every response are honoured too, per API (trading and market data have separate budgets at
Alpaca): when the broker says no request is left, normal calls to that API wait until its
reset, and not a moment longer. Emergency calls (cancels, closes, emergency exits) go
regardless, using the reserve: a refused emergency call costs a 429, a delayed one may cost
the account.

Every wait is in wall time (``sleep``) and bounded by ``MAX_WAIT_SECONDS``; a caller that is
cancelled (shutdown) stops waiting at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

_EPSILON = 1e-9  # float slack so a refill that lands exactly on a whole token counts
MAX_WAIT_SECONDS = 120.0  # no broker-announced pause is believed beyond this


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
        # per API: (requests the broker says are left, monotonic time its window resets)
        self._budgets: dict[str, tuple[int, float]] = {}
        #: 429 answers seen since this limiter was made (diagnose and alerts report them).
        self.rate_limited_count = 0

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

    async def acquire(self, emergency: bool = False, api: str = "trading") -> float:
        """Wait for a token and take it; returns the seconds spent waiting.

        Normal calls wait during a cooldown or while the broker says ``api`` has no request
        left, and never dip into the reserve; emergency calls ignore both and may use the
        reserve.
        """
        waited = 0.0
        while True:
            self._refill()
            now = self._monotonic()
            blocked_until = float("-inf") if emergency else self._blocked_until(api, now)
            if now < blocked_until:
                delay = blocked_until - now
            else:
                floor = 0.0 if emergency else self.reserve
                if self._tokens >= floor + 1.0 - _EPSILON:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    self._spend(api, now)
                    return waited
                delay = (floor + 1.0 - self._tokens) / self.rate_per_second
            delay = min(max(delay, 0.0), MAX_WAIT_SECONDS)
            await self._sleep(delay)
            waited += delay

    def note_rate_limited(self, retry_after: float | None = None) -> None:
        """The broker answered 429: pause normal calls for exactly the broker's ``retry_after``
        (``cooldown_seconds`` only when it named no time) and forget the burst we thought
        we had."""
        seconds = self.cooldown_seconds if retry_after is None else retry_after
        seconds = min(max(seconds, 0.0), MAX_WAIT_SECONDS)
        self._refill()
        self._cooldown_until = self._monotonic() + seconds
        self._tokens = min(self._tokens, self.reserve)
        self.rate_limited_count += 1
        log.warning("rate_limit_cooldown", seconds=round(seconds, 3))

    def note_budget(self, remaining: int, reset_in: float, api: str = "trading") -> None:
        """The broker's ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` for ``api``:
        ``remaining`` more normal requests until ``reset_in`` seconds from now, then the
        window is the broker's again (not ours to guess)."""
        reset_in = min(max(reset_in, 0.0), MAX_WAIT_SECONDS)
        self._budgets[api] = (max(0, remaining), self._monotonic() + reset_in)

    def remaining(self, api: str = "trading") -> int | None:
        """Requests the broker last said are left in its current window for ``api`` (counted
        down as we spend them); None when it never said or its window has reset."""
        budget = self._budgets.get(api)
        if budget is None or self._monotonic() >= budget[1]:
            return None
        return budget[0]

    def _blocked_until(self, api: str, now: float) -> float:
        """When normal calls to ``api`` may go again (a past time when they may go now)."""
        until = self._cooldown_until
        budget = self._budgets.get(api)
        if budget is not None:
            remaining, reset_at = budget
            if now >= reset_at:
                del self._budgets[api]
            elif remaining <= 0:
                until = max(until, reset_at)
        return until

    def _spend(self, api: str, now: float) -> None:
        budget = self._budgets.get(api)
        if budget is not None and now < budget[1]:
            self._budgets[api] = (budget[0] - 1, budget[1])

    def _refill(self) -> None:
        now = self._monotonic()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_second)
