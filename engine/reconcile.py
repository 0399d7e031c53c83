"""Reconciliation with the broker and the recording of its fills: the part of the loop that
keeps the journal, the trade ledger and the fills cursor in step with what the broker did.

:class:`Reconciler` is owned by :class:`engine.trading_system.TradingSystem`, which hands it
the parts it writes to (journal, PDT day trades, protections' closed trades, the run summary,
the account sanity check's expected fills) and keeps the start-up sequence itself: start-up
needs the whole loop (operator commands, the account reading, protective orders), while
reconciling and recording fills need only these parts. The broker always wins: nothing here
places an order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Mapping, Protocol, Sequence

import structlog

from alerter import Alerter, AlertLevel
from analytics.excursions import ExcursionTracker
from analytics.trade_ledger import TradeLedger
from broker.models import Order, Position
from core.clock import Clock, to_exchange_time
from core.errors import TemporaryError
from engine.account_sanity import AccountSanity
from engine.protections import ClosedTrade as ProtectionTrade
from engine.protections import ProtectionManager
from journal.journal import Journal
from order_executor import flatten_orders
from pdt_manager import PDTManager

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
#: How far before the last journaled fill (or the oldest order to look up) reconciliation
#: asks the broker from: Alpaca's ``after`` is exclusive and a broker's clock is not ours;
#: anything fetched twice is deduplicated by execution id / order id.
RECONCILE_OVERLAP = timedelta(hours=1)
#: How far before the fills cursor each cycle asks for fills (same-instant fills).
FILLS_OVERLAP = timedelta(seconds=5)
#: At most this many orders looked up one by one in a reconciliation (the rest wait).
RECONCILE_LOOKUPS = 50


class TradeTally(Protocol):
    """The run's closed-trade counts the reconciler adds to (``TradingSystem``'s ``RunSummary``;
    a protocol, so that this module does not import the loop that owns it)."""

    trades: int
    realized_pnl: Decimal
    wins: int
    losses: int


class Reconciler:
    """Journal vs broker, and the broker's fills into the journal and the trade ledger.

    Holds the trade ledger (rebuilt from the journal's fills at construction) and the fills
    cursor (journaled as ``fills_cursor``, so a restart fetches only what it has not seen).
    """

    def __init__(self, broker: Any, clock: Clock, *, journal: Journal, alerter: Alerter, pdt: PDTManager,
                 protections: ProtectionManager, summary: TradeTally, account_sanity: AccountSanity) -> None:
        self.broker = broker
        self.clock = clock
        self.journal = journal
        self.alerter = alerter
        self.pdt = pdt
        self.protections = protections
        self.summary = summary
        self.account_sanity = account_sanity
        #: Price ranges of the open positions (MFE/MAE of each trade), kept in the journal.
        self.excursions = ExcursionTracker.from_dict(journal.get_state("excursions"))
        self._excursions_saved: dict[str, Any] | None = None
        self.ledger = TradeLedger()
        self.rebuild_ledger()
        self.last_fill_at: datetime | None = None
        fills_state = journal.get_state("fills_cursor")
        if fills_state and fills_state.get("after"):
            self.last_fill_at = datetime.fromisoformat(fills_state["after"])
        self.start_fill_cursor = self.last_fill_at  # where start-up reconciliation looks from
        #: Set by the trade stream's feed: True for a REST FILL activity whose execution the
        #: stream already journaled (under the stream's execution id), so that polling or a
        #: catch-up does not journal a second, uncounted copy of it.
        self.streamed: Callable[[Any], bool] | None = None

    async def reconcile(self, open_orders: Sequence[Order], positions: Sequence[Position], *,
                        full: bool = True, lookup_orders: bool = True) -> None:
        """Journal vs broker: the broker wins; adopt and flag, never place an order.

        ``full`` (start-up, before the first trading cycle) fetches the fills since a little
        before the last one journaled (a ``kill -9`` can fall between two fills of the same
        instant) and looks up every order the journal may have behind the broker's state
        (see :meth:`Journal.orders_to_reconcile`): its ``filled_qty`` corrects the recorded
        fills and every bracket leg gets its real status. The periodic check reuses the
        cycle's own snapshot and only asks the broker about journaled working orders that
        have left the broker's open list (a leg canceled when its sibling filled), and only
        when ``lookup_orders``.
        """
        fills: list[Any] = []
        if full:
            after = self.start_fill_cursor - RECONCILE_OVERLAP if self.start_fill_cursor else None
            try:
                fills = await self.broker.get_activities(activity_types=("FILL",), after=after)
            except TemporaryError as exc:
                log.warning("reconciliation_deferred", error=str(exc))
        recent = list(open_orders)
        if full or lookup_orders:
            recent += await self._orders_behind(open_orders, full=full)
        # The journal's reconciliation journals orders and legs first (a stop that filled
        # while the daemon was down is then a fill of a known order, with its exit reason),
        # then the fills (deduplicated by execution id, cumulative quantities last), then the
        # positions; the fills it recorded go to the ledger, and the cursor moves past them.
        report = self.journal.reconcile(recent, positions, fills, at=self.clock.now())
        for record in report.new_fills:
            self._book_trades(self.ledger.apply(record), live=True)
        for activity in sorted(fills, key=lambda a: a.transaction_time or self.clock.now()):
            self._apply_fill(activity)  # already journaled: only moves the fills cursor
        data = report.to_dict()
        if full or report.has_discrepancies:
            log.info("reconciliation", **data)
        if report.has_discrepancies:
            await self.alerter.send(AlertLevel.WARNING, "Reconciliation found discrepancies",
                                    "; ".join(str(d) for d in report.discrepancies), key="reconciliation",
                                    fields=data)

    async def _orders_behind(self, open_orders: Sequence[Order], *, full: bool) -> list[Order]:
        """The broker's view of the journaled orders that the open list does not show.

        One ``status=all`` listing from a little before the oldest of them (Alpaca's
        ``after`` is exclusive and compares the broker's timestamps, not ours), then a
        lookup by client order id for the few still not found. A broker that cannot be
        reached leaves them for the next reconciliation.
        """
        listed = {key for o in flatten_orders(open_orders) for key in (o.id, o.client_order_id)}
        behind = [row for row in self.journal.orders_to_reconcile(short_fills=full)
                  if row["client_order_id"] not in listed and row.get("broker_order_id") not in listed]
        if not behind:
            return []
        oldest = min(row["submitted_at"] for row in behind)
        found: list[Order] = []
        try:
            found = await self.broker.list_orders(status="all", nested=True, limit=500,
                                                  after=oldest - RECONCILE_OVERLAP)
        except TemporaryError as exc:
            log.warning("reconciliation_orders_unavailable", error=str(exc))
            return []
        wanted = {key for row in behind for key in (row["client_order_id"], row.get("broker_order_id")) if key}
        # Only what concerns the journaled orders: an unknown closed order in the listing
        # (one placed by hand an hour ago) is not for this check to adopt.
        found = [o for o in found if any(key in wanted for leg in flatten_orders([o])
                                         for key in (leg.id, leg.client_order_id))]
        listed |= {key for o in flatten_orders(found) for key in (o.id, o.client_order_id)}
        unlisted = [r for r in behind if r["client_order_id"] not in listed and r.get("broker_order_id") not in listed]
        log.info("reconciliation_orders_fetched", behind=len(behind), found=len(found), unlisted=len(unlisted),
                 full=full)
        # One by one only at start-up: the periodic check costs at most the one listing.
        for row in unlisted[:RECONCILE_LOOKUPS if full else 0]:
            try:
                order = await self.broker.get_order_by_client_id(row["client_order_id"])
            except TemporaryError as exc:
                log.warning("reconciliation_lookup_failed", client_order_id=row["client_order_id"],
                            error=str(exc))
                break
            if order is not None:
                found.append(order)
        return found

    async def record_fills(self) -> None:
        """Fills since the last cycle: journal (dedup by execution id), ledger, day trades."""
        # A little before the cursor: Alpaca's ``after`` is exclusive, and a second fill at the
        # cursor's very instant would otherwise never be fetched (repeats dedup by execution id).
        after = self.last_fill_at - FILLS_OVERLAP if self.last_fill_at else None
        fills = await self.broker.get_activities(activity_types=("FILL",), after=after)
        for activity in sorted(fills, key=lambda a: a.transaction_time or self.clock.now()):
            self._apply_fill(activity)

    def apply_fill(self, activity: Any) -> bool:
        """One FILL (a REST activity, or a trade-stream fill in the same shape) into the
        journal, ledger and cursor; True when it was new to the journal. The trade stream's
        event core (``engine.order_events``) records its fills through here."""
        return self._apply_fill(activity)

    def _apply_fill(self, activity: Any) -> bool:
        """One broker FILL activity: journal (dedup by execution id), ledger, trades, cursor.

        The journal row comes first and the cursor last, so a ``kill -9`` anywhere in between
        is repaired at start-up, where the ledger is rebuilt from the journal's fills.
        """
        new = False
        if self.streamed is not None and self.streamed(activity):
            return False
        execution_id = activity.id
        at = activity.transaction_time or self.clock.now()
        side = _fill_side(activity.side)
        symbol = activity.symbol or ""
        qty, price = activity.qty or ZERO, activity.price or ZERO
        if side is None or not symbol or qty <= 0:
            log.warning("fill_skipped", execution_id=execution_id, side=activity.side, symbol=symbol,
                        reason="not a buy or sell of shares")
        else:
            row = self.journal.order_by_broker_id(activity.order_id) if activity.order_id else None
            cid = row["client_order_id"] if row else None
            if self.journal.record_fill(execution_id, cid, activity.order_id, symbol, side, qty, price, at,
                                        cum_qty=activity.cum_qty):
                new = True
                self.account_sanity.add_fill(side, qty, price)
                record = self.journal.fill_record(execution_id)
                if record is not None:
                    self._book_trades(self.ledger.apply(record), live=True)
        if self.last_fill_at is None or at > self.last_fill_at:
            self.last_fill_at = at
            self.journal.set_state("fills_cursor", {"after": at.isoformat()})
        return new

    def rebuild_ledger(self) -> None:
        """The ledger from every fill in the journal; trades it closes are recorded once."""
        self.ledger = TradeLedger()
        self._book_trades(self.ledger.apply_all(self.journal.fill_records()), live=False)
        # Replayed fills say nothing of the prices in between: the journaled ranges of the
        # positions still open carry on, from now on fed by fills and bars.
        self._attach_excursions()
        since = self.clock.now() - timedelta(days=7)
        self.protections.load_trades([
            ProtectionTrade(symbol=t["symbol"], exit_time=_as_datetime(t["exit_at"]),
                            profit_pct=float(t.get("return_pct") or 0), exit_reason=t.get("exit_reason") or "exit")
            for t in self.journal.trades(since=since) if t.get("exit_at")
        ], self.clock.now())

    def _attach_excursions(self) -> None:
        """Give the rebuilt ledger the journaled price ranges: kept for the symbols it holds,
        started at the first lot's price for a holding without one, dropped for the flat."""
        held = set(self.ledger.symbols())
        for symbol in self.excursions.symbols():
            if symbol not in held:
                self.excursions.close(symbol)
        for symbol in held:
            if not self.excursions.tracking(symbol):
                self.excursions.open(symbol, self.ledger.open_lots(symbol)[0].price)
        self.ledger.excursions = self.excursions
        self.save_excursions()

    def observe_prices(self, snapshots: Mapping[str, Any]) -> None:
        """This cycle's (believed) snapshots: the latest minute bar's high and low and the last
        trade of each held symbol widen its price range (the MFE/MAE of its trades)."""
        seen: list[tuple[str, Any, Any]] = []
        for symbol in self.excursions.symbols():
            snap = snapshots.get(symbol)
            if snap is None:
                continue
            if snap.minute_bar is not None:
                seen.append((symbol, snap.minute_bar.h, snap.minute_bar.l))
            if snap.latest_trade is not None:
                seen.append((symbol, snap.latest_trade.p, None))
        if self.excursions.observe_many(seen):
            self.save_excursions()

    def observe_daily_bars(self, series: Mapping[str, Any]) -> None:
        """Completed daily bars (a backtest on daily data, where the loop sees no minute bar):
        for each held symbol, the bars since its position's entry day widen its range. The
        exit day's bar is seen only after the exit, when the range is gone, so it never counts
        prices from after the trade."""
        seen: list[tuple[str, Any, Any]] = []
        for symbol in self.excursions.symbols():
            bars, lots = series.get(symbol), self.ledger.open_lots(symbol)
            if bars is None or not lots or not len(bars):
                continue
            entry_day = to_exchange_time(lots[0].at).replace(hour=0, minute=0, second=0, microsecond=0)
            since = entry_day.timestamp()
            i = len(bars) - 1
            while i >= 0 and bars.ts[i] >= since:
                seen.append((symbol, bars.high[i], bars.low[i]))
                i -= 1
        if self.excursions.observe_many(seen):
            self.save_excursions()

    def save_excursions(self) -> None:
        """Journal the price ranges when they changed since the last time."""
        data = self.excursions.to_dict()
        if data != self._excursions_saved:
            self.journal.set_state("excursions", data)
            self._excursions_saved = data

    def _book_trades(self, closed: Sequence[Any], *, live: bool) -> None:
        for trade in closed:
            new = self.journal.record_trade(
                trade.symbol, trade.strategy, trade.entry_at, trade.exit_at, trade.qty, trade.entry_price,
                trade.exit_price, trade.pnl, trade.exit_reason or "exit", side=trade.side,
                return_pct=trade.return_pct, trade_id=trade.trade_id,
                mfe_pct=getattr(trade, "mfe_pct", None), mae_pct=getattr(trade, "mae_pct", None))
            entry_day = to_exchange_time(trade.entry_at).date()
            if entry_day == to_exchange_time(trade.exit_at).date():
                # One day trade per opening lot, however many partial fills closed it.
                ref = f"{trade.symbol}:{entry_day.isoformat()}:{trade.entry_at.isoformat()}"
                if self.journal.record_day_trade(trade.symbol, entry_day, ref=ref):
                    self.pdt.record_day_trade(trade.symbol, entry_day)
            if not new or not live:
                continue
            self.summary.trades += 1
            self.summary.realized_pnl += trade.pnl
            if trade.pnl > 0:
                self.summary.wins += 1
            else:
                self.summary.losses += 1
            self.protections.record_trade(
                ProtectionTrade(symbol=trade.symbol, exit_time=trade.exit_at,
                                profit_pct=float(trade.return_pct), exit_reason=trade.exit_reason or "exit"),
                self.clock.now(),
            )
            log.info("position_closed", symbol=trade.symbol, strategy=trade.strategy, qty=str(trade.qty),
                     entry_price=str(trade.entry_price), exit_price=str(trade.exit_price), pnl=str(trade.pnl),
                     return_pct=round(float(trade.return_pct) * 100, 3), exit_reason=trade.exit_reason,
                     mfe_pct=_pct_or_none(getattr(trade, "mfe_pct", None)),
                     mae_pct=_pct_or_none(getattr(trade, "mae_pct", None)))
        self.save_excursions()
        if closed and live:
            self.journal.set_state("protection_locks", {"locks": self.protections.locks_snapshot()})


def _pct_or_none(fraction: Decimal | None) -> float | None:
    return None if fraction is None else round(float(fraction) * 100, 3)


def _fill_side(side: str | None) -> str | None:
    """Alpaca's fill sides as buy/sell (short sales and covers are still sells and buys)."""
    return {"buy": "buy", "sell": "sell", "sell_short": "sell", "buy_to_cover": "buy"}.get(side or "")


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
