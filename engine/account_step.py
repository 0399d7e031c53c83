"""Step 2 of the loop: the account reading, checked for sense, and the session's baseline.

:class:`AccountStep` is what :meth:`engine.trading_system.TradingSystem.refresh_account` and
``start_session`` run: account, positions, open orders and new fills (from the trade stream's
event book while it is healthy, else by polling), an implausible reading read again
(:mod:`engine.account_sanity`), the :class:`engine.portfolio.PortfolioState` the risk manager
and the safety state machine read, and the believed starting equity of a new session.

It holds a reference to the loop rather than copies of its parts (the loop's ``safety``,
``executor`` and equity marks are read and moved here, as the backtest also moves them).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Sequence

import structlog

from alerter import AlertLevel
from broker.models import Account, Order, Position
from core.errors import ConfigError, MalformedResponse, TemporaryError
from engine.account_sanity import reading_of
from engine.cycle_record import AccountSnapshot
from engine.portfolio import PendingEntry, PortfolioState, PositionView
from order_executor import flatten_orders

# The loop's own logger name: the log lines read as before the step moved out of the loop.
log = structlog.get_logger("engine.trading_system")

ZERO = Decimal(0)


class AccountStep:
    """The account reading and the session start for the loop ``system`` (a TradingSystem;
    typed loosely because importing it here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system

    async def refresh_account(self) -> AccountSnapshot:
        """Account, positions, open orders and new fills, checked for sense before use.

        An implausible reading (:mod:`engine.account_sanity`) is read again at once; the loop acts on
        the re-read when it is plausible or says the same (confirmed), and otherwise on
        nothing: the snapshot comes back ``rejected``.
        """
        system = self.system
        try:
            account, positions, open_orders = await self.read_account()
        except MalformedResponse as exc:  # e.g. equity "NaN": a reading that does not even parse
            log.error("account_reading_rejected", problems=[str(exc)], outcome="unreadable, read again")
            await system.alerter.send(AlertLevel.WARNING, "Implausible account reading ignored",
                                      f"The broker's account reading did not parse: {exc}. Read again.",
                                      key="account_reading_rejected")
            account, positions, open_orders = await self.read_account()  # twice: the cycle fails
        problems = system.account_sanity.problems(account, positions)
        rejected = False
        if problems:
            account, positions, open_orders, rejected = await self.reread_account(
                account, positions, problems)
        if not rejected:
            system.account_sanity.accept(account, positions)
        return AccountSnapshot(account, positions, open_orders,
                               self.portfolio(account, positions, open_orders, track=not rejected),
                               rejected=rejected)

    async def read_account(self) -> tuple[Account, list[Position], list[Order]]:
        """From the trade stream's book while it is healthy, else three requests and the fills."""
        system = self.system
        if await system.trade_events.ready_for_cycle():  # kept from trade_updates: no polling
            return await system.trade_events.read_account()
        account = await system.broker.get_account()
        positions = await system.broker.list_positions()
        open_orders = await system.broker.list_orders(status="open", nested=True, limit=500)
        await system.record_fills()
        return account, positions, open_orders

    async def reread_account(self, account: Account, positions: list[Position], problems: list[str],
                             ) -> tuple[Account, list[Position], list[Order], bool]:
        """Read again after an implausible reading; True in the result means: still not believed."""
        sanity = self.system.account_sanity
        first = reading_of(account, positions)
        account2, positions2, orders2 = await self.read_account()
        second = reading_of(account2, positions2)
        again = sanity.problems(account2, positions2)
        if again and sanity.confirms(first, second):
            log.warning("account_reading_confirmed", problems=again, first=first.to_log(), reread=second.to_log())
            return account2, positions2, orders2, False
        outcome = "re-read plausible, used instead" if not again else "re-read disagrees, nothing acted on"
        log.error("account_reading_rejected", problems=problems, outcome=outcome, rejected=first.to_log(),
                  reread=second.to_log(), reread_problems=again)
        await self.system.alerter.send(
            AlertLevel.WARNING if not again else AlertLevel.CRITICAL, "Implausible account reading ignored",
            f"The broker reported equity {first.equity} (cash {first.cash}, positions {first.positions_value}): "
            + "; ".join(problems) + f". Re-read: equity {second.equity}; {outcome}.",
            key="account_reading_rejected", fields={"rejected": first.to_log(), "reread": second.to_log()})
        return account2, positions2, orders2, bool(again)

    def portfolio(self, account: Account, positions: Sequence[Position], open_orders: Sequence[Order], *,
                  track: bool = True) -> PortfolioState:
        """The plain-data view the risk manager and the safety state machine read."""
        system = self.system
        equity = account.equity
        if track:  # only believed readings move the equity the loop remembers
            system._last_equity = equity
            system._peak_equity = equity if system._peak_equity is None else max(system._peak_equity, equity)
        views: dict[str, PositionView] = {}
        for p in positions:
            price = p.current_price or p.avg_entry_price
            stops = [o.stop_price for o in flatten_orders(open_orders)
                     if o.symbol == p.symbol and o.stop_price is not None and o.is_open and o.status != "held"]
            views[p.symbol] = PositionView(
                symbol=p.symbol, qty=p.qty, avg_entry_price=p.avg_entry_price, market_price=price,
                market_value=p.market_value if p.market_value is not None else p.qty * price,
                unrealized_pl=p.unrealized_pl if p.unrealized_pl is not None else (price - p.avg_entry_price) * p.qty,
                stop_price=max(stops) if stops and p.qty > 0 else (min(stops) if stops else None),
            )
        pending = tuple(
            PendingEntry(symbol=o.symbol, qty=(o.qty or ZERO) - o.filled_qty,
                         price=self.expected_price(o, views),
                         stop_price=_leg_stop(o))
            for o in open_orders
            if o.order_class == "bracket" and o.side == "buy" and o.is_open and o.status != "held"
            and (o.qty or ZERO) > o.filled_qty
        )
        safety = system.safety
        start = safety.session_start_equity or account.last_equity or equity
        return PortfolioState(
            equity=equity, cash=account.cash, buying_power=account.buying_power,
            last_equity=account.last_equity or equity, session_start_equity=start,
            day_high_equity=safety.day_high_equity or equity, positions=views,
            trading_state=safety.state, now=system.clock.now(),
            open_order_symbols=frozenset(o.symbol for o in open_orders if o.is_open),
            pending_entries=pending,
        )

    def expected_price(self, order: Order, views: dict[str, PositionView]) -> Decimal:
        """What a working entry is expected to cost per share (never a placeholder)."""
        if order.limit_price is not None:
            return order.limit_price
        tracked = self.system.executor.tracked.get(order.client_order_id)
        if tracked is not None and tracked.expected_price:
            return tracked.expected_price
        if order.symbol in views:
            return views[order.symbol].market_price
        stop = _leg_stop(order)
        return stop if stop is not None else Decimal(1)

    async def start_session(self, session: date) -> None:
        """A new session: the breaker's baseline, PDT's day, and the symbols already entered."""
        system = self.system
        try:
            account = await system.broker.get_account()
        except TemporaryError as exc:
            log.warning("session_start_deferred", error=str(exc))
            return
        baseline = await self.session_baseline(account)
        if baseline is None:
            return
        try:
            transitions = system.safety.new_session(session, baseline, at=system.clock.now())
        except ValueError as exc:
            # bad start-up configuration (a state database of another run), not a broker answer
            raise ConfigError([
                f"the state database belongs to another timeline ({exc}); use a fresh --state-db"]) from exc
        system.pdt.new_session(session)
        # Restored from the journal, so a restart cannot re-enter (and reuse an intent id).
        system._entered_this_session = system.journal.symbols_with_intents(session)
        if hasattr(system.broker, "reset_session_blocks"):
            system.broker.reset_session_blocks()
        system.safety_step.persist()
        await system.safety_step.announce(transitions)

    async def session_baseline(self, account: Account) -> Decimal | None:
        """The session's starting equity (yesterday's close, else today's equity), believed.

        A baseline that is not positive, or more than a factor 2 away from the last accepted
        equity, is read again; one that the re-read does not repeat defers the session start
        (retried next iteration) rather than arm the breaker on a bogus number.
        """
        sanity = self.system.account_sanity

        def pick(a: Account) -> Decimal | None:
            for value in (a.last_equity, a.equity):
                if value is not None and value.is_finite() and value > 0:
                    return value
            return None

        def plausible(value: Decimal | None) -> bool:
            last = sanity.last
            if value is None:
                return False
            return last is None or last.equity <= 0 or last.equity / 2 <= value <= last.equity * 2

        first = pick(account)
        if plausible(first):
            return first
        second = pick(await self.system.broker.get_account())
        tol = sanity.tolerance(first or ZERO, second or ZERO)
        if plausible(second) or (first is not None and second is not None and abs(first - second) <= tol):
            log.warning("account_reading_confirmed", step="session_start", baseline=str(second))
            return second
        log.error("account_reading_rejected", step="session_start", outcome="session start deferred",
                  last_equity=str(account.last_equity), equity=str(account.equity),
                  reread_baseline=str(second) if second is not None else None)
        return None


def _leg_stop(order: Order) -> Decimal | None:
    for leg in order.legs or []:
        if leg.stop_price is not None:
            return leg.stop_price
    return None
