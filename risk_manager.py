"""Position sizing and the risk limits every new entry must pass.

:meth:`RiskManager.evaluate` is a pure function of a trade intent and an explicit
:class:`PortfolioState` snapshot (no broker call, no clock read). It runs these checks in
order, each with a reason, and answers ``approve`` (the sized quantity), ``reduce`` (a
smaller quantity, with the limits that cut it) or ``veto`` (nothing, with the first limit
that refused):

1. ``trading_state``: only ACTIVE allows entries (REDUCING/HALTED/LIQUIDATING veto).
2. ``daily_drawdown``: the day's loss (from the session's starting equity, or from the
   day's equity high) reached ``risk.max_daily_drawdown``: no entries for the session.
3. ``intent``: a positive entry price and a stop on the losing side of it.
4. ``max_positions``: held positions plus pending entries reached ``trading.max_positions``.
5. ``already_holding``: the symbol is held or has a working order.
6. ``sizing``: ``fixed`` buys ``max_position_size x equity`` worth; ``volatility`` scales
   that by the intent's confidence and by ``REFERENCE_DAILY_VOLATILITY / volatility``
   (clamped to ``[min_volatility_multiplier, max_volatility_multiplier]``), never above
   ``max_position_size x equity``; ``risk`` sizes the loss at the stop to a share of
   ``max_risk_per_trade x equity`` that follows the confidence (:func:`risk_fraction`: a
   calibrated probability by fractional Kelly, ``risk.kelly_fraction x (p - (1-p) s/t)``,
   capped at the maximum; a transparent score by ``confidence x max_risk_per_trade``), so a
   wide stop buys fewer shares and a tight one more, up to the caps below. A defensive
   ``size_multiplier`` in the intent's metadata scales it down. Whole shares, rounded down.
7. ``position_size``: at most ``max_position_size x equity`` in the position.
8. ``trade_risk``: (entry - stop) x qty at most ``max_risk_per_trade x equity``.
9. ``portfolio_risk``: the open risk to every stop plus this trade's at most
   ``max_portfolio_risk x equity``.
10. ``concentration``: at most ``max_concentration x equity`` in one symbol.
11. ``buying_power``: the order's notional fits the account's buying power.
12. ``min_order_value``: the final order is worth at least ``trading.min_order_value``.

Vetoes are logged as ``risk_veto`` and reductions as ``risk_reduced``, with the numbers.
:meth:`RiskManager.check_positions` names the positions past the emergency-exit loss, and
:meth:`RiskManager.daily_drawdown_breached` / :meth:`RiskManager.circuit_breaker_breached`
answer the portfolio-level questions the safety state machine also asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Literal, Mapping, Protocol

import structlog

# The snapshot types are plain data in engine.portfolio, below both this module and the safety
# state machine (tests/test_layout.py holds that the risk manager imports nothing else of the
# project); PendingEntry, PositionView and TradingState stay importable from here too.
from engine.portfolio import PendingEntry, PortfolioState, PositionView, TradingState, loss_fraction

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
ONE = Decimal(1)

#: The daily volatility (standard deviation of daily returns, or ATR / price) at which the
#: volatility multiplier is 1. A stock twice as volatile gets half the size, within the clamp.
REFERENCE_DAILY_VOLATILITY = 0.02

Verdict = Literal["approve", "reduce", "veto"]


class TradeIntentLike(Protocol):
    """What the risk manager reads of an ``ai_analyzer.TradeIntent``."""

    @property
    def intent_id(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def strategy(self) -> str: ...
    @property
    def entry_price(self) -> Any: ...
    @property
    def stop_price(self) -> Any: ...
    @property
    def target_price(self) -> Any: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class CheckResult:
    """One check of :meth:`RiskManager.evaluate`: whether it passed and what it allowed."""

    name: str
    passed: bool
    detail: str
    max_qty: Decimal | None = None


@dataclass(frozen=True)
class RiskDecision:
    """The answer for one intent: approve, reduce (to ``qty``) or veto, with the reason."""

    verdict: Verdict
    qty: Decimal
    reason: str
    checks: tuple[CheckResult, ...] = ()
    requested_qty: Decimal = ZERO
    entry_price: Decimal = ZERO
    stop_price: Decimal | None = None

    @property
    def approved(self) -> bool:
        """True when an order of ``qty`` shares may be sent (approve or reduce)."""
        return self.verdict != "veto" and self.qty > ZERO


@dataclass(frozen=True)
class ExitOrder:
    """A position the emergency-exit threshold says must be closed now."""

    symbol: str
    qty: Decimal
    side: Literal["buy", "sell"]
    reason: str
    loss_fraction: Decimal
    unrealized_pl: Decimal


@dataclass
class _Evaluation:
    """The running state of one evaluation (internal)."""

    intent_id: str
    symbol: str
    qty: Decimal = ZERO
    requested: Decimal = ZERO
    checks: list[CheckResult] = field(default_factory=list)
    reductions: list[str] = field(default_factory=list)

    def passed(self, name: str, detail: str, max_qty: Decimal | None = None) -> None:
        self.checks.append(CheckResult(name, True, detail, max_qty))

    def cap(self, name: str, limit_qty: Decimal, detail: str) -> None:
        """Lower the quantity to ``limit_qty`` if it is above it."""
        if limit_qty < self.qty:
            reduced = f"{name}: {detail} (qty {self.qty} -> {max(limit_qty, ZERO)})"
            self.qty = max(limit_qty, ZERO)
            self.reductions.append(reduced)
            self.checks.append(CheckResult(name, False, reduced, self.qty))
        else:
            self.checks.append(CheckResult(name, True, detail, limit_qty))


class RiskManager:
    """Sizes entries and enforces the risk limits of ``settings.trading`` and ``settings.risk``."""

    def __init__(self, settings: Any) -> None:
        trading, risk = settings.trading, settings.risk
        self.max_position_size = _dec(trading.max_position_size)
        self.default_stop_loss = _dec(trading.stop_loss)
        self.max_positions = int(trading.max_positions)
        self.position_sizing: str = str(trading.position_sizing)
        self.min_order_value = _dec(trading.min_order_value)
        self.circuit_breaker_loss = _dec(risk.circuit_breaker_loss)
        self.max_portfolio_risk = _dec(risk.max_portfolio_risk)
        self.max_daily_drawdown = _dec(risk.max_daily_drawdown)
        self.emergency_exit_loss = _dec(risk.emergency_exit_loss)
        self.max_risk_per_trade = _dec(risk.max_risk_per_trade)
        self.max_concentration = _dec(risk.max_concentration)
        self.max_volatility_multiplier = float(risk.max_volatility_multiplier)
        self.min_volatility_multiplier = float(risk.min_volatility_multiplier)
        self.kelly_fraction = float(getattr(risk, "kelly_fraction", 0.25))
        if self.position_sizing not in ("fixed", "volatility", "risk"):
            raise ValueError(f"trading.position_sizing must be 'fixed', 'volatility' or 'risk', got {self.position_sizing!r}")
        if self.min_volatility_multiplier > self.max_volatility_multiplier:
            raise ValueError(
                "risk.min_volatility_multiplier must not exceed risk.max_volatility_multiplier "
                f"({self.min_volatility_multiplier} > {self.max_volatility_multiplier})"
            )

    # -- entries ---------------------------------------------------------------------------

    def evaluate(
        self, intent: TradeIntentLike, portfolio: PortfolioState, *, volatility: float | None = None
    ) -> RiskDecision:
        """Approve, reduce or veto one entry intent against ``portfolio``."""
        symbol = str(intent.symbol).upper()
        ev = _Evaluation(intent_id=str(intent.intent_id), symbol=symbol)
        equity = portfolio.equity

        # 1. trading state
        if not portfolio.trading_state.allows_entry:
            return self._veto(ev, "trading_state", f"trading state is {portfolio.trading_state.value}: no new entries")
        ev.passed("trading_state", "active")

        # 2. daily drawdown
        daily = self.daily_loss(portfolio)
        if daily >= self.max_daily_drawdown:
            return self._veto(
                ev,
                "daily_drawdown",
                f"daily drawdown {_pct(daily)} reached the limit {_pct(self.max_daily_drawdown)}: "
                "no new entries for the rest of the session",
                daily_drawdown=str(daily),
                equity=str(equity),
                session_start_equity=str(portfolio.session_start_equity),
                day_high_equity=str(portfolio.day_high_equity),
            )
        ev.passed("daily_drawdown", f"daily drawdown {_pct(daily)} below {_pct(self.max_daily_drawdown)}")

        # 3. the intent itself
        side = str(intent.side).lower()
        entry = _price(intent.entry_price)
        if side not in ("buy", "sell"):
            return self._veto(ev, "intent", f"side must be 'buy' or 'sell', got {intent.side!r}")
        if entry is None or entry <= ZERO:
            return self._veto(ev, "intent", f"entry price must be positive, got {intent.entry_price!r}")
        if equity <= ZERO:
            return self._veto(ev, "intent", f"equity must be positive, got {equity}")
        stop = _price(intent.stop_price)
        if stop is None:
            offset = entry * self.default_stop_loss
            stop = entry - offset if side == "buy" else entry + offset
            stop_detail = f"no stop given: default {_pct(self.default_stop_loss)} stop at {stop}"
        else:
            stop_detail = f"stop {stop}"
        risk_per_share = entry - stop if side == "buy" else stop - entry
        if risk_per_share <= ZERO:
            return self._veto(
                ev, "intent", f"stop {stop} is not on the losing side of entry {entry} for a {side}",
            )
        ev.passed("intent", f"{side} at {entry}, {stop_detail}, risk {risk_per_share}/share")

        # 4. concurrent positions
        pending_symbols = {p.symbol.upper() for p in portfolio.pending_entries}
        held = {s.upper() for s in portfolio.positions} | pending_symbols
        if len(held) >= self.max_positions:
            return self._veto(
                ev,
                "max_positions",
                f"{len(held)} positions held or pending, limit {self.max_positions}",
                positions=len(held),
            )
        ev.passed("max_positions", f"{len(held)} of {self.max_positions} positions")

        # 5. one position per symbol
        open_symbols = {s.upper() for s in portfolio.open_order_symbols}
        if symbol in held or symbol in open_symbols:
            what = "held" if symbol in {s.upper() for s in portfolio.positions} else "has a working order"
            return self._veto(ev, "already_holding", f"{symbol} is already {what}")
        ev.passed("already_holding", f"{symbol} not held")

        # 6. sizing
        fraction, sizing_detail = self._size_fraction(intent, volatility, risk_per_share / entry,
                                                      _price(intent.target_price), entry, side)
        multiplier, multiplier_detail = _size_multiplier(intent)
        if multiplier <= ZERO:
            return self._veto(ev, "sizing", multiplier_detail)
        budget = equity * fraction * multiplier
        ev.qty = ev.requested = _floor(budget / entry)
        ev.passed("sizing", f"{sizing_detail}{multiplier_detail}: ${_money(budget)} -> {ev.qty} shares at {entry}", ev.qty)
        if ev.qty <= ZERO:
            return self._veto(ev, "sizing", f"${_money(budget)} buys no whole share at {entry}")

        # 7. position size limit
        cap_value = equity * self.max_position_size
        ev.cap("position_size", _floor(cap_value / entry), f"max position {_pct(self.max_position_size)} = ${_money(cap_value)}")

        # 8. per-trade risk
        max_trade_risk = equity * self.max_risk_per_trade
        ev.cap(
            "trade_risk",
            _floor(max_trade_risk / risk_per_share),
            f"risk {risk_per_share}/share, max {_pct(self.max_risk_per_trade)} of equity = ${_money(max_trade_risk)}",
        )

        # 9. portfolio risk
        open_risk = self.open_risk(portfolio)
        risk_cap = equity * self.max_portfolio_risk
        room = risk_cap - open_risk
        if room < risk_per_share:
            return self._veto(
                ev,
                "portfolio_risk",
                f"open risk ${_money(open_risk)} leaves ${_money(max(room, ZERO))} of the "
                f"{_pct(self.max_portfolio_risk)} cap ${_money(risk_cap)}: not one share's risk ({risk_per_share})",
                open_risk=str(open_risk),
                risk_cap=str(risk_cap),
            )
        ev.cap(
            "portfolio_risk",
            _floor(room / risk_per_share),
            f"open risk ${_money(open_risk)} of the {_pct(self.max_portfolio_risk)} cap ${_money(risk_cap)}",
        )

        # 10. concentration
        existing = self._symbol_exposure(symbol, portfolio)
        concentration_cap = equity * self.max_concentration
        ev.cap(
            "concentration",
            _floor((concentration_cap - existing) / entry),
            f"max {_pct(self.max_concentration)} in one symbol = ${_money(concentration_cap)}",
        )

        # 11. buying power
        bp = portfolio.buying_power
        if bp < entry:
            return self._veto(ev, "buying_power", f"buying power ${_money(bp)} is below one share at {entry}", buying_power=str(bp))
        ev.cap("buying_power", _floor(bp / entry), f"buying power ${_money(bp)}")

        # 12. minimum order value
        value = ev.qty * entry
        if ev.qty <= ZERO or value < self.min_order_value:
            return self._veto(
                ev,
                "min_order_value",
                f"order value ${_money(value)} ({ev.qty} x {entry}) is below the minimum ${_money(self.min_order_value)}",
                order_value=str(value),
            )
        ev.passed("min_order_value", f"order value ${_money(value)}", ev.qty)

        trade_risk = ev.qty * risk_per_share
        numbers = f"{ev.qty} shares, ${_money(value)}, risk ${_money(trade_risk)} ({_pct(trade_risk / equity)} of equity)"
        if ev.reductions:
            reason = "reduced: " + "; ".join(ev.reductions) + f" -> {numbers}"
            log.info(
                "risk_reduced",
                intent_id=ev.intent_id,
                symbol=symbol,
                requested_qty=str(ev.requested),
                qty=str(ev.qty),
                reason=reason,
                checks=[c.name for c in ev.checks if not c.passed],
            )
            verdict: Verdict = "reduce"
        else:
            reason = f"approved: {numbers}"
            log.debug("risk_approved", intent_id=ev.intent_id, symbol=symbol, qty=str(ev.qty), reason=reason)
            verdict = "approve"
        return RiskDecision(verdict, ev.qty, reason, tuple(ev.checks), ev.requested, entry, stop)

    # -- portfolio-level questions ---------------------------------------------------------

    def daily_loss(self, portfolio: PortfolioState) -> Decimal:
        """The day's drawdown: the larger of the loss from the session start and from the day high."""
        from_start = loss_fraction(portfolio.session_start_equity, portfolio.equity)
        high = max(portfolio.day_high_equity, portfolio.session_start_equity)
        return max(from_start, loss_fraction(high, portfolio.equity))

    def daily_drawdown_breached(self, portfolio: PortfolioState) -> bool:
        """True once the day's drawdown reached ``risk.max_daily_drawdown``."""
        return self.daily_loss(portfolio) >= self.max_daily_drawdown

    def circuit_breaker_breached(self, portfolio: PortfolioState) -> bool:
        """True when equity is ``risk.circuit_breaker_loss`` or more below the session's start."""
        return loss_fraction(portfolio.session_start_equity, portfolio.equity) >= self.circuit_breaker_loss

    def open_risk(self, portfolio: PortfolioState) -> Decimal:
        """Dollars lost if every position and pending entry ran to its stop.

        A position without a stop is counted at the default ``trading.stop_loss`` distance
        from its market price (the protection step gives it that stop).
        """
        total = ZERO
        for position in portfolio.positions.values():
            price = position.market_price
            stop = position.stop_price
            if stop is None:
                offset = price * self.default_stop_loss
                stop = price - offset if position.qty > ZERO else price + offset
            per_share = price - stop if position.qty > ZERO else stop - price
            total += max(per_share, ZERO) * abs(position.qty)
        for pending in portfolio.pending_entries:
            stop = pending.stop_price if pending.stop_price is not None else pending.price * (ONE - self.default_stop_loss)
            total += max(pending.price - stop, ZERO) * abs(pending.qty)
        return total

    def check_positions(self, portfolio: PortfolioState) -> list[ExitOrder]:
        """Positions whose unrealized loss reached ``risk.emergency_exit_loss`` of their cost."""
        exits: list[ExitOrder] = []
        for symbol in sorted(portfolio.positions):
            position = portfolio.positions[symbol]
            if position.qty == ZERO or position.cost_basis <= ZERO:
                continue
            loss = -position.unrealized_pl / position.cost_basis
            if loss < self.emergency_exit_loss:
                continue
            reason = (
                f"emergency exit: {symbol} is down {_pct(loss)} (${_money(-position.unrealized_pl)}) "
                f"from its cost ${_money(position.cost_basis)}, limit {_pct(self.emergency_exit_loss)}"
            )
            side: Literal["buy", "sell"] = "sell" if position.qty > ZERO else "buy"
            log.warning(
                "emergency_exit_threshold",
                symbol=symbol,
                qty=str(abs(position.qty)),
                loss_fraction=str(loss),
                unrealized_pl=str(position.unrealized_pl),
                reason=reason,
            )
            exits.append(ExitOrder(symbol, abs(position.qty), side, reason, loss, position.unrealized_pl))
        return exits

    # -- internals -------------------------------------------------------------------------

    def _size_fraction(self, intent: TradeIntentLike, volatility: float | None, stop_fraction: Decimal,
                       target: Decimal | None, entry: Decimal, side: str) -> tuple[Decimal, str]:
        """The fraction of equity to put in this entry before the limits."""
        if self.position_sizing == "fixed":
            return self.max_position_size, f"fixed {_pct(self.max_position_size)} of equity"
        if self.position_sizing == "risk":
            reward = (target - entry if side == "buy" else entry - target) / entry if target else ZERO
            breakdown = getattr(intent, "confidence_breakdown", None) or {}
            calibrated = isinstance(breakdown, Mapping) and breakdown.get("method") == "model"
            risk, why = risk_fraction(float(intent.confidence), float(stop_fraction), float(reward),
                                      max_risk=float(self.max_risk_per_trade), kelly=self.kelly_fraction,
                                      calibrated=calibrated)
            fraction = _dec(risk) / stop_fraction
            capped = ""
            if fraction > self.max_position_size:
                fraction, capped = self.max_position_size, f", capped at max_position_size {_pct(self.max_position_size)}"
            return fraction, (f"risk sizing: {why} at a {_pct(stop_fraction)} stop = "
                              f"{_pct(_dec(risk) / stop_fraction)} of equity{capped}")
        confidence = float(intent.confidence)
        if not math.isfinite(confidence):
            confidence = 0.0
        confidence = min(max(confidence, 0.0), 1.0)
        if volatility is None or not math.isfinite(volatility) or volatility < 0:
            vol_mult = 1.0
            vol_detail = "no volatility: x1"
        elif volatility == 0:
            vol_mult = self.max_volatility_multiplier
            vol_detail = f"volatility 0: x{vol_mult:g}"
        else:
            raw = REFERENCE_DAILY_VOLATILITY / volatility
            vol_mult = min(max(raw, self.min_volatility_multiplier), self.max_volatility_multiplier)
            vol_detail = f"volatility {volatility:.4f}: x{vol_mult:.4g}"
        combined = _dec(confidence * vol_mult)
        fraction = self.max_position_size * combined
        capped = ""
        if fraction > self.max_position_size:
            fraction = self.max_position_size
            capped = f", capped at {_pct(self.max_position_size)}"
        return fraction, (
            f"volatility sizing {_pct(self.max_position_size)} x confidence {confidence:.3f} x "
            f"{vol_detail} = {_pct(fraction)}{capped}"
        )

    @staticmethod
    def _symbol_exposure(symbol: str, portfolio: PortfolioState) -> Decimal:
        exposure = ZERO
        for key, position in portfolio.positions.items():
            if key.upper() == symbol:
                exposure += abs(position.market_value)
        for pending in portfolio.pending_entries:
            if pending.symbol.upper() == symbol:
                exposure += pending.notional
        return exposure

    def _veto(self, ev: _Evaluation, check: str, reason: str, **numbers: Any) -> RiskDecision:
        ev.checks.append(CheckResult(check, False, reason, ZERO))
        log.info(
            "risk_veto",
            intent_id=ev.intent_id,
            symbol=ev.symbol,
            check=check,
            reason=reason,
            requested_qty=str(ev.requested),
            qty_before_veto=str(ev.qty),
            **numbers,
        )
        return RiskDecision("veto", ZERO, f"{check}: {reason}", tuple(ev.checks), ev.requested)


def risk_fraction(confidence: float, stop: float, target: float, *, max_risk: float, kelly: float,
                  calibrated: bool) -> tuple[float, str]:
    """The share of equity to lose at the stop, following the confidence (pure).

    A calibrated probability ``p`` of reaching the target ``t`` before the stop ``s`` (both
    fractions of the entry) sizes by fractional Kelly: the full Kelly stake of a bet paying
    ``t/s`` per unit risked is ``p - (1 - p) s / t`` of equity at risk; ``kelly`` of it, at
    most ``max_risk`` and at least nothing. A transparent score (no probability) scales
    ``max_risk`` by the score. Returns the fraction and a one-line reason."""
    p = min(max(confidence if math.isfinite(confidence) else 0.0, 0.0), 1.0)
    if calibrated and stop > 0 and target > 0:
        full = p - (1.0 - p) * stop / target
        risk = min(max(kelly * full, 0.0), max_risk)
        return risk, (f"p {p:.3f} at {target:.2%}/{stop:.2%}: Kelly {full:.3f} x {kelly:g} = {kelly * full:.4f}, "
                      f"capped at {max_risk:.2%} -> risk {risk:.2%} of equity")
    risk = p * max_risk
    return risk, f"score {p:.3f} x max risk {max_risk:.2%} -> risk {risk:.2%} of equity"


def _size_multiplier(intent: TradeIntentLike) -> tuple[Decimal, str]:
    """The defensive ``size_multiplier`` from the intent's metadata (only ever shrinks)."""
    metadata = getattr(intent, "metadata", None) or {}
    raw = metadata.get("size_multiplier") if isinstance(metadata, Mapping) else None
    if raw is None:
        return ONE, ""
    value = _price(raw)
    if value is None:
        return ZERO, f"size_multiplier must be a number, got {raw!r}"
    if value <= ZERO:
        return ZERO, f"size_multiplier {value} leaves nothing to buy"
    if value > ONE:
        return ONE, f", size_multiplier {value} ignored (only shrinks)"
    return value, f", x size_multiplier {value}"


def _dec(value: Any) -> Decimal:
    result = Decimal(str(value))
    if not result.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


def _price(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def _floor(value: Decimal) -> Decimal:
    """Whole shares, rounded down (never negative)."""
    whole = Decimal(int(value.to_integral_value(rounding=ROUND_FLOOR)))
    return whole if whole > ZERO else ZERO


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).quantize(Decimal('0.01'))}%"
