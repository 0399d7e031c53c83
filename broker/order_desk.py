"""OrderDesk: orders sent exactly once, whatever the network does.

One job: the order calls whose answer may be lost (submit, replace, close a position), and
how an unknown outcome is resolved before anything is sent again. A POST, PATCH or DELETE
that timed out, was reset, got a 5xx or an unreadable body may have landed, so it is never
blindly resent: a submission is looked up by its ``client_order_id`` (:func:`make_client_order_id`
makes a deterministic one) and resent with the same id only when the broker has none; a
replacement is resolved by reading the old order's ``replaced_by``; a full close by the
broker's refusal of a second close, a partial one by the recent orders. Still unresolved
after every attempt is :class:`core.errors.OrderInFlight` (reconcile), never a rejection.
A pattern-day-trading refusal blocks the symbol for the session (``pdt_blocked_symbols``).

The gateway (:class:`api_gateway.ResilientAlpacaGateway`) owns one desk and hands it itself
as the :class:`OrderGateway` it sends and reads through (its ``request`` with retries, its
typed order reads).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote as urlquote

import structlog

from broker import broker_errors
from broker.models import ApiResponse, Order, OrderRequest, decimal_text
from broker.parsing import TolerantParser
from core import clock as clock_module
from core import errors

log = structlog.get_logger(__name__)

MAX_CLIENT_ORDER_ID_LENGTH = 48
#: How far back a lost close order is looked for among the recent orders.
RECENT_ORDER_WINDOW = timedelta(seconds=30)

_SAFE_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]+$")
_UNSAFE_CLIENT_ID_CHARS = re.compile(r"[^A-Za-z0-9._:\-]")


def make_client_order_id(intent_id: str, attempt: int = 0) -> str:
    """A deterministic ``client_order_id`` (at most 48 characters) for one trade intent.

    The same ``(intent_id, attempt)`` always gives the same id, so a retry or a restart
    re-sends the same order instead of a duplicate. ``attempt`` > 0 is for a deliberate new
    order for the same intent (Alpaca refuses a reused id, even of a canceled order).
    Long or unusual intent ids are shortened with a SHA-256 digest of the whole id.
    """
    if not intent_id:
        raise ValueError("intent_id is empty")
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    suffix = f"~{attempt}" if attempt else ""
    if _SAFE_CLIENT_ID.match(intent_id) and len(intent_id) + len(suffix) <= MAX_CLIENT_ORDER_ID_LENGTH:
        return intent_id + suffix
    digest = hashlib.sha256(intent_id.encode("utf-8")).hexdigest()[:20]
    room = MAX_CLIENT_ORDER_ID_LENGTH - len(suffix) - len(digest) - 2
    prefix = _UNSAFE_CLIENT_ID_CHARS.sub("", intent_id)[: max(room, 0)]
    return f"{prefix}~h{digest}{suffix}"


class OrderGateway(Protocol):
    """What the desk sends and reads through (the gateway: retries, rate limit, parsing)."""

    async def request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                      data_api: bool = False, emergency: bool = False,
                      idempotent: bool = True) -> ApiResponse: ...

    async def get_order(self, order_id: str, nested: bool = True, *,
                        emergency: bool = False) -> Order: ...

    async def get_order_by_client_id(self, client_order_id: str, *,
                                     emergency: bool = False) -> Order | None: ...

    async def list_orders(self, status: str = "open", limit: int = 500, nested: bool = True,
                          symbols: Sequence[str] | None = None, after: datetime | None = None,
                          until: datetime | None = None, direction: str = "desc",
                          side: str | None = None, *, emergency: bool = False) -> list[Order]: ...


class OrderDesk:
    """Submit, replace and close with unknown outcomes resolved (see the module docstring).

    ``sleep`` and ``backoff`` pace the lookups (the gateway's wall-time sleep and its
    transport's jittered backoff); ``max_retries`` bounds the attempts; ``clock`` dates the
    window in which a lost close order is looked for; ``pdt_blocked_symbols`` is the
    gateway's set, added to on a pattern-day-trading refusal.
    """

    def __init__(
        self,
        gateway: OrderGateway,
        *,
        parser: TolerantParser,
        clock: clock_module.Clock,
        sleep: Callable[[float], Awaitable[None]],
        backoff: Callable[[int], float],
        max_retries: int,
        pdt_blocked_symbols: set[str],
    ) -> None:
        self._gateway = gateway
        self.parser = parser
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff
        self._max_retries = int(max_retries)
        self.pdt_blocked_symbols = pdt_blocked_symbols

    async def _lookup_quietly(self, client_order_id: str, emergency: bool) -> Order | None:
        """Like get_order_by_client_id, but a failed lookup is None (unknown, not an error)."""
        try:
            return await self._gateway.get_order_by_client_id(client_order_id, emergency=emergency)
        except errors.TemporaryError as exc:
            log.warning("order_lookup_failed", client_order_id=client_order_id, reason=str(exc))
            return None

    async def submit_order(self, request: OrderRequest, *, emergency: bool = False) -> Order:
        """Submit an order exactly once, whatever the network does.

        Without a ``client_order_id`` one is generated (and logged). If the outcome of a
        POST is unknown (timeout, reset, 5xx, unreadable body), the order is looked up by
        its ``client_order_id`` before the same body is sent again; a "client_order_id must
        be unique" answer means it landed and the existing order is returned. Raises an
        :class:`core.errors.OrderRejected` subclass only for a definitive 4xx, and
        :class:`core.errors.OrderInFlight` when the outcome is still unknown after all attempts.
        """
        if request.client_order_id is None:
            generated = make_client_order_id(f"auto-{uuid.uuid4().hex}")
            log.warning("client_order_id_generated", symbol=request.symbol, client_order_id=generated)
            request = request.model_copy(update={"client_order_id": generated})
        cid = request.client_order_id
        assert cid is not None
        payload = request.to_payload()
        uncertain = False
        last: ApiResponse | None = None
        for attempt in range(1, self._max_retries + 2):
            if uncertain:
                await self._sleep(self._backoff(attempt - 1))
                found = await self._lookup_quietly(cid, emergency)
                if found is not None:
                    log.info("order_recovered", client_order_id=cid, order_id=found.id,
                             status=found.status, via="lookup")
                    return found
            response = await self._gateway.request(
                "POST", "/v2/orders", json=payload, emergency=emergency, idempotent=False
            )
            last = response
            if response.success:
                try:
                    return self.parser.parse(Order, response.data, "POST /v2/orders")
                except errors.MalformedResponse as exc:
                    # Accepted, but unreadable: resolve it like any other unknown outcome.
                    response = response.model_copy(update={
                        "success": False, "error_type": "malformed", "outcome_unknown": True,
                        "message": str(exc)})
                    last = response
            if response.outcome_unknown:
                uncertain = True
                log.warning("order_outcome_unknown", client_order_id=cid, symbol=request.symbol,
                            attempt=attempt, status=response.status, reason=response.message)
                continue
            problem = response.error(for_order=True)
            assert problem is not None
            duplicate = isinstance(problem, errors.DuplicateClientOrderId)
            validation = problem.status == 422 and problem.code == broker_errors.CODE_VALIDATION
            if duplicate or validation or (uncertain and isinstance(problem, errors.OrderRejected)):
                # It may have landed: a duplicate id certainly did (Alpaca's code for it,
                # 422 40010001, is shared with every validation error, so any of them is
                # checked by looking the id up rather than by reading the text), and after an
                # unknown outcome a rejection of the resend may be caused by the first copy.
                found = await self._lookup_quietly(cid, emergency)
                if found is not None and found.symbol == request.symbol and found.side == request.side:
                    log.info("order_recovered", client_order_id=cid, order_id=found.id,
                             status=found.status, via=type(problem).__name__)
                    return found
                if found is None and duplicate and uncertain:
                    continue  # it landed but is not visible yet: look again
            if not uncertain or isinstance(problem, errors.OrderRejected):
                self._note_rejection(problem, request.symbol)
                raise problem
            # e.g. a 429 after an unknown outcome: still unresolved, try again
        await self._sleep(self._backoff(self._max_retries + 1))
        found = await self._lookup_quietly(cid, emergency)
        if found is not None:
            log.info("order_recovered", client_order_id=cid, order_id=found.id,
                     status=found.status, via="final_lookup")
            return found
        log.error("order_in_flight", client_order_id=cid, symbol=request.symbol,
                  status=last.status if last else None)
        raise errors.OrderInFlight(
            f"order {cid} for {request.symbol}: outcome unknown after "
            f"{self._max_retries + 1} attempts; reconcile by client_order_id",
            client_order_id=cid,
            status=(last.status or None) if last else None,
            request_id=last.request_id if last else None,
        )

    def _note_rejection(self, problem: errors.BrokerError, symbol: str | None) -> None:
        if isinstance(problem, errors.PatternDayTraderRejected) and symbol:
            self.pdt_blocked_symbols.add(symbol)
            log.warning("pdt_blocked", symbol=symbol, code=problem.code)

    async def replace_order(
        self,
        order_id: str,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail: Decimal | None = None,
        time_in_force: str | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """PATCH an order; returns the NEW order (new id). An unknown outcome is resolved by
        reading the old order (``replaced_by``) before the PATCH is sent again. An order that
        is already final raises the outcome :class:`core.errors.OrderNotReplaceable` (with the
        re-read order), an unknown one :class:`core.errors.NotFound`."""
        body: dict[str, Any] = {}
        for name, value in (("qty", qty), ("limit_price", limit_price),
                            ("stop_price", stop_price), ("trail", trail)):
            if value is not None:
                body[name] = decimal_text(Decimal(str(value)))
        if time_in_force is not None:
            body["time_in_force"] = time_in_force
        if client_order_id is not None:
            body["client_order_id"] = client_order_id
        if not body:
            raise ValueError("replace_order needs at least one field to change")
        path = f"/v2/orders/{urlquote(order_id, safe='')}"
        uncertain = False
        for attempt in range(1, self._max_retries + 2):
            if uncertain:
                await self._sleep(self._backoff(attempt - 1))
                state = await self._replacement_of(order_id)
                if isinstance(state, Order):
                    return state
                if state == "wait":
                    continue
            response = await self._gateway.request("PATCH", path, json=body, idempotent=False)
            if response.success:
                return self.parser.parse(Order, response.data, f"PATCH {path}")
            if response.outcome_unknown:
                uncertain = True
                log.warning("order_outcome_unknown", order_id=order_id, attempt=attempt,
                            status=response.status, reason=response.message)
                continue
            problem = response.error(for_order=True)
            assert problem is not None
            if not uncertain and problem.status == 422 and isinstance(problem, errors.OrderRejected):
                problem = await self._replace_outcome(order_id, problem)
            if uncertain:
                state = await self._replacement_of(order_id)
                if isinstance(state, Order):
                    return state
            if isinstance(problem, errors.PatternDayTraderRejected):
                symbol = await self._symbol_of(order_id)
                self._note_rejection(problem, symbol)
            if not uncertain or isinstance(problem, (errors.OrderRejected, errors.NotFound)):
                raise problem
        state = await self._replacement_of(order_id)
        if isinstance(state, Order):
            return state
        raise errors.OrderInFlight(
            f"replacement of order {order_id}: outcome unknown after "
            f"{self._max_retries + 1} attempts; reconcile before acting",
            client_order_id=client_order_id or f"replace:{order_id}",
        )

    async def _replace_outcome(self, order_id: str, problem: errors.BrokerError) -> errors.BrokerError:
        """A 422 to a PATCH is a refusal unless the order is already final (it filled, was
        canceled or expired in the race): read it; then the answer is the outcome
        :class:`core.errors.OrderNotReplaceable` carrying the order. Decided by the order's
        state, never by the message."""
        try:
            old = await self._gateway.get_order(order_id, nested=False)
        except errors.BrokerError as exc:
            log.warning("order_lookup_failed", order_id=order_id, reason=str(exc))
            return problem
        if not old.is_terminal:
            return problem
        outcome = errors.OrderNotReplaceable(problem.message, status=problem.status, code=problem.code,
                                             request_id=problem.request_id, body=problem.body)
        outcome.order = old
        return outcome

    async def _replacement_of(self, order_id: str) -> Order | str:
        """The new order if ``order_id`` was replaced; "wait" while pending; else "resend"."""
        try:
            old = await self._gateway.get_order(order_id, nested=False)
        except errors.TemporaryError:
            return "wait"
        if old.status == "replaced" and old.replaced_by:
            try:
                new = await self._gateway.get_order(old.replaced_by)
            except errors.TemporaryError:
                return "wait"
            log.info("order_recovered", order_id=new.id, replaces=order_id, via="replaced_by")
            return new
        if old.status == "pending_replace":
            return "wait"
        if old.is_terminal:
            raise errors.OrderRejected(
                f"order {order_id} is {old.status}; it can no longer be replaced"
            )
        return "resend"

    async def _symbol_of(self, order_id: str) -> str | None:
        try:
            return (await self._gateway.get_order(order_id, nested=False)).symbol
        except errors.BrokerError:
            return None

    async def close_position(
        self,
        symbol: str,
        qty: Decimal | None = None,
        percentage: Decimal | None = None,
    ) -> Order:
        """Close all of a position (or ``qty`` shares, or ``percentage`` 0-100 of it) with a
        market order; returns that order. An emergency call (uses the rate-limit reserve).

        A full close is safe to resend after an unknown outcome: the broker holds the shares
        for the first close order, so a second one is refused (403) or finds no position (404),
        both of which mean the first landed. A partial close is never resent blindly.
        """
        if qty is not None and percentage is not None:
            raise ValueError("give qty or percentage, not both")
        if qty is not None and Decimal(str(qty)) <= 0:
            raise ValueError(f"qty must be positive, got {qty}")
        if percentage is not None and not 0 < Decimal(str(percentage)) <= 100:
            raise ValueError(f"percentage must be in (0, 100], got {percentage}")
        path = f"/v2/positions/{urlquote(symbol, safe='')}"
        params = {
            "qty": None if qty is None else Decimal(str(qty)),
            "percentage": None if percentage is None else Decimal(str(percentage)),
        }
        full_close = qty is None and percentage is None
        since = self._clock.now() - RECENT_ORDER_WINDOW
        response = await self._gateway.request("DELETE", path, params=params, emergency=True, idempotent=False)
        if response.success:
            return self.parser.parse(Order, response.data, f"DELETE {path}")
        if not response.outcome_unknown:
            problem = response.error(for_order=True)
            assert problem is not None
            self._note_rejection(problem, symbol)
            raise problem
        log.warning("order_outcome_unknown", symbol=symbol, action="close_position",
                    status=response.status, reason=response.message)
        for attempt in range(1, self._max_retries + 1):
            await self._sleep(self._backoff(attempt))
            if not full_close:
                recent = await self._recent_close_order(symbol, since)
                if recent is not None:
                    return recent
                continue
            response = await self._gateway.request("DELETE", path, params=params, emergency=True,
                                          idempotent=False)
            if response.success:
                return self.parser.parse(Order, response.data, f"DELETE {path}")
            if response.outcome_unknown:
                continue
            problem = response.error(for_order=True)
            assert problem is not None
            if isinstance(problem, (errors.NotFound, errors.InsufficientQuantity)):
                recent = await self._recent_close_order(symbol, since)
                if recent is not None:
                    return recent
                continue
            self._note_rejection(problem, symbol)
            raise problem
        raise errors.OrderInFlight(
            f"closing {symbol}: outcome unknown after {self._max_retries + 1} attempts; "
            "check positions and open orders",
            client_order_id=f"close_position:{symbol}",
        )

    async def _recent_close_order(self, symbol: str, since: datetime) -> Order | None:
        """The newest simple market order for ``symbol`` submitted since ``since``."""
        try:
            orders = await self._gateway.list_orders(status="all", limit=50, nested=False, symbols=[symbol],
                                            after=since, direction="desc", emergency=True)
        except errors.TemporaryError as exc:
            log.warning("order_lookup_failed", symbol=symbol, reason=str(exc))
            return None
        for order in orders:
            if order.created_at >= since and order.type == "market" and order.order_class == "simple":
                log.info("order_recovered", symbol=symbol, order_id=order.id, status=order.status,
                         via="recent_orders")
                return order
        return None


__all__ = ["MAX_CLIENT_ORDER_ID_LENGTH", "OrderDesk", "OrderGateway", "make_client_order_id"]
