"""Protection of positions: a position without a stop for its full quantity gets one sized
to the held quantity (an OCO, else a lone stop). Events: ``position_unprotected``,
``position_protection_deferred``, ``entry_remainder_canceled``, ``position_protected``,
``position_protection_failed``, ``position_gone``, ``position_changed``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Sequence

import structlog

from core.errors import OperationalError, OrderOutcome, OrderRejected
from broker.models import Order, OrderRequest, Position
from execution.cancels import OrderCancels
from execution.orders import client_order_id_for, flatten_orders, protected_quantity, round_price
from execution.submission import BracketSubmission

# The executor's logger name, so the log lines read as before the executor was split.
log = structlog.get_logger("order_executor")


def _filling_entries(position: Position, open_orders: Sequence[Order]) -> list[Order]:
    """Working bracket/OTO entries that added to ``position`` and have not finished filling
    (their exit legs are still ``held``, so the filled shares are not yet protected)."""
    entry_side = "buy" if position.qty > 0 else "sell"
    return [
        o for o in open_orders
        if o.symbol == position.symbol and o.side == entry_side and o.is_open and o.status != "held"
        and o.order_class in ("bracket", "oto") and o.filled_qty > 0
    ]



class PositionProtection(BracketSubmission, OrderCancels):
    """Protecting positions (a part of ``order_executor.OrderExecutor``)."""

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
