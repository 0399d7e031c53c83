"""The trade stream in the loop: connection, REST catch-up, periodic reconciliation, fallback.

:class:`TradeEventFeed` owns the stream client (``broker.trade_stream``) and the event core
(``engine.order_events.OrderEventBook``) and gives the loop three things:

* ``lock``: held by the loop around each cycle (``TradingSystem.step``) and by everything
  this feed does to the account from outside the cycle (a catch-up, the protection after a
  partial fill), so the two never interleave their broker calls;
* :meth:`ready_for_cycle` -> whether this cycle reads account, positions and open orders
  from the event book (:meth:`read_account`: no request, or one listing when an order
  appeared) instead of polling REST as before;
* :meth:`mark_snapshots`: the cycle's prices, at which held positions are valued.

**Catch-up.** Each connection that reaches ``listening`` (the first and every reconnect)
triggers a REST catch-up: FILL activities since a little before the last fill journaled,
the account, positions, open orders, and the activities once more; when the two activity
readings differ (a fill landed in between) it is read again, so the reading is one moment
of the broker. Fills not yet journaled are recorded (``order_filled`` with ``"source":
"rest_catchup"`` for orders that completed), tracked orders are followed up, the journal is
reconciled against the reading, and the book is rebased on it. The same catch-up runs every
``stream.reconcile_minutes`` of market time as the safety net, between two cycles
(:meth:`reconcile_if_due`; ``stream_catchup`` logs each with its own request count).

**Fallback.** While the stream is not healthy (not connected, stale, or not yet caught up)
the loop polls exactly as before. After ``stream.fallback_after_seconds`` without a stream
the feed warns (``stream_unavailable``) and alerts once; ``stream_restored`` when it is back.
The client reconnects on its own with backoff and logs ``stream_reconnected``.

**Partial fills** are protected on the event: the book reports them, the feed runs
``OrderExecutor.protect_positions(..., defer_filling=False)`` for that symbol at once (the
rest of a partly filled bracket entry is canceled so its legs protect what was filled),
under ``lock``. A failure is logged (``stream_protection_failed``) and alerted; the loop's
own unprotected-position check still runs every cycle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import structlog

from alerter import AlertLevel
from broker.models import Account, Activity, Order, Position
from broker.trade_stream import TradeStreamClient, trading_stream_url
from broker.trade_updates import TradeUpdate
from core.errors import BrokerError, TemporaryError
from engine.order_events import OrderEventBook, activity_key

log = structlog.get_logger(__name__)

__all__ = ["TradeEventFeed"]

#: Activities are asked from this long before the last journaled fill (``after`` is
#: exclusive and the broker's clock is not ours); repeats are deduplicated.
CATCHUP_OVERLAP = timedelta(minutes=5)
#: Readings of (activities, account, positions, orders, activities) tried for one moment.
CATCHUP_ATTEMPTS = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Broker modes that have a trading stream (a backtest's in-process broker has none).
STREAM_MODES = ("sim", "paper", "live")
#: How long stop() waits for the stream task to end.
STOP_SECONDS = 2.0


class TradeEventFeed:
    """The trade stream for one trading loop (see the module docstring). A feed built with
    ``client=None`` is disabled: the loop polls, and every method is a cheap no-op."""

    def __init__(self, *, broker: Any, clock: Any, journal: Any, reconciler: Any, executor: Any,
                 alerter: Any, settings: Any = None, client_factory: Any = None) -> None:
        self.broker = broker
        self.clock = clock
        self.journal = journal
        self.reconciler = reconciler
        self.executor = executor
        self.alerter = alerter
        self.settings = settings
        self.lock = asyncio.Lock()
        self._apply_lock = asyncio.Lock()
        self.book = OrderEventBook(journal=journal, reconciler=reconciler, executor=executor,
                                   on_partial_fill=self._on_partial_fill)
        self.client: TradeStreamClient | None = client_factory(self) if client_factory is not None else None
        if self.client is not None:  # REST copies of streamed fills are not journaled twice
            reconciler.streamed = lambda activity: activity_key(activity) in self.book.streamed
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._catchup_task: asyncio.Task[None] | None = None
        self._protect_task: asyncio.Task[None] | None = None
        self._protect_symbols: set[str] = set()
        self._caught_up_connection = 0
        self._last_rest_at: datetime | None = None
        self._unavailable_since = time.monotonic()
        self._warned_unavailable = False
        self._started_at: datetime = clock.now()

    @classmethod
    def for_system(cls, system: Any) -> TradeEventFeed:
        """The feed for a ``TradingSystem``: enabled when ``[stream] enabled`` and the broker
        is the HTTP gateway (``stream_credentials``) in sim, paper or live mode; disabled
        otherwise (a backtest's in-process broker, a test's fake)."""
        settings = getattr(system.settings, "stream", None)
        broker = system.broker
        args = dict(broker=broker, clock=system.clock, journal=system.journal, reconciler=system.reconciler,
                    executor=system.executor, alerter=system.alerter, settings=settings)
        if settings is None or not settings.enabled or getattr(broker, "mode", None) not in STREAM_MODES \
                or not callable(getattr(type(broker), "stream_credentials", None)):
            return cls(**args)
        credentials = broker.stream_credentials() or ("anonymous", "anonymous")  # loopback without keys
        url = trading_stream_url(broker.base_url, settings.url)
        market = system.market_status

        def is_active() -> bool:
            current = getattr(market, "current", None)
            return current is not None and current.phase == "regular"

        def factory(feed: TradeEventFeed) -> TradeStreamClient:
            return TradeStreamClient(
                url, credentials[0], credentials[1], on_update=feed._on_update, on_connected=feed._on_connected,
                heartbeat_s=settings.heartbeat_seconds, stale_after_s=settings.stale_after_seconds,
                backoff_min_s=settings.reconnect_min_seconds, backoff_max_s=settings.reconnect_max_seconds,
                is_active=is_active)

        return cls(**args, client_factory=factory)

    # -- life ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.client is not None

    async def start(self) -> None:
        """Start listening (idempotent; nothing when disabled)."""
        if self.client is None or self._task is not None:
            return
        self._task = asyncio.ensure_future(self.client.run(self._stop))

    async def stop(self) -> None:
        """Stop listening, bounded in time (SIGTERM must end the daemon within seconds)."""
        self._stop.set()
        tasks = [t for t in (self._task, self._catchup_task, self._protect_task) if t is not None and not t.done()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=STOP_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=STOP_SECONDS)

    # -- the stream's callbacks ------------------------------------------------------------

    async def _on_update(self, update: TradeUpdate) -> None:
        async with self._apply_lock:
            try:
                await self.book.handle(update, source="stream")
            except Exception as exc:  # one bad event must not end the stream; catch-up repairs
                log.exception("stream_event_failed", trade_event=update.event, order_id=update.order.id,
                              error=repr(exc))
                self._caught_up_connection = 0  # force a catch-up before trusting the book again
                self._schedule_catch_up("event_failed")

    async def _on_connected(self, connection: int) -> None:
        self._schedule_catch_up("connected" if connection == 1 else "reconnected")

    def _schedule_catch_up(self, reason: str) -> None:
        if self._catchup_task is not None and not self._catchup_task.done():
            return
        self._catchup_task = asyncio.ensure_future(self._catch_up_locked(reason))

    async def _catch_up_locked(self, reason: str) -> None:
        """Catch up for the current connection, again if it was replaced meanwhile. A failure
        leaves the feed polling; the next cycle retries (:meth:`ready_for_cycle`)."""
        while not self._stop.is_set():
            connection = self.client.connections if self.client is not None else 0
            async with self.lock:
                if not await self._try_catch_up(reason, connection):
                    return
            if self.client is None or self.client.connections == connection:
                return
            reason = "reconnected"

    async def _try_catch_up(self, reason: str, connection: int) -> bool:
        try:
            await self.catch_up(reason)
        except (TemporaryError, BrokerError) as exc:
            log.warning("stream_catchup_failed", reason=reason, error=str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - logged loudly; the loop polls meanwhile
            log.exception("stream_catchup_failed", reason=reason, error=repr(exc))
            return False
        self._caught_up_connection = connection
        return True

    # -- the catch-up ----------------------------------------------------------------------

    async def catch_up(self, reason: str) -> None:
        """Read the broker over REST as of one moment, journal what the stream missed, and
        rebase the book on it (see the module docstring). Caller holds ``lock``."""
        requests_before = getattr(self.broker, "request_count", 0)
        async with self._apply_lock:
            last = self.reconciler.last_fill_at
            after = last - CATCHUP_OVERLAP if last is not None else None
            attempts = 0
            while True:
                attempts += 1
                account, positions, orders, fills, steady = await self._reading(after)
                if steady or attempts >= CATCHUP_ATTEMPTS:
                    break
            # a fill the stream already journaled (under its execution id) is not journaled
            # again under the activity's id, not even as an uncounted copy
            new_fills = [a for a in sorted(fills, key=_fill_time)
                         if activity_key(a) not in self.book.streamed and self.reconciler.apply_fill(a)]

            self.book.rebase(account, positions, orders, fills)
        await self.executor.manage_open_orders(orders, source="rest_catchup")
        self._log_completed(fills)
        await self.reconciler.reconcile(orders, positions, full=False, lookup_orders=True)
        self._last_rest_at = self.clock.now()
        log.info("stream_catchup", reason=reason, fills=len(fills), new_fills=len(new_fills),
                 attempts=attempts, positions=len(positions), open_orders=len(orders),
                 requests=getattr(self.broker, "request_count", 0) - requests_before)

    async def _reading(self, after: datetime | None
                       ) -> tuple[Account, list[Position], list[Order], list[Activity], bool]:
        first = await self.broker.get_activities(activity_types=("FILL",), after=after)
        account = await self.broker.get_account()
        positions = await self.broker.list_positions()
        orders = await self.broker.list_orders(status="open", nested=True, limit=500)
        fills = await self.broker.get_activities(activity_types=("FILL",), after=after)
        steady = {a.id for a in first} == {a.id for a in fills}
        return account, list(positions), list(orders), list(fills), steady

    def _log_completed(self, fills: Sequence[Activity]) -> None:
        """``order_filled`` (source rest_catchup) for orders whose last fill, since this run
        began, nobody has logged yet: the stream missed it, or a polling cycle journaled it
        (polling logs only the orders it tracks). Tracked orders were just logged by the
        executor; each id is logged once."""
        for activity in fills:
            order_id = activity.order_id
            if activity.order_status != "filled" or not order_id or order_id in self.executor.filled_logged:
                continue
            if activity.transaction_time is not None and activity.transaction_time < self._started_at:
                continue  # the run before this one saw it
            self.executor.filled_logged.add(order_id)
            row = self.journal.order_by_broker_id(order_id)
            log.info("order_filled", broker_order_id=order_id, symbol=activity.symbol, side=activity.side,
                     status="filled", filled_qty=str(activity.cum_qty), fill_price=str(activity.price),
                     client_order_id=row["client_order_id"] if row else None, source="rest_catchup")

    # -- the loop's side -------------------------------------------------------------------

    async def reconcile_if_due(self) -> None:
        """Between cycles (``TradingSystem.step``, holding ``lock``): the periodic REST
        reconciliation every ``reconcile_minutes`` of market time, and a catch-up that failed
        before, retried. A step of its own with its own ``stream_catchup`` line and request
        count, not part of the cycle that follows (whose ``requests`` stay the cycle's)."""
        if self.client is None or not self.client.healthy:
            return
        if self._catchup_task is not None and not self._catchup_task.done():
            return  # the connection's own catch-up is waiting for this lock
        behind = self._caught_up_connection != self.client.connections
        due = self._last_rest_at is None or self.clock.now() - self._last_rest_at >= timedelta(
            minutes=float(self.settings.reconcile_minutes))
        if behind or due:
            await self._try_catch_up("retry" if behind else "periodic", self.client.connections)

    async def ready_for_cycle(self) -> bool:
        """Whether this cycle reads the book (True) or polls REST as before (False); reports a
        stream that stays away. Caller holds ``lock``."""
        if self.client is None:
            return False
        live = self.client.healthy and self.book.ready and self._caught_up_connection == self.client.connections
        if not live:
            await self._note_unavailable()
            return False
        await self._note_available()
        return True

    async def read_account(self) -> tuple[Account, list[Position], list[Order]]:
        """The cycle's account, positions and open orders from the book (one open-order
        listing when an order the book has not seen appeared)."""
        if self.book.orders_stale:
            orders = await self.broker.list_orders(status="open", nested=True, limit=500)
            async with self._apply_lock:
                self.book.replace_open_orders(orders)
        return self.book.view()

    def mark_snapshots(self, snapshots: Mapping[str, Any]) -> None:
        """Value held positions at the cycle's latest trade prices."""
        if self.client is None:
            return
        prices: dict[str, Decimal] = {}
        for symbol, snap in snapshots.items():
            trade = getattr(snap, "latest_trade", None)
            price = getattr(trade, "p", None) if trade is not None else None
            if price is not None:
                prices[symbol] = Decimal(str(price))
        self.book.mark(prices)

    async def _note_unavailable(self) -> None:
        if self.client is None or self._warned_unavailable:
            return
        away = time.monotonic() - (self.client.down_since or self._unavailable_since)
        if away < float(self.settings.fallback_after_seconds):
            return
        self._warned_unavailable = True
        log.warning("stream_unavailable", url=self.client.url, seconds=round(away, 1),
                    failures_in_a_row=self.client.failures_in_a_row, fallback="polling")
        await self.alerter.send(AlertLevel.WARNING, "Trade stream unavailable: polling",
                                f"No trade_updates stream for {away:.0f}s; the daemon polls the broker "
                                "every cycle until it is back.", key="stream_unavailable")

    async def _note_available(self) -> None:
        if self._warned_unavailable:
            self._warned_unavailable = False
            log.info("stream_restored", url=self.client.url if self.client else None)
        self._unavailable_since = time.monotonic()

    # -- protection on a partial fill ------------------------------------------------------

    def _on_partial_fill(self, symbol: str) -> None:
        self._protect_symbols.add(symbol)
        if self._protect_task is None or self._protect_task.done():
            self._protect_task = asyncio.ensure_future(self._protect_now())

    async def _protect_now(self) -> None:
        await asyncio.sleep(0)  # let the event that asked finish applying
        async with self.lock:
            symbols, self._protect_symbols = self._protect_symbols, set()
            try:
                orders = await self.broker.list_orders(status="open", nested=True, limit=500)
                async with self._apply_lock:
                    self.book.replace_open_orders(orders)
                    _account, positions, _orders = self.book.view()
                held = [p for p in positions if p.symbol in symbols]
                log.info("stream_partial_fill_protection", symbols=sorted(symbols), positions=len(held))
                await self.executor.protect_positions(held, orders, defer_filling=False)
            except Exception as exc:  # noqa: BLE001 - never silent; the loop checks again each cycle
                log.exception("stream_protection_failed", symbols=sorted(symbols), error=repr(exc))
                await self.alerter.send(AlertLevel.CRITICAL, "Protection after a partial fill failed",
                                        f"{sorted(symbols)}: {exc!r}; the next cycle checks again",
                                        key="stream_protection_failed")


def _fill_time(activity: Activity) -> datetime:
    return activity.transaction_time or _EPOCH
