"""Turning approved trade intents into broker orders, and getting out when it matters.

Three jobs, each findable from the log events it emits:

* **Entries** (:meth:`OrderExecutor.submit_bracket`): one bracket order per intent (entry,
  take-profit and stop as one OCO pair), with a deterministic ``client_order_id`` derived from
  the intent id, so a retry or a restart can never turn one intent into two orders. The order
  is journaled *before* it is sent. An ambiguous outcome leaves it ``in_flight`` until
  reconciled. Events: ``order_submitted``, ``order_rejected``, ``order_in_flight``.
* **Tracking** (:meth:`OrderExecutor.manage_open_orders`): every tracked order is followed to
  its terminal state; fills log price and slippage against the intended entry. Events:
  ``order_filled``, ``order_partially_filled``, ``order_canceled``, ``order_rejected``.
* **Protection and emergency stop** (:meth:`protect_positions`, :meth:`emergency_exit`,
  :meth:`liquidate_all`): a position without a stop for its full quantity gets one sized to
  the held quantity; an emergency exit cancels the symbol's open orders, waits until the
  broker confirms, sells what is sellable (market in regular hours, marketable limit in
  extended hours), retries with backoff on ``insufficient qty`` and broker errors, and
  verifies the position is flat. It never reports a success that did not happen. Events:
  ``position_unprotected``, ``position_protected``, ``emergency_liquidation``,
  ``emergency_stop_failed``, ``position_flat`` (the trade itself is logged as ``position_closed`` by the loop when its fills arrive).

A cancel that meets the broker's race (``already filled``/``canceled``/``expired``, or not
found: an :class:`core.errors.OrderOutcome`) is no failure. Every cancel path goes through
:meth:`OrderExecutor._cancel_quietly`, which reads the order's true state, journals it (a fill
is recorded as a fill) and logs ``cancel_outcome``; the caller then re-reads the position
before acting, so nothing is ever placed for a position that closed in the race
(``position_gone``).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any, Literal, Protocol, Sequence

import structlog

from core.clock import Clock
from core.errors import (
    BrokerError,
    InsufficientQuantity,
    NotFound,
    OperationalError,
    OrderInFlight,
    OrderNotCancelable,
    OrderOutcome,
    OrderRejected,
    PatternDayTraderRejected,
    TemporaryError,
)
from broker.models import Order, OrderRequest, Position

log = structlog.get_logger(__name__)

CENT = Decimal("0.01")
HUNDREDTH_CENT = Decimal("0.0001")
PROTECTIVE_TYPES = frozenset({"stop", "stop_limit", "trailing_stop"})
MAX_CLIENT_ORDER_ID = 48


def round_price(price: Decimal, *, side: Literal["up", "down", "nearest"] = "nearest") -> Decimal:
    """A price Alpaca accepts: 2 decimals at $1 and above, 4 below (the sub-penny rule)."""
    quantum = CENT if price >= 1 else HUNDREDTH_CENT
    rounding = {"up": ROUND_CEILING, "down": ROUND_DOWN, "nearest": ROUND_HALF_UP}[side]
    return price.quantize(quantum, rounding=rounding)


def client_order_id_for(intent_id: str, attempt: int = 0) -> str:
    """A deterministic ``client_order_id`` (at most 48 characters) for one intent and attempt.

    Short intent ids are kept readable; long ones keep a readable prefix and a hash suffix.
    """
    suffix = f"-{attempt}"
    room = MAX_CLIENT_ORDER_ID - len(suffix)
    if len(intent_id) <= room:
        return intent_id + suffix
    digest = hashlib.sha256(intent_id.encode()).hexdigest()[:12]
    return f"{intent_id[: room - 13]}~{digest}{suffix}"


class IntentLike(Protocol):
    intent_id: str
    symbol: str
    side: str
    strategy: str
    confidence: float
    entry_price: float
    stop_price: float | None
    target_price: float | None


class JournalLike(Protocol):
    def record_order_submission(self, client_order_id: str, intent_id: str | None, symbol: str,
                                side: str, qty: Decimal, order_type: str, order_class: str,
                                payload: dict[str, Any], at: datetime) -> None: ...

    def update_order(self, client_order_id: str, *, status: str, at: datetime,
                     broker_order_id: str | None = None, filled_qty: Decimal | None = None,
                     filled_avg_price: Decimal | None = None,
                     raw: dict[str, Any] | None = None) -> None: ...


@dataclass
class ExecutionResult:
    """What happened to one submission attempt."""

    client_order_id: str
    symbol: str
    status: Literal["submitted", "in_flight", "rejected"]
    reason: str = ""
    order: Order | None = None
    error_code: int | None = None


@dataclass
class TrackedOrder:
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    intent_id: str | None
    strategy: str | None
    expected_price: Decimal | None
    submitted_at: datetime
    status: str = "pending"
    broker_order_id: str | None = None
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    stop_price: Decimal | None = None
    target_price: Decimal | None = None


class EmergencyStep(str, Enum):
    CANCELING = "canceling"
    AWAITING_CANCEL = "awaiting_cancel"
    EXITING = "exiting"
    VERIFYING = "verifying"
    FLAT = "flat"
    FAILED = "failed"


@dataclass
class EmergencyStopReport:
    """The record of one emergency exit; ``to_dict()`` is JSON-serialisable."""

    symbol: str
    reason: str
    started_at: datetime
    step: EmergencyStep = EmergencyStep.CANCELING
    position_qty: Decimal = Decimal(0)
    canceled_orders: list[str] = field(default_factory=list)
    exit_orders: list[str] = field(default_factory=list)
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    finished_at: datetime | None = None
    #: Shares still held when the stop gave up (None while running or once flat): the last
    #: quantity the broker reported, else what the caller knew was held. Never a made-up 0.
    unsold_qty: Decimal | None = None
    #: Shares the exit orders sold (position at the first reading minus what is left).
    sold_qty: Decimal = Decimal(0)

    @property
    def succeeded(self) -> bool:
        return self.step is EmergencyStep.FLAT

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["step"] = self.step.value
        out["position_qty"] = str(self.position_qty)
        out["unsold_qty"] = str(self.unsold_qty) if self.unsold_qty is not None else None
        out["sold_qty"] = str(self.sold_qty)
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        out["succeeded"] = self.succeeded
        return out


def protected_quantity(position: Position, open_orders: Sequence[Order]) -> Decimal:
    """Shares of ``position`` covered by working protective stop orders at the broker.

    Counts sell stops (stop, stop-limit, trailing) for a long, buy stops for a short, including
    legs of bracket/OCO orders (``held`` legs of an unfilled entry protect nothing yet).
    """
    exit_side = "sell" if position.qty > 0 else "buy"
    covered = Decimal(0)
    for order in flatten_orders(open_orders):
        if order.symbol != position.symbol or order.side != exit_side:
            continue
        if order.type not in PROTECTIVE_TYPES or not order.is_open or order.status == "held":
            continue
        covered += order.remaining_qty or Decimal(0)
    return covered


def _filling_entries(position: Position, open_orders: Sequence[Order]) -> list[Order]:
    """Working bracket/OTO entries that added to ``position`` and have not finished filling
    (their exit legs are still ``held``, so the filled shares are not yet protected)."""
    entry_side = "buy" if position.qty > 0 else "sell"
    return [
        o for o in open_orders
        if o.symbol == position.symbol and o.side == entry_side and o.is_open and o.status != "held"
        and o.order_class in ("bracket", "oto") and o.filled_qty > 0
    ]


def flatten_orders(orders: Sequence[Order]) -> list[Order]:
    """Orders and their legs (nested or listed flat), each id once."""
    out: list[Order] = []
    for order in orders:
        out.append(order)
        if order.legs:
            out.extend(flatten_orders(order.legs))
    # the same leg may be listed both nested and flat: keep one of each id
    unique: dict[str, Order] = {}
    for order in out:
        unique.setdefault(order.id, order)
    return list(unique.values())


class OrderExecutor:
    """Submits, tracks, protects and, when told, liquidates. One per trading loop."""

    def __init__(
        self,
        broker: Any,
        clock: Clock,
        *,
        stop_loss: float = 0.03,
        take_profit: float = 0.06,
        journal: JournalLike | None = None,
        emergency_max_attempts: int = 5,
        emergency_backoff: float = 1.0,
        emergency_backoff_max: float = 16.0,
        extended_hours_slippage: float = 0.01,
        time_in_force: str = "gtc",
        partial_fill_timeout: float = 60.0,
    ) -> None:
        """``partial_fill_timeout``: a bracket entry still partly filled after this many
        seconds has the rest canceled, so that its legs protect what was filled (Alpaca
        keeps the legs ``held`` until the entry is done)."""
        self._broker = broker
        self._clock = clock
        self._stop_loss = Decimal(str(stop_loss))
        self._take_profit = Decimal(str(take_profit))
        self._journal = journal
        self._emergency_max_attempts = emergency_max_attempts
        self._emergency_backoff = emergency_backoff
        self._emergency_backoff_max = emergency_backoff_max
        self._extended_slippage = Decimal(str(extended_hours_slippage))
        self._tif = time_in_force
        self._partial_fill_timeout = partial_fill_timeout
        self.tracked: dict[str, TrackedOrder] = {}
        #: Broker order ids already logged as ``order_filled`` (by any source: the submit
        #: answer, polling, the trade stream, a REST catch-up), so each is logged once.
        self.filled_logged: set[str] = set()
        # (order id, leg ids) of open orders whose legs the journal already holds.
        self._legs_known: set[tuple[str, tuple[str, ...]]] = set()

    # -- entries --------------------------------------------------------------------------

    def bracket_levels(self, intent: IntentLike, entry: Decimal) -> tuple[Decimal, Decimal]:
        """Stop and target for a long entry: the strategy's levels when sane, else 3% / 6%."""
        stop = Decimal(str(intent.stop_price)) if intent.stop_price else entry * (1 - self._stop_loss)
        target = (
            Decimal(str(intent.target_price)) if intent.target_price else entry * (1 + self._take_profit)
        )
        if not (stop < entry < target):
            stop, target = entry * (1 - self._stop_loss), entry * (1 + self._take_profit)
        # Alpaca: the stop must be at least a cent below the base price.
        stop = min(round_price(stop, side="down"), round_price(entry - CENT, side="down"))
        return stop, round_price(target, side="up")

    async def submit_bracket(
        self, intent: IntentLike, qty: Decimal, *, attempt: int = 0, limit_price: Decimal | None = None
    ) -> ExecutionResult:
        """Submit one bracket order (long entry, take-profit, stop) for an approved intent."""
        entry = Decimal(str(intent.entry_price))
        stop, target = self.bracket_levels(intent, limit_price or entry)
        cid = client_order_id_for(intent.intent_id, attempt)
        structlog.contextvars.bind_contextvars(client_order_id=cid)
        try:
            request = OrderRequest.bracket(
                intent.symbol, qty, "buy",
                take_profit_price=target, stop_loss_price=stop,
                limit_price=round_price(limit_price) if limit_price is not None else None,
                time_in_force=self._tif, client_order_id=cid,
            )
            return await self._submit(
                request, intent_id=intent.intent_id, strategy=intent.strategy,
                expected_price=entry, stop=stop, target=target,
            )
        finally:
            structlog.contextvars.unbind_contextvars("client_order_id")

    async def _submit(
        self,
        request: OrderRequest,
        *,
        intent_id: str | None,
        strategy: str | None,
        expected_price: Decimal | None,
        stop: Decimal | None = None,
        target: Decimal | None = None,
    ) -> ExecutionResult:
        cid = request.client_order_id or ""
        now = self._clock.now()
        qty = request.qty or Decimal(0)
        if self._journal is not None:
            self._journal.record_order_submission(
                cid, intent_id, request.symbol, request.side, qty, request.type,
                request.order_class or "simple", request.to_payload(), now,
            )
        tracked = TrackedOrder(
            client_order_id=cid, symbol=request.symbol, side=request.side, qty=qty,
            intent_id=intent_id, strategy=strategy, expected_price=expected_price,
            submitted_at=now, stop_price=stop, target_price=target,
        )
        self.tracked[cid] = tracked
        try:
            order = await self._broker.submit_order(request)
        except OrderInFlight as exc:
            tracked.status = "in_flight"
            self._journal_update(cid, status="in_flight")
            log.warning("order_in_flight", client_order_id=cid, symbol=request.symbol, error=str(exc))
            return ExecutionResult(cid, request.symbol, "in_flight", reason=str(exc))
        except OrderRejected as exc:
            tracked.status = "rejected"
            self.tracked.pop(cid, None)
            self._journal_update(cid, status="rejected", raw={"code": exc.code, "message": exc.message})
            log.warning(
                "order_rejected", client_order_id=cid, symbol=request.symbol, side=request.side,
                qty=str(qty), code=exc.code, reason=exc.message,
                pdt=isinstance(exc, PatternDayTraderRejected),
            )
            return ExecutionResult(cid, request.symbol, "rejected", reason=exc.message, error_code=exc.code)
        except TemporaryError as exc:
            # The gateway resolves ambiguous outcomes itself; a temporary error here means
            # the request was never accepted. Treat it as in flight anyway: reconciliation
            # by client_order_id is cheap and a duplicate is not.
            tracked.status = "in_flight"
            self._journal_update(cid, status="in_flight")
            log.warning("order_in_flight", client_order_id=cid, symbol=request.symbol, error=str(exc))
            return ExecutionResult(cid, request.symbol, "in_flight", reason=str(exc))
        log.info(
            "order_submitted", client_order_id=cid, broker_order_id=order.id, symbol=order.symbol,
            side=order.side, qty=str(qty), type=order.type, order_class=order.order_class,
            status=order.status, stop_price=str(stop) if stop else None,
            target_price=str(target) if target else None, strategy=strategy,
        )
        # A marketable order may come back already (partly) filled: report it now.
        self._observe(tracked, order, source="submit")
        self._journal_acknowledged_legs(order)
        if order.is_terminal:
            self.tracked.pop(cid, None)
        return ExecutionResult(cid, request.symbol, "submitted", order=order)

    def _journal_update(self, cid: str, **kw: Any) -> None:
        if self._journal is not None:
            self._journal.update_order(cid, at=self._clock.now(), **kw)

    def _apply(self, tracked: TrackedOrder, order: Order) -> None:
        tracked.broker_order_id = order.id
        tracked.status = order.status
        tracked.filled_qty = order.filled_qty
        tracked.filled_avg_price = order.filled_avg_price
        self._journal_update(
            tracked.client_order_id, status=order.status, broker_order_id=order.id,
            filled_qty=order.filled_qty, filled_avg_price=order.filled_avg_price,
        )

    # -- tracking -------------------------------------------------------------------------

    async def manage_open_orders(self, open_orders: Sequence[Order] | None = None, *,
                                 source: str = "poll") -> list[TrackedOrder]:
        """Follow every tracked order towards its terminal state; return those that changed.

        ``open_orders`` (from the cycle's one ``list_orders`` call) saves a request per order:
        a tracked order found there is updated from it; one missing from it is looked up once
        by client order id (it filled, was canceled, or never landed).
        """
        changed: list[TrackedOrder] = []
        self._journal_new_legs(open_orders or [])
        by_cid = {o.client_order_id: o for o in flatten_orders(open_orders or [])}
        for cid, tracked in list(self.tracked.items()):
            order = by_cid.get(cid)
            if order is None:
                try:
                    order = await self._broker.get_order_by_client_id(cid)
                except TemporaryError as exc:
                    log.warning("order_lookup_failed", client_order_id=cid, error=str(exc))
                    continue
                except (OperationalError, OrderOutcome, OrderRejected) as exc:
                    # one order's lookup answered oddly: skip it this cycle, keep the others
                    log.error("order_lookup_failed", client_order_id=cid, error_type=type(exc).__name__,
                              status=exc.status, code=exc.code, message=exc.message)
                    continue
                if order is None:
                    if tracked.status == "in_flight":
                        age = (self._clock.now() - tracked.submitted_at).total_seconds()
                        if age > 600:
                            log.warning("order_never_landed", client_order_id=cid, symbol=tracked.symbol)
                            self._journal_update(cid, status="never_landed")
                            self.tracked.pop(cid, None)
                    continue
            if self._observe(tracked, order, source=source):
                changed.append(tracked)
            if order.is_terminal:
                self.tracked.pop(cid, None)
        return changed

    def _journal_acknowledged_legs(self, order: Order) -> None:
        """Journal a bracket's legs from the broker's answer to its submission (Alpaca nests
        them there): a stop that fills in the entry's own session, before any listing shows
        the legs, is then a fill of a known order, booked ``stop_loss`` for the stop-loss
        guard instead of an anonymous exit."""
        record_legs = getattr(self._journal, "record_legs", None)
        if not order.legs or record_legs is None:
            return
        record_legs(order, at=self._clock.now())
        self._legs_known.add((order.id, tuple(leg.id for leg in order.legs)))

    def _journal_new_legs(self, open_orders: Sequence[Order]) -> None:
        """Journal the legs (take-profit, stop) of journaled bracket/OCO orders the first time
        the broker lists them, so that a stop which fills before the next reconciliation is
        known by its order: exit reason ``stop_loss`` for the stop-loss guard, the opening
        strategy for the trade. Orders the journal does not know are reconciliation's job."""
        record_legs = getattr(self._journal, "record_legs", None)
        known = getattr(self._journal, "order_by_broker_id", None)
        if record_legs is None or known is None:
            return
        listed: set[tuple[str, tuple[str, ...]]] = set()
        for order in open_orders:
            if not order.legs:
                continue
            key = (order.id, tuple(leg.id for leg in order.legs))
            listed.add(key)
            if key in self._legs_known:  # journal rows are never removed: no need to look again
                continue
            if any(known(leg.id) is None for leg in order.legs):
                if known(order.id) is not None:
                    record_legs(order, at=self._clock.now())
            else:
                self._legs_known.add(key)
        self._legs_known &= listed

    def observe_order(self, order: Order, *, source: str) -> bool:
        """What the broker says of ``order`` (a trade-stream event, a catch-up), for a tracked
        order: journal it and log the change (``source`` in the log line); False when the
        order is not one this executor tracks."""
        tracked = self.tracked.get(order.client_order_id)
        if tracked is None:
            return False
        self._observe(tracked, order, source=source)
        if order.is_terminal:
            self.tracked.pop(order.client_order_id, None)
        return True

    def _observe(self, tracked: TrackedOrder, order: Order, *, source: str = "poll") -> bool:
        previous_status, previous_filled = tracked.status, tracked.filled_qty
        self._apply(tracked, order)
        if order.status == previous_status and order.filled_qty == previous_filled:
            return False
        fields: dict[str, Any] = {
            "client_order_id": tracked.client_order_id, "broker_order_id": order.id,
            "symbol": order.symbol, "side": order.side, "status": order.status,
            "filled_qty": str(order.filled_qty), "strategy": tracked.strategy, "source": source,
        }
        if order.filled_avg_price is not None:
            fields["fill_price"] = str(order.filled_avg_price)
            if tracked.expected_price:
                sign = 1 if order.side == "buy" else -1
                slip = (order.filled_avg_price - tracked.expected_price) / tracked.expected_price
                fields["slippage_bps"] = float(round(sign * slip * 10000, 2))
        if order.status == "filled":
            if order.id not in self.filled_logged:
                self.filled_logged.add(order.id)
                log.info("order_filled", **fields)
        elif order.status == "partially_filled" or (order.filled_qty > previous_filled and not order.is_terminal):
            log.info("order_partially_filled", **fields)
        elif order.status in ("canceled", "expired", "replaced"):
            log.info("order_canceled", reason=order.status, **fields)
        elif order.status == "rejected":
            log.warning("order_rejected", reason="rejected by broker after acceptance", **fields)
        return True

    # -- protection -----------------------------------------------------------------------

    async def protect_positions(
        self, positions: Sequence[Position], open_orders: Sequence[Order], *, startup: bool = False,
        defer_filling: bool = True,
    ) -> list[dict[str, Any]]:
        """Give every position a protective stop for its full quantity, unless it has one.

        Existing orders that already protect the full quantity are left alone (no redundant
        orders). A partly protected position, or one whose shares are held by a lone
        take-profit, has those orders canceled and one OCO (take-profit + stop) placed for
        the held quantity. Returns the unprotected positions found (for the start-up alert).

        ``defer_filling=False`` (a partial fill just reported by the trade stream) protects a
        partly filled bracket entry now: the unfilled rest is canceled so that its legs cover
        what was filled, instead of waiting ``partial_fill_timeout`` for the entry to finish.
        """
        found: list[dict[str, Any]] = []
        for position in positions:
            try:
                await self._protect_one(position, open_orders, found, startup=startup,
                                        defer_filling=defer_filling)
            except (OperationalError, OrderOutcome, OrderRejected) as exc:
                # an answer nobody classified for this symbol: skip it, protect the others
                log.error("position_protection_failed", symbol=position.symbol,
                          error_type=type(exc).__name__, status=exc.status, code=exc.code,
                          message=exc.message)
        return found

    async def _protect_one(
        self, position: Position, open_orders: Sequence[Order], found: list[dict[str, Any]],
        *, startup: bool, defer_filling: bool = True,
    ) -> None:
        """protect_positions for one position (appends to ``found`` when it was unprotected)."""
        held = abs(position.qty)
        covered = protected_quantity(position, open_orders)
        if covered >= held:
            return
        info = {
            "symbol": position.symbol, "qty": str(position.qty), "protected_qty": str(covered),
            "unrealized_pl": str(position.unrealized_pl) if position.unrealized_pl is not None else None,
            "market_value": str(position.market_value) if position.market_value is not None else None,
            "avg_entry_price": str(position.avg_entry_price),
        }
        found.append(info)
        log.warning("position_unprotected", startup=startup, **info)
        entries = _filling_entries(position, open_orders)
        if entries:
            now = self._clock.now()
            filling = sum((o.filled_qty for o in entries), Decimal(0))
            fresh = defer_filling and all(
                (now - (o.submitted_at or o.created_at)).total_seconds() < self._partial_fill_timeout
                for o in entries
            )
            if fresh and held - covered <= filling:
                # The entry is still filling; its legs will cover what it filled.
                log.info("position_protection_deferred", symbol=position.symbol,
                         reason="entry still filling", filled_qty=str(filling))
                return
            refreshed = await self._end_entries(position, entries)
            if refreshed is None:
                return
            position, symbol_orders = refreshed
            if protected_quantity(position, symbol_orders) >= abs(position.qty):
                log.info("position_protected", symbol=position.symbol, qty=str(abs(position.qty)),
                         by="bracket_legs")
                return
            await self._protect(position, symbol_orders)
            return
        await self._protect(position, open_orders)

    async def _end_entries(
        self, position: Position, entries: Sequence[Order]
    ) -> tuple[Position, list[Order]] | None:
        """Cancel the unfilled rest of partly filled entries so that their legs protect what
        was filled; the position and the symbol's open orders as the broker then sees them
        (None when the position is gone or the cancels were not confirmed)."""
        symbol = position.symbol
        for order in entries:
            log.warning("entry_remainder_canceled", symbol=symbol, broker_order_id=order.id,
                        client_order_id=order.client_order_id, filled_qty=str(order.filled_qty),
                        qty=str(order.qty))
            await self._cancel_quietly(order.id)
        if not await self._await_gone(symbol, {o.id for o in entries}):
            log.error("position_protection_failed", symbol=symbol,
                      reason="partly filled entry did not cancel")
            return None
        current = await self._broker.get_position(symbol)
        if current is None:
            return None
        orders = await self._broker.list_orders(status="open", symbols=[symbol], nested=True)
        return current, list(orders)

    async def _protect(self, position: Position, open_orders: Sequence[Order]) -> None:
        symbol = position.symbol
        cleared = await self._clear_exit_orders(position, open_orders)
        if cleared is None:
            return
        position = cleared
        exit_side = "sell" if position.qty > 0 else "buy"
        entry = position.avg_entry_price
        current = position.current_price or entry
        qty = abs(position.qty)
        if position.qty > 0:
            stop = min(entry * (1 - self._stop_loss), current * (1 - self._stop_loss / 2))
            target = max(entry * (1 + self._take_profit), current * (1 + self._take_profit / 2))
            stop, target = round_price(stop, side="down"), round_price(target, side="up")
        else:
            stop = max(entry * (1 + self._stop_loss), current * (1 + self._stop_loss / 2))
            target = min(entry * (1 - self._take_profit), current * (1 - self._take_profit / 2))
            stop, target = round_price(stop, side="up"), round_price(target, side="down")
        stamp = self._clock.now().strftime("%Y%m%d%H%M%S")
        cid = client_order_id_for(f"protect-{symbol}-{stamp}")
        request = OrderRequest.oco(
            symbol, qty, exit_side, take_profit_price=target, stop_loss_price=stop,
            time_in_force="gtc", client_order_id=cid,
        )
        result = await self._submit(request, intent_id=None, strategy="protection", expected_price=None,
                                    stop=stop, target=target)
        if result.status == "rejected":
            # An OCO can be refused (e.g. the take-profit would fill at once): fall back to a stop.
            cid = client_order_id_for(f"protect-stop-{symbol}-{stamp}")
            request = OrderRequest.simple(symbol, qty, exit_side, type="stop", stop_price=stop,
                                          time_in_force="gtc", client_order_id=cid)
            result = await self._submit(request, intent_id=None, strategy="protection",
                                        expected_price=None, stop=stop)
        if result.status == "rejected":
            log.error("position_protection_failed", symbol=symbol, reason=result.reason, code=result.error_code)
            return
        log.info("position_protected", symbol=symbol, qty=str(qty), stop_price=str(stop),
                 target_price=str(target), client_order_id=result.client_order_id, status=result.status)

    async def _clear_exit_orders(self, position: Position, open_orders: Sequence[Order],
                                 rounds: int = 3) -> Position | None:
        """Cancel the exit orders holding ``position``'s shares, so that one protection can be
        placed for all of it; the position as the broker then holds it (None: gone, or the
        cancels were not confirmed).

        The symbol's orders are listed again after each round of cancels: while they were
        being canceled a ``held`` leg may have become active (its entry filled in the race,
        growing the position), and a protection sized to the grown position would be refused
        for the shares that leg holds (403 insufficient qty), leaving it unprotected.
        """
        symbol = position.symbol
        for _ in range(rounds):
            exit_side = "sell" if position.qty > 0 else "buy"
            holding = [
                o for o in flatten_orders(open_orders)
                if o.symbol == symbol and o.side == exit_side and o.is_open and o.status != "held"
            ]
            if not holding:
                return position
            for order in holding:
                await self._cancel_quietly(order.id)
            if not await self._await_gone(symbol, {o.id for o in holding}, attempts=5):
                log.error("position_protection_failed", symbol=symbol,
                          reason="existing exit orders did not cancel")
                return None
            # A canceled exit may have filled in the race (a lone take-profit filling as it
            # is canceled): protect what the broker holds now, not the snapshot from before.
            current = await self._broker.get_position(symbol)
            if current is None or current.qty == 0:
                log.info("position_gone", symbol=symbol, previous_qty=str(position.qty),
                         reason="closed while its exit orders were canceled; nothing to protect")
                return None
            if current.qty != position.qty:
                log.info("position_changed", symbol=symbol, previous_qty=str(position.qty),
                         qty=str(current.qty), reason="filled while its exit orders were canceled")
            position = current
            open_orders = await self._broker.list_orders(status="open", symbols=[symbol], nested=True)
        log.error("position_protection_failed", symbol=symbol,
                  reason=f"exit orders still open after {rounds} rounds of cancels")
        return None

    # -- emergency stop -------------------------------------------------------------------

    async def emergency_exit(
        self, symbol: str, reason: str, *, phase: str = "regular", kind: str = "emergency",
        known_qty: Decimal | None = None,
    ) -> EmergencyStopReport:
        """Flatten one position whatever holds its shares; a report of what really happened.

        ``kind`` names the exit in client order ids and logs: ``emergency`` (risk exits,
        liquidation) or ``exit`` (a strategy's ordinary exit, through the same verified path).
        With ``phase="closed"`` nothing is canceled or sent (no exit could execute before the
        next session): the report fails with that reason and the protection stays.
        ``known_qty``: the position as the caller last saw it, so that a stop whose broker
        never answers a position read still reports the shares it could not sell.
        """
        report = EmergencyStopReport(symbol=symbol, reason=reason, started_at=self._clock.now(),
                                     position_qty=known_qty if known_qty is not None else Decimal(0))
        report_kind = kind
        delay = self._emergency_backoff
        if phase == "closed":
            return await self._closed_market_exit(report)
        read_once = False
        while report.attempts < self._emergency_max_attempts:
            report.attempts += 1
            try:
                position = await self._broker.get_position(symbol)
                if position is None:
                    return self._finish_flat(report)
                if not read_once:  # the quantity the stop set out to sell
                    report.position_qty, read_once = position.qty, True
                report.step = EmergencyStep.CANCELING
                canceled = await self._cancel_symbol_orders(symbol)
                report.canceled_orders.extend(canceled)
                report.step = EmergencyStep.AWAITING_CANCEL
                if not await self._await_no_open_orders(symbol):
                    report.failures.append(f"attempt {report.attempts}: open orders on {symbol} not confirmed canceled")
                else:
                    report.step = EmergencyStep.EXITING
                    position = await self._broker.get_position(symbol)
                    if position is None:
                        return self._finish_flat(report)
                    sellable = abs(position.qty)
                    if position.qty_available is not None:
                        sellable = min(sellable, abs(position.qty_available))
                    if sellable > 0:
                        order = await self._submit_exit(position, sellable, phase, report.attempts,
                                                        kind=report_kind)
                        report.exit_orders.append(order.id)
                        report.step = EmergencyStep.VERIFYING
                        if await self._await_flat(symbol):
                            return self._finish_flat(report)
                        report.failures.append(
                            f"attempt {report.attempts}: position not flat after exit order {order.id}")
                    else:
                        report.failures.append(
                            f"attempt {report.attempts}: nothing sellable: position {position.qty}, "
                            f"available {position.qty_available} (shares still held by orders)")
            except InsufficientQuantity as exc:
                report.failures.append(
                    f"attempt {report.attempts}: insufficient qty available "
                    f"(available={exc.available}, held_for_orders={exc.held_for_orders})"
                )
            except OperationalError as exc:
                report.failures.append(f"attempt {report.attempts}: operational error: {exc.message}")
                break
            except BrokerError as exc:
                report.failures.append(f"attempt {report.attempts}: {type(exc).__name__}: {exc.message}")
            if report.attempts >= self._emergency_max_attempts:
                break
            log.warning("emergency_exit_retry", symbol=symbol, attempt=report.attempts,
                        failure=report.failures[-1] if report.failures else None, delay=delay)
            await self._clock.sleep(delay)
            delay = min(delay * 2, self._emergency_backoff_max)
        return await self._finish_failed(report)

    async def _finish_failed(self, report: EmergencyStopReport) -> EmergencyStopReport:
        """FAILED, with the shares still held read once more (an exit may have sold part of
        them); when the broker cannot say, the last quantity known stands."""
        try:
            position = await self._broker.get_position(report.symbol)
        except BrokerError as exc:
            log.warning("emergency_stop_unsold_unknown", symbol=report.symbol, error=str(exc),
                        assumed_qty=str(report.position_qty))
            report.unsold_qty = report.position_qty
        else:
            if position is None:  # it went flat after all (a late fill): that is the outcome
                return self._finish_flat(report)
            report.unsold_qty = position.qty
        report.sold_qty = max(abs(report.position_qty) - abs(report.unsold_qty), Decimal(0))
        report.step = EmergencyStep.FAILED
        report.finished_at = self._clock.now()
        log.error("emergency_stop_failed", **report.to_dict())
        return report

    async def _closed_market_exit(self, report: EmergencyStopReport) -> EmergencyStopReport:
        """While the market is closed no exit can execute: keep the protective orders (a
        queued market order would need them canceled, leaving the position naked until the
        open) and report the exit as not done, so the caller retries in the next session."""
        report.attempts = 1
        try:
            position = await self._broker.get_position(report.symbol)
        except BrokerError as exc:
            report.failures.append(f"attempt 1: {type(exc).__name__}: {exc.message}")
            position = None
        else:
            if position is None:
                return self._finish_flat(report)
            report.position_qty = position.qty
            report.failures.append(
                f"market closed: no exit can execute before the next session; "
                f"protective orders on {report.symbol} kept")
        report.unsold_qty = report.position_qty
        report.step = EmergencyStep.FAILED
        report.finished_at = self._clock.now()
        log.error("emergency_stop_failed", **report.to_dict())
        return report

    def _finish_flat(self, report: EmergencyStopReport) -> EmergencyStopReport:
        report.sold_qty = abs(report.position_qty) if report.exit_orders else Decimal(0)
        report.unsold_qty = None
        report.step = EmergencyStep.FLAT
        report.finished_at = self._clock.now()
        log.info("position_flat", symbol=report.symbol, reason=report.reason,
                 attempts=report.attempts, exit_orders=report.exit_orders)
        return report

    async def _submit_exit(self, position: Position, qty: Decimal, phase: str, attempt: int,
                           *, kind: str = "emergency") -> Order:
        side = "sell" if position.qty > 0 else "buy"
        stamp = self._clock.now().strftime("%Y%m%d%H%M%S")
        cid = client_order_id_for(f"{kind}-{position.symbol}-{stamp}", attempt)
        if phase in ("pre", "post"):
            # Extended hours take only limit orders: make it marketable through the spread.
            reference = position.current_price or position.avg_entry_price
            if side == "sell":
                limit = round_price(reference * (1 - self._extended_slippage), side="down")
            else:
                limit = round_price(reference * (1 + self._extended_slippage), side="up")
            request = OrderRequest.simple(position.symbol, qty, side, type="limit", limit_price=limit,
                                          time_in_force="day", extended_hours=True, client_order_id=cid)
        else:
            request = OrderRequest.simple(position.symbol, qty, side, type="market",
                                          time_in_force="day", client_order_id=cid)
        if self._journal is not None:  # journaled before it is sent, like every order
            self._journal.record_order_submission(cid, None, position.symbol, side, qty, request.type,
                                                  "simple", request.to_payload(), self._clock.now())
        order = await self._broker.submit_order(request)
        self._journal_update(cid, status=order.status, broker_order_id=order.id)
        log.info("order_submitted", client_order_id=cid, broker_order_id=order.id, symbol=position.symbol,
                 side=side, qty=str(qty), type=request.type, emergency=kind == "emergency", status=order.status)
        return order

    async def _cancel_symbol_orders(self, symbol: str) -> list[str]:
        orders = await self._broker.list_orders(status="open", symbols=[symbol], nested=True)
        canceled: list[str] = []
        for order in flatten_orders(orders):
            if order.symbol == symbol and order.is_open and await self._cancel_quietly(order.id):
                canceled.append(order.id)
        return canceled

    async def _cancel_quietly(self, order_id: str) -> bool:
        """Cancel one order: True when the broker took the cancel (204, or already canceled).

        An outcome instead (already filled or expired, not found: the race with a leg that
        fills as it is canceled) is no failure: the order's true state is read, journaled
        (a fill is recorded) and logged as ``cancel_outcome``, and False is returned; every
        caller re-reads the position before it acts on the symbol again.
        """
        try:
            await self._broker.cancel_order(order_id)
        except OrderOutcome as exc:
            await self._settle_outcome(order_id, exc)
            return False
        return True

    async def _settle_outcome(self, order_id: str, exc: OrderOutcome) -> None:
        """Read the true state of an order whose cancel met an outcome, and record it."""
        order = exc.order if isinstance(exc, OrderNotCancelable) else None
        if order is None and not isinstance(exc, NotFound):
            try:
                order = await self._broker.get_order(order_id, nested=False)
            except BrokerError as read_error:
                log.warning("order_lookup_failed", order_id=order_id, error=str(read_error))
        if order is None:
            log.info("cancel_outcome", order_id=order_id, outcome=type(exc).__name__,
                     status=exc.status, code=exc.code, message=exc.message, order_status=None)
            return
        log.info("cancel_outcome", order_id=order_id, outcome=type(exc).__name__, status=exc.status,
                 code=exc.code, message=exc.message, order_status=order.status, symbol=order.symbol,
                 side=order.side, type=order.type, filled_qty=str(order.filled_qty),
                 filled_avg_price=str(order.filled_avg_price) if order.filled_avg_price is not None else None)
        self._record_order_state(order)

    def _record_order_state(self, order: Order) -> None:
        """Journal what the broker says about an order (a tracked one is observed, so its fill
        is logged as ``order_filled``; a leg the journal knows gets its status and fill)."""
        tracked = self.tracked.get(order.client_order_id)
        if tracked is not None:
            self._observe(tracked, order)
            if order.is_terminal:
                self.tracked.pop(order.client_order_id, None)
            return
        known = getattr(self._journal, "order_by_broker_id", None)
        row = known(order.id) if known is not None else None
        if row is None:
            return  # an order the journal never saw: reconciliation adopts it
        self._journal_update(row["client_order_id"], status=order.status, broker_order_id=order.id,
                             filled_qty=order.filled_qty, filled_avg_price=order.filled_avg_price)
        if order.status == "filled" and order.id not in self.filled_logged:
            self.filled_logged.add(order.id)
            log.info("order_filled", client_order_id=row["client_order_id"], broker_order_id=order.id,
                     symbol=order.symbol, side=order.side, status=order.status,
                     filled_qty=str(order.filled_qty), via="cancel_outcome",
                     fill_price=str(order.filled_avg_price) if order.filled_avg_price is not None else None)

    async def _await_no_open_orders(self, symbol: str, attempts: int = 8) -> bool:
        delay = 0.5
        for _ in range(attempts):
            orders = await self._broker.list_orders(status="open", symbols=[symbol], nested=False)
            if not [o for o in orders if o.symbol == symbol and o.is_open]:
                return True
            await self._clock.sleep(delay)
            delay = min(delay * 2, 8.0)
        return False

    async def _await_gone(self, symbol: str, order_ids: set[str], attempts: int = 8) -> bool:
        """Wait until the broker no longer lists any of ``order_ids`` as open."""
        delay = 0.5
        for attempt in range(attempts):
            orders = await self._broker.list_orders(status="open", symbols=[symbol], nested=False)
            if not [o for o in flatten_orders(orders) if o.id in order_ids and o.is_open]:
                return True
            if attempt + 1 < attempts:
                await self._clock.sleep(delay)
                delay = min(delay * 2, 8.0)
        return False

    async def _await_flat(self, symbol: str, attempts: int = 8) -> bool:
        delay = 1.0
        for _ in range(attempts):
            if await self._broker.get_position(symbol) is None:
                return True
            await self._clock.sleep(delay)
            delay = min(delay * 2, 30.0)
        return await self._broker.get_position(symbol) is None

    async def liquidate_all(self, reason: str, *, phase: str = "regular") -> list[EmergencyStopReport]:
        """Cancel every open order and flatten every position, one verified exit per symbol."""
        log.critical("emergency_liquidation", reason=reason, phase=phase)
        try:
            await self._broker.cancel_all_orders()
        except BrokerError as exc:
            log.error("cancel_all_failed", error=str(exc))
        positions = await self._broker.list_positions()
        # Symbols are independent: exit them concurrently, so one slow symbol (a halt, a thin
        # pre-market) does not hold the others' exits back.
        reports = list(await asyncio.gather(*(self.emergency_exit(p.symbol, reason, phase=phase, known_qty=p.qty)
                                              for p in positions)))
        failed = [r.symbol for r in reports if not r.succeeded]
        log.critical("emergency_liquidation_complete", reason=reason, symbols=[r.symbol for r in reports],
                     failed=failed, all_flat=not failed)
        return reports
