"""Risk manager: every veto and reduction fires with its reason, and the sizing math holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
import structlog

import config
from risk_manager import PendingEntry, PortfolioState, PositionView, RiskManager
from engine.trading_state import TradingState

D = Decimal
NOW = datetime(2025, 3, 3, 15, 0, tzinfo=timezone.utc)


@dataclass
class Intent:
    symbol: str = "AAPL"
    side: str = "buy"
    confidence: float = 0.8
    strategy: str = "enhanced_momentum"
    entry_price: Any = 100.0
    stop_price: Any = 97.0
    target_price: Any = 106.0
    intent_id: str = "enhanced_momentum-AAPL-2025-03-03-1"
    metadata: dict[str, Any] = field(default_factory=dict)


def settings(**sections: dict[str, Any]) -> config.Settings:
    return config.load_settings(environ={}, env_file=None, overrides=sections or None)


def position(symbol: str, qty: int, price: float, stop: float | None, entry: float | None = None) -> PositionView:
    entry_price = D(str(entry if entry is not None else price))
    market = D(str(price))
    q = D(qty)
    return PositionView(
        symbol=symbol,
        qty=q,
        avg_entry_price=entry_price,
        market_price=market,
        market_value=q * market,
        unrealized_pl=q * (market - entry_price),
        stop_price=None if stop is None else D(str(stop)),
    )


def portfolio(
    equity: float = 100_000,
    *,
    buying_power: float | None = None,
    start: float | None = None,
    high: float | None = None,
    positions: list[PositionView] | None = None,
    state: TradingState = TradingState.ACTIVE,
    open_order_symbols: frozenset[str] = frozenset(),
    pending: tuple[PendingEntry, ...] = (),
) -> PortfolioState:
    eq = D(str(equity))
    return PortfolioState(
        equity=eq,
        cash=eq,
        buying_power=D(str(buying_power)) if buying_power is not None else eq * 2,
        last_equity=eq,
        session_start_equity=D(str(start)) if start is not None else eq,
        day_high_equity=D(str(high)) if high is not None else eq,
        positions={p.symbol: p for p in positions or []},
        trading_state=state,
        now=NOW,
        open_order_symbols=open_order_symbols,
        pending_entries=pending,
    )


def vetoes(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "risk_veto"]


# -- approvals and fixed sizing ------------------------------------------------------------


def test_fixed_sizing_buys_max_position_size_of_equity() -> None:
    # 10% of $100,000 = $10,000 at $100 = 100 shares; risk 100 x $3 = $300 < $2,000.
    decision = RiskManager(settings()).evaluate(Intent(), portfolio())
    assert decision.verdict == "approve"
    assert decision.qty == D(100)
    assert decision.approved
    assert [c.name for c in decision.checks] == [
        "trading_state", "daily_drawdown", "intent", "max_positions", "already_holding", "sizing",
        "position_size", "trade_risk", "portfolio_risk", "concentration", "buying_power", "min_order_value",
    ]
    assert all(c.passed for c in decision.checks)


def test_shares_are_whole_and_rounded_down() -> None:
    # $10,000 / $333 = 30.03 -> 30 shares.
    decision = RiskManager(settings()).evaluate(Intent(entry_price=333, stop_price=330), portfolio())
    assert decision.qty == D(30)


def test_missing_stop_uses_the_default_stop_distance() -> None:
    # trading.stop_loss 3%: stop 97 for entry 100; same answer as an explicit 97 stop.
    decision = RiskManager(settings()).evaluate(Intent(stop_price=None), portfolio())
    assert decision.verdict == "approve"
    assert decision.stop_price == D("97.00")


# -- reductions ----------------------------------------------------------------------------


def test_per_trade_risk_caps_qty_at_two_percent_of_equity() -> None:
    # Stop $30 below entry: $2,000 / $30 = 66.67 -> 66 shares instead of 100 (fixed sizing;
    # risk sizing, the default, sizes to the risk budget itself: tests/test_risk_sizing.py).
    with structlog.testing.capture_logs() as logs:
        decision = RiskManager(settings(trading={"position_sizing": "fixed"})).evaluate(
            Intent(stop_price=70), portfolio())
    assert decision.verdict == "reduce"
    assert decision.requested_qty == D(100)
    assert decision.qty == D(66)
    assert "trade_risk" in decision.reason
    assert decision.qty * D(30) <= D("2000")
    reduced = [e for e in logs if e["event"] == "risk_reduced"]
    assert reduced and reduced[0]["qty"] == "66" and reduced[0]["requested_qty"] == "100"
    assert reduced[0]["checks"] == ["trade_risk"]


def test_portfolio_risk_cap_reduces_qty() -> None:
    # Open risk: 500 x (100-89) + 500 x (100-89) = $11,000 of the $12,000 cap.
    # New trade risks $20/share: $1,000 room -> 50 shares (per-trade alone would allow 100).
    held = [position("MSFT", 500, 100, 89), position("NVDA", 500, 100, 89)]
    decision = RiskManager(settings()).evaluate(Intent(stop_price=80), portfolio(positions=held))
    assert decision.verdict == "reduce"
    assert decision.qty == D(50)
    assert "portfolio_risk" in decision.reason


def test_position_without_stop_counts_at_default_stop_distance() -> None:
    # 1,000 shares at $100 with no stop count as 3% = $3,000 of open risk.
    manager = RiskManager(settings())
    p = portfolio(positions=[position("MSFT", 1000, 100, None)])
    assert manager.open_risk(p) == D("3000.00")


def test_concentration_caps_a_position() -> None:
    s = settings(trading={"max_position_size": 0.30}, risk={"max_concentration": 0.20, "max_risk_per_trade": 0.10})
    decision = RiskManager(s).evaluate(Intent(stop_price=99), portfolio())
    assert decision.verdict == "reduce"
    assert decision.requested_qty == D(300)
    assert decision.qty == D(200)
    assert "concentration" in decision.reason


def test_buying_power_caps_qty() -> None:
    decision = RiskManager(settings()).evaluate(Intent(), portfolio(buying_power=5_050))
    assert decision.verdict == "reduce"
    assert decision.qty == D(50)
    assert "buying_power" in decision.reason


# -- vetoes --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [TradingState.REDUCING, TradingState.HALTED, TradingState.LIQUIDATING])
def test_entries_vetoed_unless_active(state: TradingState) -> None:
    with structlog.testing.capture_logs() as logs:
        decision = RiskManager(settings()).evaluate(Intent(), portfolio(state=state))
    assert decision.verdict == "veto" and decision.qty == 0
    assert not decision.approved
    assert decision.reason.startswith("trading_state:")
    assert state.value in decision.reason
    assert vetoes(logs)[0]["check"] == "trading_state"


VETO_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    # name, settings overrides, intent fields, portfolio kwargs
    ("daily_drawdown", {}, {}, {"equity": 93_900, "start": 100_000}),
    ("daily_drawdown", {}, {}, {"equity": 103_000, "start": 100_000, "high": 110_000}),
    ("intent", {}, {"stop_price": 101}, {}),
    ("intent", {}, {"entry_price": 0}, {}),
    ("intent", {}, {"side": "hold"}, {}),
    (
        "max_positions",
        {},
        {},
        {"positions": [position(s, 10, 100, 97) for s in ("A", "B", "C", "D", "E")]},
    ),
    ("max_positions", {}, {}, {
        "positions": [position(s, 10, 100, 97) for s in ("A", "B", "C", "D")],
        "pending": (PendingEntry("E", D(10), D(100), D(97)),),
    }),
    ("already_holding", {}, {}, {"positions": [position("AAPL", 10, 100, 97)]}),
    ("already_holding", {}, {}, {"open_order_symbols": frozenset({"AAPL"})}),
    ("sizing", {}, {"entry_price": 600, "stop_price": 590}, {"equity": 5_000}),
    ("sizing", {}, {"metadata": {"size_multiplier": 0}}, {}),
    ("portfolio_risk", {}, {}, {"positions": [position("MSFT", 1000, 100, 88)]}),
    ("buying_power", {}, {}, {"buying_power": 50}),
    ("min_order_value", {}, {"entry_price": 10, "stop_price": 9.7}, {"equity": 900}),
]


@pytest.mark.parametrize(("check", "overrides", "intent_fields", "portfolio_kwargs"), VETO_CASES)
def test_each_veto_fires_and_is_logged(
    check: str, overrides: dict[str, Any], intent_fields: dict[str, Any], portfolio_kwargs: dict[str, Any]
) -> None:
    with structlog.testing.capture_logs() as logs:
        decision = RiskManager(settings(**overrides)).evaluate(Intent(**intent_fields), portfolio(**portfolio_kwargs))
    assert decision.verdict == "veto"
    assert decision.qty == D(0)
    assert decision.reason.startswith(check + ":")
    assert decision.checks[-1].name == check and not decision.checks[-1].passed
    logged = vetoes(logs)
    assert len(logged) == 1
    assert logged[0]["check"] == check
    assert logged[0]["symbol"] == "AAPL"
    assert logged[0]["intent_id"] == Intent().intent_id
    assert logged[0]["reason"]


def test_daily_drawdown_veto_reports_the_numbers() -> None:
    with structlog.testing.capture_logs() as logs:
        RiskManager(settings()).evaluate(Intent(), portfolio(equity=93_900, start=100_000))
    event = vetoes(logs)[0]
    assert event["equity"] == "93900"
    assert event["session_start_equity"] == "100000"
    assert D(event["daily_drawdown"]) == D("0.061")


# -- volatility sizing ---------------------------------------------------------------------


def vol_settings() -> config.Settings:
    return settings(trading={"position_sizing": "volatility"})


def test_volatility_sizing_hand_checked() -> None:
    manager = RiskManager(vol_settings())
    # confidence 0.8, volatility 4%: multiplier 0.02/0.04 = 0.5 -> 10% x 0.8 x 0.5 = 4% = 40 shares.
    assert manager.evaluate(Intent(confidence=0.8), portfolio(), volatility=0.04).qty == D(40)
    # volatility 2% is neutral: 10% x 0.8 = 8% -> 80 shares.
    assert manager.evaluate(Intent(confidence=0.8), portfolio(), volatility=0.02).qty == D(80)
    # no volatility known: neutral multiplier.
    assert manager.evaluate(Intent(confidence=0.8), portfolio(), volatility=None).qty == D(80)


def test_volatility_multiplier_is_clamped() -> None:
    manager = RiskManager(vol_settings())
    # 20% volatility: raw 0.1, clamped up to 0.5 -> 10% x 1.0 x 0.5 = 50 shares.
    assert manager.evaluate(Intent(confidence=1.0), portfolio(), volatility=0.20).qty == D(50)
    # 1.6% volatility: raw 1.25 -> 10% x 0.7 x 1.25 = 8.75% -> 87 shares.
    assert manager.evaluate(Intent(confidence=0.7), portfolio(), volatility=0.016).qty == D(87)
    # 0.5% volatility: raw 4.0, clamped to 1.5 -> 0.7 x 1.5 = 1.05 -> capped at 10% = 100 shares.
    decision = manager.evaluate(Intent(confidence=0.7), portfolio(), volatility=0.005)
    assert decision.qty == D(100)
    assert "capped" in decision.checks[5].detail


def test_volatility_sizing_never_exceeds_the_hard_cap() -> None:
    manager = RiskManager(vol_settings())
    cap = D(100_000) * D("0.10")
    for confidence in (0.0, 0.3, 0.65, 0.9, 1.0, 1.7):
        for volatility in (0.0, 0.001, 0.01, 0.02, 0.05, 0.5, float("nan"), -1.0):
            decision = manager.evaluate(Intent(confidence=confidence, stop_price=99.5), portfolio(), volatility=volatility)
            assert decision.qty * D(100) <= cap


def test_defensive_size_multiplier_shrinks_the_order() -> None:
    manager = RiskManager(settings())
    decision = manager.evaluate(Intent(metadata={"size_multiplier": 0.5}), portfolio())
    assert decision.verdict == "approve" and decision.qty == D(50)
    # A multiplier above 1 never grows an order.
    assert manager.evaluate(Intent(metadata={"size_multiplier": 3}), portfolio()).qty == D(100)


def test_short_intent_with_stop_above_entry() -> None:
    decision = RiskManager(settings()).evaluate(Intent(side="sell", stop_price=103), portfolio())
    assert decision.verdict == "approve" and decision.qty == D(100)


# -- position and portfolio checks ---------------------------------------------------------


def test_emergency_exit_threshold_per_position() -> None:
    held = [
        position("AAPL", 100, 92, 90, entry=100),   # -8.0%: exit
        position("MSFT", 100, 92.1, 90, entry=100),  # -7.9%: keep
        position("TSLA", -50, 110, 115, entry=100),  # short, -10%: buy to cover
    ]
    exits = RiskManager(settings()).check_positions(portfolio(positions=held))
    assert [(e.symbol, e.side, e.qty) for e in exits] == [("AAPL", "sell", D(100)), ("TSLA", "buy", D(50))]
    assert exits[0].loss_fraction == D("0.08")
    assert "8.00%" in exits[0].reason


def test_breaker_and_drawdown_questions() -> None:
    manager = RiskManager(settings())
    assert not manager.circuit_breaker_breached(portfolio(equity=95_001, start=100_000))
    assert manager.circuit_breaker_breached(portfolio(equity=95_000, start=100_000))
    assert not manager.daily_drawdown_breached(portfolio(equity=94_001, start=100_000))
    assert manager.daily_drawdown_breached(portfolio(equity=94_000, start=100_000))
    # from the day's high: up 10% then back to +3.4% is a 6% drawdown.
    assert manager.daily_drawdown_breached(portfolio(equity=103_400, start=100_000, high=110_000))


def test_naive_time_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PortfolioState(
            equity=D(1), cash=D(1), buying_power=D(1), last_equity=D(1), session_start_equity=D(1),
            day_high_equity=D(1), positions={}, trading_state=TradingState.ACTIVE, now=datetime(2025, 1, 2),
        )
