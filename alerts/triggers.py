"""The daemon's named alerts (circuit breaker, emergency exits, drawdown, start-up,
PDT, gap risk, trading state, reconciliation): each builds its level, title, message, key and
fields and calls ``send``. A mixin of :class:`alerter.Alerter`, which provides ``send``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from alerts.types import AlertLevel, AlertOutcome, plain


class AlertTriggers:
    """The named helpers; ``send`` is :meth:`alerter.Alerter.send`."""

    async def send(
        self,
        level: AlertLevel | str,
        title: str,
        message: str,
        *,
        key: str | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> AlertOutcome:
        raise NotImplementedError("AlertTriggers is a mixin: the class using it delivers alerts")

    async def circuit_breaker_tripped(
        self, *, loss: Decimal | float, equity: Decimal, baseline: Decimal, reason: str = ""
    ) -> AlertOutcome:
        """EMERGENCY: the breaker latched; every order is being canceled and positions closed."""
        return await self.send(
            AlertLevel.EMERGENCY, "CIRCUIT BREAKER TRIPPED",
            f"Equity {equity} is {_pct(loss)} below the session baseline {baseline}. Trading is "
            "latched: open orders are canceled and every position is being closed. Only "
            "`python main.py rearm --reason ...` re-arms it." + (f" {reason}" if reason else ""),
            key="circuit_breaker",
            fields={"loss": _pct(loss), "equity": equity, "baseline": baseline},
        )

    async def emergency_liquidation(self, *, reason: str, symbols: Sequence[str]) -> AlertOutcome:
        """EMERGENCY: every position is being closed."""
        return await self.send(
            AlertLevel.EMERGENCY, "EMERGENCY LIQUIDATION",
            f"Closing every position ({', '.join(symbols) or 'none held'}): {reason}",
            key="emergency_liquidation", fields={"symbols": list(symbols), "reason": reason},
        )

    async def emergency_stop_failed(
        self, *, symbol: str, reason: str, attempts: int | None = None
    ) -> AlertOutcome:
        """EMERGENCY: a position could not be closed; a human must act."""
        return await self.send(
            AlertLevel.EMERGENCY, f"EMERGENCY STOP FAILED: {symbol}",
            f"Could not flatten {symbol}" + (f" after {attempts} attempts" if attempts else "")
            + f": {reason}. Close it by hand.",
            key=f"emergency_stop_failed:{symbol}",
            fields={"symbol": symbol, "reason": reason, "attempts": attempts},
        )

    async def daily_drawdown_limit(
        self, *, drawdown: Decimal | float, limit: Decimal | float, equity: Decimal
    ) -> AlertOutcome:
        """CRITICAL: the daily loss limit was reached; no new entries this session."""
        return await self.send(
            AlertLevel.CRITICAL, "Daily drawdown limit reached",
            f"Down {_pct(drawdown)} today (limit {_pct(limit)}), equity {equity}. "
            "No new entries for the rest of the session; exits continue.",
            key="daily_drawdown", fields={"drawdown": _pct(drawdown), "limit": _pct(limit), "equity": equity},
        )

    async def startup_unprotected(self, positions: Sequence[Any]) -> AlertOutcome | None:
        """CRITICAL, the STARTUP ALERT: positions found without a full protective stop.

        ``positions``: :class:`broker.models.Position` objects or mappings with ``symbol``, ``qty``,
        ``unrealized_pl`` and ``market_value``. None when the list is empty.
        """
        if not positions:
            return None
        rows = [_position_row(p) for p in positions]
        lines = [f"{r['symbol']}: qty {r['qty']}, P&L {r['unrealized_pl']}, value {r['market_value']}" for r in rows]
        return await self.send(
            AlertLevel.CRITICAL, "STARTUP ALERT: unprotected positions",
            f"{len(rows)} position(s) had no protective stop for their full quantity at start-up:\n"
            + "\n".join(lines),
            key="startup_unprotected", fields={"positions": rows},
        )

    async def broker_unreachable(self, *, error: str, since: datetime | None = None) -> AlertOutcome:
        """CRITICAL: the broker cannot be reached during the session."""
        return await self.send(
            AlertLevel.CRITICAL, "Broker unreachable during the session",
            f"{error}. Protective orders at the broker remain the safety net; the daemon keeps "
            "retrying and catches up when the connection returns.",
            key="broker_unreachable", fields={"since": since} if since else None,
        )

    async def pdt_blocked(self, *, symbol: str, reason: str) -> AlertOutcome:
        """WARNING: an order was blocked by day-trading rules."""
        return await self.send(
            AlertLevel.WARNING, f"Day trade blocked: {symbol}", reason,
            key=f"pdt_blocked:{symbol}", fields={"symbol": symbol},
        )

    async def account_may_be_flagged(self, *, symbol: str, reason: str) -> AlertOutcome:
        """CRITICAL: a risk exit went through although it may flag the account as PDT."""
        return await self.send(
            AlertLevel.CRITICAL, f"Account may be flagged as pattern day trader: {symbol}",
            f"A risk exit of {symbol} was sent although it is a day trade beyond the limit: {reason}",
            key=f"pdt_flag:{symbol}", fields={"symbol": symbol},
        )

    async def gap_risk(
        self,
        *,
        level: Any,
        gap_pct: Decimal | float,
        dollar_impact: Decimal | float,
        symbol: str | None = None,
    ) -> AlertOutcome | None:
        """MODERATE -> INFO, HIGH -> WARNING, EXTREME -> CRITICAL; LOW -> no alert (None)."""
        name = str(getattr(level, "value", level)).lower()
        alert_level = {"moderate": AlertLevel.INFO, "high": AlertLevel.WARNING,
                       "extreme": AlertLevel.CRITICAL}.get(name)
        if alert_level is None:
            return None
        subject = symbol or "portfolio"
        return await self.send(
            alert_level, f"Gap risk {name.upper()}: {subject}",
            f"{subject} gapped {_pct(gap_pct, signed=True)}, impact {dollar_impact}.",
            key=f"gap_risk:{subject}:{name}",
            fields={"symbol": subject, "gap": _pct(gap_pct, signed=True), "dollar_impact": dollar_impact},
        )

    async def trading_state_changed(self, *, from_state: Any, to_state: Any, reason: str) -> AlertOutcome:
        """WARNING: the trading state machine moved (e.g. ACTIVE -> REDUCING)."""
        old, new = (str(getattr(s, "value", s)) for s in (from_state, to_state))
        return await self.send(
            AlertLevel.WARNING, f"Trading state {old.upper()} -> {new.upper()}", reason,
            key=f"trading_state:{new}", fields={"from": old, "to": new},
        )

    async def reconciliation_discrepancies(self, report: Any) -> AlertOutcome | None:
        """WARNING when a reconciliation flagged something (None when all agreed)."""
        found = list(getattr(report, "discrepancies", []) or [])
        if not found:
            return None
        lines = []
        for item in found[:20]:
            kind = item.get("kind", "?")
            what = item.get("client_order_id") or item.get("symbol") or ""
            lines.append(f"{kind}: {what}")
        return await self.send(
            AlertLevel.WARNING, "Reconciliation found discrepancies",
            f"{len(found)} difference(s) between the journal and the broker (the broker wins):\n"
            + "\n".join(lines),
            key="reconciliation", fields={"discrepancies": found},
        )


def _pct(value: Decimal | float, *, signed: bool = False) -> str:
    number = float(value) * 100
    return f"{number:+.2f}%" if signed else f"{number:.2f}%"


def _position_row(position: Any) -> dict[str, Any]:
    get = position.get if isinstance(position, Mapping) else lambda name, default=None: getattr(position, name, default)
    return {
        "symbol": get("symbol"),
        "qty": plain(get("qty")),
        "unrealized_pl": plain(get("unrealized_pl")),
        "market_value": plain(get("market_value")),
    }
