"""The cumulative loss stop (issue 18, item 4): a maximum drawdown from the equity high-water
mark across sessions, latched like the breaker, carried through restarts, opened by ``rearm`` only.

Unit level on :class:`engine.trading_state.SafetyStateMachine`; the daemon over HTTP is in
``tests/test_e2e_drawdown_stop.py``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import structlog

import config
from engine.drawdown_stop import PeakDrawdownStop, latch_label
from engine.trading_state import SafetyStateMachine, TradingState
from risk_manager import PortfolioState, PositionView

D = Decimal
T0 = datetime(2025, 3, 3, 14, 30, tzinfo=timezone.utc)


def settings(**risk: Any) -> config.Settings:
    values = {"circuit_breaker_loss": 0.05, "max_daily_drawdown": 0.06, "max_drawdown_from_peak": 0.10}
    values.update(risk)
    return config.load_settings(environ={}, env_file=None, overrides={"risk": values})


def snap(machine: SafetyStateMachine, equity: float, at: datetime, *, flat: bool = False) -> PortfolioState:
    eq = D(str(equity))
    positions = {} if flat else {"AAPL": PositionView("AAPL", D(100), D(100), D(95), D(9500), D(-500), D(90))}
    return PortfolioState(
        equity=eq, cash=eq, buying_power=eq, last_equity=eq,
        session_start_equity=machine.session_start_equity or eq,
        day_high_equity=machine.day_high_equity or eq,
        positions=positions, trading_state=machine.state, now=at, open_order_symbols=frozenset(),
    )


def restart(machine: SafetyStateMachine, s: config.Settings) -> SafetyStateMachine:
    """What a restart does: the journal's JSON snapshot read back into a new machine."""
    return SafetyStateMachine.from_dict(s, json.loads(json.dumps(machine.to_dict())))


def losing_days(machine: SafetyStateMachine, start: float, daily_loss: float, days: int,
                s: config.Settings, *, restart_each_day: bool = False) -> tuple[SafetyStateMachine, list[Any], float]:
    """``days`` sessions, each opening at the previous close and closing ``daily_loss`` lower."""
    equity = start
    transitions: list[Any] = []
    for day in range(days):
        at = T0 + timedelta(days=day)
        if restart_each_day:
            machine = restart(machine, s)
        transitions += machine.new_session(date(2025, 3, 3) + timedelta(days=day), D(str(equity)), at)
        equity = round(equity * (1 - daily_loss), 2)
        transitions += machine.on_cycle(snap(machine, equity, at + timedelta(hours=6)))
        if machine.latched:
            break
    return machine, transitions, equity


def test_a_run_of_losing_days_under_the_daily_limits_latches_and_liquidates() -> None:
    s = settings()
    machine = SafetyStateMachine(s)
    machine.new_session(date(2025, 3, 3), D(100_000), T0)
    machine.on_cycle(snap(machine, 104_000, T0 + timedelta(hours=1)))  # the high-water mark
    with structlog.testing.capture_logs() as logs:
        # 3% a day: never the 5% breaker nor the 6% daily limit, but 10% below the peak on day 3
        machine, transitions, equity = losing_days(machine, 104_000, 0.03, 5, s)
    assert machine.latched and machine.latch_kind == "max_drawdown"
    assert machine.state is TradingState.LIQUIDATING
    assert [t.to_state for t in transitions] == [TradingState.LIQUIDATING]
    assert machine.high_water_mark == D(104_000)
    assert machine.peak_drawdown(D(str(equity))) >= D("0.10")
    fired = [e for e in logs if e["event"] == "max_drawdown_stop_triggered"]
    assert len(fired) == 1 and fired[0]["high_water_mark"] == "104000" and fired[0]["limit"] == "0.1"
    assert not [e for e in logs if e["event"] == "circuit_breaker_triggered"]
    assert "high-water mark 104000" in machine.state_reason
    assert not machine.allows_entry()
    # a new session does not open the latch; flattening rests in HALTED
    machine.new_session(date(2025, 3, 20), D(str(equity)), T0 + timedelta(days=17))
    assert machine.latched
    machine.on_cycle(snap(machine, equity, T0 + timedelta(days=17, hours=1), flat=True))
    assert machine.state is TradingState.HALTED


def test_the_high_water_mark_and_the_latch_survive_restarts() -> None:
    s = settings()
    machine = SafetyStateMachine(s)
    # restart before every session: the mark set on day 1 is still the reference on day 4
    machine, transitions, equity = losing_days(machine, 100_000, 0.03, 5, s, restart_each_day=True)
    assert machine.latched and machine.latch_kind == "max_drawdown"
    assert machine.high_water_mark == D(100_000)
    restored = restart(machine, s)
    assert restored.latched and restored.latch_kind == "max_drawdown"
    assert restored.state is TradingState.LIQUIDATING and restored.high_water_mark == D(100_000)
    assert restored.latch_reason == machine.latch_reason


def test_rearm_opens_it_and_rebases_the_mark_so_it_does_not_fire_again_at_once() -> None:
    s = settings()
    machine, _, equity = losing_days(SafetyStateMachine(s), 100_000, 0.03, 5, s)
    at = T0 + timedelta(days=6)
    machine.on_cycle(snap(machine, equity, at, flat=True))
    assert machine.state is TradingState.HALTED
    machine = restart(machine, s)
    transitions = machine.rearm("losses reviewed", at, equity=D(str(equity)))
    assert [t.to_state for t in transitions] == [TradingState.ACTIVE]
    assert not machine.latched and machine.high_water_mark == D(str(equity))
    assert machine.on_cycle(snap(machine, equity * 0.99, at + timedelta(minutes=1))) == []
    assert machine.allows_entry()
    # ...and a fresh 10% fall from the new mark fires it again
    machine.on_cycle(snap(machine, equity * 0.985, at + timedelta(days=1)))
    machine.on_cycle(snap(machine, equity * 0.97, at + timedelta(days=2)))
    machine.new_session(date(2025, 3, 12), D(str(equity * 0.97)), at + timedelta(days=2, hours=1))
    machine.on_cycle(snap(machine, equity * 0.935, at + timedelta(days=3)))
    machine.new_session(date(2025, 3, 13), D(str(equity * 0.935)), at + timedelta(days=3, hours=1))
    machine.on_cycle(snap(machine, equity * 0.895, at + timedelta(days=4)))
    assert machine.latched and machine.latch_kind == "max_drawdown"


def test_rearm_without_equity_rebases_on_the_next_cycle() -> None:
    s = settings()
    machine, _, equity = losing_days(SafetyStateMachine(s), 100_000, 0.03, 5, s)
    at = T0 + timedelta(days=6)
    machine.rearm("reviewed", at)
    machine = restart(machine, s)  # the pending rebase survives a restart too
    assert machine.on_cycle(snap(machine, equity, at + timedelta(minutes=1), flat=True)) == []
    assert machine.high_water_mark == D(str(equity)) and not machine.latched


def test_a_breaker_rearm_keeps_the_high_water_mark() -> None:
    s = settings()
    machine = SafetyStateMachine(s)
    machine.new_session(date(2025, 3, 3), D(100_000), T0)
    machine.on_cycle(snap(machine, 94_000, T0 + timedelta(minutes=5)))
    assert machine.latch_kind == "circuit_breaker"
    machine.rearm("breaker reviewed", T0 + timedelta(minutes=6), equity=D(94_000))
    assert machine.high_water_mark == D(100_000), "only the drawdown stop's own re-arm rebases the mark"
    machine.on_cycle(snap(machine, 89_900, T0 + timedelta(days=1)))
    assert machine.latch_kind in ("circuit_breaker", "max_drawdown") and machine.latched


def test_zero_switches_it_off() -> None:
    s = settings(max_drawdown_from_peak=0)
    machine, _, _ = losing_days(SafetyStateMachine(s), 100_000, 0.03, 8, s)
    assert not machine.latched


def test_an_older_snapshot_without_a_mark_starts_one() -> None:
    s = settings()
    machine = SafetyStateMachine(s)
    machine.new_session(date(2025, 3, 3), D(100_000), T0)
    data = machine.to_dict()
    del data["peak"]
    restored = SafetyStateMachine.from_dict(s, data)
    assert restored.high_water_mark is None
    restored.on_cycle(snap(restored, 99_000, T0 + timedelta(minutes=1)))
    assert restored.high_water_mark == D(99_000)


def test_config_validates_the_limit() -> None:
    with pytest.raises(config.ConfigError) as err:
        settings(max_drawdown_from_peak=1.5)
    assert "risk.max_drawdown_from_peak" in str(err.value)
    assert settings().risk.max_drawdown_from_peak == 0.10
    assert config.load_settings(environ={}, env_file=None).risk.max_drawdown_from_peak == 0.15


def test_peak_stop_and_labels() -> None:
    stop = PeakDrawdownStop(0.2)
    stop.observe(D(100))
    stop.observe(D(120))
    assert stop.drawdown(D(96)) == D("0.2") and stop.breached(D(96)) and not stop.breached(D(97))
    assert latch_label("max_drawdown") == "maximum drawdown stop"
    assert latch_label("circuit_breaker") == "circuit breaker" and latch_label("halt") == "operator halt"
