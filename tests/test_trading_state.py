"""Safety state machine: drawdown, circuit breaker latch, halt, restart and re-arm."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import structlog

import config
from risk_manager import PortfolioState, PositionView, RiskManager
from engine.trading_state import SafetyStateMachine, TradingState, Transition

D = Decimal
DAY1 = date(2025, 3, 3)
DAY2 = date(2025, 3, 4)
T0 = datetime(2025, 3, 3, 14, 30, tzinfo=timezone.utc)


def settings(**sections: dict[str, Any]) -> config.Settings:
    return config.load_settings(environ={}, env_file=None, overrides=sections or None)


def held(symbol: str = "AAPL") -> dict[str, PositionView]:
    return {
        symbol: PositionView(symbol, D(100), D(100), D(95), D(9500), D(-500), D(90)),
    }


def snapshot(
    machine: SafetyStateMachine,
    equity: float,
    *,
    minutes: int = 1,
    positions: dict[str, PositionView] | None = None,
    open_orders: frozenset[str] = frozenset(),
) -> PortfolioState:
    eq = D(str(equity))
    return PortfolioState(
        equity=eq,
        cash=eq,
        buying_power=eq,
        last_equity=D(100_000),
        session_start_equity=machine.session_start_equity or eq,
        day_high_equity=machine.day_high_equity or eq,
        positions=positions if positions is not None else held(),
        trading_state=machine.state,
        now=T0 + timedelta(minutes=minutes),
        open_order_symbols=open_orders,
    )


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def started(s: config.Settings | None = None, equity: float = 100_000) -> SafetyStateMachine:
    machine = SafetyStateMachine(s or settings(risk={"max_daily_drawdown": 0.03}))
    machine.new_session(DAY1, D(str(equity)), T0)
    return machine


class Intent:
    intent_id = "i-1"
    symbol = "MSFT"
    side = "buy"
    confidence = 0.9
    strategy = "breakout"
    entry_price = 100
    stop_price = 97
    target_price = 106
    metadata: dict[str, Any] = {}


def test_daily_drawdown_moves_to_reducing_entries_vetoed_exits_allowed() -> None:
    s = settings(risk={"max_daily_drawdown": 0.03})
    machine = started(s)
    assert machine.on_cycle(snapshot(machine, 97_500)) == []
    with structlog.testing.capture_logs() as logs:
        transitions = machine.on_cycle(snapshot(machine, 96_900, minutes=2))
    assert [(t.from_state, t.to_state) for t in transitions] == [(TradingState.ACTIVE, TradingState.REDUCING)]
    assert "3.10%" in transitions[0].reason
    assert transitions[0].at == T0 + timedelta(minutes=2)
    assert machine.state is TradingState.REDUCING
    assert not machine.allows_entry()
    assert machine.allows_exit() and machine.allows_cancel()
    changed = events(logs, "trading_state_changed")
    assert changed[0]["from_state"] == "active" and changed[0]["to_state"] == "reducing"

    decision = RiskManager(s).evaluate(Intent(), snapshot(machine, 96_900))
    assert decision.verdict == "veto" and decision.reason.startswith("trading_state:")

    # Recovering does not lift it for the rest of the session...
    assert machine.on_cycle(snapshot(machine, 99_000, minutes=3)) == []
    assert machine.state is TradingState.REDUCING
    # ...the next session does.
    transitions = machine.new_session(DAY2, D(99_000), T0 + timedelta(days=1))
    assert [t.to_state for t in transitions] == [TradingState.ACTIVE]
    assert machine.allows_entry()
    assert machine.session_start_equity == D(99_000)


def test_drawdown_from_the_day_high() -> None:
    machine = started()
    machine.on_cycle(snapshot(machine, 104_000))
    assert machine.day_high_equity == D(104_000)
    transitions = machine.on_cycle(snapshot(machine, 100_800, minutes=2))  # 3.08% below the high
    assert [t.to_state for t in transitions] == [TradingState.REDUCING]


def test_circuit_breaker_liquidates_then_halts_latched() -> None:
    machine = started()
    with structlog.testing.capture_logs() as logs:
        transitions = machine.on_cycle(snapshot(machine, 94_900))
    assert [(t.from_state, t.to_state) for t in transitions] == [(TradingState.ACTIVE, TradingState.LIQUIDATING)]
    assert machine.latched and machine.latch_kind == "circuit_breaker"
    assert machine.tripped_at == T0 + timedelta(minutes=1)
    assert not machine.allows_entry() and machine.allows_exit()
    tripped = events(logs, "circuit_breaker_triggered")
    assert len(tripped) == 1
    assert tripped[0]["equity"] == "94900" and tripped[0]["breaker_baseline"] == "100000"
    assert events(logs, "trading_state_changed")[0]["to_state"] == "liquidating"

    # Still holding shares: stays LIQUIDATING, no second trip.
    with structlog.testing.capture_logs() as logs:
        assert machine.on_cycle(snapshot(machine, 94_000, minutes=2)) == []
    assert events(logs, "circuit_breaker_triggered") == []
    # Flat: rests in HALTED, still latched; exits and entries refused, cancels allowed.
    transitions = machine.on_cycle(snapshot(machine, 94_000, minutes=3, positions={}))
    assert [t.to_state for t in transitions] == [TradingState.HALTED]
    assert machine.latched
    assert not machine.allows_entry() and not machine.allows_exit() and machine.allows_cancel()


def test_breaker_trips_before_drawdown_with_seed_defaults() -> None:
    machine = started(settings())
    transitions = machine.on_cycle(snapshot(machine, 95_000))
    assert [t.to_state for t in transitions] == [TradingState.LIQUIDATING]


def test_breaker_from_reducing() -> None:
    machine = started()
    machine.on_cycle(snapshot(machine, 96_000))
    assert machine.state is TradingState.REDUCING
    transitions = machine.on_cycle(snapshot(machine, 94_000, minutes=2))
    assert [(t.from_state, t.to_state) for t in transitions] == [(TradingState.REDUCING, TradingState.LIQUIDATING)]


def test_mark_flat_moves_to_halted() -> None:
    machine = started()
    machine.trip_circuit_breaker("manual test trip", T0)
    transitions = machine.mark_flat(T0 + timedelta(minutes=1))
    assert [t.to_state for t in transitions] == [TradingState.HALTED]
    assert machine.mark_flat(T0 + timedelta(minutes=2)) == []


def test_positions_found_while_halted_are_flattened_again() -> None:
    machine = started()
    machine.trip_circuit_breaker("test", T0)
    machine.mark_flat(T0)
    transitions = machine.on_cycle(snapshot(machine, 94_000, positions=held("TSLA")))
    assert [t.to_state for t in transitions] == [TradingState.LIQUIDATING]
    assert "TSLA" in transitions[0].reason


def test_new_session_does_not_clear_the_latch() -> None:
    machine = started()
    machine.on_cycle(snapshot(machine, 94_000))
    machine.mark_flat(T0)
    assert machine.new_session(DAY2, D(94_000), T0 + timedelta(days=1)) == []
    assert machine.state is TradingState.HALTED and machine.latched
    assert not machine.allows_entry()


def test_restart_keeps_latch_and_baseline() -> None:
    machine = started()
    machine.on_cycle(snapshot(machine, 94_500))
    stored = json.dumps(machine.to_dict())
    restored = SafetyStateMachine.from_dict(settings(risk={"max_daily_drawdown": 0.03}), json.loads(stored))
    assert restored.state is TradingState.LIQUIDATING
    assert restored.latched and restored.latch_reason == machine.latch_reason
    assert restored.tripped_at == machine.tripped_at
    assert restored.session_start_equity == D(100_000)
    assert restored.to_dict() == machine.to_dict()


def test_restart_cannot_reset_the_session_baseline() -> None:
    machine = started()
    machine.on_cycle(snapshot(machine, 96_000))  # REDUCING, 4% down, breaker not yet
    restored = SafetyStateMachine.from_dict(settings(risk={"max_daily_drawdown": 0.03}), machine.to_dict())
    # The restarted daemon calls new_session for the same day with today's lower equity:
    assert restored.new_session(DAY1, D(96_000), T0) == []
    assert restored.session_start_equity == D(100_000)
    assert restored.state is TradingState.REDUCING
    # A further 1% loss is 5% from the true baseline: the breaker trips.
    transitions = restored.on_cycle(snapshot(restored, 95_000, minutes=5))
    assert [t.to_state for t in transitions] == [TradingState.LIQUIDATING]


def test_rearm_requires_a_reason_and_is_the_only_way_out() -> None:
    machine = started(settings())
    machine.on_cycle(snapshot(machine, 94_500))
    machine.mark_flat(T0)
    for blank in ("", "   "):
        with pytest.raises(ValueError, match="reason"):
            machine.rearm(blank, T0)
    assert machine.latched
    with structlog.testing.capture_logs() as logs:
        transitions = machine.rearm("reviewed the losses, resuming", T0 + timedelta(hours=1))
    assert [(t.from_state, t.to_state) for t in transitions] == [(TradingState.HALTED, TradingState.ACTIVE)]
    assert not machine.latched and machine.allows_entry()
    assert events(logs, "rearmed")[0]["reason"] == "reviewed the losses, resuming"
    # The next cycle re-bases the breaker on the current equity instead of tripping again...
    assert machine.on_cycle(snapshot(machine, 94_500, minutes=70, positions={})) == []
    assert machine.breaker_baseline == D(94_500)
    assert machine.state is TradingState.ACTIVE
    # ...and a further 5% loss from there trips it again.
    transitions = machine.on_cycle(snapshot(machine, 89_775, minutes=71))
    assert [t.to_state for t in transitions] == [TradingState.LIQUIDATING]


def test_rearm_keeps_the_daily_loss_limit_of_the_session() -> None:
    machine = started(settings(risk={"max_daily_drawdown": 0.03}))
    machine.on_cycle(snapshot(machine, 94_500))
    machine.rearm("resume", T0, equity=D(94_500))
    assert machine.breaker_baseline == D(94_500)
    # Still 5.5% down on the day: exits only.
    transitions = machine.on_cycle(snapshot(machine, 94_500, minutes=2))
    assert [t.to_state for t in transitions] == [TradingState.REDUCING]


def test_rearm_when_not_latched_changes_nothing() -> None:
    machine = started()
    with structlog.testing.capture_logs() as logs:
        assert machine.rearm("just in case", T0) == []
    assert events(logs, "rearmed") == []
    assert events(logs, "rearm_ignored")


def test_operator_halt_flattens_and_latches() -> None:
    machine = started()
    with structlog.testing.capture_logs() as logs:
        transitions = machine.halt("news event, going flat", T0)
    assert transitions == [Transition(TradingState.ACTIVE, TradingState.LIQUIDATING, "operator halt: news event, going flat", T0)]
    assert machine.latched and machine.latch_kind == "halt"
    assert events(logs, "halted")[0]["reason"] == "news event, going flat"
    assert machine.halt("again", T0) == []
    with pytest.raises(ValueError, match="reason"):
        SafetyStateMachine(settings()).halt("", T0)
    # Flat with an order still open: not done yet.
    assert machine.on_cycle(snapshot(machine, 100_000, positions={}, open_orders=frozenset({"AAPL"}))) == []
    transitions = machine.on_cycle(snapshot(machine, 100_000, minutes=2, positions={}))
    assert [t.to_state for t in transitions] == [TradingState.HALTED]
    assert transitions[0].to_dict() == {
        "from": "liquidating", "to": "halted", "reason": transitions[0].reason, "at": transitions[0].at.isoformat(),
    }


def test_session_cannot_go_backwards_and_needs_positive_equity() -> None:
    machine = started()
    with pytest.raises(ValueError, match="earlier"):
        machine.new_session(date(2025, 2, 28), D(100_000), T0)
    with pytest.raises(ValueError, match="positive"):
        SafetyStateMachine(settings()).new_session(DAY1, D(0), T0)


def test_invalid_snapshot_rejected() -> None:
    with pytest.raises(ValueError, match="snapshot"):
        SafetyStateMachine.from_dict(settings(), {"state": "panicking", "latched": False})
    with pytest.raises(ValueError, match="latched"):
        SafetyStateMachine.from_dict(settings(), {"state": "active", "latched": True})


def test_without_new_session_the_portfolio_baseline_is_adopted() -> None:
    machine = SafetyStateMachine(settings())
    p = snapshot(machine, 94_000)
    p = PortfolioState(**{**p.__dict__, "session_start_equity": D(100_000), "day_high_equity": D(100_000)})
    transitions = machine.on_cycle(p)
    assert [t.to_state for t in transitions] == [TradingState.LIQUIDATING]
    assert machine.session_start_equity == D(100_000)


def test_reduce_after_broker_errors_is_exits_only_for_the_session_and_never_stricter_than_a_latch() -> None:
    machine = started()
    transitions = machine.reduce("3 cycles in a row failed on broker errors nobody classified", T0)
    assert [(t.from_state, t.to_state) for t in transitions] == [(TradingState.ACTIVE, TradingState.REDUCING)]
    assert not machine.allows_entry() and machine.allows_exit() and not machine.latched
    assert machine.reduce("again", T0) == []  # already reducing: nothing new
    assert machine.on_cycle(snapshot(machine, 100_000, minutes=2)) == []
    assert machine.state is TradingState.REDUCING
    assert [t.to_state for t in machine.new_session(DAY2, D(100_000), T0 + timedelta(days=1))] == [
        TradingState.ACTIVE]
    machine.halt("operator", T0 + timedelta(days=1))
    assert machine.reduce("broker errors", T0 + timedelta(days=1)) == []  # a latch stays a latch
    assert machine.state is TradingState.LIQUIDATING
    with pytest.raises(ValueError):
        machine.reduce(" ", T0)
