"""The alerts traders ask for, beyond the safety paths' own (breaker, latches, PDT, gaps).

Each rule decides from what the loop already has (a snapshot, the journal's fills, the
rate limiter, the snapshots of the universe, the emergency stop's report) and hands the alert
to :class:`alerter.Alerter`, whose ``key`` de-duplicates and throttles it as for every other
alert (``alerts.throttle_seconds``). Levels and settings (``[alerts]``):

===================================  =========================  =============================
condition                            level                      setting
===================================  =========================  =============================
open position down beyond threshold  WARNING (per symbol)       ``position_loss_alert``
every fill                           INFO (per execution)       ``fill_alerts``; e-mail only
                                                                with ``email_min_level=info``
broker's rate budget nearly spent    WARNING; CRITICAL at 0     ``rate_limit_alert_fraction``
                                     or in a 429 cooldown
market data stale in the session     WARNING                    ``stale_data_seconds``
broker unreachable too long          CRITICAL                   ``unreachable_alert_seconds``
trade stream unreachable too long    WARNING                    ``unreachable_alert_seconds``
... and reachable again              INFO                       (after an alert said it was not)
emergency exit done                  CRITICAL, sold quantity    always
emergency exit failed                EMERGENCY, unsold quantity always
session summary at the close         INFO                       ``daily_summary``
===================================  =========================  =============================

Connectivity: :meth:`AlertRules.connection_lost` / :meth:`AlertRules.connection_restored`
take a name (``"broker"`` from the loop, ``"stream"`` from the trade stream's client); the
outage is timed on the injected clock from its first failure, and the alert fires once it has
lasted ``unreachable_alert_seconds`` (checked on every failure and every cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

import structlog

from alerter import Alerter, AlertLevel, AlertOutcome
from core.clock import EXCHANGE_TZ, Clock, to_exchange_time

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
_LEVEL_OF_LOST = {"broker": AlertLevel.CRITICAL, "stream": AlertLevel.WARNING}


@dataclass
class _Outage:
    since: datetime
    error: str
    alerted: bool = False


def _qty(value: Decimal | None) -> str:
    """A share count as a trader reads it (no exponent, no trailing zeros)."""
    if value is None:
        return "unknown"
    text = format(abs(value).normalize(), "f")
    return text


class AlertRules:
    """Raises the trader's alerts (see the module docstring); never raises itself."""

    def __init__(self, alerter: Alerter, settings: Any, clock: Clock, journal: Any = None) -> None:
        self._alerter = alerter
        self._alerts = settings.alerts
        self._max_per_minute = int(settings.rate_limit.max_requests_per_minute)
        self._clock = clock
        self._journal = journal
        self._outages: dict[str, _Outage] = {}
        self._positions: int | None = None  # open positions at the last completed cycle
        self._refused_seen = 0  # the rate limiter's 429 count already alerted
        # Fills already in the journal at start-up were alerted by the run that saw them.
        self._fill_row = self._last_fill_row()

    async def after_cycle(self, positions: Sequence[Any], limiter: Any) -> None:
        """What a completed cycle checks: the broker answered (an outage is over), outages of
        others that reached the bound, position losses, new fills, the rate budget."""
        self._positions = len(positions)
        await self.connection_restored("broker")
        await self.check_connections()
        await self.position_losses(positions)
        await self.new_fills()
        await self.rate_limit(limiter)

    # -- positions and fills -----------------------------------------------------------

    async def position_losses(self, positions: Iterable[Any]) -> list[AlertOutcome]:
        """WARNING for each open position whose unrealized loss exceeds
        ``position_loss_alert`` of its cost (long or short)."""
        threshold = Decimal(str(self._alerts.position_loss_alert))
        outcomes: list[AlertOutcome] = []
        for p in positions:
            cost = abs(p.qty) * p.avg_entry_price if p.avg_entry_price else ZERO
            pnl = p.unrealized_pl
            if pnl is None and getattr(p, "current_price", None) is not None:
                pnl = (p.current_price - p.avg_entry_price) * p.qty
            if cost <= 0 or pnl is None or pnl >= 0:
                continue
            loss = -pnl / cost
            if loss <= threshold:
                continue
            outcomes.append(await self._alerter.send(
                AlertLevel.WARNING, f"Position loss: {p.symbol} down {loss:.2%}",
                f"{p.symbol}: {_qty(p.qty)} shares bought at {p.avg_entry_price}, unrealized P&L {pnl:.2f} "
                f"({loss:.2%} of cost, alert threshold {threshold:.2%}).",
                key=f"position_loss:{p.symbol}",
                fields={"symbol": p.symbol, "qty": p.qty, "avg_entry_price": p.avg_entry_price,
                        "unrealized_pl": pnl, "loss_fraction": f"{loss:.4f}"}))
        return outcomes

    async def new_fills(self) -> list[AlertOutcome]:
        """INFO per fill recorded in the journal since the last look (any path recorded it)."""
        if self._journal is None or not hasattr(self._journal, "fills_after"):
            return []
        fills = self._journal.fills_after(self._fill_row)
        if not fills:
            return []
        self._fill_row = max(int(f["rowid"]) for f in fills)
        if not self._alerts.fill_alerts:
            return []
        outcomes: list[AlertOutcome] = []
        for f in fills:
            qty = f.get("applied_qty") if f.get("applied_qty") is not None else f["qty"]
            if qty is None or qty <= 0:
                continue  # a repeat of shares already counted: no new fill for a human
            outcomes.append(await self._alerter.send(
                AlertLevel.INFO, f"Fill: {f['side']} {_qty(qty)} {f['symbol']} @ {f['price']}",
                f"{f['side'].capitalize()} {_qty(qty)} shares of {f['symbol']} at {f['price']} "
                f"({f['at'].isoformat() if isinstance(f['at'], datetime) else f['at']}).",
                key=f"fill:{f['execution_id']}",
                fields={"symbol": f["symbol"], "side": f["side"], "qty": qty, "price": f["price"],
                        "client_order_id": f.get("client_order_id"), "execution_id": f["execution_id"]}))
        return outcomes

    def _last_fill_row(self) -> int:
        if self._journal is None or not hasattr(self._journal, "fills_after"):
            return 0
        try:
            rows = self._journal.fills_after(0)
        except Exception as exc:  # an unreadable journal is reported elsewhere; no fill alerts then
            log.warning("alert_rules_fill_cursor_failed", error=repr(exc))
            return 0
        return max((int(r["rowid"]) for r in rows), default=0)

    # -- the broker's limits and data --------------------------------------------------

    async def rate_limit(self, limiter: Any) -> AlertOutcome | None:
        """WARNING when the broker's budget left is below ``rate_limit_alert_fraction`` of
        the per-minute limit; CRITICAL when it is spent or the broker answered 429."""
        if limiter is None:
            return None
        remaining = limiter.remaining() if hasattr(limiter, "remaining") else None
        cooling = float(getattr(limiter, "cooldown_remaining", 0.0) or 0.0)
        refused_total = int(getattr(limiter, "rate_limited_count", 0) or 0)
        refused = refused_total - self._refused_seen
        self._refused_seen = refused_total
        floor = self._alerts.rate_limit_alert_fraction * self._max_per_minute
        if cooling > 0 or refused > 0 or remaining == 0:
            return await self._alerter.send(
                AlertLevel.CRITICAL, "Rate limit exhausted",
                (f"The broker refused {max(refused, 1)} request(s) for exceeding its rate limit (429); "
                 f"normal requests waited or wait {cooling:.0f}s more (emergency exits may use the reserve)."
                 if cooling > 0 or refused > 0 else
                 "The broker says no request is left in its window; normal requests wait for the reset."),
                key="rate_limit", fields={"remaining": remaining, "cooldown_seconds": round(cooling, 1),
                                          "refused": refused})
        if remaining is not None and remaining < floor:
            return await self._alerter.send(
                AlertLevel.WARNING, "Rate limit near exhaustion",
                f"{remaining} requests left in the broker's window (alert below {floor:.0f} of "
                f"{self._max_per_minute}/min).",
                key="rate_limit", fields={"remaining": remaining, "limit_per_minute": self._max_per_minute})
        return None

    async def stale_data(self, snapshots: Mapping[str, Any], now: datetime) -> AlertOutcome | None:
        """WARNING naming the symbols whose newest trade and quote are both older than
        ``stale_data_seconds`` (call it in the regular session only)."""
        bound = float(self._alerts.stale_data_seconds)
        stale: dict[str, float] = {}
        for symbol, snap in snapshots.items():
            stamps = [part.t for part in (getattr(snap, "latest_trade", None), getattr(snap, "latest_quote", None))
                      if part is not None and getattr(part, "t", None) is not None]
            if not stamps:
                continue
            age = (now - max(stamps)).total_seconds()
            if age > bound:
                stale[symbol] = age
        if not stale:
            return None
        names = ", ".join(f"{s} ({age / 60:.0f} min)" for s, age in sorted(stale.items()))
        return await self._alerter.send(
            AlertLevel.WARNING, "Stale market data",
            f"No trade or quote newer than {bound:.0f}s for: {names}. Decisions on these symbols "
            "use old prices; the feed may be down or the symbols halted.",
            key="stale_data", fields={"symbols": {s: round(a) for s, a in stale.items()}})

    # -- connectivity -------------------------------------------------------------------

    async def connection_lost(self, name: str, error: str) -> AlertOutcome | None:
        """A failed contact with ``name`` (``broker`` or ``stream``): start or extend its outage."""
        now = self._clock.now()
        outage = self._outages.get(name)
        if outage is None:
            outage = self._outages[name] = _Outage(since=now, error=error)
        outage.error = error
        return await self._check(name, outage, now)

    async def connection_restored(self, name: str) -> AlertOutcome | None:
        """``name`` answered again: INFO when its outage had been alerted."""
        outage = self._outages.pop(name, None)
        if outage is None or not outage.alerted:
            return None
        seconds = (self._clock.now() - outage.since).total_seconds()
        return await self._alerter.send(
            AlertLevel.INFO, f"{name.capitalize()} reachable again",
            f"The {name} answers again after {seconds:.0f}s without contact.",
            key=f"{name}_reachable", fields={"outage_seconds": round(seconds)})

    async def check_connections(self) -> list[AlertOutcome]:
        """Alert outages that have now lasted the bound (the loop calls it every cycle)."""
        now = self._clock.now()
        outcomes = [await self._check(name, outage, now) for name, outage in list(self._outages.items())]
        return [o for o in outcomes if o is not None]

    async def _check(self, name: str, outage: _Outage, now: datetime) -> AlertOutcome | None:
        seconds = (now - outage.since).total_seconds()
        if seconds < float(self._alerts.unreachable_alert_seconds):
            return None
        outage.alerted = True
        if name == "broker":
            title = "Broker unreachable during the session"
            body = (f"No answer from the broker for {seconds:.0f}s ({outage.error}). Protective orders at "
                    "the broker remain the safety net; the daemon keeps retrying and catches up through REST.")
        else:
            title = f"{name.capitalize()} unreachable"
            body = (f"The {name} has been down for {seconds:.0f}s ({outage.error}); the daemon follows the "
                    "account through REST meanwhile.")
        return await self._alerter.send(
            _LEVEL_OF_LOST.get(name, AlertLevel.WARNING), title, body, key=f"{name}_unreachable",
            fields={"since": outage.since, "seconds": round(seconds), "error": outage.error})

    # -- emergency exits ---------------------------------------------------------------

    async def emergency_outcomes(self, reports: Sequence[Any]) -> list[AlertOutcome]:
        """One alert per emergency exit with the real quantities: CRITICAL when it went
        flat (shares sold), EMERGENCY when it failed (shares it could not sell)."""
        return [await self.emergency_outcome(r) for r in reports]

    async def emergency_outcome(self, report: Any) -> AlertOutcome:
        data = report.to_dict()
        if report.succeeded:
            return await self._alerter.send(
                AlertLevel.CRITICAL, f"Emergency exit done: {report.symbol}",
                f"{report.symbol} is flat: sold {_qty(report.sold_qty)} of {_qty(report.position_qty)} shares "
                f"in {report.attempts} attempt(s) ({report.reason}).",
                key=f"emergency_done:{report.symbol}", fields=data)
        unsold = report.unsold_qty if report.unsold_qty is not None else report.position_qty
        return await self._alerter.send(
            AlertLevel.EMERGENCY, f"Emergency stop failed: {report.symbol}",
            f"Could not sell {_qty(unsold)} shares of {report.symbol} (sold {_qty(report.sold_qty)} of "
            f"{_qty(report.position_qty)}) after {report.attempts} attempt(s): "
            + ("; ".join(report.failures) or "position not flat") + ". Close it by hand.",
            key=f"emergency_failed:{report.symbol}", fields=data)

    # -- the close ---------------------------------------------------------------------

    async def daily_summary(self, session: date | None, *, start_equity: Decimal | None,
                            end_equity: Decimal | None, state: str) -> AlertOutcome | None:
        """INFO at the close: the session's P&L, trades closed, open positions (as the last
        completed cycle saw them)."""
        if not self._alerts.daily_summary or session is None:
            return None
        positions = self._positions
        trades = self._session_trades(session)
        realized = sum((Decimal(str(t.get("pnl") or 0)) for t in trades), ZERO)
        wins = sum(1 for t in trades if Decimal(str(t.get("pnl") or 0)) > 0)
        if start_equity and end_equity is not None:
            change = end_equity - start_equity
            pnl_text = f"equity {start_equity:,.2f} -> {end_equity:,.2f} ({change:+,.2f}, {change / start_equity:+.2%})"
        else:
            change, pnl_text = None, "equity unknown (no confirmed reading)"
        return await self._alerter.send(
            AlertLevel.INFO, f"Daily summary {session.isoformat()}",
            f"{pnl_text}; {len(trades)} trade(s) closed ({wins} won), realized {realized:+,.2f}; "
            f"open positions {positions if positions is not None else 'unknown'}; trading state {state}.",
            key=f"daily_summary:{session.isoformat()}",
            fields={"session": session, "start_equity": start_equity, "end_equity": end_equity,
                    "pnl": change, "trades": len(trades), "wins": wins, "realized_pnl": realized,
                    "open_positions": positions, "state": state})

    def _session_trades(self, session: date) -> list[dict[str, Any]]:
        if self._journal is None:
            return []
        out = []
        midnight = datetime.combine(session, time(0), tzinfo=EXCHANGE_TZ)
        for trade in self._journal.trades(since=midnight):
            at = trade.get("exit_at")
            when = at if isinstance(at, datetime) else (datetime.fromisoformat(at) if at else None)
            if when is not None and to_exchange_time(when).date() == session:
                out.append(trade)
        return out
