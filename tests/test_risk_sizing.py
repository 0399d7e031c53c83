"""Capital that works (issue 15, item 6): with ``trading.position_sizing = "risk"`` the loss at
the stop follows ``risk.max_risk_per_trade`` and the intent's confidence (fractional Kelly for
a calibrated probability), a pure decision of the risk manager, within its caps."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from risk_manager import RiskManager, risk_fraction
from tests.test_risk_manager import portfolio, settings

D = Decimal


@dataclass
class Intent:
    confidence: float
    entry_price: Any = 100.0
    stop_price: Any = 97.0
    target_price: Any = 106.0
    symbol: str = "AAPL"
    side: str = "buy"
    strategy: str = "breakout"
    intent_id: str = "breakout-AAPL-20250303-001"
    metadata: dict[str, Any] = field(default_factory=dict)
    confidence_breakdown: dict[str, Any] = field(default_factory=lambda: {"method": "model"})


def risk_settings(**risk: Any) -> Any:
    return settings(trading={"position_sizing": "risk", "max_position_size": 0.7},
                    risk={"max_concentration": 0.7, "max_portfolio_risk": 0.2, **risk})


def test_kelly_sizes_the_loss_at_the_stop_from_the_probability_and_caps_it() -> None:
    # p = 0.40 for +6% / -3%: full Kelly risks 0.40 - 0.60 / 2 = 10% of equity; a quarter of
    # it is 2.5%, above the 2% cap.
    risk, why = risk_fraction(0.40, 0.03, 0.06, max_risk=0.02, kelly=0.25, calibrated=True)
    assert risk == pytest.approx(0.02) and "capped" in why
    # Closer to break-even (1/3), less edge, less at risk: 0.25 x (0.36 - 0.64 / 2) = 1%.
    assert risk_fraction(0.36, 0.03, 0.06, max_risk=0.02, kelly=0.25, calibrated=True)[0] == pytest.approx(0.01)
    # No edge, no stake.
    assert risk_fraction(0.30, 0.03, 0.06, max_risk=0.02, kelly=0.25, calibrated=True)[0] == 0.0
    # A transparent score is no probability: it scales the risk budget.
    assert risk_fraction(0.8, 0.03, 0.06, max_risk=0.02, kelly=0.25, calibrated=False)[0] == pytest.approx(0.016)


def test_the_risk_manager_buys_what_the_risk_budget_allows_at_the_stop() -> None:
    manager = RiskManager(risk_settings())
    decision = manager.evaluate(Intent(confidence=0.40), portfolio(100_000))
    # 2% of 100k = $2,000 at a $3 stop -> 666 shares (66,600, within the 70% cap).
    assert decision.approved and decision.qty == D(666)
    assert any("risk sizing" in c.detail for c in decision.checks if c.name == "sizing")
    # The same idea with a stop twice as far risks the same dollars on half the shares.
    wide = manager.evaluate(Intent(confidence=0.40, stop_price=94.0, target_price=112.0), portfolio(100_000))
    assert wide.qty == D(333)


def test_less_confidence_buys_less() -> None:
    manager = RiskManager(risk_settings())
    sure = manager.evaluate(Intent(confidence=0.40), portfolio(100_000)).qty
    unsure = manager.evaluate(Intent(confidence=0.36), portfolio(100_000)).qty
    assert unsure == D(333) and sure == D(666)


def test_the_position_cap_still_binds() -> None:
    manager = RiskManager(settings())  # the default: risk sizing, 10% positions
    assert manager.position_sizing == "risk"
    decision = manager.evaluate(Intent(confidence=0.40), portfolio(100_000))
    assert decision.qty == D(100)  # $10,000 at $100: the cap, not the 666 the risk budget allows
    sizing = next(c for c in decision.checks if c.name == "sizing")
    assert "capped at max_position_size 10.00%" in sizing.detail
