"""The emergency stop: flatten one position whatever holds its shares, or all of them, and
report what really happened (never a success that did not happen).

An exit cancels the symbol's open orders, waits until the broker confirms, sells what is
sellable (market in regular hours, marketable limit in extended hours), retries with backoff
on ``insufficient qty`` and broker errors, and verifies the position is flat. Events:
``emergency_liquidation``, ``emergency_exit_retry``, ``emergency_stop_failed``,
``position_flat``, ``order_submitted``."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import structlog

from core.errors import BrokerError, InsufficientQuantity, OperationalError
from broker.models import Order, OrderRequest, Position
from execution.cancels import OrderCancels
from execution.orders import client_order_id_for, round_price

# The executor's logger name, so the log lines read as before the executor was split.
log = structlog.get_logger("order_executor")


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


class EmergencyExit(OrderCancels):
    """The emergency stop (a part of ``order_executor.OrderExecutor``)."""

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
