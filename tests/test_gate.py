"""An honest gate (issue 15, item 4): each intent's minimum probability follows from its own
bracket's break-even, counting every trade that misses the target (stop, timeout, strategy
exit) as a stop, plus its costs (spread, commission) plus a stated margin; ``ai_rejected``
logs the gate actually applied."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

import ai_analyzer
import config
from ai.ai_model import load_model
from ai.gate import entry_gate, gate_for
from ai_analyzer import AIAnalyzer, Scores, TradeIntent
from market.market_data import BarSeries, MarketData, load_csv_bars
from strategies.base import Signal

from tests.conftest import ROOT, SHARED_DATA

NOW = datetime(2023, 6, 1, 15, 0, tzinfo=timezone.utc)


class FixedClock:
    def now(self) -> datetime:
        return NOW

    async def sleep(self, seconds: float) -> None:
        return None


def _until(series: BarSeries, moment: datetime) -> BarSeries:
    cut = int(np.searchsorted(series.ts, moment.timestamp(), side="right"))
    return series.slice(0, cut)


@pytest.fixture(scope="module")
def data() -> tuple[BarSeries, BarSeries]:
    msft = _until(load_csv_bars(SHARED_DATA / "daily" / "MSFT-1d-2013-01-02-2023-12-29.csv"), NOW)
    spy = _until(load_csv_bars(SHARED_DATA / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv"), NOW)
    return msft, spy


def settings(**ai: Any) -> Any:
    ai.setdefault("model_path", str(ROOT / "models" / "confidence_model.json"))
    ai.setdefault("use_news_sentiment", False)
    # the gate applies to the model probability alone: no multi-timeframe shift on top
    return config.load_settings(env_file=None, environ={}, overrides={"ai": ai, "multi_timeframe": {"enabled": False}})


def md(data: tuple[BarSeries, BarSeries], spread: float = 0.0004) -> MarketData:
    msft, spy = data
    last = float(msft.close[-1])
    half = last * spread / 2
    return MarketData(symbol="MSFT", now=NOW, daily=msft, last_price=last, bid=last - half, ask=last + half,
                      benchmark=spy, news=[])


def signal(last: float, stop: float, target: float, strategy: str = "breakout", hold: int | None = None) -> Signal:
    return Signal(symbol="MSFT", action="buy", confidence=0.7, reasoning="test", strategy=strategy,
                  stop_price=last * (1 - stop), target_price=last * (1 + target), max_hold_days=hold)


# -- the arithmetic ---------------------------------------------------------------------------


def test_each_bracket_gets_its_own_break_even_plus_costs_plus_margin() -> None:
    narrow = entry_gate(0.015, 0.03, spread=0.001, commission=0.0005, margin=0.03)
    wide = entry_gate(0.045, 0.09, spread=0.001, commission=0.0005, margin=0.03)
    # Same 1:2 shape, so the same cost-free break-even of 1/3 ...
    assert narrow.breakeven == pytest.approx(1 / 3) and wide.breakeven == pytest.approx(1 / 3)
    # ... but the round trip (spread + commission both ways) weighs three times more on the
    # narrow bracket: (s + c) / (s + t) + margin.
    assert narrow.cost == pytest.approx(0.002)
    assert narrow.min_probability == pytest.approx((0.015 + 0.002) / 0.045 + 0.03)
    assert wide.min_probability == pytest.approx((0.045 + 0.002) / 0.135 + 0.03)
    assert narrow.min_probability > wide.min_probability > 1 / 3 + 0.03
    # At the gate's break-even, the expected return after costs is exactly zero.
    p, s, t, c = narrow.breakeven_with_costs, 0.015, 0.03, narrow.cost
    assert p * (t - c) - (1 - p) * (s + c) == pytest.approx(0.0, abs=1e-12)


def test_a_mean_reversion_bracket_needs_more_than_a_coin_flip() -> None:
    # Mean reversion: a 3% stop and the mean 2.5% above; every timeout (it holds at most 5
    # sessions) counts as a miss.
    gate = entry_gate(0.03, 0.025, spread=0.0005, commission=0.0, margin=0.03)
    assert gate.breakeven > 0.5 and gate.min_probability == pytest.approx(0.0305 / 0.055 + 0.03)


def test_no_quote_uses_the_assumed_spread_and_a_floor_still_holds() -> None:
    gate = entry_gate(0.03, 0.06, spread=None, commission=0.0, margin=0.0, floor=0.5, assumed_spread=0.002)
    assert gate.spread_source == "assumed" and gate.spread == 0.002
    assert gate.min_probability == 0.5  # the floor is above (0.03 + 0.002) / 0.09
    hopeless = entry_gate(0.01, 0.001, spread=0.01, commission=0.0, margin=0.03)
    assert hopeless.min_probability == 1.0  # costs eat the target: never passes


def test_settings_feed_the_gate() -> None:
    s = settings(gate_margin=0.05, gate_commission=0.001, gate_assumed_spread=0.002)
    gate = gate_for(s.ai, 0.03, 0.06, None)
    assert gate.min_probability == pytest.approx((0.03 + 0.002 + 0.002) / 0.09 + 0.05)
    assert config.load_settings(env_file=None, environ={}, profile="conservative").ai.gate_margin == 0.06


# -- in the analyzer --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Any:
    return load_model(ROOT / "models" / "confidence_model.json")


async def test_the_analyzer_applies_each_intents_own_gate_and_logs_it(data, model) -> None:
    analyzer = AIAnalyzer(settings(), FixedClock(), model=model)
    market = md(data)
    last = market.last_price
    cases = {
        "narrow": signal(last, 0.015, 0.03),
        "wide": signal(last, 0.045, 0.09),
        "mean_reversion": signal(last, 0.03, 0.01, strategy="mean_reversion", hold=5),
    }
    applied: dict[str, float] = {}
    for name, sig in cases.items():
        with capture_logs() as logs:
            intent = await analyzer.analyze(sig, md(data))
        decision = next(e for e in logs if e["event"] == "ai_decision")
        gate = decision["breakdown"]["gate"]
        stop_f, target_f = decision["breakdown"]["stop_fraction"], decision["breakdown"]["target_fraction"]
        expected = (stop_f + market.spread_pct) / (stop_f + target_f) + 0.03
        assert decision["min_confidence"] == pytest.approx(expected, abs=1e-6)
        assert gate["spread_source"] == "quote" and gate["margin"] == 0.03
        assert decision["approved"] == (decision["confidence"] >= decision["min_confidence"])
        assert (intent is not None) == decision["approved"]
        if intent is None:
            rejected = next(e for e in logs if e["event"] == "ai_rejected")
            assert rejected["min_confidence"] == decision["min_confidence"]  # the gate applied, not 0.65
            assert rejected["gate"] == gate
        applied[name] = decision["min_confidence"]
    assert applied["narrow"] > applied["wide"]
    assert applied["mean_reversion"] > 0.5 + 0.03  # a 3% stop for a 1% target: rejected by any sane model
    assert applied["mean_reversion"] > applied["narrow"]


async def test_a_probability_just_above_its_gate_passes_and_just_below_fails(data, model, monkeypatch) -> None:
    market = md(data)
    last = market.last_price
    gate = gate_for(settings().ai, 0.015, 0.03, market.spread_pct).min_probability
    for probability, approved in ((gate + 0.002, True), (gate - 0.002, False)):
        def fixed(*_args: Any, p: float = probability, **_kw: Any) -> Scores:
            return Scores(technical=p, context=p, sentiment=p, method="model",
                          detail={"model_probability": p, "base_rate": 0.35})

        monkeypatch.setattr(ai_analyzer, "model_scores", fixed)
        analyzer = AIAnalyzer(settings(), FixedClock(), model=model)
        with capture_logs() as logs:
            intent = await analyzer.analyze(signal(last, 0.015, 0.03), md(data))
        assert isinstance(intent, TradeIntent) is approved, (probability, gate)
        if not approved:
            rejected = next(e for e in logs if e["event"] == "ai_rejected")
            assert rejected["min_confidence"] == pytest.approx(gate)
            assert f"below min_confidence {gate:.3f}" in rejected["reason"]


async def test_flat_mode_applies_the_configured_bar_alone(data, model) -> None:
    analyzer = AIAnalyzer(settings(gate_mode="flat", calibrated_min_confidence=0.0), FixedClock(), model=model)
    market = md(data)
    with capture_logs() as logs:
        intent = await analyzer.analyze(signal(market.last_price, 0.03, 0.01, strategy="mean_reversion"), market)
    assert intent is not None
    decision = next(e for e in logs if e["event"] == "ai_decision")
    assert decision["min_confidence"] == 0.0 and "gate" not in decision["breakdown"]
