"""Background delivery: the remote channels of an alert wait in a priority queue (most urgent
first) for one sender task, so ``send`` returns at once and safety actions never wait on a
slow SMTP server or webhook. The queue is bounded (EMERGENCY excepted); a shutdown gives it a
bounded time (:meth:`BackgroundSender.drain`) and says what it abandons."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from alerts.types import AlertLevel

log = structlog.get_logger(__name__)

#: Wall seconds :meth:`BackgroundSender.drain` (shutdown) waits for queued deliveries by default.
DEFAULT_FLUSH_SECONDS = 3.0
#: Queued deliveries beyond this are dropped (logged), EMERGENCY ones excepted.
MAX_QUEUED_ALERTS = 200

#: Runs one channel's send under the alerter's timeout: ``"sent"`` or ``"failed: <reason>"``.
Deliver = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[str]]


@dataclass
class Delivery:
    """One alert's remote channels, waiting for the background sender."""

    level: AlertLevel
    title: str
    key: str
    channels: list[str]
    start: dict[str, Callable[[], Awaitable[Any]]]


class BackgroundSender:
    """The queue and its sender task, started on the first :meth:`enqueue`."""

    def __init__(self, deliver: Deliver, scrub: Callable[[str], str]) -> None:
        self._deliver = deliver
        self._scrub = scrub
        self._queue: asyncio.PriorityQueue[tuple[int, int, Delivery]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._order = itertools.count()
        self._in_flight: Delivery | None = None

    @property
    def pending(self) -> int:
        """Alerts queued or being delivered."""
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + (1 if self._in_flight is not None else 0)

    def enqueue(self, job: Delivery) -> None:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.PriorityQueue()
            self._worker = asyncio.get_running_loop().create_task(self._send_queued(self._queue),
                                                                  name="alert-sender")
        if self._queue.qsize() >= MAX_QUEUED_ALERTS and job.level is not AlertLevel.EMERGENCY:
            log.warning("alert_dropped", title=job.title, alert_level=job.level.value, queued=self._queue.qsize())
            return
        self._queue.put_nowait((-job.level.rank, next(self._order), job))

    async def drain(self, timeout: float = DEFAULT_FLUSH_SECONDS) -> int:
        """Give queued deliveries up to ``timeout`` wall seconds; return how many were left.

        What is left is abandoned (``alert_delivery_abandoned`` names each title): a shutdown
        never waits longer than ``timeout`` on messaging.
        """
        queue, worker = self._queue, self._worker
        if queue is None or worker is None or worker.done():
            return 0
        try:
            await asyncio.wait_for(queue.join(), timeout=max(float(timeout), 0.0))
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:  # a stop that could not wait: say what is lost, then go
            left = self.abandon() if self.pending else 0
            if left:
                log.warning("alert_delivery_abandoned", pending=left, timeout_seconds=float(timeout),
                            cancelled=True)
            raise
        left = self.abandon() if self.pending else 0
        if left:
            log.warning("alert_delivery_abandoned", pending=left, timeout_seconds=float(timeout))
        return left

    def abandon(self) -> int:
        """Stop the sender and forget what it still had (logged), counting it."""
        titles = [self._in_flight.title] if self._in_flight is not None else []
        if self._queue is not None:
            while not self._queue.empty():
                titles.append(self._queue.get_nowait()[2].title)
        if titles:
            log.warning("alert_delivery_abandoned_titles", titles=titles)
        if self._worker is not None:
            self._worker.cancel()
        self._worker, self._queue, self._in_flight = None, None, None
        return len(titles)

    async def _send_queued(self, queue: asyncio.PriorityQueue[tuple[int, int, Delivery]]) -> None:
        """The sender: one alert at a time, most urgent first, each channel bounded."""
        while True:
            job = (await queue.get())[2]
            self._in_flight = job
            try:
                results = await asyncio.gather(*(self._deliver(name, job.start[name]) for name in job.channels))
                for name, result in zip(job.channels, results):
                    if result != "sent":
                        log.warning("alert_delivery_failed", channel=name, reason=result.removeprefix("failed: "),
                                    alert_level=job.level.value, title=job.title)
                log.info("alert_delivered", title=job.title, key=job.key, alert_level=job.level.value,
                         sent=[n for n, r in zip(job.channels, results) if r == "sent"],
                         failed=[n for n, r in zip(job.channels, results) if r != "sent"])
            except Exception as exc:  # the sender must outlive any one alert
                log.error("alert_failed", title=job.title, error=type(exc).__name__, reason=self._scrub(str(exc)))
            finally:
                self._in_flight = None
                queue.task_done()
