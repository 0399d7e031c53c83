"""Protections lock entries after bad runs, per symbol or globally, and the locks expire."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import structlog

from engine.protections import ClosedTrade, Lock, ProtectionConfig, ProtectionManager, compounded_drawdown

T0 = datetime(2025, 3, 3, 15, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def trade(symbol: str, minutes: float, profit: float, reason: str = "take_profit") -> ClosedTrade:
    return ClosedTrade(symbol=symbol, exit_time=at(minutes), profit_pct=profit, exit_reason=reason)


def only(*enabled: str, **params: dict[str, object]) -> ProtectionManager:
    names = ("stoploss_guard", "cooldown", "max_drawdown", "low_profit")
    config = {name: {"enabled": name in enabled, **params.get(name, {})} for name in names}
    return ProtectionManager(config)


def test_stoploss_guard_locks_everything_after_three_stop_outs() -> None:
    manager = only("stoploss_guard")
    assert manager.record_trade(trade("AAPL", 0, -0.03, "stop_loss"), at(0)) == []
    # A stop hit in profit (trailing) and a losing non-stop exit do not count.
    assert manager.record_trade(trade("MSFT", 10, 0.01, "trailing_stop_loss"), at(10)) == []
    assert manager.record_trade(trade("MSFT", 15, -0.01, "signal_exit"), at(15)) == []
    assert manager.record_trade(trade("NVDA", 20, -0.02, "stop_loss"), at(20)) == []
    with structlog.testing.capture_logs() as logs:
        started = manager.record_trade(trade("TSLA", 30, -0.04, "emergency_exit"), at(30))
    assert len(started) == 1 and started[0].is_global and started[0].protection == "stoploss_guard"
    assert started[0].until == at(30 + 360)
    event = [e for e in logs if e["event"] == "protection_lock"][0]
    assert event["scope"] == "global" and event["protection"] == "stoploss_guard"
    assert "3 stop-outs" in event["reason"]
    # Every symbol is locked, including ones never traded, until the lock ends.
    assert manager.is_locked("SPY", at(31)) == started[0]
    assert manager.global_lock(at(31)) == started[0]
    assert manager.is_locked("SPY", at(30 + 359)) is not None
    assert manager.is_locked("SPY", at(30 + 360)) is None
    assert manager.global_lock(at(30 + 360)) is None


def test_stoploss_guard_ignores_stop_outs_outside_the_lookback() -> None:
    manager = only("stoploss_guard", stoploss_guard={"lookback_minutes": 60})
    manager.record_trade(trade("AAPL", 0, -0.03, "stop_loss"), at(0))
    manager.record_trade(trade("MSFT", 50, -0.03, "stop_loss"), at(50))
    assert manager.record_trade(trade("NVDA", 61, -0.03, "stop_loss"), at(61)) == []
    assert manager.record_trade(trade("NVDA", 70, -0.03, "stop_loss"), at(70)) != []


def test_stoploss_guard_per_symbol() -> None:
    manager = only("stoploss_guard", stoploss_guard={"only_per_symbol": True, "trade_limit": 2})
    manager.record_trade(trade("AAPL", 0, -0.03, "stop_loss"), at(0))
    assert manager.record_trade(trade("MSFT", 5, -0.03, "stop_loss"), at(5)) == []
    started = manager.record_trade(trade("AAPL", 10, -0.03, "stop_loss"), at(10))
    assert [(lock.symbol, lock.protection) for lock in started] == [("AAPL", "stoploss_guard")]
    assert manager.is_locked("aapl", at(11)) is not None
    assert manager.is_locked("MSFT", at(11)) is None
    assert manager.global_lock(at(11)) is None


def test_cooldown_after_a_losing_exit_only() -> None:
    manager = only("cooldown", cooldown={"lock_minutes": 30})
    assert manager.record_trade(trade("AAPL", 0, 0.02), at(0)) == []
    started = manager.record_trade(trade("MSFT", 5, -0.01, "stop_loss"), at(5))
    assert [(lock.symbol, lock.protection) for lock in started] == [("MSFT", "cooldown")]
    assert manager.is_locked("MSFT", at(34)) is not None
    assert manager.is_locked("MSFT", at(35)) is None
    assert manager.is_locked("AAPL", at(6)) is None


def test_max_drawdown_locks_globally() -> None:
    manager = only("max_drawdown", max_drawdown={"max_allowed_drawdown": 0.10, "trade_limit": 3})
    assert manager.record_trade(trade("AAPL", 0, 0.05), at(0)) == []
    assert manager.record_trade(trade("MSFT", 10, -0.06), at(10)) == []  # too few trades
    # 1.05 -> 0.987 -> 0.93765: 10.7% below the 1.05 peak.
    started = manager.record_trade(trade("NVDA", 20, -0.05), at(20))
    assert len(started) == 1 and started[0].is_global and started[0].protection == "max_drawdown"
    assert manager.is_locked("QQQ", at(21)) is not None
    assert manager.is_locked("QQQ", at(20 + 720)) is None


def test_compounded_drawdown() -> None:
    assert compounded_drawdown([]) == 0.0
    assert compounded_drawdown([0.1, 0.1]) == 0.0
    assert compounded_drawdown([0.05, -0.06, -0.05]) == pytest.approx(1 - 0.94 * 0.95)


def test_low_profit_symbol_is_locked() -> None:
    manager = only("low_profit", low_profit={"required_profit": 0.01, "trade_limit": 2})
    assert manager.record_trade(trade("TSLA", 0, 0.004), at(0)) == []
    started = manager.record_trade(trade("TSLA", 60, 0.003), at(60))  # +0.7% < +1%
    assert [(lock.symbol, lock.protection) for lock in started] == [("TSLA", "low_profit")]
    assert manager.is_locked("TSLA", at(61)) is not None
    assert manager.is_locked("AAPL", at(61)) is None
    assert manager.is_locked("TSLA", at(60 + 1440)) is None


def test_low_profit_needs_enough_trades_and_a_shortfall() -> None:
    manager = only("low_profit")
    assert manager.record_trade(trade("TSLA", 0, -0.02), at(0)) == []
    assert manager.record_trade(trade("TSLA", 10, 0.03), at(10)) == []  # net +1%: fine


def test_a_new_loss_extends_the_cooldown() -> None:
    manager = only("cooldown")
    manager.record_trade(trade("AAPL", 0, -0.01), at(0))
    assert len(manager.record_trade(trade("AAPL", 10, -0.01), at(10))) == 1  # extends to 70
    assert manager.is_locked("AAPL", at(65)).until == at(70)  # type: ignore[union-attr]


def test_defaults_and_locks_survive_a_restart() -> None:
    manager = ProtectionManager()
    for i, symbol in enumerate(("AAPL", "MSFT", "NVDA")):
        manager.record_trade(trade(symbol, i, -0.02, "stop_loss"), at(i))
    snapshot = json.loads(json.dumps(manager.locks_snapshot()))
    assert {(s["protection"], s["symbol"]) for s in snapshot} >= {("stoploss_guard", None), ("cooldown", "AAPL")}
    restored = ProtectionManager()
    restored.load_locks(snapshot)
    assert restored.global_lock(at(10)) == manager.global_lock(at(10))
    assert restored.locks_snapshot(at(10)) == manager.locks_snapshot(at(10))
    assert restored.locks_snapshot(at(10_000)) == []


def test_loaded_history_counts_but_starts_no_lock() -> None:
    manager = only("stoploss_guard")
    history = [trade("AAPL", 0, -0.03, "stop_loss"), trade("MSFT", 5, -0.03, "stop_loss")]
    manager.load_trades(history, at(6))
    assert manager.global_lock(at(6)) is None
    assert manager.record_trade(trade("NVDA", 7, -0.03, "stop_loss"), at(7)) != []


def test_bad_config_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="protections.cooldwn"):
        ProtectionManager({"cooldwn": {}})
    with pytest.raises(ValueError, match="protections.cooldown.minutes"):
        ProtectionManager({"cooldown": {"minutes": 5}})
    with pytest.raises(ValueError, match="lock_minutes"):
        ProtectionConfig.from_mapping({"cooldown": {"lock_minutes": 0}})
    with pytest.raises(ValueError, match="max_allowed_drawdown"):
        ProtectionConfig.from_mapping({"max_drawdown": {"max_allowed_drawdown": 5}})
    with pytest.raises(ValueError, match="timezone-aware"):
        ClosedTrade("AAPL", datetime(2025, 1, 2), -0.01, "stop_loss")
    with pytest.raises(ValueError, match="invalid protection lock"):
        Lock.from_dict({"symbol": "AAPL"})
