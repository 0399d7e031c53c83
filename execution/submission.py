"""Entries: one bracket order per approved intent, with a deterministic ``client_order_id``
and the order journaled before it is sent (:meth:`BracketSubmission._submit`, also used for
protective orders). Events: ``order_submitted``, ``order_rejected``, ``order_in_flight``."""

from __future__ import annotations

from decimal import Decimal

import structlog

from core.errors import OrderInFlight, OrderRejected, PatternDayTraderRejected, TemporaryError
from broker.models import OrderRequest
from execution.orders import CENT, ExecutionResult, IntentLike, TrackedOrder, client_order_id_for, round_price
from execution.tracking import OrderTracking

# The executor's logger name, so the log lines read as before the executor was split.
log = structlog.get_logger("order_executor")


class BracketSubmission(OrderTracking):
    """Bracket submission (a part of ``order_executor.OrderExecutor``)."""

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
