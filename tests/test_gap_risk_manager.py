"""Gap risk: levels at 1/3/5/8 %, alerts, dollar impact (short positions too), exposure."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import structlog

import config
from gap_risk_manager import GapLevel, GapRiskManager
from risk_manager import PositionView

D = Decimal
CLOSE_DAY = date(2025, 3, 3)


def manager(**gap: Any) -> GapRiskManager:
    s = config.load_settings(environ={}, env_file=None, overrides={"gap_risk": gap} if gap else None)
    return GapRiskManager(s)


def gap_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "gap_risk"]


@pytest.mark.parametrize(
    ("open_price", "level", "alert", "defensive"),
    [
        ("101", GapLevel.LOW, False, False),
        ("103", GapLevel.MODERATE, True, False),
        ("95", GapLevel.HIGH, True, True),
        ("92", GapLevel.EXTREME, True, True),
    ],
)
def test_levels_at_1_3_5_8_percent(open_price: str, level: GapLevel, alert: bool, defensive: bool) -> None:
    m = manager()
    m.record_close(CLOSE_DAY, {"AAPL": D("100")}, {"AAPL": D(50)})
    with structlog.testing.capture_logs() as logs:
        report = m.assess({"AAPL": D(open_price)}, phase="regular")
    assert report.level is level
    assert report.item("AAPL").level is level  # type: ignore[union-attr]
    assert bool(report.alerts) is alert
    assert len(gap_events(logs)) == (1 if alert else 0)
    assert report.defensive_required is defensive


def test_three_percent_gap_at_the_open_is_moderate_with_an_alert() -> None:
    m = manager()
    m.record_close(CLOSE_DAY, {"SPY": D("500"), "MSFT": D("400")}, {"SPY": D(20)})
    with structlog.testing.capture_logs() as logs:
        report = m.assess({"SPY": D("515"), "MSFT": D("401")}, {"SPY": D(20)}, "regular", equity=D(100_000))
    assert report.level is GapLevel.MODERATE
    spy = report.item("SPY")
    assert spy is not None and spy.gap_pct == D("0.03") and spy.dollar_impact == D(300)
    assert [a.symbol for a in report.alerts] == ["SPY"]
    assert "gapped up 3.00%" in report.alerts[0].message and "MODERATE" in report.alerts[0].message
    event = gap_events(logs)[0]
    assert event["symbol"] == "SPY" and event["level"] == "moderate" and event["phase"] == "regular"
    assert not report.defensive_required


def test_dollar_impact_sign_on_long_and_short_positions() -> None:
    m = manager()
    m.record_close(CLOSE_DAY, {"TSLA": D("200"), "NVDA": D("100")}, {"TSLA": D(-50), "NVDA": D(100)})
    report = m.assess({"TSLA": D("210"), "NVDA": D("95")}, phase="pre", equity=D(50_000))
    tsla, nvda = report.item("TSLA"), report.item("NVDA")
    assert tsla is not None and nvda is not None
    assert tsla.gap_pct == D("0.05") and tsla.dollar_impact == D(-500)  # short loses on a gap up
    assert nvda.gap_pct == D("-0.05") and nvda.dollar_impact == D(-500)  # long loses on a gap down
    assert report.gross_impact == D(1000) and report.net_impact == D(-1000)
    assert report.gross_pct_of_equity == D("0.02") and report.net_pct_of_equity == D("-0.02")
    assert report.level is GapLevel.HIGH and report.defensive_required
    assert report.phase == "pre" and "pre-market" in report.alerts[0].message
    # A short that gaps down gains.
    assert m.assess({"TSLA": D("190")}, phase="regular").item("TSLA").dollar_impact == D(500)  # type: ignore[union-attr]


def test_positions_given_as_position_views() -> None:
    m = manager()
    view = PositionView("AAPL", D(-10), D(100), D(100), D(-1000), D(0), None)
    m.record_close(CLOSE_DAY, {"AAPL": "100"}, {"AAPL": view})
    report = m.assess({"AAPL": "104"}, {"AAPL": view}, "regular")
    assert report.item("AAPL").dollar_impact == D(-40)  # type: ignore[union-attr]


def test_watched_symbols_are_assessed_and_missing_prices_reported() -> None:
    m = manager()
    m.record_close(CLOSE_DAY, {"SPY": "500", "QQQ": "400", "AAPL": "200"}, {"AAPL": D(10)})
    with structlog.testing.capture_logs() as logs:
        report = m.assess({"SPY": "470"}, phase="regular")
    assert report.level is GapLevel.HIGH  # SPY -6%, not held, still sets the level
    assert report.item("SPY").dollar_impact == 0  # type: ignore[union-attr]
    assert report.missing == ("AAPL",)
    assert any(e["event"] == "gap_price_missing" for e in logs)


def test_closing_snapshot_survives_a_restart() -> None:
    m = manager()
    snapshot = json.loads(json.dumps(m.record_close(CLOSE_DAY, {"AAPL": D("100.25")}, {"AAPL": D(7)})))
    restored = manager()
    restored.load_close(snapshot)
    assert restored.close_date == CLOSE_DAY
    report = restored.assess({"AAPL": D("105.27")}, phase="pre")
    assert report.item("AAPL").qty == D(7)  # type: ignore[union-attr]
    assert report.level is GapLevel.HIGH
    assert json.loads(json.dumps(report.to_dict()))["level"] == "high"


def test_journaled_snapshot_and_broker_positions_as_a_sequence() -> None:
    journaled = manager().record_close(CLOSE_DAY, {"AAPL": "100", "SPY": "500"}, [PositionView("AAPL", D(10), D(90), D(100), D(1000), D(100), None)])
    fresh = manager()  # a restarted daemon: nothing in memory
    positions = [PositionView("AAPL", D(10), D(90), D(95), D(950), D(50), None)]
    report = fresh.assess({"AAPL": "95", "SPY": "500"}, positions, "pre", closing=journaled)
    assert report.close_date == CLOSE_DAY
    assert report.item("AAPL").dollar_impact == D(-50)  # type: ignore[union-attr]
    assert report.level is GapLevel.HIGH


def test_no_snapshot_means_no_gap() -> None:
    report = manager().assess({"AAPL": D(100)}, {}, "pre")
    assert report.items == () and report.level is GapLevel.LOW and not report.defensive_required


def test_thresholds_from_settings() -> None:
    m = manager(moderate=0.01, high=0.02, extreme=0.03, alert_threshold=0.015)
    m.record_close(CLOSE_DAY, {"AAPL": D(100)}, {})
    assert m.assess({"AAPL": D("101.2")}).level is GapLevel.MODERATE
    assert m.assess({"AAPL": D("101.2")}).alerts == ()
    assert m.assess({"AAPL": D("97")}).level is GapLevel.EXTREME


def test_bad_input_is_one_clear_error() -> None:
    m = manager()
    with pytest.raises(ValueError, match="close of AAPL"):
        m.record_close(CLOSE_DAY, {"AAPL": "abc"}, {})
    with pytest.raises(ValueError, match="phase"):
        m.assess({}, {}, "post")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid gap closing snapshot"):
        m.load_close({"closes": {}})


def test_a_report_without_its_log_lines_is_the_same_report() -> None:
    from structlog.testing import capture_logs

    gaps = manager()
    gaps.record_close(date(2025, 3, 3), {"SPY": Decimal("100"), "AAPL": Decimal("200")},
                         {"SPY": Decimal("10"), "AAPL": Decimal("5")})
    prices = {"SPY": Decimal("95")}  # a 5% gap down; AAPL has no price
    with capture_logs() as quiet_logs:
        quiet = gaps.assess(prices, phase="pre", log_findings=False)
    with capture_logs() as logs:
        loud = gaps.assess(prices, phase="pre")
    assert quiet == loud and quiet.alerts and quiet.missing == ("AAPL",)
    assert quiet_logs == [] and {e["event"] for e in logs} == {"gap_risk", "gap_price_missing"}
