"""``python main.py diagnose``: the full system diagnostic as a readable report.

Checks, in order: configuration (every rule re-validated, paths writable), state DB
integrity, alert channels reachable (:mod:`ops.health_checks`), API connectivity (clock),
clock skew against the broker, account access and trading permissions, market data freshness
for the universe, the order system (listing orders; in paper and sim also a far-from-market
limit order placed and canceled, never in live), the rate budget left after all that, and the
risk systems (breaker latch, AI model present). Each check is PASS, WARN or FAIL with one line
of detail; the report is healthy when nothing FAILs.

Reachability comes first and is bounded in wall time (``REACHABILITY_SECONDS``): a broker
that refuses connections or never answers is a FAIL with its reason within seconds, and the
remaining checks are skipped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from core.errors import BrokerError, TradingError
from engine.drawdown_stop import latch_label
from ops import health_checks
from broker.models import OrderRequest
from order_executor import client_order_id_for, round_price

Verdict = Literal["PASS", "WARN", "FAIL"]
REACHABILITY_SECONDS = 6.0


@dataclass
class Check:
    name: str
    verdict: Verdict
    detail: str


@dataclass
class DiagnosticReport:
    mode: str
    url: str
    at: datetime
    checks: list[Check] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(c.verdict != "FAIL" for c in self.checks)

    def add(self, name: str, verdict: Verdict, detail: str) -> None:
        self.checks.append(Check(name, verdict, detail))

    def render(self) -> str:
        width = max(len(c.name) for c in self.checks) if self.checks else 10
        lines = [f"System diagnostic ({self.mode} mode, {self.url}) at {self.at.isoformat()}", ""]
        for c in self.checks:
            lines.append(f"  [{c.verdict}] {c.name.ljust(width)}  {c.detail}")
        fails = sum(c.verdict == "FAIL" for c in self.checks)
        warns = sum(c.verdict == "WARN" for c in self.checks)
        lines += ["", f"Result: {'HEALTHY' if self.healthy else 'UNHEALTHY'} ({fails} failed, {warns} warnings)"]
        return "\n".join(lines)


async def diagnose(settings: Any, broker: Any, clock: Any, url: str) -> DiagnosticReport:
    report = DiagnosticReport(mode=settings.mode, url=url, at=clock.now())
    report.add(*health_checks.check_configuration(settings))
    report.add(*health_checks.check_state_db(settings))
    report.add(*await health_checks.check_alert_channels(settings))
    # API connectivity
    try:
        async with asyncio.timeout(REACHABILITY_SECONDS):
            market_clock = await broker.get_clock()
        report.add("api connectivity", "PASS",
                   f"broker clock {market_clock.timestamp.isoformat()}, market {'open' if market_clock.is_open else 'closed'}")
    except TimeoutError:
        report.add("api connectivity", "FAIL",
                   f"cannot read the broker clock: no answer within {REACHABILITY_SECONDS:g}s")
        return report
    except TradingError as exc:
        report.add("api connectivity", "FAIL", f"cannot read the broker clock: {exc}")
        return report
    try:
        async with asyncio.timeout(REACHABILITY_SECONDS):
            report.add(*await health_checks.check_clock_skew(broker, clock))
    except (TimeoutError, TradingError) as exc:
        report.add("clock skew", "FAIL", f"cannot read the broker clock again: {exc or 'no answer'}")
    # account
    try:
        account = await broker.get_account()
        blocked = [n for n in ("trading_blocked", "account_blocked", "trade_suspended_by_user") if getattr(account, n, False)]
        verdict: Verdict = "FAIL" if blocked or account.status != "ACTIVE" else "PASS"
        report.add("account access", verdict,
                   f"status {account.status}, equity {account.equity}, buying power {account.buying_power}"
                   + (f", blocked: {', '.join(blocked)}" if blocked else ""))
    except TradingError as exc:
        report.add("account access", "FAIL", str(exc))
        return report
    # market data freshness
    symbols = list(settings.scanning.symbols)
    try:
        quotes = await broker.get_latest_quotes(symbols)
        missing = [s for s in symbols if s not in quotes]
        ages = [(clock.now() - q.t).total_seconds() for q in quotes.values()]
        oldest = max(ages) if ages else None
        if not quotes:
            verdict = "WARN" if not market_clock.is_open else "FAIL"
            report.add("market data", verdict, "no fresh quote for any symbol (market closed or data stale)")
        else:
            verdict = "WARN" if missing else "PASS"
            report.add("market data", verdict,
                       f"{len(quotes)}/{len(symbols)} fresh quotes, oldest {oldest:.0f}s"
                       + (f"; stale or missing: {', '.join(missing)}" if missing else ""))
    except TradingError as exc:
        report.add("market data", "FAIL", str(exc))
    # order system
    try:
        orders = await broker.list_orders(status="open", nested=True, limit=500)
        detail = f"{len(orders)} open orders listed"
        if settings.mode in ("paper", "sim") and symbols and market_clock.is_open:
            detail += "; " + await _order_round_trip(broker, clock, symbols[0])
        report.add("order system", "PASS", detail)
    except TradingError as exc:
        report.add("order system", "FAIL", str(exc))
    report.add(*health_checks.check_rate_budget(broker, settings))
    # risk systems
    db_sound = next(c for c in report.checks if c.name == "state db").verdict != "FAIL"
    report.add(*_risk_check(settings, journal_readable=db_sound))
    return report


async def _order_round_trip(broker: Any, clock: Any, symbol: str) -> str:
    """Place a limit buy far below the market and cancel it (paper and sim only)."""
    quotes = await broker.get_latest_quotes([symbol])
    quote = quotes.get(symbol)
    if quote is None:
        return "round trip skipped (no quote)"
    price = round_price(Decimal(str(quote.bp)) * Decimal("0.5"), side="down")
    cid = client_order_id_for(f"diagnose-{symbol}-{clock.now():%Y%m%d%H%M%S}")
    order = await broker.submit_order(OrderRequest.simple(symbol, 1, "buy", type="limit", limit_price=price,
                                                          time_in_force="day", client_order_id=cid))
    try:
        await broker.cancel_order(order.id)
    except BrokerError as exc:
        return f"test order {order.id} placed but cancel failed: {exc}"
    return f"test limit order placed and canceled ({symbol} @ {price})"


def _risk_check(settings: Any, *, journal_readable: bool = True) -> tuple[str, Verdict, str]:
    from journal.journal import Journal

    notes: list[str] = []
    verdict: Verdict = "PASS"
    db = Path(settings.storage.state_db)
    if db.exists() and not journal_readable:
        verdict = "FAIL"
        notes.append("breaker latch unknown: the state db failed its integrity check")
    elif db.exists():
        journal = Journal(db)
        try:
            safety = journal.get_state("safety") or {}
        finally:
            journal.close()
        if safety.get("latched"):
            verdict = "WARN"
            kind = latch_label(safety.get("latch_kind"))
            notes.append(f"trading LATCHED by {kind} ({safety.get('reason')}); re-arm with main.py rearm")
        else:
            notes.append(f"trading state {safety.get('state', 'ACTIVE')}")
    else:
        notes.append("no journal yet (first run)")
    from ai.model_choice import resolve_model_path  # where the analyzer looks: cwd, then beside the program

    model = resolve_model_path(settings.ai.model_path)
    if model.exists():
        notes.append(f"AI model {model}")
    else:
        verdict = "WARN" if verdict == "PASS" else verdict
        notes.append(f"no AI model at {model}: transparent scoring (train with main.py train --data DIR)")
    notes.append(f"daily drawdown limit {settings.risk.max_daily_drawdown:.0%}, emergency exit {settings.risk.emergency_exit_loss:.0%}")
    return "risk systems", verdict, "; ".join(notes)
